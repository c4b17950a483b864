"""Cutting records into :class:`~pcapwire.records.PcapChunk` records: each chunk is a
complete classic pcap (file header + whole records) of at most ``limit`` bytes and of one
kind of record (link type, snaplen, timestamp precision); a single record larger than the
limit travels alone in its chunk. The query engine (records from the native scan) and the
file sources of workflow runs (records from the native reader) both cut with this."""

from __future__ import annotations

from pcapwire.pcapformat import HEADER_LEN, pcap_header
from pcapwire.records import PcapChunk

#: (link type, snaplen, tsprec): what one chunk's records share
ChunkKind = tuple[int, int, int]


class ChunkBuilder:
    """``add`` record bytes (one or more whole records); a full chunk, or the one a change
    of kind ends, comes back from ``add``; ``flush`` returns the last one."""

    def __init__(self, query_id: str, limit: int) -> None:
        self.query_id, self.limit = query_id, limit
        self.kind: ChunkKind | None = None
        self.parts: list[bytes] = []
        self.size = HEADER_LEN
        self.packets = 0
        self.first_ns: int | None = None
        self.last_ns = 0
        self.seq = 0

    def add(self, kind: ChunkKind, records: bytes, first_ns: int, last_ns: int,
            packets: int = 1) -> PcapChunk | None:
        """Add ``packets`` records whose timestamps span ``first_ns`` .. ``last_ns``."""
        out = None
        if self.parts and (kind != self.kind or self.size + len(records) > self.limit):
            out = self.flush()
        self.kind = kind
        self.parts.append(records)
        self.size += len(records)
        self.packets += packets
        self.first_ns = first_ns if self.first_ns is None else min(self.first_ns, first_ns)
        self.last_ns = max(self.last_ns, last_ns)
        return out

    def flush(self) -> PcapChunk | None:
        if not self.parts or self.kind is None:
            return None
        linktype, snaplen, tsprec = self.kind
        data = b"".join([pcap_header(linktype, snaplen, tsprec), *self.parts])
        chunk = PcapChunk(self.query_id, self.seq, linktype, snaplen, data, self.packets,
                          (self.first_ns or 0) / 1e9, self.last_ns / 1e9)
        self.seq += 1
        self.parts, self.size, self.packets, self.first_ns, self.last_ns = [], HEADER_LEN, 0, \
            None, 0
        return chunk
