"""From capture bytes to the TCP/UDP segments the reassembler needs.

Parsing and dissection are native (:mod:`pcapwire._native`: pcap/pcapng records and the
88-byte per-packet meta); this module only slices payloads out of the records. Packets
that cannot carry stream bytes are counted, not fed: non-IP, not TCP/UDP, IP fragments
(not reassembled here; ``fragments``), headers cut by the snaplen or malformed.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from pcapwire import _native
from pcapwire.errors import CaptureFormatError
from pcapwire.records import PcapChunk

#: Bytes of a capture file handed to the native reader at a time.
READ_BLOCK = 4 * 2**20
_META = struct.Struct(_native.META_STRUCT)
_SKIP_FLAGS = _native.FLAG_TRUNCATED | _native.FLAG_MALFORMED
_FRAG = _native.FLAG_FRAGMENT
_U16 = struct.Struct("!H")


class Segment(NamedTuple):
    """One TCP segment or UDP datagram. Addresses are 16 raw bytes (IPv4 in the first 4);
    ``wire_len`` is the payload length the IP header announces (``len(payload)`` is
    smaller when the capture cut the packet)."""

    ts: float
    ipver: int
    proto: int
    src: bytes
    sport: int
    dst: bytes
    dport: int
    seq: int
    ack: int
    flags: int
    payload: bytes
    wire_len: int


@dataclass
class DecodeStats:
    packets: int = 0
    segments: int = 0
    not_ip: int = 0
    other_proto: int = 0
    fragments: int = 0
    damaged: int = 0  # truncated or malformed headers
    capture_errors: list[tuple[int, str]] = field(default_factory=list)


def address(raw: bytes, ipver: int) -> str:
    """Text form of a 16-byte address field from the native meta."""
    if ipver == 4:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    return socket.inet_ntop(socket.AF_INET6, raw)


def segments_from_batch(batch: tuple, stats: DecodeStats) -> Iterator[Segment]:
    """The segments of one native ``Batch``."""
    _lt, _snap, _prec, records, meta, _off = batch
    view = memoryview(records)
    for m in _META.iter_unpack(meta):
        (ts_ns, rec_off, caplen, _origlen, _fid, seq, ack, src, dst, sport, dport, flags,
         _et, ipver, proto, tcp_flags, _vc, _vid, _it, _ic, l3_off, l4_off, _po,
         _pl) = m
        stats.packets += 1
        if ipver not in (4, 6):
            stats.not_ip += 1
            continue
        if proto != 6 and proto != 17:
            stats.other_proto += 1
            continue
        if flags & _FRAG:
            stats.fragments += 1
            continue
        if flags & _SKIP_FLAGS or not l4_off:
            stats.damaged += 1
            continue
        base = rec_off + 16
        pkt = view[base:base + caplen]
        if ipver == 4:
            total = _U16.unpack_from(pkt, l3_off + 2)[0]
            ip_end = l3_off + total if total else caplen
        else:
            plen = _U16.unpack_from(pkt, l3_off + 4)[0]
            ip_end = l3_off + 40 + plen if plen else caplen
        if proto == 6:
            start = l4_off + ((pkt[l4_off + 12] >> 4) * 4)
        else:
            start = l4_off + 8
        if start > ip_end:
            stats.damaged += 1
            continue
        payload = bytes(pkt[start:min(ip_end, caplen)])
        stats.segments += 1
        yield Segment(ts_ns / 1e9, ipver, proto, src, sport, dst, dport, seq, ack,
                      tcp_flags if proto == 6 else 0, payload, ip_end - start)


def segments_from_bytes(data: bytes | memoryview, stats: DecodeStats,
                        name: str = "<chunk>") -> Iterator[Segment]:
    """Segments of a complete capture held in memory (a :class:`PcapChunk`'s data)."""
    reader = _native.Reader(name)
    batches = reader.feed(data) + reader.finish()
    stats.capture_errors.extend(reader.errors)
    for batch in batches:
        yield from segments_from_batch(batch, stats)


def segments_from_chunk(chunk: PcapChunk, stats: DecodeStats) -> Iterator[Segment]:
    return segments_from_bytes(chunk.data, stats, f"chunk {chunk.query_id}#{chunk.seq}")


def segments_from_file(path: str | Path, stats: DecodeStats) -> Iterator[Segment]:
    """Segments of a pcap/pcapng file, read in :data:`READ_BLOCK` pieces; a file that is
    not a capture at all raises :class:`CaptureFormatError`."""
    path = Path(path)
    reader = _native.Reader(str(path))
    with path.open("rb") as fh:
        while block := fh.read(READ_BLOCK):
            for batch in reader.feed(block):
                yield from segments_from_batch(batch, stats)
            if reader.format is None and reader.errors:
                break
        for batch in reader.finish():
            yield from segments_from_batch(batch, stats)
    stats.capture_errors.extend(reader.errors)
    if reader.format is None:
        off, msg = reader.errors[0] if reader.errors else (0, "not a pcap or pcapng file")
        raise CaptureFormatError(str(path), off, msg)
