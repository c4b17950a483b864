"""The capture file formats in Python: classic pcap (file header, record header) and the
few pcapng blocks pcapwire writes, and the joiner that makes one capture of many.

The native reader (:mod:`pcapwire._native`) parses every input; this module is the one
place where Python code writes a pcap header, reads one back or walks record headers:
segments, query chunks and results, the sources of workflow runs, the engines' feeds
(Suricata, Zeek), the timeline of stored results and the demo-capture generator.

Classic pcap as tcpdump writes it: a 24-byte file header (magic ``a1b2c3d4`` for
microsecond or ``a1b23c4d`` for nanosecond timestamps, version 2.4, thiszone/sigfigs 0,
snaplen, link type), then records of a 16-byte header (seconds, sub-second fraction,
captured length, original length) and the captured bytes. pcapwire writes little-endian;
it reads either byte order. pcapng (for results that mix link types) is written as a
Section Header Block, one Interface Description Block per link type (microsecond
resolution, the default) placed before the first packet that uses it, and Enhanced
Packet Blocks.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from pcapwire.errors import CaptureFormatError

HEADER_LEN = 24
RECORD_LEN = 16
MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
#: tsprec (6 = µs, 9 = ns) -> the magic number that says it
MAGIC_OF = {6: MAGIC_US, 9: MAGIC_NS}
PCAPNG_SHB = 0x0A0D0D0A  # block type of a Section Header Block, a pcapng file's first bytes
PCAPNG_IDB = 1
PCAPNG_EPB = 6
PCAPNG_BOM = 0x1A2B3C4D  # byte-order magic inside the Section Header Block
#: the file's first four bytes -> (struct byte-order prefix, tsprec)
_MAGIC_BYTES: dict[bytes, tuple[str, int]] = {
    struct.pack(order + "I", magic): (order, prec)
    for order in "<>" for prec, magic in MAGIC_OF.items()}
#: a little-endian record header: seconds, µs or ns, captured length, original length
RECORD = struct.Struct("<IIII")
_FILE_HEADER = struct.Struct("<IHHiIII")


@dataclass(frozen=True, slots=True)
class PcapHeader:
    """A classic pcap file header as read."""

    order: str  # "<" little-endian, ">" big-endian
    tsprec: int  # 6 (µs) or 9 (ns)
    version: tuple[int, int]
    snaplen: int
    linktype: int  # the link type proper (the FCS bits of the field dropped)

    @property
    def precision(self) -> str:
        return "us" if self.tsprec == 6 else "ns"

    @property
    def record(self) -> struct.Struct:
        """The record header in this file's byte order."""
        return RECORD if self.order == "<" else struct.Struct(">IIII")


def pcap_header(linktype: int, snaplen: int, tsprec: int = 6) -> bytes:
    """The 24-byte classic pcap file header, as tcpdump writes it (thiszone/sigfigs 0)."""
    return _FILE_HEADER.pack(MAGIC_OF[tsprec], 2, 4, 0, 0, snaplen, linktype)


def sniff_header(data: bytes) -> PcapHeader | None:
    """The header of a classic pcap (either byte order, µs or ns), or None for anything
    else (pcapng, too short, not a capture)."""
    form = _MAGIC_BYTES.get(bytes(data[:4]))
    if form is None or len(data) < HEADER_LEN:
        return None
    order, prec = form
    major, minor, _zone, _sigfigs, snaplen, linktype = struct.unpack_from(
        order + "HHiIII", data, 4)
    return PcapHeader(order, prec, (major, minor), snaplen, linktype & 0x0FFFFFFF)


def parse_header(data: bytes, where: str) -> PcapHeader:
    """:func:`sniff_header`, raising :class:`CaptureFormatError` (with ``where``) for
    anything that is not a classic pcap."""
    hdr = sniff_header(data)
    if hdr is not None:
        return hdr
    if len(data) < HEADER_LEN:
        raise CaptureFormatError(where, 0, f"{len(data)} bytes is shorter than a pcap header "
                                 f"({HEADER_LEN} bytes)")
    magic = struct.unpack_from("<I", data)[0]
    if magic == PCAPNG_SHB:
        raise CaptureFormatError(where, 0, "pcapng; engine streams take classic pcap chunks "
                                 "(pcapwire queries emit classic pcap)")
    raise CaptureFormatError(where, 0, f"not a pcap file (magic 0x{magic:08x})")


def iter_records(data: bytes | memoryview, pos: int = HEADER_LEN
                 ) -> Iterator[tuple[int, int, int, int, int]]:
    """(seconds, fraction, caplen, origlen, offset of the packet bytes) of every whole
    little-endian record from byte ``pos`` on."""
    end = len(data)
    while pos + RECORD_LEN <= end:
        sec, frac, caplen, origlen = RECORD.unpack_from(data, pos)
        at = pos + RECORD_LEN
        if at + caplen > end:
            return
        yield sec, frac, caplen, origlen, at
        pos = at + caplen


# -- pcapng -------------------------------------------------------------------------------
def pcapng_block(btype: int, body: bytes) -> bytes:
    """One little-endian block: type, total length, body padded to 32 bits, total length."""
    body += b"\0" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def pcapng_shb() -> bytes:
    """A Section Header Block (version 1.0, section length unknown)."""
    return pcapng_block(PCAPNG_SHB, struct.pack("<IHHq", PCAPNG_BOM, 1, 0, -1))


def pcapng_idb(linktype: int, snaplen: int) -> bytes:
    """An Interface Description Block without options (so microsecond timestamps)."""
    return pcapng_block(PCAPNG_IDB, struct.pack("<HHI", linktype, 0, snaplen))


def pcapng_epb(iface: int, ts_us: int, caplen: int, origlen: int, packet: bytes) -> bytes:
    """An Enhanced Packet Block of interface number ``iface``."""
    return pcapng_block(PCAPNG_EPB, struct.pack("<IIIII", iface, ts_us >> 32,
                                                ts_us & 0xFFFFFFFF, caplen, origlen) + packet)


# -- one capture of many ----------------------------------------------------------------
class LinktypeChangedError(CaptureFormatError):
    """A later chunk carries another link type than the first one of the stream."""

    def __init__(self, where: str, first: int, now: int) -> None:
        self.first, self.now = first, now
        super().__init__(where, 0, f"link type {now} differs from the run's link type {first}; "
                         "one engine stream carries one link type")


class PcapJoiner:
    """Joins complete classic pcaps (query chunks) into one continuous capture: the first
    one's file header once, then only the records of every one. ``join(data)`` returns the
    bytes to append; it refuses what would corrupt the stream (not a classic pcap, another
    byte order or timestamp precision, another link type: :class:`LinktypeChangedError`).

    With ``header``, that file header starts the stream (already written by the caller,
    e.g. before knowing whether any chunk comes) and every chunk adds only its records."""

    def __init__(self, header: bytes | None = None) -> None:
        self.header: bytes | None = None
        self.form: PcapHeader | None = None
        self.chunks = 0
        self.bytes_out = 0
        if header is not None:
            self.form, self.header = parse_header(header, "stream header"), bytes(header)

    @property
    def linktype(self) -> int | None:
        return self.form.linktype if self.form is not None else None

    def join(self, data: bytes, where: str = "") -> memoryview:
        where = where or f"chunk {self.chunks}"
        hdr = parse_header(data, where)
        if self.form is None:
            self.header, self.form = bytes(data[:HEADER_LEN]), hdr
            out = memoryview(data)
        else:
            first = self.form
            if (hdr.order, hdr.tsprec) != (first.order, first.tsprec):
                raise CaptureFormatError(where, 0, f"byte order/precision {hdr.order}"
                                         f"{hdr.precision} differs from the run's "
                                         f"{first.order}{first.precision}")
            if hdr.linktype != first.linktype:
                raise LinktypeChangedError(where, first.linktype, hdr.linktype)
            out = memoryview(data)[HEADER_LEN:]  # no copy of the records
        self.chunks += 1
        self.bytes_out += len(out)
        return out
