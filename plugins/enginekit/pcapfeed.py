"""Join a run's PCAP chunks into the one continuous capture an engine reads.

Every :class:`~pcapwire.records.PcapChunk` is a complete pcap (24-byte file header, then
records), so an analyzer can look at any chunk alone. An engine that keeps state across
chunks (Suricata's flow table, Zeek's connections) must instead see *one* capture: the
first chunk's header once, then only the records of every chunk. :class:`PcapJoiner` does
that and refuses what would corrupt the stream (a chunk that is not a classic pcap, or
whose byte order, timestamp precision or link type differs from the first chunk's).
"""

from __future__ import annotations

import struct

from pcapwire.errors import CaptureFormatError

PCAP_HEADER_LEN = 24
#: magic (as read little-endian) -> (struct byte-order prefix, timestamp precision name)
PCAP_MAGICS: dict[int, tuple[str, str]] = {
    0xA1B2C3D4: ("<", "us"), 0xA1B23C4D: ("<", "ns"),
    0xD4C3B2A1: (">", "us"), 0x4D3CB2A1: (">", "ns"),
}
PCAPNG_MAGIC = 0x0A0D0D0A


class LinktypeChangedError(CaptureFormatError):
    """A later chunk carries another link type than the first one of the run."""

    def __init__(self, where: str, first: int, now: int) -> None:
        self.first, self.now = first, now
        super().__init__(where, 0, f"link type {now} differs from the run's link type {first}; "
                         "one engine stream carries one link type")


def parse_header(data: bytes, where: str) -> tuple[str, str, int, int]:
    """(byte order, precision, snaplen, linktype) of a classic pcap file header."""
    if len(data) < PCAP_HEADER_LEN:
        raise CaptureFormatError(where, 0, f"{len(data)} bytes is shorter than a pcap header "
                                 f"({PCAP_HEADER_LEN} bytes)")
    magic = struct.unpack_from("<I", data)[0]
    if magic == PCAPNG_MAGIC:
        raise CaptureFormatError(where, 0, "pcapng; engine streams take classic pcap chunks "
                                 "(pcapwire queries emit classic pcap)")
    if magic not in PCAP_MAGICS:
        raise CaptureFormatError(where, 0, f"not a pcap file (magic 0x{magic:08x})")
    order, prec = PCAP_MAGICS[magic]
    snaplen, linktype = struct.unpack_from(order + "II", data, 16)
    return order, prec, snaplen, linktype & 0x0FFFFFFF


class PcapJoiner:
    """Stateful: ``join(chunk_bytes)`` returns the bytes to append to the engine's stream."""

    def __init__(self) -> None:
        self.header: bytes | None = None
        self.linktype: int | None = None
        self._form: tuple[str, str] | None = None
        self.chunks = 0
        self.bytes_out = 0

    def join(self, data: bytes, where: str = "") -> memoryview:
        where = where or f"chunk {self.chunks}"
        order, prec, _snaplen, linktype = parse_header(data, where)
        if self.header is None:
            self.header = bytes(data[:PCAP_HEADER_LEN])
            self.linktype, self._form = linktype, (order, prec)
            out = memoryview(data)
        else:
            first = self._form or ("", "")
            if (order, prec) != first:
                raise CaptureFormatError(where, 0, f"byte order/precision {order}{prec} differs "
                                         f"from the run's {first[0]}{first[1]}")
            if linktype != self.linktype:
                raise LinktypeChangedError(where, self.linktype or 0, linktype)
            out = memoryview(data)[PCAP_HEADER_LEN:]  # no copy of the records
        self.chunks += 1
        self.bytes_out += len(out)
        return out
