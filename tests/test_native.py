"""pcapwire._native against its oracles: tcpdump/libpcap output byte for byte, the corpus
manifest's ground truth, and hand-built captures (tests/fuzz/craft.py, struct only)."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import subprocess
import sys
import threading
from functools import cache
from pathlib import Path

import pytest
from conftest import CASES, corpus_file

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
import craft as c  # noqa: E402
from pcapwire import _native as N  # noqa: E402

META = struct.Struct(N.META_STRUCT)
T0 = 1_700_000_000
QUERIES = [(cid, q) for cid, case in CASES.items()
           for q in case["computed"].get("bpf", {}).get("queries", [])]


# -- helpers ---------------------------------------------------------------------------------
def read(data: bytes, piece: int = 0, **kw) -> tuple[N.Reader, list[tuple]]:
    r = N.Reader("test", **kw)
    batches = []
    for i in range(0, len(data), piece or max(len(data), 1)):
        batches += r.feed(data[i:i + (piece or len(data))])
    batches += r.finish()
    return r, batches


def metas(batches: list[tuple]) -> list[dict]:
    return [dict(zip(N.META_FIELDS, m, strict=True)) for b in batches
            for m in META.iter_unpack(b[4])]


def records(batches: list[tuple]) -> bytes:
    return b"".join(b[3] for b in batches)


def split(recs: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(recs):
        n = 16 + struct.unpack_from("<I", recs, pos + 8)[0]
        out.append(recs[pos:pos + n])
        pos += n
    return out


def segment(batches: list[tuple]) -> tuple[int, int, int, bytes]:
    """One segment file (header + records) of batches that must share one key."""
    (key,) = {b[:3] for b in batches}
    lt, snap, prec = key
    return lt, snap, prec, c.pcap_header(lt, snap, ns=prec == 9) + records(batches)


def scan_all(seg: bytes, prec: int, snap: int, **kw) -> tuple[bytes, bytes]:
    outs, tss, pos = [], [], 24
    while pos < len(seg):
        out, ts, pos, _ = N.scan(seg, pos, len(seg), tsprec=prec, snaplen=snap, **kw)
        outs.append(out)
        tss.append(ts)
    return b"".join(outs), b"".join(tss)


def tcpdump(path: Path, expr: str = "") -> bytes:
    return subprocess.run(["tcpdump", "-r", str(path), "-w", "-", *([expr] if expr else [])],
                          capture_output=True, check=False).stdout


def pipeline(data: bytes, expr: str = "") -> bytes:
    """What pcapwire returns for `expr` over a capture: ingest, segment, scan, tcpdump header."""
    _, bs = read(data)
    lt, snap, prec, seg = segment(bs)
    flt = N.Filter(expr, lt, snap) if expr else None
    return c.pcap_header(lt, snap) + scan_all(seg, prec, snap, filter=flt)[0]


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@cache
def corpus_bytes(case_id: str) -> bytes:
    data = corpus_file(case_id).read_bytes()
    return gzip.decompress(data) if case_id.endswith("gz") or data[:2] == b"\x1f\x8b" else data


@cache
def ingested(case_id: str) -> tuple[N.Reader, tuple]:
    r, bs = read(corpus_bytes(case_id))
    return r, tuple(bs)


def tcp_pkt(i: int = 0, sport: int = 1234, dport: int = 80, flags: int = 0x18,
            payload: bytes = b"x" * 20) -> bytes:
    return c.eth(c.ipv4("10.0.0.1", "10.0.0.2", 6, c.tcp(sport, dport, flags, payload, seq=i)))


# -- the corpus oracle -----------------------------------------------------------------------
@pytest.mark.parametrize(("case_id", "q"), QUERIES, ids=[f"{i}:{q['bpf']}" for i, q in QUERIES])
def test_corpus_query_output_is_byte_identical_to_tcpdump(case_id: str, q: dict) -> None:
    _, bs = ingested(case_id)
    lt, snap, prec, seg = segment(list(bs))
    if q["tcpdump_exit"] != 0 and q["output_size"] == 0:  # tcpdump refused the expression
        with pytest.raises(ValueError) as err:
            N.Filter(q["bpf"], lt, snap)
        assert str(err.value) == q["tcpdump_stderr"].split("tcpdump: ", 1)[1].strip()
        return
    out = c.pcap_header(lt, snap) + scan_all(seg, prec, snap, filter=N.Filter(q["bpf"], lt,
                                                                              snap))[0]
    if CASES[case_id]["capture"].get("damage"):
        # tcpdump stops at the damage; we resync and keep what follows: same packets first
        assert sha(out[:q["output_size"]]) == q["output_sha256"]
        assert len(split(out[24:])) >= q["packets"]
    else:
        assert sha(out) == q["output_sha256"]
        assert len(split(out[24:])) == q["packets"]


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_corpus_capture_parses_the_same_in_one_byte_pieces(case_id: str) -> None:
    r, bs = ingested(case_id)
    r1, bs1 = read(corpus_bytes(case_id), piece=1)
    assert records(bs1) == records(list(bs))
    assert [dict(m, rec_off=0) for m in metas(bs1)] == [dict(m, rec_off=0) for m in metas(bs)]
    assert (r1.errors, r1.warnings, r1.packets) == (r.errors, r.warnings, r.packets)
    assert r1.offset == r.offset == len(corpus_bytes(case_id))


def test_corpus_damaged_file_keeps_the_8_packets_after_the_bad_header() -> None:
    """libpcap stops at byte 5035 (caplen 4325376); the record before it claims 2 bytes too
    many, so the next real header starts at 5033: backtracking finds it."""
    data = corpus_bytes("suricata-pcap-corrupt-record-tls")
    r, bs = ingested("suricata-pcap-corrupt-record-tls")
    recs = split(records(list(bs)))
    assert r.packets == len(recs) == 14
    assert r.errors == [(5035, "invalid packet capture length 4325376, bigger than snaplen of "
                         "262144; resynchronised at byte 5033, 2 bytes before the damaged header "
                         "(the previous record's length was wrong; those bytes are in both "
                         "records)")]
    assert b"".join(recs[:6]) == data[24:5035]
    assert b"".join(recs[6:]) == data[5033:]
    assert r.bytes_skipped == 0


def test_corpus_caplen_above_snaplen_is_kept_and_cut_only_on_output() -> None:
    r, bs = ingested("zeek-pcap-caplen-exceeds-snaplen")
    (m,) = metas(list(bs))
    assert (bs[0][1], m["caplen"], m["origlen"]) == (1, 8, 78)
    assert m["flags"] == N.FLAG_CAPLEN_GT_SNAPLEN | N.FLAG_TRUNCATED
    assert r.warnings == [(24, "1 record(s) with a captured length greater than the snapshot "
                           "length; kept as captured (queries return them cut to the snapshot "
                           "length, as libpcap reads them) (first at byte 24)")]
    out = c.pcap_header(1, 1) + scan_all(segment(list(bs))[3], 6, 1)[0]
    assert out == tcpdump(corpus_file("zeek-pcap-caplen-exceeds-snaplen"))


def test_corpus_pcapng_two_interfaces_nanosecond_timestamps() -> None:
    """if_tsresol 9 and 6: meta ts_ns from an independent walk of the EPBs."""
    data = corpus_bytes("zeek-pcapng-two-interfaces")
    expect, pos, resol = [], 0, []
    while pos < len(data):
        btype, blen = struct.unpack_from("<II", data, pos)
        if btype == 1:
            opt, res = pos + 16, 6
            while opt < pos + blen - 4:
                code, olen = struct.unpack_from("<HH", data, opt)
                if code == 9:
                    res = data[opt + 4]
                opt += 4 + olen + (-olen % 4)
            resol.append(res)
        if btype == 6:
            iface, hi, lo = struct.unpack_from("<III", data, pos + 8)
            t, div = (hi << 32) | lo, 10 ** resol[iface]
            expect.append((t // div) * 10**9 + (t % div) * 10**9 // div)
        pos += blen
    assert resol == [9, 6]
    _, bs = ingested("zeek-pcapng-two-interfaces")
    assert [b[:3] for b in bs] == [(1, 262144, 9)]
    assert [m["ts_ns"] for m in metas(list(bs))] == expect


def test_corpus_nanosecond_and_big_endian_records_keep_their_precision() -> None:
    data = corpus_bytes("zeek-pcap-nanosecond-http-to-ssh")
    _, bs = ingested("zeek-pcap-nanosecond-http-to-ssh")
    assert records(list(bs)) == data[24:] and bs[0][:3] == (1, 2000, 9)
    be = corpus_bytes("arkime-pcap-big-endian")
    _, bs = ingested("arkime-pcap-big-endian")
    sec, usec, cap, orig = struct.unpack_from(">IIII", be, 24)
    assert records(list(bs))[:16] == struct.pack("<IIII", sec, usec, cap, orig)
    assert [(m["ipver"], m["proto"], m["icmp_type"]) for m in metas(list(bs))] == [(4, 1, 8)] * 2


def test_corpus_qinq_vlan0_frames_are_dissected_through_both_tags() -> None:
    _, bs = ingested("zeek-http-qinq-vlan0")
    ms = metas(list(bs))
    assert {(m["vlan_count"], m["vlan_id"], m["flags"] & N.FLAG_VLAN, m["l3_off"]) for m in ms} \
        == {(2, 0, N.FLAG_VLAN, 22)}
    ix = N.SegmentIndexer()
    ix.add(bs[0][4], 24)
    (flow,) = ix.finish()
    assert (flow[0], flow[1], flow[3], flow[5], flow[9] + flow[11]) == (4, 6, 59856, 80, 14)


def test_corpus_sll2_icmp_and_arp_flows() -> None:
    _, bs = ingested("zeek-linux-sll2")
    ms = metas(list(bs))
    assert [(m["ipver"], m["proto"], m["ethertype"]) for m in ms] == [
        (4, 1, 0x0800), (4, 1, 0x0800), (6, 58, 0x86DD), (6, 58, 0x86DD), (0, 0, 0x0806),
        (0, 0, 0x8035)]
    ix = N.SegmentIndexer()
    ix.add(bs[0][4], 24)
    flows = ix.finish()
    # ping to itself: source == destination, so every packet goes a -> b
    assert [(f[0], f[1], f[3], f[9], f[11]) for f in flows] == [
        (4, 1, 0, 2, 0), (6, 58, 0, 2, 0), (0, 0, 0x0806, 1, 0), (0, 0, 0x8035, 1, 0)]


@pytest.mark.parametrize("case_id", ["zeek-ipv4-fragmented-tcp", "zeek-ipv6-fragmented-dns"])
def test_corpus_fragment_groups_belong_to_their_flow(case_id: str) -> None:
    _, bs = ingested(case_id)
    ix = N.SegmentIndexer()
    ix.add(bs[0][4], 24)
    flows = ix.finish()
    offsets = [m["rec_off"] + 24 for m in metas(list(bs))]
    frame_of = {off: i + 1 for i, off in enumerate(offsets)}
    by_frame = {frame_of[o]: f for f in flows
                for o in struct.unpack(f"<{len(f[13]) // 4}I", f[13])}
    for g in CASES[case_id]["computed"]["ip_fragments"]["groups"]:
        owners = {id(by_frame[fr]) for fr in g["frames"]}
        assert len(owners) == 1, g
        f = by_frame[g["frames"][0]]
        ports = g.get("first_fragment_ports", [0, 0])
        assert sorted((f[3], f[5])) == sorted(ports) and f[1] == g["proto"]


# -- crafted captures: damage ----------------------------------------------------------------
def test_truncated_last_record_is_an_error_and_keeps_the_rest() -> None:
    pk = [tcp_pkt(i) for i in range(3)]
    data = c.pcap_file(pk)[:-10]
    for piece in (0, 1, 7):
        r, bs = read(data, piece)
        assert r.packets == 2 and records(bs) == c.pcap_file(pk[:2])[24:]
        assert r.errors == [(24 + 2 * (16 + len(pk[0])), f"truncated record: header says "
                             f"{len(pk[2])} bytes, file ends after {len(pk[2]) - 10}")]


def test_absurd_caplen_mid_file_every_packet_after_it_is_recovered() -> None:
    recs = [c.record(T0 + i, i, tcp_pkt(i)) for i in range(10)]
    bad = struct.pack("<IIII", T0 + 4, 0, 4325376, 4325376) + b"\xaa" * 100
    data = c.pcap_header() + b"".join(recs[:4]) + bad + b"".join(recs[4:])
    at = 24 + sum(map(len, recs[:4]))
    for piece in (0, 1, 5, 333):
        r, bs = read(data, piece)
        assert r.packets == 10 and records(bs) == b"".join(recs)
        assert r.errors == [(at, "invalid packet capture length 4325376, bigger than snaplen of "
                             f"65535; resynchronised at byte {at + 116} after skipping 116 bytes")]
        assert r.bytes_skipped == 116


def test_resync_skips_a_candidate_outside_the_timestamp_window() -> None:
    """After damage, a record more than RESYNC_TS_WINDOW_NS away from the last good one is
    not taken as the resync point; the next plausible one is."""
    far = T0 + N.RESYNC_TS_WINDOW_NS // 10**9 + 1
    recs = [c.record(T0 + i, 0, tcp_pkt(i)) for i in range(3)]
    odd = c.record(far, 0, tcp_pkt(9))
    data = c.pcap_header() + recs[0] + struct.pack("<IIII", T0, 0, 10**7, 10**7) + odd \
        + recs[1] + recs[2]
    r, bs = read(data)
    assert r.packets == 3 and records(bs) == b"".join(recs)


@pytest.mark.parametrize("filler", [100, N.RESYNC_BACKTRACK + 200])
def test_backtracking_recovers_records_swallowed_by_a_too_long_previous_record(filler: int
                                                                               ) -> None:
    """Record 0 claims the next record (16 + filler bytes) and 2 bytes more than it has; the
    reader then misreads a header 2 bytes into record 2 and rescans back from there, at most
    RESYNC_BACKTRACK bytes: a swallowed record inside that window comes back as a record of
    its own (its bytes are then in both), one beyond it does not."""
    recs = [c.record(T0, 0, tcp_pkt(0)), c.record(T0 + 1, 0, b"F" * filler)]
    recs += [c.record(T0 + 2 + i, 0, tcp_pkt(i)) for i in range(3)]
    extra = len(recs[1]) + 2
    head = bytearray(recs[0])
    struct.pack_into("<I", head, 8, len(recs[0]) - 16 + extra)
    data = c.pcap_header() + bytes(head) + b"".join(recs[1:])
    damage = 24 + len(head) + extra
    r, bs = read(data)
    got = split(records(bs))
    assert got[0] == bytes(head) + data[24 + len(head):damage]
    back = extra if extra <= N.RESYNC_BACKTRACK else 2
    assert got[1:] == (recs[1:] if back == extra else recs[2:])
    assert r.errors[0][0] == damage
    assert r.errors[0][1].endswith(f"resynchronised at byte {damage - back}, {back} bytes before "
                                   "the damaged header (the previous record's length was wrong; "
                                   "those bytes are in both records)")


@pytest.mark.parametrize(("how", "message"), [
    ("trailer", "block of type 0x00000006: trailing length {L4} does not match the leading "
                "length {L}; resynchronised at byte {R} after skipping {L} bytes"),
    ("short", "block of type 0x00000006 has an invalid length 8 (too short); resynchronised at "
              "byte {R} after skipping {L} bytes"),
    ("unaligned", "block of type 0x00000006 has an invalid length {L2} (not a multiple of 4); "
                  "resynchronised at byte {R} after skipping {L} bytes"),
    ("past-end", "block of type 0x00000006 has a length of {L1000} bytes, larger than the rest "
                 "of the file ({L} bytes); no valid record in the remaining {L} bytes"),
])
def test_pcapng_block_with_bad_length_is_reported_and_other_packets_kept(how: str,
                                                                         message: str) -> None:
    blocks = [c.epb(0, 10**15 + i, tcp_pkt(i)) for i in range(4)]
    victim = 3 if how == "past-end" else 1
    b = bytearray(blocks[victim])
    L = len(b)
    if how == "trailer":
        struct.pack_into("<I", b, L - 4, L + 4)
    else:
        struct.pack_into("<I", b, 4, {"short": 8, "unaligned": L + 2, "past-end": L + 1000}[how])
    head = c.shb() + c.idb(1, 65535, tsresol=9)
    data = head + b"".join(blocks[:victim]) + bytes(b) + b"".join(blocks[victim + 1:])
    for piece in (0, 1, 9):
        r, bs = read(data, piece)
        assert r.packets == 3
        assert [m["tcp_seq"] for m in metas(bs)] == [i for i in range(4) if i != victim]
        at = len(head) + sum(map(len, blocks[:victim]))
        assert r.errors == [(at, message.format(L=L, L4=L + 4, L2=L + 2, L1000=L + 1000,
                                                R=at + L))]


def test_pcapng_block_over_the_size_limit_is_rejected_without_waiting_for_it() -> None:
    head = c.shb() + c.idb()
    r = N.Reader("t")
    r.feed(head + struct.pack("<II", 6, N.MAX_PCAPNG_BLOCK + 4) + b"\0" * 100)
    assert r.errors == [(len(head), f"block of type 0x00000006 has an invalid length "
                         f"{N.MAX_PCAPNG_BLOCK + 4} (larger than the block size limit)")]


def test_empty_and_foreign_input_are_errors_at_byte_0() -> None:
    r, bs = read(b"")
    assert (bs, r.errors, r.format) == ([], [(0, "empty input (0 bytes): not a pcap or pcapng "
                                              "file")], None)
    r, bs = read(b"hello, world\n" * 3)
    assert (bs, r.errors) == ([], [(0, "not a pcap or pcapng file (magic 0x68656c6c)")])
    r, _ = read(c.pcap_header()[:20])
    assert r.errors == [(0, "truncated pcap file header: 20 of 24 bytes")]


def test_error_list_is_capped_at_max_messages() -> None:
    data = c.shb() + c.idb() + c.epb(5, 0, b"x") * (N.MAX_MESSAGES + 3)
    r, _ = read(data)
    assert len(r.errors) == N.MAX_MESSAGES + 1
    assert r.errors[-1] == (-1, "3 more errors not listed (limit MAX_MESSAGES=1000)")


def test_pcapng_interface_limit() -> None:
    data = c.shb() + c.idb(1, 100) * (N.MAX_PCAPNG_INTERFACES + 1) \
        + c.epb(N.MAX_PCAPNG_INTERFACES, 0, b"x") + c.epb(0, 0, b"y")
    r, bs = read(data)
    assert r.packets == 1 and [e[1] for e in r.errors] == [
        "more than 65536 interfaces in one section; interface ignored",
        "enhanced packet block on interface 65536, but the section has 65536 interface "
        "description block(s); packet skipped"]


# -- crafted captures: formats ---------------------------------------------------------------
def test_pcapng_timestamps_spb_opb_and_big_endian_sections() -> None:
    pkt = tcp_pkt(1)
    data = (c.shb() + c.idb(1, 40, tsresol=0x80 | 10, tsoffset=100) + c.idb(101, 0)
            + c.epb(0, (5 << 10) | 512, pkt) + c.spb(pkt) + c.opb(1, 7_000_001, pkt[14:])
            + c.shb(big=True) + c.idb(1, 65535, tsresol=3, big=True)
            + c.epb(0, 1234, pkt, big=True))
    r, bs = read(data)
    assert r.format == "pcapng" and r.errors == []
    assert [b[:3] for b in bs] == [(1, 40, 9), (101, 262144, 9), (1, 65535, 9)]
    ms = metas(bs)
    assert [m["ts_ns"] for m in ms] == [105 * 10**9 + 500_000_000, 100 * 10**9, 7 * 10**9 + 1000,
                                        1 * 10**9 + 234_000_000]
    assert [(m["caplen"], m["origlen"]) for m in ms] == [(len(pkt), len(pkt)), (40, len(pkt)),
                                                          (len(pkt) - 14, len(pkt) - 14),
                                                          (len(pkt), len(pkt))]
    # snaplen 40 leaves the ports (bytes 34..38) but not the whole TCP header
    assert [(m["ipver"], m["sport"]) for m in ms] == [(4, 1234)] * 4
    assert ms[0]["flags"] == N.FLAG_CAPLEN_GT_SNAPLEN | N.FLAG_TRUNCATED
    assert ms[1]["flags"] == N.FLAG_TRUNCATED


def test_batches_break_where_linktype_changes_and_respect_max_batch_bytes() -> None:
    a, b = tcp_pkt(1), tcp_pkt(2)[14:]
    head = c.shb() + c.idb(1) + c.idb(101)
    blocks = [c.epb(0, 1, a), c.epb(1, 2, b), c.epb(0, 3, a)]
    _, bs = read(head + b"".join(blocks))
    assert [(x[0], x[5]) for x in bs] == [(1, len(head)), (101, len(head) + len(blocks[0])),
                                          (1, len(head) + len(blocks[0]) + len(blocks[1]))]
    pk = [tcp_pkt(i, payload=b"p" * (10 if i != 3 else 500)) for i in range(8)]
    data = c.pcap_file(pk)
    _, bs = read(data, max_batch_bytes=200)
    assert records(bs) == data[24:]
    assert [len(split(x[3])) for x in bs] == [2, 1, 1, 2, 2]  # the 500-byte one alone


def test_skip_packets_resumes_without_duplicates() -> None:
    pk = [tcp_pkt(i) for i in range(6)]
    data = c.pcap_file(pk)
    r, bs = read(data, skip_packets=4)
    assert r.packets == 2 and r.offset == len(data)
    assert records(bs) == data[24 + 4 * (16 + len(pk[0])):]
    assert [m["ts_ns"] for m in metas(bs)] == [(T0 + 4) * 10**9 + 4_000_000,
                                               (T0 + 5) * 10**9 + 5_000_000]


def test_snaplen_is_adjusted_like_libpcap_and_caplen_limit_follows_the_linktype() -> None:
    for snap, lt, want in [(0, 1, 262144), (300000, 1, 262144), (1500, 1, 1500),
                           (0, 231, 128 * 2**20)]:
        _, bs = read(c.pcap_header(lt, snap) + c.record(T0, 0, b"z" * 300))
        assert bs[0][1] == want
    big = c.record(T0, 0, b"d" * 300000)
    r, bs = read(c.pcap_header(231, 0) + big)  # DBUS allows 128 MiB
    assert r.errors == [] and records(bs) == big
    r, bs = read(c.pcap_header(1, 65535) + big)
    assert r.errors[0][1].startswith("invalid packet capture length 300000, bigger than "
                                     "snaplen of 65535")


@pytest.mark.parametrize("variant", ["dlt-raw-12", "version-2.2", "kuznetzov", "big-ns", "ns"])
def test_header_variants_give_what_tcpdump_gives(tmp_path: Path, variant: str) -> None:
    pk = [c.ipv4("10.1.1.1", "10.2.2.2", 17, c.udp(53, 999 + i, b"q" * i)) for i in range(4)]
    if variant == "dlt-raw-12":
        data = c.pcap_file(pk, linktype=12)
    elif variant == "version-2.2":  # caplen and len in the other order
        data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 2, 0, 0, 65535, 101) + b"".join(
            struct.pack("<IIII", T0, i, len(p) + 4, len(p)) + p for i, p in enumerate(pk))
    elif variant == "kuznetzov":  # 24-byte record headers
        data = struct.pack("<IHHiIII", 0xA1B2CD34, 2, 4, 0, 0, 65535, 101) + b"".join(
            struct.pack("<IIIIIHBB", T0, i, len(p), len(p), 3, 8, 0, 0) + p
            for i, p in enumerate(pk))
    else:
        data = c.pcap_file(pk, linktype=101, ns=True, big=variant == "big-ns")
    path = tmp_path / "in.pcap"
    path.write_bytes(data)
    for expr in ("", "udp port 1001"):
        assert pipeline(data, expr) == tcpdump(path, expr)


# -- crafted captures: dissection ------------------------------------------------------------
def one_meta(frame: bytes, linktype: int = 1) -> dict:
    r, bs = read(c.pcap_file([frame], linktype=linktype))
    assert r.errors == []
    (m,) = metas(bs)
    return m


def test_ipv4_options_and_bpf_agree_on_the_ports(tmp_path: Path) -> None:
    frame = c.eth(c.ipv4("10.0.0.1", "10.0.0.2", 6, c.tcp(4321, 80, 0x02),
                         options=b"\x01\x01\x01\x00"))
    m = one_meta(frame)
    assert (m["sport"], m["dport"], m["l3_off"], m["l4_off"], m["payload_off"]) == (4321, 80, 14,
                                                                                   38, 58)
    assert m["flags"] == N.FLAG_IP_OPTIONS and m["tcp_flags"] == N.TCP_SYN
    path = tmp_path / "o.pcap"
    path.write_bytes(c.pcap_file([frame]))
    assert pipeline(path.read_bytes(), "tcp port 4321") == tcpdump(path, "tcp port 4321")


def test_ipv6_extension_headers_are_followed_up_to_the_limit() -> None:
    tcp = c.tcp(5000, 443, 0x12)
    chain = c.ext6(43, b"\0" * 6) + c.ext6(60, b"\0" * 14) + c.ext6(6)
    m = one_meta(c.eth(c.ipv6("2001:db8::1", "2001:db8::2", 0, chain + tcp), 0x86DD))
    assert (m["ipver"], m["proto"], m["sport"], m["dport"]) == (6, 6, 5000, 443)
    assert (m["l4_off"], m["flags"]) == (14 + 40 + 32, N.FLAG_IPV6_EXT)
    ah = bytes([17, 1]) + b"\0" * 10  # AH: (1 + 2) * 4 bytes
    m = one_meta(c.eth(c.ipv6("::1", "::2", 51, ah + c.udp(7, 9)), 0x86DD))
    assert (m["proto"], m["sport"], m["dport"]) == (17, 7, 9)
    m = one_meta(c.eth(c.ipv6("::1", "::2", 50, b"\0" * 40), 0x86DD))
    assert (m["proto"], m["sport"], m["l4_off"]) == (50, 0, 0)
    for n, flags, proto in [(N.MAX_IPV6_EXT_HEADERS, N.FLAG_IPV6_EXT, 17),
                            (N.MAX_IPV6_EXT_HEADERS + 1, N.FLAG_IPV6_EXT | N.FLAG_MALFORMED, 60)]:
        chain = c.ext6(60) * (n - 1) + c.ext6(17)
        m = one_meta(c.eth(c.ipv6("::1", "::2", 60, chain + c.udp(1, 2)), 0x86DD))
        assert (m["flags"], m["proto"], m["sport"]) == (flags, proto, 1 if proto == 17 else 0)


def test_vlan_stack_depth_limit() -> None:
    inner = c.ipv4("10.0.0.1", "10.0.0.2", 17, c.udp(1, 2))
    ok = one_meta(c.eth(inner, vlans=((0x88A8, 7),) + ((0x8100, 9),) * (N.MAX_VLAN_DEPTH - 1)))
    assert (ok["ipver"], ok["vlan_count"], ok["vlan_id"], ok["dport"]) == (4, 8, 7, 2)
    deep = one_meta(c.eth(inner, vlans=((0x9100, 1),) * (N.MAX_VLAN_DEPTH + 1)))
    assert (deep["ipver"], deep["ethertype"], deep["flags"]) == (
        0, 0x9100, N.FLAG_VLAN | N.FLAG_MALFORMED)


@pytest.mark.parametrize(("linktype", "frame"), [
    (113, c.sll(c.ipv4("1.2.3.4", "5.6.7.8", 132, c.sctp(2905, 2906)))),
    (276, c.sll2(c.ipv4("1.2.3.4", "5.6.7.8", 132, c.sctp(2905, 2906)))),
    (101, c.ipv4("1.2.3.4", "5.6.7.8", 132, c.sctp(2905, 2906))),
    (228, c.ipv4("1.2.3.4", "5.6.7.8", 132, c.sctp(2905, 2906))),
    (0, struct.pack("<I", 2) + c.ipv4("1.2.3.4", "5.6.7.8", 132, c.sctp(2905, 2906))),
    (108, struct.pack(">I", 2) + c.ipv4("1.2.3.4", "5.6.7.8", 132, c.sctp(2905, 2906))),
])
def test_link_types_reach_the_same_sctp_ports(tmp_path: Path, linktype: int, frame: bytes
                                              ) -> None:
    m = one_meta(frame, linktype)
    assert (m["ipver"], m["proto"], m["sport"], m["dport"]) == (4, 132, 2905, 2906)
    assert m["src"][:4] == bytes([1, 2, 3, 4]) and m["src"][4:] == bytes(12)
    path = tmp_path / "l.pcap"
    path.write_bytes(c.pcap_file([frame], linktype=linktype))
    assert pipeline(path.read_bytes(), "sctp port 2906") == tcpdump(path, "sctp port 2906")


def test_ipv6_raw_link_and_icmp_fields() -> None:
    m = one_meta(c.ipv6("fe80::1", "fe80::2", 58, c.icmp(128, 0)), 229)
    assert (m["ipver"], m["proto"], m["icmp_type"], m["icmp_code"], m["dport"]) == (6, 58, 128, 0,
                                                                                   0)


def test_unknown_linktype_is_stored_as_one_non_ip_flow() -> None:
    r, bs = read(c.pcap_file([b"hello", b"world!"], linktype=147))
    assert r.errors == [] and [m["ipver"] for m in metas(bs)] == [0, 0]
    ix = N.SegmentIndexer()
    ix.add(bs[0][4], 24)
    assert [f[:10] for f in ix.finish()] == [(0, 0, bytes(16), 0, bytes(16), 0, True,
                                              T0 * 10**9, (T0 + 1) * 10**9 + 10**6, 2)]


# -- SegmentIndexer --------------------------------------------------------------------------
def meta(**kw) -> bytes:
    base = dict.fromkeys(N.META_FIELDS, 0)
    base.update(src=bytes(16), dst=bytes(16))
    base.update(kw)
    return META.pack(*(base[f] for f in N.META_FIELDS))


A, B = bytes([10, 0, 0, 1]) + bytes(12), bytes([10, 0, 0, 2]) + bytes(12)


def test_flows_are_normalised_counted_per_direction_and_keep_capture_order() -> None:
    ms = [meta(ts_ns=50, rec_off=0, origlen=100, ipver=4, proto=6, src=B, dst=A, sport=80,
               dport=999, tcp_flags=N.TCP_ACK),
          meta(ts_ns=40, rec_off=116, origlen=60, ipver=4, proto=6, src=A, dst=B, sport=999,
               dport=80, tcp_flags=N.TCP_SYN | N.TCP_ACK),
          meta(ts_ns=70, rec_off=192, origlen=70, ipver=4, proto=6, src=B, dst=A, sport=80,
               dport=999, tcp_flags=N.TCP_SYN),
          meta(ts_ns=60, rec_off=278, origlen=42, ethertype=0x0806)]
    ix = N.SegmentIndexer()
    ix.add(b"".join(ms[:2]), 24)
    ix.add(b"".join(ms[2:]), 1000)
    tcp, arp = ix.finish()
    # a = 10.0.0.1:999 (smaller address); the SYN without ACK came from b
    assert tcp == (4, 6, A, 999, B, 80, False, 40, 70, 1, 60, 2, 170,
                   struct.pack("<III", 24, 140, 1192))
    assert arp == (0, 0, bytes(16), 0x0806, bytes(16), 0, True, 60, 60, 1, 42, 0, 0,
                   struct.pack("<I", 1278))
    assert ix.finish() == []  # finish() reset it; reusable for the next segment
    ix.add(ms[0], 24)
    assert ix.finish()[0][:6] == (4, 6, A, 999, B, 80)


def test_flow_table_grows_past_its_initial_size() -> None:
    n = 20_000
    ms = b"".join(meta(rec_off=4 * i, ipver=4, proto=17, src=A, dst=B, sport=i, dport=53,
                       origlen=i) for i in range(n))
    ix = N.SegmentIndexer()
    ix.add(ms, 0)
    ix.add(ms, 4 * n)
    flows = ix.finish()
    assert [(f[3], f[5], f[9], f[10], f[13]) for f in flows] == [
        (i, 53, 2, 2 * i, struct.pack("<II", 4 * i, 4 * (n + i))) for i in range(n)]


def test_add_returns_the_batch_count_and_its_time_range() -> None:
    """Packets of one batch need not be in time order (pcapng interfaces interleave)."""
    ix = N.SegmentIndexer()
    batch = b"".join(meta(ts_ns=ts, rec_off=16 * i, ipver=4, proto=17, src=A, dst=B)
                     for i, ts in enumerate((30, 10, 20)))
    assert ix.add(batch, 24) == (3, 10, 30)
    assert ix.add(b"", 72) == (0, 0, 0)
    assert ix.packets == 3


def test_a_five_tuple_silent_for_longer_than_the_idle_timeout_starts_a_new_flow() -> None:
    idle = N.FLOW_IDLE_TIMEOUT_NS
    ix = N.SegmentIndexer()
    times = [0, idle, 2 * idle + 1, 2 * idle + 2]  # a gap of exactly idle keeps the flow
    ix.add(b"".join(meta(ts_ns=ts, rec_off=16 * i, ipver=4, proto=17, src=A, dst=B,
                         sport=53, dport=53) for i, ts in enumerate(times)), 0)
    flows = ix.finish()
    assert [(f[7], f[8], f[9], f[13]) for f in flows] == [
        (0, idle, 2, struct.pack("<II", 0, 16)),
        (2 * idle + 1, 2 * idle + 2, 2, struct.pack("<II", 32, 48))]


def test_without_syn_the_initiator_is_the_first_sender() -> None:
    ix = N.SegmentIndexer()
    ix.add(meta(ipver=4, proto=17, src=B, dst=A, sport=53, dport=53), 24)
    ix.add(meta(ipver=4, proto=17, src=A, dst=B, sport=53, dport=53), 100)
    (f,) = ix.finish()
    assert (f[2], f[4], f[6], f[9], f[11]) == (A, B, False, 1, 1)


def test_fragments_before_their_first_fragment_are_patched_into_its_flow() -> None:
    frag = N.FLAG_FRAGMENT
    first = N.FLAG_FRAGMENT | N.FLAG_FIRST_FRAGMENT
    v6a, v6b = c.ip6("2001:db8::1"), c.ip6("2001:db8::2")
    ms = [meta(rec_off=0, ipver=4, proto=17, src=A, dst=B, frag_id=7, flags=frag, origlen=10),
          meta(rec_off=10, ipver=4, proto=17, src=A, dst=B, frag_id=7, flags=first, sport=5,
               dport=6, origlen=20),
          meta(rec_off=20, ipver=4, proto=17, src=A, dst=B, frag_id=8, flags=frag, origlen=30),
          # IPv6: the fragment header's next header (60) differs from the first fragment's
          # final protocol (17); (src, dst, id) alone identify the datagram
          meta(rec_off=30, ipver=6, proto=60, src=v6a, dst=v6b, frag_id=9, flags=frag),
          meta(rec_off=40, ipver=6, proto=17, src=v6a, dst=v6b, frag_id=9, flags=first,
               sport=1, dport=2)]
    ix = N.SegmentIndexer()
    ix.add(b"".join(ms), 0)
    flows = {(f[0], f[3], f[5]): (f[9], f[10], f[13]) for f in ix.finish()}
    assert flows == {(4, 5, 6): (2, 30, struct.pack("<II", 0, 10)),
                     (4, 0, 0): (1, 30, struct.pack("<I", 20)),
                     (6, 1, 2): (2, 0, struct.pack("<II", 30, 40))}


def test_pending_fragment_groups_are_capped() -> None:
    """Beyond MAX_PENDING_FRAG_GROUPS, an early fragment goes straight to the ports-0 flow
    and is not patched when its first fragment turns up."""
    n = N.MAX_PENDING_FRAG_GROUPS
    early = b"".join(meta(rec_off=i, ipver=4, proto=17, src=A, dst=B, frag_id=i,
                          flags=N.FLAG_FRAGMENT) for i in range(n + 1))
    late = meta(rec_off=n + 1, ipver=4, proto=17, src=A, dst=B, frag_id=n, sport=1, dport=2,
                flags=N.FLAG_FRAGMENT | N.FLAG_FIRST_FRAGMENT)
    ix = N.SegmentIndexer()
    ix.add(early + late, 0)
    counts = {(f[3], f[5]): f[9] + f[11] for f in ix.finish()}
    assert counts == {(0, 0): n + 1, (1, 2): 1}


def test_indexer_rejects_bad_meta_and_offsets_beyond_4_gib() -> None:
    ix = N.SegmentIndexer()
    with pytest.raises(ValueError, match="not a multiple of META_SIZE"):
        ix.add(b"\0" * (N.META_SIZE - 1), 0)
    with pytest.raises(ValueError, match="does not fit in 32 bits"):
        ix.add(meta(rec_off=10), 2**32 - 5)
    assert ix.packets == 0


# -- Filter and scan -------------------------------------------------------------------------
def test_filter_compiles_like_tcpdump_r() -> None:
    assert N.Filter("", 1, 65535).expr == ""
    assert N.Filter("ip broadcast", 1, 65535).linktype == 1  # netmask 0, as tcpdump -r
    with pytest.raises(ValueError, match="^can't parse filter expression: syntax error$"):
        N.Filter("tcp port", 1, 65535)
    with pytest.raises(ValueError, match="^expression rejects all packets$"):
        N.Filter("udp and tcp", 1, 65535)
    N.Filter("udp", 101, 65535)  # LINKTYPE_RAW is mapped to DLT_RAW for libpcap


def test_scan_time_window_max_out_offsets_and_ns_to_us() -> None:
    pk = [tcp_pkt(i, payload=b"w" * 60) for i in range(5)]
    data = c.pcap_header(ns=True) + b"".join(c.record(T0 + i, 999_999_999, p)
                                             for i, p in enumerate(pk))
    _, bs = read(data)
    lt, snap, prec, seg = segment(bs)
    ts = [(T0 + i) * 10**9 + 999_999_999 for i in range(5)]
    out, tsb, pos, seen = N.scan(seg, 24, len(seg), tsprec=9, snaplen=snap, t_start_ns=ts[1],
                                 t_end_ns=ts[3])
    assert struct.unpack("<2q", tsb) == tuple(ts[1:3]) and (pos, seen) == (len(seg), 5)
    assert split(out)[0][:8] == struct.pack("<II", T0 + 1, 999_999)
    rec = 16 + len(pk[0])
    out, tsb, pos, seen = N.scan(seg, 24, len(seg), tsprec=9, snaplen=snap, max_out=2 * rec + 5)
    assert (len(out), pos, seen) == (2 * rec, 24 + 2 * rec, 2)
    out, _, pos, _ = N.scan(seg, 24, len(seg), tsprec=9, snaplen=snap, max_out=0)
    assert (len(out), pos) == (rec, 24 + rec)  # always at least one record
    _, _, pos, seen = N.scan(seg, 24, len(seg), tsprec=9, snaplen=snap, max_examined=3)
    assert (pos, seen) == (24 + 3 * rec, 3)
    idx = struct.pack("<3I", 24 + 4 * rec, 24, 24 + 2 * rec)
    out, tsb, pos, seen = N.scan(seg, 1, 3, tsprec=9, snaplen=20, offsets=idx)
    assert (struct.unpack("<2q", tsb), pos, seen) == ((ts[0], ts[2]), 3, 2)
    assert [r[8:12] for r in split(out)] == [struct.pack("<I", 20)] * 2  # cut to snaplen


def test_scan_of_a_corrupt_segment_raises_with_the_offset() -> None:
    seg = c.pcap_header() + c.record(T0, 0, b"a" * 40) + c.record(T0, 0, b"b" * 40)[:30]
    with pytest.raises(ValueError, match="record at byte 80 has caplen 40, past the end"):
        N.scan(seg, 24, len(seg), tsprec=6, snaplen=65535)
    with pytest.raises(ValueError, match="record offset 4000 .index 0. is outside"):
        N.scan(seg, 0, 1, tsprec=6, snaplen=65535, offsets=struct.pack("<I", 4000))
    with pytest.raises(ValueError, match="crosses the scan end 70"):
        N.scan(seg, 24, 70, tsprec=6, snaplen=65535)
    with pytest.raises(ValueError, match="tsprec must be 6 or 9"):
        N.scan(seg, 24, 80, tsprec=3, snaplen=65535)
    with pytest.raises(TypeError):
        N.scan(seg, 24, 80, snaplen=65535)


# -- API behaviour ---------------------------------------------------------------------------
def test_reader_api_state() -> None:
    r = N.Reader("cap.pcap")
    assert (r.format, r.packets, r.offset, r.name) == (None, 0, 0, "cap.pcap")
    r.feed(c.pcap_header())
    assert r.format == "pcap" and r.offset == 24
    r.finish()
    assert r.finish() == []
    with pytest.raises(ValueError, match="cap.pcap: feed.. after finish"):
        r.feed(b"x")


def test_readers_in_threads_give_the_same_result() -> None:
    data = corpus_bytes("zeek-http-206-ranges-two-connections")
    want = records(read(data)[1])
    got: list[bytes] = []

    def work() -> None:
        got.append(records(read(data, piece=4096)[1]))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [want] * 4


def test_fuzz_harness_passes_its_seeds_and_invariants(tmp_path: Path) -> None:
    """The atheris harness (tests/fuzz/fuzz_native.py) on the installed module, briefly:
    seeds plus a few hundred mutations must keep every invariant it checks."""
    harness = Path(__file__).parent / "fuzz" / "fuzz_native.py"
    env = {**os.environ, "PCAPWIRE_FUZZ_BUILD": "0"}
    p = subprocess.run([sys.executable, str(harness), "-runs=400", "-seed=1",
                        f"-artifact_prefix={tmp_path}/", str(tmp_path / "corpus")],
                       cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Done 400 runs" in p.stderr
