"""Ingest: formats, damage, re-ingest, crash safety, flows against tshark."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CASES, corpus_file
from pcaputil import read_records, sha256, tcpdump
from pcapwire.errors import QueryError
from pcapwire.query import QuerySpec
from pcapwire.store import Store
from pcapwire.synth import generate

READABLE = {cid: c["capture"].get("records_readable")
            or int(c["capture"]["capinfos"]["fields"]["packets"]) for cid, c in CASES.items()}
# Packets after the damage that tcpdump/capinfos give up on and pcapwire resynchronises to.
# suricata-pcap-corrupt-record-tls: record 6 (byte 745) claims 4274 bytes, but a record
# header chain starts at byte 5033 (2 bytes earlier) and runs 8 records to exactly EOF
# (5696) with timestamps continuing record 6's second: those 8 are real packets.
RECOVERED = {"suricata-pcap-corrupt-record-tls": 8}


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_ingest_corpus_capture_keeps_every_readable_packet(store: Store, case_id: str) -> None:
    report = store.ingest([corpus_file(case_id)])
    expected = READABLE[case_id] + RECOVERED.get(case_id, 0)
    assert report.packets == expected
    assert store.catalog.stats()["packets"] == expected
    damage = CASES[case_id]["capture"].get("damage")
    if damage:
        assert [off for off, _ in report.files[0].errors] == [damage["offset"]]
        assert str(damage["caplen"]) in report.files[0].errors[0][1]
    else:
        assert report.ok, report.errors


def test_reingest_is_detected_and_adds_nothing(store: Store) -> None:
    first = store.ingest([corpus_file("zeek-http-get")])
    second = store.ingest([corpus_file("zeek-http-get")])
    assert first.packets == 14 and second.packets == 0
    assert second.files[0].skipped
    assert store.catalog.stats() == {"segments": 1, "packets": 14, "bytes": 6335, "flows": 1}


def test_gzip_capture_is_ingested_like_its_decompressed_bytes(store: Store, tmp_path: Path
                                                               ) -> None:
    plain = tmp_path / "iso.pcap"
    plain.write_bytes(gzip.decompress(corpus_file("zeek-gzip-pcap-iso-download").read_bytes()))
    report = store.ingest([corpus_file("zeek-gzip-pcap-iso-download")])
    assert report.packets == 289
    assert store.query_engine().to_bytes(QuerySpec()) == tcpdump(plain)


def test_directory_ingest_reports_bad_entries_and_keeps_the_rest(store: Store, tmp_path: Path
                                                                  ) -> None:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    shutil.copy(corpus_file("zeek-http-get"), d / "a.pcap")
    shutil.copy(corpus_file("suricata-dns-udp-cname-a"), d / "sub" / "b.pcap")
    (d / "empty.pcap").write_bytes(b"")
    (d / "notes.txt").write_text("not a capture\n")
    os.symlink(d / "missing.pcap", d / "dangling.pcap")
    report = store.ingest([d])
    assert report.packets == 16
    errors = "\n".join(report.errors)
    assert f"{d / 'empty.pcap'}: byte 0: empty file" in errors
    assert f"{d / 'notes.txt'}: byte 0: not a pcap or pcapng file" in errors
    assert f"{d / 'dangling.pcap'}: no such file" in errors


def _records_of(path: Path) -> list[bytes]:
    return read_records(tcpdump(path))[1]


def test_truncated_last_record_keeps_everything_before(store: Store, tmp_path: Path) -> None:
    src = corpus_file("zeek-http-get").read_bytes()
    _, recs = read_records(tcpdump(corpus_file("zeek-http-get")))
    last_start = len(src) - len(recs[-1])
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(src[:last_start + 20])  # header and 4 bytes of the last packet
    report = store.ingest([cut])
    assert report.packets == 13
    (off, msg), = report.files[0].errors
    assert off == last_start and "truncated" in msg
    assert store.query_engine().to_bytes(QuerySpec()) == tcpdump(cut)


def test_absurd_caplen_mid_file_is_reported_and_packets_after_it_are_recovered(
        store: Store, tmp_path: Path) -> None:
    src = corpus_file("zeek-http-get").read_bytes()
    _, recs = read_records(tcpdump(corpus_file("zeek-http-get")))
    bad = struct.pack("<IIII", 1362692526, 0, 5_000_000, 5_000_000) + b"\xaa" * 64
    split = 24 + sum(len(r) for r in recs[:5])
    damaged = tmp_path / "damaged.pcap"
    damaged.write_bytes(src[:split] + bad + src[split:])
    report = store.ingest([damaged])
    assert report.packets == 14
    (off, msg), = report.files[0].errors
    assert off == split and "5000000" in msg
    assert store.query_engine().to_bytes(QuerySpec()) == tcpdump(corpus_file("zeek-http-get"))


def test_pcapng_block_with_bad_length_keeps_other_packets(store: Store, tmp_path: Path) -> None:
    data = bytearray(corpus_file("zeek-pcapng-two-interfaces").read_bytes())
    # find the third EPB (type 6) and corrupt its trailing length
    pos, epbs = 0, []
    while pos + 8 <= len(data):
        btype, blen = struct.unpack_from("<II", data, pos)
        if btype == 6:
            epbs.append((pos, blen))
        pos += blen
    pos3, len3 = epbs[2]
    struct.pack_into("<I", data, pos3 + len3 - 4, len3 + 4)
    bad = tmp_path / "bad.pcapng"
    bad.write_bytes(bytes(data))
    report = store.ingest([bad])
    assert report.packets == 5
    (off, msg), = report.files[0].errors
    assert off == pos3 and "length" in msg


def test_unknown_linktype_is_stored_and_returned(store: Store, tmp_path: Path) -> None:
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 147)  # USER0
    data += struct.pack("<IIII", 1, 2, 5, 5) + b"hello"
    p = tmp_path / "user0.pcap"
    p.write_bytes(data)
    report = store.ingest([p])
    assert report.packets == 1 and report.ok
    assert store.query_engine().to_bytes(QuerySpec()) == tcpdump(p)


def test_flow_spanning_many_segments_is_one_flow(tmp_path: Path) -> None:
    cap = tmp_path / "synth.pcap"
    generate(cap, 3 * 2**20, seed=7, concurrency=4)
    with Store(tmp_path / "s") as store:
        report = store.ingest([cap], segment_max_bytes=256 * 1024)
        assert report.segments >= 10
        spanning = store.catalog.db.execute(
            "SELECT flow_id, count(*) FROM flow_segments GROUP BY flow_id HAVING count(*) > 1"
        ).fetchall()
        assert spanning
        flow_id = spanning[0][0]
        out = store.query_engine().to_bytes(QuerySpec(flow_ids=[flow_id]))
        (row,) = store.catalog.flows("id = ?", [flow_id])
        from pcapwire.query.flows import flow_dict

        f = flow_dict(row)
        expr = (f"tcp and host {f['src_ip']} and host {f['dest_ip']} and port {f['src_port']} "
                f"and port {f['dest_port']}")
        assert out == tcpdump(cap, expr)
        assert len(read_records(out)[1]) == row.packets


def test_session_over_three_days_and_two_files_is_one_flow(tmp_path: Path) -> None:
    """A long-lived TCP session (an SSH-like keepalive every 30 minutes for three days),
    captured in two files ingested one after the other into small segments, is one flow;
    the same 5-tuple back after a silence of more than FLOW_IDLE_TIMEOUT_NS is a new one."""
    sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
    import craft as c
    from pcapwire.store.catalog import FLOW_IDLE_TIMEOUT_NS

    cli, srv = "10.1.1.1", "10.2.2.2"

    def pkt(ts: int, out: bool, flags: int, payload: bytes = b"") -> bytes:
        seg = c.tcp(40000, 22, flags, payload) if out else c.tcp(22, 40000, flags, payload)
        ip = c.ipv4(cli, srv, 6, seg) if out else c.ipv4(srv, cli, 6, seg)
        return c.record(ts, 0, c.eth(ip))

    t0, step = 1_700_000_000, 1800
    times = [t0, t0, t0 + 1] + [t0 + 2 + i * step for i in range(3 * 48)]
    packets = [pkt(t0, True, 0x02), pkt(t0, False, 0x12), pkt(t0 + 1, True, 0x10)]
    packets += [pkt(ts, i % 2 == 0, 0x18, b"keepalive") for i, ts in enumerate(times[3:])]
    later = t0 + 2 + 3 * 48 * step + FLOW_IDLE_TIMEOUT_NS // 10**9 + 60  # after the idle time
    again = [pkt(later, True, 0x18, b"x"), pkt(later + 1, False, 0x18, b"y")]
    half = len(packets) // 2
    day1, rest = tmp_path / "day1.pcap", tmp_path / "day2-3.pcap"
    day1.write_bytes(c.pcap_header() + b"".join(packets[:half]))
    rest.write_bytes(c.pcap_header() + b"".join(packets[half:] + again))

    with Store(tmp_path / "s") as store:
        for f in (day1, rest):
            assert store.ingest([f], segment_max_bytes=2048).ok
        flows = list(store.catalog.flows())
        assert [(f.packets, (f.last_ns - f.first_ns) // 10**9) for f in flows] == [
            (len(packets), times[-1] - t0), (2, 1)]
        first = flows[0]
        assert (first.pkts_a2b, first.pkts_b2a) == (2 + 72, 1 + 72)
        assert first.initiator_is_a  # 10.1.1.1 sent the SYN
        spans = store.catalog.db.execute(
            "SELECT count(*) FROM flow_segments WHERE flow_id=?", (first.id,)).fetchone()[0]
        assert spans == store.catalog.stats()["segments"] > 10  # the last one holds both
        key = QuerySpec(flow_ids=[first.id])
        out = store.query_engine().to_bytes(key)
        assert read_records(out)[1] == read_records(c.pcap_header() + b"".join(packets))[1]


def test_kill_9_mid_ingest_then_rerun_completes_without_duplicates(tmp_path: Path) -> None:
    cap = tmp_path / "synth.pcap"
    generate(cap, 6 * 2**20, seed=3)
    data_dir = tmp_path / "store"
    cmd = [sys.executable, "-m", "pcapwire.cli", "--data-dir", str(data_dir), "ingest",
           "--segment-size", "1", "--progress", "lines", str(cap)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("checkpoint: 2 "):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with Store(data_dir) as store:
        partial = store.catalog.stats()
        assert 0 < partial["packets"]
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    with Store(data_dir) as store:
        assert store.catalog.stats()["packets"] == len(_records_of(cap))
        assert sha256(store.query_engine().to_bytes(QuerySpec())) == sha256(tcpdump(cap))
        assert not list(data_dir.rglob("*.part"))


TSHARK_COMPARABLE = [cid for cid, c in CASES.items()
                     if "conversations" in c.get("computed", {})
                     and not c["computed"].get("ip_fragments")
                     and not c["capture"].get("damage")]


@pytest.mark.parametrize("case_id", TSHARK_COMPARABLE)
def test_flow_counts_match_tshark_conversations(store: Store, case_id: str) -> None:
    """One pcapwire flow per tshark conversation, same packets and frame bytes each way.

    Definitions line up for plain TCP/UDP: a conversation is the unordered (addr, port)
    pair. tshark leaves out frames that only quote TCP/UDP inside ICMP errors; pcapwire
    files those under the ICMP flow, so they are not compared here. Flows without a
    handshake count like any other (tshark does the same)."""
    store.ingest([corpus_file(case_id)])
    conv = CASES[case_id]["computed"]["conversations"]
    ours = {}
    from pcapwire.query.flows import flow_dict

    for row in store.catalog.flows("proto IN (6, 17)"):
        f = flow_dict(row)
        ends = {(f["src_ip"], f["src_port"]), (f["dest_ip"], f["dest_port"])}
        key = (f["proto"], frozenset(ends))
        ours[key] = (row.packets, row.bytes)
    theirs = {(c["proto"], frozenset({(c["src"], c["sport"]), (c["dst"], c["dport"])})):
              (c["packets"], c["bytes"]) for c in conv["conversations"]}
    assert ours == theirs


def test_in_place_index_answers_like_tcpdump_without_copying(tmp_path: Path) -> None:
    cap = tmp_path / "synth.pcap"
    generate(cap, 2 * 2**20, seed=11)
    with Store(tmp_path / "s") as store:
        report = store.ingest([cap], in_place=True)
        assert report.ok and report.segments == 1
        assert report.packets == len(_records_of(cap))
        (seg,) = store.catalog.segments()
        assert seg.path == str(cap.resolve()) and seg.size == cap.stat().st_size
        assert not list((tmp_path / "s").rglob("*.pcap"))  # nothing copied
        engine = store.query_engine()
        assert engine.to_bytes(QuerySpec()) == tcpdump(cap)
        assert engine.to_bytes(QuerySpec(bpf="tcp port 8080")) == tcpdump(cap, "tcp port 8080")
        row = next(store.catalog.flows("proto = 6"))
        assert len(read_records(engine.to_bytes(QuerySpec(flow_ids=[row.id])))[1]) == row.packets
        with open(cap, "ab") as f:  # the file changes under the index: a clear error
            f.write(b"\0" * 16)
        with pytest.raises(QueryError, match="changed size since it was indexed in place"):
            engine.to_bytes(QuerySpec())


def test_in_place_index_merged_in_parts_equals_the_copied_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An in-place file's flows are merged part by part while it is read: flows that span
    parts get one row and their offsets appended, exactly as if indexed at once."""
    import pcapwire.store.ingest as ingest

    cap = tmp_path / "synth.pcap"
    generate(cap, 3 * 2**20, seed=5, concurrency=6)
    with Store(tmp_path / "whole") as store:  # one part
        assert store.ingest([cap], in_place=True).ok
        whole = store.catalog.db.execute(
            "SELECT f.ipver, f.proto, f.addr_a, f.port_a, f.addr_b, f.port_b, "
            "f.initiator_is_a, f.first_ns, f.last_ns, f.pkts_a2b, f.bytes_a2b, f.pkts_b2a, "
            "f.bytes_b2a, s.packets, s.offsets FROM flows f JOIN flow_segments s "
            "ON s.flow_id = f.id ORDER BY f.id").fetchall()
    monkeypatch.setattr(ingest, "READ_BLOCK", 128 * 1024)
    monkeypatch.setattr(ingest, "IN_PLACE_PART", 128 * 1024)
    with Store(tmp_path / "parts") as store:
        report = store.ingest([cap], in_place=True)
        assert report.ok and report.segments == 1
        parts = store.catalog.db.execute(
            "SELECT f.ipver, f.proto, f.addr_a, f.port_a, f.addr_b, f.port_b, "
            "f.initiator_is_a, f.first_ns, f.last_ns, f.pkts_a2b, f.bytes_a2b, f.pkts_b2a, "
            "f.bytes_b2a, s.packets, s.offsets FROM flows f JOIN flow_segments s "
            "ON s.flow_id = f.id ORDER BY f.id").fetchall()
        spanning = sum(1 for r in parts if r[13] > 20)
        engine = store.query_engine()
        assert engine.to_bytes(QuerySpec(bpf="tcp port 8080")) == tcpdump(cap, "tcp port 8080")
    assert len(parts) == len(whole) > 100 and spanning > 10
    assert parts == whole


def test_in_place_failure_mid_file_keeps_nothing_of_it(tmp_path: Path) -> None:
    """Damage found after some parts were merged: the whole in-place transaction is rolled
    back and the file is ingested by copying instead (one segment, no duplicate flows)."""
    cap = tmp_path / "late-damage.pcap"
    generate(cap, 3 * 2**20, seed=9)
    data = bytearray(cap.read_bytes())
    recs = read_records(bytes(data))[1]
    at = 24 + sum(len(r) for r in recs[: len(recs) * 3 // 4])
    struct.pack_into("<I", data, at + 8, 10 * 2**20)  # an absurd caplen, three quarters in
    cap.write_bytes(bytes(data))
    import pcapwire.store.ingest as ingest

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ingest, "READ_BLOCK", 256 * 1024)
        mp.setattr(ingest, "IN_PLACE_PART", 256 * 1024)
        with Store(tmp_path / "s") as store:
            report = store.ingest([cap], in_place=True)
            assert not report.ok and report.segments >= 1
            segs = store.catalog.segments()
            assert all(not s.path.startswith("/") for s in segs)  # copied, not in place
            assert store.catalog.stats()["packets"] == report.packets
            dupes = store.catalog.db.execute(
                "SELECT count(*) FROM (SELECT addr_a, addr_b, port_a, port_b, proto, "
                "count(*) n FROM flows GROUP BY 1, 2, 3, 4, 5 HAVING n > 1)").fetchone()[0]
            assert dupes == 0


@pytest.mark.parametrize("case_id", ["zeek-http-get", "zeek-pcapng-two-interfaces",
                                     "suricata-pcap-corrupt-record-tls"])
def test_in_place_falls_back_to_copying_what_it_cannot_index_as_is(
        tmp_path: Path, case_id: str) -> None:
    """pcapng and damaged files are copied into segments; a clean classic file is not."""
    with Store(tmp_path / "s") as store:
        report = store.ingest([corpus_file(case_id)], in_place=True)
        expected = READABLE[case_id] + RECOVERED.get(case_id, 0)
        assert report.packets == expected
        (seg,) = store.catalog.segments()
        assert Path(seg.path).is_absolute() == (case_id == "zeek-http-get")
        out = store.query_engine().to_bytes(QuerySpec())
        if case_id == "zeek-http-get":
            assert out == tcpdump(corpus_file(case_id))
