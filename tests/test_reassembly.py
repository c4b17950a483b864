"""TCP/UDP reassembly (pcapwire.reassembly): corpus captures checked against tshark's
``follow,tcp,raw`` and Zeek's own baseline, and crafted packets for each policy."""

from __future__ import annotations

import hashlib
import re
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import CASES, corpus_file
from pcapwire.pcapformat import pcap_header
from pcapwire.reassembly import (
    Close,
    Data,
    End,
    Gap,
    Limits,
    Open,
    Reassembler,
    StreamCollector,
    streams_from_events,
    streams_from_file,
)
from pcapwire.records import PcapChunk

# ---- crafted packets -------------------------------------------------------------------------
CLI, SRV = "10.0.0.1", "10.0.0.2"
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def _ip4(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def frame(src: str, sport: int, dst: str, dport: int, seq: int, ack: int, flags: int,
          data: bytes = b"", proto: int = 6, cut: int = 0) -> bytes:
    """Ethernet/IPv4/TCP (or UDP) frame; ``cut`` bytes of payload are not captured."""
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, seq % 2**32, ack % 2**32, 0x50, flags,
                         65535, 0, 0) + data
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, proto, 0,
                     _ip4(src), _ip4(dst))
    pkt = b"\x02\0\0\0\0\2\x02\0\0\0\0\1\x08\x00" + ip + l4
    return pkt[:len(pkt) - cut] if cut else pkt


def chunk(frames: list[bytes], t0: float = 1000.0) -> PcapChunk:
    recs = []
    for i, f in enumerate(frames):
        ts = int((t0 + i * 0.001) * 1e6)
        recs.append(struct.pack("<IIII", ts // 10**6, ts % 10**6, len(f), len(f)) + f)
    data = pcap_header(1, 65535) + b"".join(recs)
    return PcapChunk("q", 0, 1, 65535, data, len(frames), t0, t0 + len(frames) * 0.001)


def events(frames: list[bytes], limits: Limits | None = None) -> list:
    r = Reassembler(limits)
    return [*r.feed_chunk(chunk(frames)), *r.flush()]


def c2s(seq: int, flags: int, data: bytes = b"", ack: int = 0, **kw: int) -> bytes:
    return frame(CLI, 40000, SRV, 80, seq, ack, flags, data, **kw)


def s2c(seq: int, flags: int, data: bytes = b"", ack: int = 0, **kw: int) -> bytes:
    return frame(SRV, 80, CLI, 40000, seq, ack, flags, data, **kw)


def handshake(isn_c: int = 1000, isn_s: int = 5000) -> list[bytes]:
    return [c2s(isn_c, SYN), s2c(isn_s, SYN | ACK, ack=isn_c + 1),
            c2s(isn_c + 1, ACK, ack=isn_s + 1)]


def stream_of(evs: list, direction: str) -> tuple[bytes, list[tuple[int, int]]]:
    data = b"".join(e.data for e in evs if isinstance(e, Data) and e.direction == direction)
    gaps = [(e.offset, e.length) for e in evs if isinstance(e, Gap) and e.direction == direction]
    return data, gaps


def check_contiguous(evs: list) -> None:
    """The contract: per (conn, direction) offsets are contiguous from 0; one Open first,
    End per direction, Close last."""
    pos: dict[tuple[int, str], int] = {}
    opened, closed = set(), set()
    for e in evs:
        if isinstance(e, Open):
            assert e.conn not in opened
            opened.add(e.conn)
        elif isinstance(e, (Data, Gap)):
            assert e.conn in opened and e.conn not in closed
            k = (e.conn, e.direction)
            assert e.offset == pos.get(k, 0)
            pos[k] = e.offset + (len(e.data) if isinstance(e, Data) else e.length)
        elif isinstance(e, End):
            assert e.length == pos.get((e.conn, e.direction), 0)
        elif isinstance(e, Close):
            closed.add(e.conn)
    assert opened == closed


# ---- crafted cases ---------------------------------------------------------------------------
def test_in_order_with_handshake_and_fin() -> None:
    evs = events([*handshake(), c2s(1001, PSH | ACK, b"GET / HTTP/1.0\r\n\r\n", 5001),
                  s2c(5001, PSH | ACK, b"HTTP/1.0 200 OK\r\n\r\nhi", 1019),
                  c2s(1019, FIN | ACK, ack=5022), s2c(5022, FIN | ACK, ack=1020)])
    check_contiguous(evs)
    assert [type(e).__name__ for e in evs] == ["Open", "Data", "Data", "End", "End", "Close"]
    assert evs[0].handshake and evs[0].key.src == CLI and evs[0].key.dport == 80
    assert stream_of(evs, "orig") == (b"GET / HTTP/1.0\r\n\r\n", [])
    assert stream_of(evs, "resp") == (b"HTTP/1.0 200 OK\r\n\r\nhi", [])
    assert evs[-1].reason == "fin"
    recs = list(streams_from_events(evs))
    assert [r.direction for r in recs] == ["orig", "resp"]
    assert all(r.complete for r in recs)
    assert recs[0].id.endswith("-orig") and recs[0].id[:-5] == recs[1].id[:-5]


def test_out_of_order_segments_are_reordered() -> None:
    evs = events([*handshake(), c2s(1007, ACK, b"world"), c2s(1001, ACK, b"hello "),
                  c2s(1012, FIN | ACK)])
    check_contiguous(evs)
    assert stream_of(evs, "orig") == (b"hello world", [])


def test_retransmission_delivered_once_and_first_copy_wins() -> None:
    evs = events([*handshake(), c2s(1001, ACK, b"AAAA"), c2s(1001, ACK, b"BBBB"),
                  c2s(1005, ACK, b"CCCC"), c2s(1009, FIN | ACK)])
    check_contiguous(evs)
    assert stream_of(evs, "orig") == (b"AAAACCCC", [])
    st = evs[-1].stats.orig
    assert (st.retransmitted, st.inconsistent, st.inconsistent_at) == (4, 4, [(0, 4)])


def test_retransmission_check_window() -> None:
    """Delivered bytes are compared within the last retransmit_check_bytes..2x of them:
    with 100, after 300 bytes in 30-byte segments the window is [110, 300)."""
    segs = [c2s(1001 + i, ACK, bytes([i // 30]) * 30) for i in range(0, 300, 30)]
    evs = events([*handshake(), *segs, c2s(1001 + 100, ACK, b"\xff" * 30),
                  c2s(1001 + 280, ACK, b"\x09" * 10 + b"\xff" * 10), c2s(1301, FIN | ACK)],
                 Limits(retransmit_check_bytes=100))
    st = evs[-1].stats.orig
    assert (st.retransmitted, st.inconsistent, st.inconsistent_at) == (50, 30,
                                                                       [(110, 20), (280, 20)])


def test_overlap_of_held_segments_first_seen_wins() -> None:
    # two out-of-order segments overlapping each other, then the hole is filled
    evs = events([*handshake(), c2s(1005, ACK, b"xxyy"), c2s(1007, ACK, b"ZZww"),
                  c2s(1001, ACK, b"head"), c2s(1011, FIN | ACK)])
    check_contiguous(evs)
    assert stream_of(evs, "orig") == (b"headxxyyww", [])
    assert evs[-1].stats.orig.inconsistent == 2


def test_gap_declared_when_peer_acknowledges_unseen_bytes() -> None:
    evs = events([*handshake(), c2s(1001, ACK, b"abc"), c2s(1014, ACK, b"tail"),
                  s2c(5001, ACK, ack=1018)])  # the server got everything: 10 bytes missed
    check_contiguous(evs)
    kinds = [(type(e).__name__, getattr(e, "offset", None)) for e in evs[1:4]]
    assert kinds == [("Data", 0), ("Gap", 3), ("Data", 13)]
    assert stream_of(evs, "orig") == (b"abctail", [(3, 10)])


def test_hole_without_ack_waits_then_becomes_gap_at_end() -> None:
    evs = events([*handshake(), c2s(1001, ACK, b"abc"), c2s(1010, ACK, b"xyz")])
    check_contiguous(evs)
    data_events = [e for e in evs if isinstance(e, (Data, Gap))]
    assert isinstance(data_events[-1], Data) and data_events[-1].data == b"xyz"
    assert stream_of(evs, "orig") == (b"abcxyz", [(3, 6)])
    assert evs[-1].reason == "eof"
    rec = next(r for r in streams_from_events(evs) if r.direction == "orig")
    assert rec.gaps == [(3, 6)] and not rec.complete


def test_truncated_segment_keeps_captured_bytes_and_flags_the_rest() -> None:
    evs = events([*handshake(), c2s(1001, ACK, b"0123456789", cut=4), c2s(1011, ACK, b"end"),
                  s2c(5001, ACK, ack=1014)])
    check_contiguous(evs)
    assert stream_of(evs, "orig") == (b"012345end", [(6, 4)])
    assert evs[-1].stats.orig.truncated_segments == 1


def test_sequence_number_wraparound() -> None:
    isn = 2**32 - 3
    evs = events([*handshake(isn_c=isn), c2s(isn + 1, ACK, b"abcd"),
                  c2s(isn + 5, ACK, b"efgh"), c2s(isn + 9, FIN | ACK)])
    check_contiguous(evs)
    assert stream_of(evs, "orig") == (b"abcdefgh", [])
    assert evs[-1].reason == "eof" or evs[-2].direction == "orig"


def test_rst_ends_both_directions() -> None:
    evs = events([*handshake(), c2s(1001, ACK, b"req"), s2c(5001, RST | ACK, ack=1004),
                  c2s(1004, ACK, b"late")])  # within TIME_WAIT: ignored, no new connection
    check_contiguous(evs)
    assert [type(e).__name__ for e in evs] == ["Open", "Data", "End", "End", "Close"]
    assert evs[-1].reason == "rst"


def test_mid_stream_flow_orients_to_the_service_port() -> None:
    evs = events([s2c(9000, ACK, b"HTTP/1.1 200 OK\r\n", ack=2000),
                  c2s(2000, ACK, b"GET /next", ack=9017)])
    check_contiguous(evs)
    assert not evs[0].handshake
    assert (evs[0].key.src, evs[0].key.dport) == (CLI, 80)
    assert stream_of(evs, "resp")[0] == b"HTTP/1.1 200 OK\r\n"
    recs = list(streams_from_events(evs))
    assert all(not r.complete for r in recs)


def test_port_reuse_starts_a_new_connection() -> None:
    first = [*handshake(), c2s(1001, ACK, b"one"), c2s(1004, FIN | ACK), s2c(5001, FIN | ACK,
                                                                              ack=1005)]
    second = [c2s(777, SYN), s2c(888, SYN | ACK, ack=778), c2s(778, ACK, b"two", ack=889)]
    evs = events(first + second)
    check_contiguous(evs)
    opens = [e for e in evs if isinstance(e, Open)]
    assert len(opens) == 2 and opens[0].conn != opens[1].conn
    assert stream_of([e for e in evs if getattr(e, "conn", 0) == opens[1].conn], "orig")[0] \
        == b"two"


def test_syn_data_is_offset_zero() -> None:
    evs = events([c2s(1000, SYN, b"fastopen"), s2c(5000, SYN | ACK, ack=1009),
                  c2s(1009, ACK, b"!", ack=5001)])
    assert stream_of(evs, "orig") == (b"fastopen!", [])


def test_pending_limit_per_direction_forces_a_gap() -> None:
    limits = Limits(pending_bytes_per_direction=8)
    evs = events([*handshake(), c2s(1001, ACK, b"a"), c2s(1010, ACK, b"12345"),
                  c2s(1015, ACK, b"6789")], limits)
    check_contiguous(evs)
    assert stream_of(evs, "orig") == (b"a123456789", [(1, 8)])
    assert evs[-1].stats.orig.forced_gaps == 1


def test_pending_limit_total_forces_a_gap() -> None:
    limits = Limits(pending_bytes_total=6)
    r = Reassembler(limits)
    evs = [*r.feed_chunk(chunk([*handshake(), c2s(1001, ACK, b"a"), c2s(1010, ACK, b"12345"),
                                c2s(1015, ACK, b"67")])), *r.flush()]
    check_contiguous(evs)
    assert stream_of(evs, "orig") == (b"a1234567", [(1, 8)])
    assert r.stats.forced_gaps_total == 1 and r.stats.pending_bytes == 0


def test_max_connections_evicts_the_least_recent() -> None:
    r = Reassembler(Limits(max_connections=2))
    frames = [frame(CLI, 40000 + i, SRV, 80, 100, 0, SYN) for i in range(3)]
    evs = [*r.feed_chunk(chunk(frames))]
    closes = [e for e in evs if isinstance(e, Close)]
    assert [c.reason for c in closes] == ["evicted"] and closes[0].key.sport == 40000
    assert r.stats.evicted == 1


def test_idle_timeout_closes_connections() -> None:
    r = Reassembler(Limits(tcp_idle_timeout=5.0))
    a = chunk([*handshake(), c2s(1001, ACK, b"x")], t0=1000.0)
    b = chunk([frame("10.9.9.9", 1, "10.9.9.8", 2, 1, 0, SYN)], t0=1020.0)
    evs = [*r.feed_chunk(a), *r.feed_chunk(b)]
    closes = [e for e in evs if isinstance(e, Close)]
    assert [c.reason for c in closes] == ["timeout"]


def test_udp_datagrams_concatenate_per_direction() -> None:
    q = frame(CLI, 5353, SRV, 53, 0, 0, 0, b"query", proto=17)
    a = frame(SRV, 53, CLI, 5353, 0, 0, 0, b"answer", proto=17)
    evs = events([q, a, q])
    check_contiguous(evs)
    assert stream_of(evs, "orig") == (b"queryquery", [])
    assert stream_of(evs, "resp") == (b"answer", [])
    assert evs[0].key.proto == 17 and evs[0].key.dport == 53


def test_stream_collector_limits() -> None:
    evs = events([*handshake(), c2s(1001, ACK, b"0123456789"), c2s(1011, FIN | ACK)])
    col = StreamCollector(max_stream_bytes=4)
    recs = [r for e in evs for r in col.push(e)]
    assert recs[0].data == b"0123" and not recs[0].complete and col.truncated == 6


# ---- corpus ----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["zeek-ftp-retr-passive", "zeek-ftp-ipv6-epsv-eprt"])
def test_corpus_payloads_match_the_manifest(case: str) -> None:
    recs = {(r.flow.sport, r.flow.dport, r.direction): r
            for r in streams_from_file(corpus_file(case))}
    streams = CASES[case]["computed"]["tcp_stream_payloads"]["streams"]
    assert streams
    for s in streams:
        f = s["flow"]
        for direction, key in (("orig", "client_to_server"), ("resp", "server_to_client")):
            rec = recs.get((f["sport"], f["dport"], direction))
            data = rec.data if rec else b""
            assert len(data) == s[key]["size"]
            assert hashlib.sha256(data).hexdigest() == s[key]["sha256"]
            if rec:
                assert rec.gaps == [] and rec.complete


def _tshark_follow(path: Path) -> bytes:
    out = subprocess.run(["tshark", "-r", str(path), "-q", "-z", "follow,tcp,raw,0"],
                         capture_output=True, text=True, check=True).stdout
    lines = [ln for ln in out.splitlines()[6:] if ln and not ln.startswith(("=", "\t"))]
    return b"".join(bytes.fromhex(ln.strip()) for ln in lines)


MISSING = re.compile(rb"\[(\d+) bytes missing in capture file\]\x00")


def test_inconsistent_retransmissions_against_tshark_and_zeek() -> None:
    """zeek/zeek tcp/reassembly.pcap: truncated packets, overlapping retransmissions with
    different content. tshark's follow output (in the manifest) marks each hole with
    ``[N bytes missing in capture file]``: our gaps are exactly those holes. Our bytes are
    tshark's except where the two copies of an overlap differ: there we keep the first
    copy (the one Zeek reports as already delivered in rexmit_inconsistency), tshark the
    later in-order one."""
    path = corpus_file("zeek-tcp-inconsistent-retransmissions")
    expected = CASES["zeek-tcp-inconsistent-retransmissions"]["computed"][
        "tcp_stream_payloads"]["streams"][0]["client_to_server"]
    raw = _tshark_follow(path)
    assert hashlib.sha256(raw).hexdigest() == expected["sha256"]  # tshark as in the manifest
    r = Reassembler()
    evs = list(r.feed_file(path))
    check_contiguous(evs)
    rec = next(x for x in streams_from_events(evs) if x.direction == "orig")
    # gaps: same places, same lengths as tshark's markers
    tshark_gaps, pos, stream_pos = [], 0, 0
    for m in MISSING.finditer(raw):
        stream_pos += m.start() - pos
        tshark_gaps.append((stream_pos, int(m.group(1))))
        stream_pos += int(m.group(1))
        pos = m.end()
    assert rec.gaps == tshark_gaps
    assert len(rec.gaps) == 9 and sum(n for _, n in rec.gaps) == 4376
    stripped = MISSING.sub(b"", raw)
    assert len(rec.data) == len(stripped) == 28832
    close = next(e for e in evs if isinstance(e, Close))
    st = close.stats.orig
    assert st.truncated_segments == 5  # Zeek: 5 x truncated_IP_len
    assert st.inconsistent == 151

    def to_stream(i: int) -> int:
        shift = 0
        for off, n in rec.gaps:
            if off <= i + shift:
                shift += n
        return i + shift

    differ = [to_stream(i) for i, (a, b) in enumerate(zip(rec.data, stripped, strict=True))
              if a != b]
    inconsistent = [(o, o + n) for o, n in st.inconsistent_at]
    assert differ and all(any(lo <= d < hi for lo, hi in inconsistent) for d in differ)
    # Zeek's rexmit_inconsistency t1 (what it had delivered) is what we delivered
    lines = CASES["zeek-tcp-inconsistent-retransmissions"]["expect"]["zeek_events"]["lines"]
    kept = [ln.split("ctx=[]], ")[1].split(", ")[0].encode() for ln in lines
            if ln.startswith("rexmit_inconsistency") and len(ln) < 200]
    assert len(kept) == 3
    assert all(t1 in rec.data for t1 in kept)
    assert sum(t1 not in stripped for t1 in kept) == 2  # where tshark kept the later copy


def test_corpus_http_post_retransmissions_equal_tshark() -> None:
    path = corpus_file("arkime-http-post-retransmissions")
    raw = _tshark_follow(path)
    assert not MISSING.search(raw)
    recs = list(streams_from_file(path))
    assert len(recs) == 2
    orig = next(r for r in recs if r.direction == "orig")
    assert orig.data == raw and orig.gaps == [] and orig.complete


def test_corpus_every_capture_keeps_the_contract() -> None:
    for case in CASES:
        path = corpus_file(case)
        if path.suffix == ".gz" or CASES[case]["capture"].get("format") is None:
            continue
        r = Reassembler()
        try:
            evs = list(r.feed_file(path))
        except Exception as exc:  # only non-captures may fail
            pytest.fail(f"{case}: {exc}")
        check_contiguous(evs)


def test_chunked_feed_equals_file_feed() -> None:
    from pcapwire.workflow.sources import iter_file_chunks

    path = corpus_file("zeek-http-206-ranges-two-connections")
    whole = [(r.id, hashlib.sha256(r.data).hexdigest(), r.gaps)
             for r in streams_from_file(path)]
    r = Reassembler()
    col = StreamCollector()
    parts = []
    for c in iter_file_chunks(path, chunk_bytes=8192):
        for e in r.feed_chunk(c):
            parts += col.push(e)
    for e in r.flush():
        parts += col.push(e)
    assert [(p.id, hashlib.sha256(p.data).hexdigest(), p.gaps) for p in parts] == whole
    assert len(whole) == 4 and sum(len(p.data) for p in parts) == 557058



@pytest.mark.parametrize("limits", [None, Limits(
    pending_bytes_per_direction=3000, pending_segments_per_direction=3,
    pending_bytes_total=5000, retransmit_check_bytes=100, max_connections=5,
    tcp_idle_timeout=20)], ids=["default-limits", "tight-limits"])
def test_fast_path_equals_segment_by_segment(limits: Limits | None) -> None:
    """feed_file/feed_chunk take a fast path for in-order TCP segments; feeding the same
    segments one at a time through feed() takes the general one. Same events, same
    counters, on every corpus capture and on crafted out-of-order, retransmitted and
    truncated traffic."""
    from dataclasses import asdict

    from pcapwire.reassembly.packets import segments_from_chunk, segments_from_file

    crafted = chunk(handshake() + [
        c2s(1001, ACK, b"GET / HTTP/1.1\r\n\r\n", ack=5001), s2c(5001, ACK, b"abc", ack=1019),
        s2c(5007, ACK, b"ghi", ack=1019), s2c(5004, ACK, b"def", ack=1019),
        s2c(5004, ACK, b"dxf", ack=1019), c2s(1019, ACK, ack=5013),
        s2c(5010, ACK, b"jklmn", ack=1019, cut=2), s2c(5015, ACK, b"opq", ack=1019),
        c2s(1019, ACK, ack=5030), s2c(5030, FIN | ACK, b"end", ack=1019),
        c2s(1019, FIN | ACK, ack=5034), s2c(5034, ACK, ack=1020)])
    sources: list[Path | PcapChunk] = [
        corpus_file(c) for c in CASES
        if corpus_file(c).suffix != ".gz" and CASES[c]["capture"].get("format") is not None]
    for source in [*sources, crafted]:
        fast, slow = Reassembler(limits), Reassembler(limits)
        if isinstance(source, PcapChunk):
            got = [*fast.feed_chunk(source), *fast.flush()]
            segments = list(segments_from_chunk(source, slow.stats.decode))
        else:
            got = list(fast.feed_file(source))
            segments = list(segments_from_file(source, slow.stats.decode))
        want = [e for seg in segments for e in slow.feed(seg)] + slow.flush()
        assert got == want, source
        assert asdict(fast.stats) == asdict(slow.stats), source
