"""One continuous capture from a chunk stream, for files, pipes and HTTP responses.

A result with one link type is a classic pcap (the tcpdump header, then every chunk's
records). A result that mixes link types cannot be one classic pcap, so it is written as
pcapng with one interface per link type (microsecond resolution, as the records are).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from pcapwire.records import PcapChunk
from pcapwire.store.segments import pcap_header

DEFAULT_LINKTYPE, DEFAULT_SNAPLEN = 1, 262144


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


class StreamFormatter:
    """Turns chunks into the bytes of one capture; ``snaplens`` maps linktype -> snaplen."""

    def __init__(self, snaplens: dict[int, int]) -> None:
        self.snaplens = dict(snaplens) or {DEFAULT_LINKTYPE: DEFAULT_SNAPLEN}
        self.pcapng = len(self.snaplens) > 1
        self.iface = {lt: i for i, lt in enumerate(sorted(self.snaplens))}

    def header(self) -> bytes:
        if not self.pcapng:
            (lt, snap), = self.snaplens.items()
            return pcap_header(lt, snap)
        shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
        idbs = b"".join(_block(1, struct.pack("<HHI", lt, 0, self.snaplens[lt]))
                        for lt in sorted(self.snaplens))
        return shb + idbs

    def body(self, chunk: PcapChunk) -> bytes:
        if not self.pcapng:
            return chunk.data[24:]
        out = []
        data, pos, iface = chunk.data, 24, self.iface[chunk.linktype]
        while pos + 16 <= len(data):
            sec, usec, caplen, origlen = struct.unpack_from("<IIII", data, pos)
            ts = sec * 1_000_000 + usec
            out.append(_block(6, struct.pack("<IIIII", iface, ts >> 32, ts & 0xFFFFFFFF,
                                             caplen, origlen) + data[pos + 16:pos + 16 + caplen]))
            pos += 16 + caplen
        return b"".join(out)

    def stream(self, chunks: Iterable[PcapChunk]) -> Iterator[bytes]:
        yield self.header()
        for chunk in chunks:
            yield self.body(chunk)
