"""The query engine: plan with the catalog, scan segments natively, stream PCAP chunks.

Plan: explicit filters and the indexable part of a BPF expression select candidate flows
in the catalog; their packet offsets come from ``flow_segments``. A segment is read at
those offsets, or sequentially when the candidates are most of it, or when nothing can be
narrowed. libpcap then runs the exact BPF expression on every candidate in the native loop.

Output: packets in timestamp order across segments. Segments whose time ranges do not
overlap are concatenated; overlapping ones are merged by timestamp, stably (packets of one
segment keep their capture order, ties keep segment order). Each chunk is a complete pcap
(header + records) of at most ``chunk_bytes`` (a single record larger than that still
makes one chunk); chunks leave as soon as they fill, before the scan has finished.
Before the first chunk, a plan over segments of several link types is settled to the link
types its result really has (:mod:`.linktypes`): that decides the output format.
"""

from __future__ import annotations

import asyncio
import heapq
import io
import logging
import os
import threading
import time
import uuid
from array import array
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pcapwire import _native
from pcapwire.chunking import ChunkBuilder, ChunkKind
from pcapwire.custody import actor_cli, events
from pcapwire.errors import QueryError
from pcapwire.pcapformat import HEADER_LEN
from pcapwire.query.bpfcache import compiled
from pcapwire.query.flows import explicit_sql, flows_sql, narrowing_sql
from pcapwire.query.linktypes import settle
from pcapwire.query.output import StreamFormatter
from pcapwire.query.spec import QuerySpec
from pcapwire.records import PcapChunk
from pcapwire.store.catalog import Catalog, Segment
from pcapwire.store.reader import segment_pieces
from pcapwire.store.segments import segment_files
from pcapwire.store.zstdseek import StoredSegmentError

if TYPE_CHECKING:
    from pcapwire.store import Store

log = logging.getLogger(__name__)

DENSE_FRACTION = 0.25  # read a segment sequentially when candidates exceed this share of it
QUEUE_CHUNKS = 4  # chunks buffered between the scanning thread and an async consumer
#: added to a scan thread's nice value once it has handed over its first chunk (Linux
#: threads have their own): the rest of a scan is bulk work, which leaves the cores first to
#: what waits for a first chunk (other queries starting, the requests of an event loop)
SCAN_NICE = 10
EMPTY_STORE_KEY = (1, 262144)  # a BPF is still checked (for Ethernet) on an empty store
_END = object()


@dataclass
class SegmentPlan:
    segment: Segment
    offsets: bytes | None  # u32 record offsets to visit, or None for a sequential scan
    start: int = HEADER_LEN  # first byte of a sequential scan (a follow reads what is new)


@dataclass
class Plan:
    spec: QuerySpec
    segments: list[SegmentPlan]
    candidate_flows: int | None  # None: the index could not narrow anything
    snaplens: dict[int, int] = field(default_factory=dict)  # linktype -> header snaplen
    settled: bool = False  # snaplens holds only link types the result can have (.linktypes)


@dataclass
class QueryStats:
    packets: int = 0
    bytes: int = 0
    chunks: int = 0
    segments_scanned: int = 0
    records_examined: int = 0
    #: what could not be read (a damaged frame of a compressed segment: its file, frame and
    #: compressed byte offset); the result lacks those records and only those
    damage: list[str] = field(default_factory=list)

    def add_damage(self, exc: StoredSegmentError) -> None:
        if str(exc) not in self.damage:
            log.warning("query result incomplete: %s", exc)
            self.damage.append(str(exc))


class QueryEngine:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- planning --------------------------------------------------------------------------
    def plan(self, spec: QuerySpec, catalog: Catalog | None = None,
             segment_ids: Collection[int] | None = None) -> Plan:
        """``catalog``: another connection to the store's catalog (a follow plans inside
        a read transaction of its own, :mod:`.follow`); default the store's. The plan
        reads one commit (a read transaction), so while a recorder commits, the offsets it
        finds never reach past the segment sizes it read. ``segment_ids``: only these
        segments are read (a hold copies the segments it has not copied yet)."""
        catalog = catalog or self.store.catalog
        if catalog.db.in_transaction:
            return self._plan(spec, catalog, segment_ids)
        catalog.db.execute("BEGIN")
        try:
            return self._plan(spec, catalog, segment_ids)
        finally:
            catalog.db.execute("COMMIT")

    def _plan(self, spec: QuerySpec, catalog: Catalog,
              segment_ids: Collection[int] | None = None) -> Plan:
        segments = catalog.segments(spec.start_ns, spec.end_ns, segment_ids)
        if narrowing_sql(spec) is None:
            plans = [SegmentPlan(s, None) for s in segments]
            return self._finish(spec, plans, None, segments)
        where = flows_sql(spec)
        sql, args = where.where, list(where.args)
        flow_ids = [r[0] for r in catalog.db.execute(f"SELECT id FROM flows WHERE {sql}", args)]
        # packet counts first: a segment read sequentially needs no offsets (reading them
        # all was most of a broad query's planning)
        totals = catalog.flow_packets(flow_ids, [s.id for s in segments])
        exact = explicit_sql(spec) is not None
        dense = {s.id for s in segments
                 if not exact and totals.get(s.id, 0) > DENSE_FRACTION * s.packets}
        narrow = [s.id for s in segments if s.id in totals and s.id not in dense]
        by_segment: dict[int, list[bytes]] = {}
        if narrow:
            for seg_id, _flow, _packets, offsets in catalog.flow_offsets(flow_ids, narrow):
                by_segment.setdefault(seg_id, []).append(offsets)
        plans = [SegmentPlan(seg, None if seg.id in dense else _union_offsets(by_segment[seg.id]))
                 for seg in segments if seg.id in dense or seg.id in by_segment]
        return self._finish(spec, plans, len(flow_ids), segments)

    def _finish(self, spec: QuerySpec, plans: list[SegmentPlan], flows: int | None,
                segments: list[Segment]) -> Plan:
        """The output header (link type, snaplen) comes from the segments that are read,
        or when none is, from the time window's segments of its first segment's link type,
        so an empty result still carries what tcpdump would write for the same input. A
        plan over several link types is narrowed to those its result really has before
        the scan (:mod:`.linktypes`)."""
        read = [p.segment for p in plans]
        if not read and segments:
            first = min(segments, key=lambda s: (s.first_ns, s.id)).linktype
            read = [s for s in segments if s.linktype == first]
        snaplens: dict[int, int] = {}
        for seg in read:
            snaplens[seg.linktype] = max(snaplens.get(seg.linktype, 0), seg.snaplen)
        plan = Plan(spec, plans, flows, snaplens)
        if spec.bpf:
            self._filters(plan)  # compile now: a syntax error is a QueryError before any output
        return plan

    def _filters(self, plan: Plan) -> dict[tuple[int, int], Any]:
        keys = {(p.segment.linktype, p.segment.snaplen) for p in plan.segments}
        return {k: compiled(plan.spec.bpf, *k) for k in sorted(keys or {EMPTY_STORE_KEY})}

    def filter_keys(self, spec: QuerySpec) -> set[tuple[int, int]]:
        """Every (link type, snaplen) a plan of ``spec`` may compile its BPF for (those of
        the segments in its time window): what :func:`.bpfcache.precompile` takes."""
        return ({(s.linktype, s.snaplen) for s in self.store.catalog.segments(
                    spec.start_ns, spec.end_ns)} or {EMPTY_STORE_KEY})

    # -- execution -------------------------------------------------------------------------
    def iter_chunks(self, spec: QuerySpec, query_id: str | None = None,
                    stop: threading.Event | None = None, plan: Plan | None = None,
                    stats: QueryStats | None = None) -> Iterator[PcapChunk]:
        plan = plan or self.plan(spec)
        stats = stats if stats is not None else QueryStats()
        filters = self._filters(plan) if spec.bpf else {}
        if not plan.settled:
            settle(plan, lambda group: self._probe(group, filters, spec, stop, stats))
        builder = ChunkBuilder(query_id or "", spec.chunk_bytes)
        kinds = {lt: (lt, snaplen, 6) for lt, snaplen in plan.snaplens.items()}  # µs out
        for cluster in _clusters(plan.segments):
            if len(cluster) == 1:
                pieces = self._pieces(cluster[0], filters, spec, stop, stats)
                for out, ts in pieces:
                    yield from self._emit(builder, kinds[cluster[0].segment.linktype], out, ts,
                                          spec, stats)
            else:
                streams = [_records(self._pieces(p, filters, spec, stop, stats),
                                    p.segment.linktype) for p in cluster]
                for linktype, group in groupby(heapq.merge(*streams, key=lambda r: r[0]),
                                               key=lambda r: r[1]):
                    for ts_ns, _lt, rec in group:
                        yield from self._emit(builder, kinds[linktype], rec, ts_ns, spec, stats)
            if stop is not None and stop.is_set():
                return
        last = builder.flush()
        if last is not None:
            stats.chunks += 1
            yield last

    def _emit(self, builder: ChunkBuilder, kind: ChunkKind, out: bytes, ts: bytes | int,
              spec: QuerySpec, stats: QueryStats) -> Iterator[PcapChunk]:
        """Add scan output (with its ts_ns array) or one record (with its ts_ns)."""
        if isinstance(ts, int):
            chunk = builder.add(kind, out, ts, ts)
        else:
            view = memoryview(ts).cast("q")
            chunk = builder.add(kind, out, view[0], view[-1], len(view))
        if chunk is not None:
            stats.chunks += 1
            yield chunk
        stats.bytes += len(out)
        if spec.max_bytes is not None and stats.bytes > spec.max_bytes:
            raise QueryError(f"the result exceeds the limit of {spec.max_bytes} bytes; narrow "
                             "the query (time window, hosts, ports) or raise the limit")

    def _probe(self, group: list[SegmentPlan], filters: dict[tuple[int, int], Any],
               spec: QuerySpec, stop: threading.Event | None, stats: QueryStats) -> bool:
        """Whether any candidate of ``group`` matches (:func:`.linktypes.settle`); reads
        up to the first match. A group read to its end counts as scanned in ``stats``."""
        seen = QueryStats()
        for p in group:
            pieces = self._pieces(p, filters, spec, stop, seen, max_out=0)
            try:
                if next(pieces, None) is not None:
                    return True
            finally:
                pieces.close()
        stats.segments_scanned += seen.segments_scanned
        stats.records_examined += seen.records_examined
        for exc in seen.damage:
            if exc not in stats.damage:
                stats.damage.append(exc)
        return False

    def _pieces(self, plan: SegmentPlan, filters: dict[tuple[int, int], Any], spec: QuerySpec,
                stop: threading.Event | None, stats: QueryStats, max_out: int | None = None
                ) -> Generator[tuple[bytes, bytes], None, None]:
        seg = plan.segment
        path = self.store.root / seg.path  # an absolute path: indexed in place
        filt = filters.get((seg.linktype, seg.snaplen))
        stats.segments_scanned += 1
        if Path(seg.path).is_absolute():
            try:
                changed = path.stat().st_size != seg.size
            except OSError as exc:
                raise QueryError(f"{path}, indexed in place, cannot be read: {exc}") from None
            if changed:
                raise QueryError(f"{path} changed size since it was indexed in place; "
                                 "re-ingest it") from None
        if not segment_files(self.store.root, seg.path) and self.store.catalog.db.execute(
                "SELECT 1 FROM expired_segments WHERE id = ?", (seg.id,)).fetchone():
            return  # deleted by retention since the plan: the window's loss reports it
        # a plain segment is one piece (its mmap; <path>.live while recorded), a compressed
        # one a piece per frame it needs; a damaged frame is reported and skipped
        with closing(segment_pieces(self.store.root, seg, plan.offsets, plan.start,
                                    stats.add_damage)) as pieces:
            for piece in pieces:
                pos, end = piece.start, piece.end
                while pos < end:
                    if stop is not None and stop.is_set():
                        return
                    out, ts, pos, examined = _native.scan(
                        piece.buf, pos, end, tsprec=seg.tsprec, snaplen=seg.snaplen,
                        filter=filt, t_start_ns=spec.start_ns, t_end_ns=spec.end_ns,
                        offsets=piece.offsets,
                        max_out=spec.chunk_bytes - 24 if max_out is None else max_out)
                    stats.records_examined += examined
                    if out:
                        stats.packets += len(ts) // 8
                        yield out, ts

    def recorded_chunks(self, spec: QuerySpec, query_id: str | None = None,
                        record: bool = True, stats: QueryStats | None = None,
                        plan: Plan | None = None) -> Iterator[PcapChunk]:
        """:meth:`iter_chunks`, kept in the store's query history with its case and event
        when ``record``: ``done``, ``error`` (with the message) or ``cancelled`` (the
        consumer stopped early), with the packets and bytes returned."""
        query_id = query_id or uuid.uuid4().hex
        stats = stats if stats is not None else QueryStats()
        plan = plan or self.plan(spec)
        if record:
            self.store.cases.add_query(query_id, spec.case, spec.event, spec.to_dict())
        status, error = "cancelled", None
        try:
            yield from self.iter_chunks(spec, query_id, None, plan, stats)
            status = "done"
        except Exception as exc:
            status, error = "error", str(exc)
            raise
        finally:
            if record:
                self.store.cases.finish_query(query_id, status, stats.packets, stats.bytes,
                                              error)
                self.custody(spec, query_id, status, stats, plan)

    def custody(self, spec: QuerySpec, query_id: str, status: str, stats: QueryStats,
                plan: Plan) -> None:
        """A recorded query's entry in its case's custody log (the history keeps queries
        the engine records: those of the command line, whose user is the actor)."""
        events.query(self.store.root, spec.case, actor_cli(), query_id, spec.to_dict(),
                     status, stats, events.plan_segments(plan))

    def write(self, spec: QuerySpec, out: BinaryIO, query_id: str | None = None,
              record: bool = True, plan: Plan | None = None) -> QueryStats:
        """Write the whole result as one capture (see :mod:`.output`) to ``out``. The
        header follows the first chunk's scan: the plan is settled by then."""
        stats = QueryStats()
        plan = plan or self.plan(spec)
        fmt: StreamFormatter | None = None
        for chunk in self.recorded_chunks(spec, query_id, record, stats, plan):
            if fmt is None:
                fmt = StreamFormatter(plan.snaplens)
                out.write(fmt.header())
            out.write(fmt.body(chunk))
        if fmt is None:
            out.write(StreamFormatter(plan.snaplens).header())
        return stats

    def to_bytes(self, spec: QuerySpec, record: bool = False) -> bytes:
        buf = io.BytesIO()
        self.write(spec, buf, record=record)
        return buf.getvalue()

    async def run(self, spec: QuerySpec, query_id: str | None = None,
                  record: bool = True, stats: QueryStats | None = None,
                  plan: Plan | None = None,
                  source: Callable[[threading.Event], Iterator[PcapChunk]] | None = None
                  ) -> AsyncIterator[PcapChunk]:
        """Async iterator of chunks; scanning runs in a thread, ``QUEUE_CHUNKS`` ahead of the
        consumer. After its first chunk the thread waits until the consumer is done with it
        (asks for the next), so that the first chunk's way out does not wait for the GIL;
        then it scans on at a lower priority (:data:`SCAN_NICE`), offering the GIL between
        chunks. Stopping the iteration early cancels the scan.
        ``plan`` (from :meth:`plan`) is settled by the time the first chunk (or the end)
        arrives. ``source(stop)``: what the thread iterates instead of :meth:`iter_chunks`
        (a follow, :class:`.follow.Follow`), stopped by ``stop``."""
        query_id = query_id or uuid.uuid4().hex
        stats = stats if stats is not None else QueryStats()
        plan = plan or self.plan(spec)
        history = self.store.cases if record else None  # the case store keeps queries
        if history is not None:
            history.add_query(query_id, spec.case, spec.event, spec.to_dict())
        handoff = _Handoff(asyncio.get_running_loop(), QUEUE_CHUNKS)
        stop = threading.Event()
        taken = threading.Event()  # the consumer is done with the first chunk (or gone)

        def worker() -> None:
            try:
                chunks = (source(stop) if source is not None
                          else self.iter_chunks(spec, query_id, stop, plan, stats))
                first = True
                for chunk in chunks:
                    if stop.is_set():
                        return
                    handoff.put(chunk)
                    if first:  # its way out needs the GIL: scan on once it is out
                        first = False
                        taken.wait()
                        _lower_priority(SCAN_NICE)
                    # Offer the GIL to the event loop between chunks: the native scan holds
                    # it, and a loop that waits for it would get it only after the switch
                    # interval (5 ms) each time (its readers' first bytes among others).
                    time.sleep(0)
                handoff.put(_END)
            except BaseException as exc:  # delivered to the consumer
                if not stop.is_set():
                    handoff.put(exc)

        thread = threading.Thread(target=worker, name=f"query-{query_id[:8]}", daemon=True)
        thread.start()
        status, error = "cancelled", None
        try:
            while True:
                item = await handoff.get()
                if item is _END:
                    status = "done"
                    break
                if isinstance(item, BaseException):
                    status, error = "error", str(item)
                    raise item
                yield item
                taken.set()
        finally:
            stop.set()
            taken.set()
            handoff.close()
            await asyncio.to_thread(thread.join)
            if history is not None:
                history.finish_query(query_id, status, stats.packets, stats.bytes, error)
                await asyncio.to_thread(self.custody, spec, query_id, status, stats, plan)


class _Handoff:
    """Bounded hand-off from the scan thread to the event loop. The thread blocks while
    ``limit`` items wait; the loop is woken only when its consumer is waiting (one wake-up
    per burst, not a task and a cross-thread future per chunk)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.loop, self.limit = loop, limit
        self.items: deque[Any] = deque()
        self.cond = threading.Condition()
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False

    def put(self, item: Any) -> None:
        """From the scan thread; returns without queueing once the consumer is gone."""
        with self.cond:
            while len(self.items) >= self.limit and not self.closed:
                self.cond.wait()
            if self.closed:
                return
            self.items.append(item)
            waiter, self.waiter = self.waiter, None
        if waiter is not None:
            self.loop.call_soon_threadsafe(_wake, waiter)

    async def get(self) -> Any:
        while True:
            with self.cond:
                if self.items:
                    self.cond.notify()
                    return self.items.popleft()
                waiter = self.waiter = self.loop.create_future()
            await waiter

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.items.clear()
            self.cond.notify_all()


def _lower_priority(by: int) -> None:
    """Raise the calling thread's nice value by ``by`` (at most to 19); where threads have
    no nice value of their own, or it cannot be read or set, nothing changes."""
    try:
        tid = threading.get_native_id()
        nice = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, nice + by))
    except (OSError, AttributeError):
        pass


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _union_offsets(arrays: list[bytes]) -> bytes:
    if len(arrays) == 1:
        return arrays[0]
    merged = array("I")
    for chunk in arrays:
        merged.frombytes(chunk)
    return array("I", sorted(merged)).tobytes()


def _clusters(plans: list[SegmentPlan]) -> Iterator[list[SegmentPlan]]:
    """Groups of segments whose time ranges overlap, in time order."""
    ordered = sorted(plans, key=lambda p: (p.segment.first_ns, p.segment.id))
    cluster: list[SegmentPlan] = []
    cluster_end = -1
    for p in ordered:
        if cluster and p.segment.first_ns > cluster_end:
            yield sorted(cluster, key=lambda c: c.segment.id)
            cluster = []
        cluster.append(p)
        cluster_end = max(cluster_end, p.segment.last_ns)
    if cluster:
        yield sorted(cluster, key=lambda c: c.segment.id)


def _records(pieces: Iterator[tuple[bytes, bytes]], linktype: int
             ) -> Iterator[tuple[int, int, bytes]]:
    """Split scan output into (ts_ns, linktype, record) for merging."""
    for out, ts_bytes in pieces:
        ts = memoryview(ts_bytes).cast("q")
        pos = 0
        for i in range(len(ts)):
            end = pos + 16 + int.from_bytes(out[pos + 8:pos + 12], "little")
            yield ts[i], linktype, out[pos:end]
            pos = end
