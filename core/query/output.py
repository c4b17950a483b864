"""One continuous capture from a chunk stream, for files, pipes and HTTP responses.

A result of one link type is a classic pcap: the tcpdump header, then every chunk's
records (:class:`~pcapwire.pcapformat.PcapJoiner`). A result that mixes link types cannot
be one classic pcap, so it is written as pcapng: an Interface Description Block for each
link type, placed before the first packet of that link type (pcapng allows an IDB
anywhere before its first use), so the file declares exactly the interfaces its packets
use, in the order they first appear (microsecond resolution, as the records are). Which
of the two a query's result is, is settled before its first chunk
(:mod:`.linktypes`): build the formatter from the settled ``Plan.snaplens``.
"""

from __future__ import annotations

from pcapwire.errors import QueryError
from pcapwire.pcapformat import (
    PcapJoiner,
    iter_records,
    pcap_header,
    pcapng_epb,
    pcapng_idb,
    pcapng_shb,
)
from pcapwire.records import PcapChunk

DEFAULT_LINKTYPE, DEFAULT_SNAPLEN = 1, 262144


class StreamFormatter:
    """Turns chunks into the bytes of one capture; ``snaplens`` maps linktype -> snaplen
    for every link type the result may have (one: classic pcap; several: pcapng)."""

    def __init__(self, snaplens: dict[int, int]) -> None:
        self.snaplens = dict(snaplens) or {DEFAULT_LINKTYPE: DEFAULT_SNAPLEN}
        self.pcapng = len(self.snaplens) > 1
        self.iface: dict[int, int] = {}  # linktype -> interface number, as IDBs are written
        (lt, snap), *_ = self.snaplens.items()
        self._head = pcapng_shb() if self.pcapng else pcap_header(lt, snap)
        self._joiner = None if self.pcapng else PcapJoiner(self._head)

    def header(self) -> bytes:
        return self._head

    def body(self, chunk: PcapChunk) -> bytes | memoryview:
        if chunk.linktype not in self.snaplens:
            raise QueryError(f"a chunk of link type {chunk.linktype} in a result planned for "
                             f"link types {sorted(self.snaplens)}; submit the query again")
        if self._joiner is not None:
            return self._joiner.join(chunk.data, f"chunk {chunk.seq}")
        out = []
        iface = self.iface.get(chunk.linktype)
        if iface is None:
            iface = self.iface[chunk.linktype] = len(self.iface)
            out.append(pcapng_idb(chunk.linktype, self.snaplens[chunk.linktype]))
        data = chunk.data
        for sec, usec, caplen, origlen, at in iter_records(data):
            out.append(pcapng_epb(iface, sec * 1_000_000 + usec, caplen, origlen,
                                  data[at:at + caplen]))
        return b"".join(out)
