"""Events to :class:`~pcapwire.records.StreamRecord` (the workflow's ``stream`` kind): one
record per direction of a connection with bytes, emitted when the connection closes."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pcapwire.reassembly.events import Close, Data, End, Event, Gap, Limits, Open
from pcapwire.reassembly.reassembler import Reassembler
from pcapwire.records import FlowKey, PcapChunk, StreamRecord

#: Bytes kept in one StreamRecord; later bytes of that direction are dropped and the
#: record is marked incomplete (``complete=False``; ``StreamCollector.truncated`` counts).
MAX_STREAM_BYTES = 32 * 2**20
#: Bytes held across all open streams; beyond it the largest open stream is emitted at
#: once as an incomplete record and the rest of that direction is dropped.
MAX_COLLECTED_BYTES_TOTAL = 512 * 2**20


def connection_uid(key: FlowKey, first_ts: float) -> str:
    """A stable id for a connection: same capture, same id (used in stream ids)."""
    text = f"{key.proto}|{key.src}|{key.sport}|{key.dst}|{key.dport}|{first_ts:.6f}"
    return "C" + hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@dataclass
class _Acc:
    key: FlowKey
    direction: str
    data: bytearray = field(default_factory=bytearray)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    start_ts: float = 0.0
    end_ts: float = 0.0
    truncated: bool = False
    emitted: bool = False
    end_reason: str = ""


@dataclass
class _Conn:
    key: FlowKey
    first_ts: float
    handshake: bool
    halves: dict[str, _Acc]


class StreamCollector:
    """Feed it events (:meth:`push`), get StreamRecords as connections close."""

    def __init__(self, *, max_stream_bytes: int = MAX_STREAM_BYTES,
                 max_total_bytes: int = MAX_COLLECTED_BYTES_TOTAL,
                 emit_empty: bool = False) -> None:
        self.max_stream_bytes = max_stream_bytes
        self.max_total_bytes = max_total_bytes
        self.emit_empty = emit_empty
        self.conns: dict[int, _Conn] = {}
        self.held = 0
        self.truncated = 0  # bytes dropped by the limits above
        self.emitted = 0

    def push(self, ev: Event) -> list[StreamRecord]:
        out: list[StreamRecord] = []
        if isinstance(ev, Data):
            acc = self._acc(ev.conn, ev.key, ev.direction, ev.ts)
            if not acc.data and not acc.gaps:
                acc.start_ts = ev.ts
            acc.end_ts = max(acc.end_ts, ev.ts)
            room = self.max_stream_bytes - len(acc.data)
            if acc.emitted or room < len(ev.data):
                acc.truncated = True
                kept = 0 if acc.emitted else max(room, 0)
                self.truncated += len(ev.data) - kept
            else:
                kept = len(ev.data)
            if kept:
                acc.data += ev.data[:kept]
                self.held += kept
                if self.held > self.max_total_bytes:
                    out.extend(self._relieve())
        elif isinstance(ev, Gap):
            acc = self._acc(ev.conn, ev.key, ev.direction, ev.ts)
            if not acc.data and not acc.gaps:
                acc.start_ts = ev.ts
            acc.gaps.append((ev.offset, ev.length))
            acc.end_ts = max(acc.end_ts, ev.ts)
        elif isinstance(ev, Open):
            self.conns[ev.conn] = _Conn(ev.key, ev.ts, ev.handshake, {})
        elif isinstance(ev, End):
            conn = self.conns.get(ev.conn)
            if conn is not None and ev.direction in conn.halves:
                conn.halves[ev.direction].end_reason = ev.reason
        elif isinstance(ev, Close):
            conn = self.conns.pop(ev.conn, None)
            if conn is not None:
                for d in ("orig", "resp"):
                    half = conn.halves.get(d)
                    if half is None:
                        if not self.emit_empty:
                            continue
                        half = _Acc(conn.key, d, start_ts=ev.ts, end_ts=ev.ts)
                    rec = self._record(conn, half, ev.reason)
                    if rec is not None:
                        out.append(rec)
        return out

    def _acc(self, cid: int, key: FlowKey, direction: str, ts: float) -> _Acc:
        conn = self.conns.get(cid)
        if conn is None:  # events of a connection opened before we were attached
            conn = self.conns[cid] = _Conn(key, ts, False, {})
        acc = conn.halves.get(direction)
        if acc is None:
            acc = conn.halves[direction] = _Acc(key, direction)
        return acc

    def _record(self, conn: _Conn, acc: _Acc, reason: str,
                partial: bool = False) -> StreamRecord | None:
        if acc.emitted:
            return None
        acc.emitted = True
        self.held -= len(acc.data)
        self.emitted += 1
        complete = (conn.handshake and not acc.gaps and not acc.truncated and not partial
                    and (acc.end_reason or reason) in ("fin", "rst"))
        return StreamRecord(id=f"{connection_uid(conn.key, conn.first_ts)}-{acc.direction}",
                            flow=conn.key, direction=acc.direction,  # type: ignore[arg-type]
                            data=bytes(acc.data), start_ts=acc.start_ts, end_ts=acc.end_ts,
                            gaps=list(acc.gaps), complete=complete)

    def _relieve(self) -> list[StreamRecord]:
        out = []
        while self.held > self.max_total_bytes:
            conn, acc = max(((c, a) for c in self.conns.values() for a in c.halves.values()
                             if not a.emitted), key=lambda ca: len(ca[1].data))
            rec = self._record(conn, acc, "", partial=True)
            acc.data = bytearray()
            if rec is not None:
                out.append(rec)
        return out

    def flush(self) -> list[StreamRecord]:
        """Records of connections that never closed (only if events stopped early)."""
        out = []
        for conn in list(self.conns.values()):
            for acc in conn.halves.values():
                rec = self._record(conn, acc, "eof", partial=True)
                if rec is not None:
                    out.append(rec)
        self.conns.clear()
        return out


def streams_from_events(events: Iterable[Event], **kw: int) -> Iterator[StreamRecord]:
    collector = StreamCollector(**kw)  # type: ignore[arg-type]
    for ev in events:
        yield from collector.push(ev)
    yield from collector.flush()


def streams_from_file(path: str | Path, limits: Limits | None = None,
                      **kw: int) -> Iterator[StreamRecord]:
    """Every StreamRecord of a capture file (TCP and UDP, both directions)."""
    yield from streams_from_events(Reassembler(limits).feed_file(path), **kw)


async def streams_from_chunks(chunks: AsyncIterable[PcapChunk], limits: Limits | None = None,
                              **kw: int) -> AsyncIterator[StreamRecord]:
    """StreamRecords from a chunk stream, each as soon as its connection closes."""
    collector = StreamCollector(**kw)  # type: ignore[arg-type]
    async for ev in Reassembler(limits).feed_chunks(chunks):
        for rec in collector.push(ev):
            yield rec
    for rec in collector.flush():
        yield rec
