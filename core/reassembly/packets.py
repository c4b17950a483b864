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
#: The native meta with only the fields used here (the rest are pad bytes).
_FIELDS = struct.Struct("<qII8xII16s16sHHH2xBBB1x2x2xHH4x")
assert _FIELDS.size == _META.size
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
    packets = segments = not_ip = other = frags = damaged = 0
    u16 = _U16.unpack_from
    new = tuple.__new__
    try:
        for (ts_ns, rec_off, caplen, seq, ack, src, dst, sport, dport, flags, ipver, proto,
             tcp_flags, l3_off, l4_off) in _FIELDS.iter_unpack(meta):
            packets += 1
            if ipver != 4 and ipver != 6:
                not_ip += 1
                continue
            if proto != 6 and proto != 17:
                other += 1
                continue
            if flags & _FRAG:
                frags += 1
                continue
            if flags & _SKIP_FLAGS or not l4_off:
                damaged += 1
                continue
            base = rec_off + 16
            if ipver == 4:
                total = u16(view, base + l3_off + 2)[0]
                ip_end = l3_off + total if total else caplen
            else:
                plen = u16(view, base + l3_off + 4)[0]
                ip_end = l3_off + 40 + plen if plen else caplen
            if proto == 6:
                start = l4_off + ((view[base + l4_off + 12] >> 4) * 4)
            else:
                start = l4_off + 8
                tcp_flags = 0
            if start > ip_end:
                damaged += 1
                continue
            end = ip_end if ip_end < caplen else caplen
            segments += 1
            yield new(Segment, (ts_ns / 1e9, ipver, proto, src, sport, dst, dport, seq, ack,
                                tcp_flags, view[base + start:base + end].tobytes(),
                                ip_end - start))
    finally:
        stats.packets += packets
        stats.segments += segments
        stats.not_ip += not_ip
        stats.other_proto += other
        stats.fragments += frags
        stats.damaged += damaged


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
    buf = bytearray(READ_BLOCK)  # reused: the reader copies what it keeps between feeds
    view = memoryview(buf)
    with path.open("rb", buffering=0) as fh:
        while size := fh.readinto(buf):
            for batch in reader.feed(view[:size]):
                yield from segments_from_batch(batch, stats)
            if reader.format is None and reader.errors:
                break
        for batch in reader.finish():
            yield from segments_from_batch(batch, stats)
    stats.capture_errors.extend(reader.errors)
    if reader.format is None:
        off, msg = reader.errors[0] if reader.errors else (0, "not a pcap or pcapng file")
        raise CaptureFormatError(str(path), off, msg)
