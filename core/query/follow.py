"""Following a query: the matching packets that exist, then those recorded after, until
stopped (``pcapwire query --follow``, ``follow: true`` in the API).

The recorder commits the segments it writes to the catalog at least every half second:
each row's size, packets and times, and the flows' offsets of what it wrote since, in
one transaction; a segment file is a valid pcap up to the committed ``size`` (the engine
never reads past it) and is ``open`` in ``capture_segments`` until sealed.

A follow reads the catalog through a connection of its own (read-only), always inside a
read transaction, so the segment rows and the flow offsets it sees belong to one commit:

1. The initial scan: the query's plan in one snapshot, settled as any query's
   (:mod:`.linktypes`), then scanned by the engine. Every segment of that snapshot counts
   as read up to its committed size.
2. Then it waits for the catalog to change: ``PRAGMA data_version`` (a counter SQLite
   bumps when another connection commits; reading it touches no page) every ``poll_s``
   (0.1 s). On a change, one snapshot gives the segments that can have grown (those open
   then or at the last look, and the new ones: ids above every one seen; a sealed or
   ingested segment never changes), so a round costs the same over a store of any size.
   Each is read from the byte where the follow stopped to its committed size (a
   sequential scan when a BPF expression alone decides, the new index offsets of the
   candidate flows when explicit filters do), merged in timestamp order across segments
   as any query's segments are. So no packet comes twice and none is skipped: a record
   is read once, in the round whose snapshot first commits it. Packets committed in
   different rounds come in the order of their rounds (the order of arrival, give or take
   the recorder's half-second commits).

Output format. The header leaves before the packets, and a follow cannot know which link
types will be recorded later, so it decides when it starts: the link types of its initial
result (settled as any query's; with no packet, the time window's first link type) and
of the segments being recorded then (open in ``capture_segments``); over a window with no
segment yet, those of the first segments recorded in it. One link type gives a classic
pcap, byte for byte what tcpdump writes reading the same packets; several give pcapng. A
segment of another link type (or of a larger snaplen) that is recorded later and holds a
matching packet ends the follow with an error that says so, after everything before it
was written; one without a matching packet is skipped. The header leaves as soon as the
output is decided (the initial scan's end, or that first segment), even with no packet.

Ending: :meth:`Follow.stop` (SIGINT/SIGTERM for the CLI, cancel or the last reader leaving
for the API) ends the scan where it is and the result there: what was written is a valid
capture, the query is ``done``. A result limit (``max_bytes``) ends it with an error.
"""

from __future__ import annotations

import bisect
import dataclasses
import sqlite3
import threading
import uuid
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from pcapwire.custody import actor_cli, events
from pcapwire.errors import QueryError
from pcapwire.pcapformat import HEADER_LEN, pcap_header
from pcapwire.query.engine import Plan, QueryEngine, QueryStats, SegmentPlan
from pcapwire.query.flows import explicit_sql, narrowing_sql
from pcapwire.query.linktypes import settle
from pcapwire.query.output import StreamFormatter
from pcapwire.query.spec import QuerySpec
from pcapwire.records import PcapChunk
from pcapwire.store.catalog import Catalog, Segment

POLL_S = 0.1  # how often the catalog's change counter is read while nothing changes
#: The segments a recorder is writing: the only ones that grow (ingest and the recorder
#: add segments with ids above every earlier one).
_OPEN = "SELECT segment_id FROM capture_segments WHERE state = 'open'"
#: Candidate flows up to which a round looks up each one's offsets in a grown segment;
#: with more, it reads the segment's flow rows and keeps the candidates'.
FLOW_LOOKUP_MAX = 1000


class _AnyOf(threading.Event):
    """An event that counts as set when any of ``events`` is (what the engine's scan
    checks between reads)."""

    def __init__(self, *events: threading.Event) -> None:
        super().__init__()
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


class Snapshots(Catalog):
    """A read-only connection of the follow's own to a store's catalog."""

    def __init__(self, path: Path) -> None:  # no schema work: read only
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA query_only=1")
        self.db.execute("PRAGMA busy_timeout=30000")

    def version(self) -> int:
        """SQLite's ``data_version``: changes whenever another connection commits."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: every statement inside sees the same commit."""
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")


def live_segments(catalog: Catalog) -> list[Segment]:
    """The segments a recorder is writing now (``capture_segments``, state ``open``)."""
    ids = [r[0] for r in catalog.db.execute(_OPEN)]
    return catalog.segments(ids=ids) if ids else []


class Follow:
    """One follow of ``spec``: iterate :meth:`chunks` (in any thread), or :meth:`write`."""

    def __init__(self, engine: QueryEngine, spec: QuerySpec, query_id: str = "",
                 stats: QueryStats | None = None, poll_s: float = POLL_S,
                 idle_check: Callable[[], bool] | None = None) -> None:
        self.engine, self.spec = engine, spec
        self.query_id = query_id or uuid.uuid4().hex
        self.stats = stats if stats is not None else QueryStats()
        self.poll_s = poll_s
        self.idle_check = idle_check  # True: the consumer is gone, stop (between rounds)
        self.stopped = threading.Event()
        self.snaplens: dict[int, int] = {}  # decided before the first chunk
        self.positions: dict[int, int] = {}  # open segment id -> bytes read (committed)
        self._seen = 0  # the highest segment id looked at: higher ones are new
        self.rounds = 0
        self._flows: set[int] = set()
        self._max_flow = 0
        self._seq = 0

    def stop(self) -> None:
        """End the follow (from any thread or a signal handler): the scan stops where it
        is, what was delivered is the result."""
        self.stopped.set()

    # -- the chunks ------------------------------------------------------------------------
    def chunks(self, cancel: threading.Event | None = None) -> Iterator[PcapChunk]:
        """The result's chunks; the first (a header-only chunk when nothing matched yet)
        leaves once the output format is decided: at the end of the initial scan, or over a
        window without segments, at its first recorded one. ``cancel``: the consumer is
        gone (the engine's stop); :meth:`stop` ends the follow normally."""
        halt = _AnyOf(self.stopped, cancel or threading.Event())
        cat = Snapshots(self.engine.store.catalog.path)
        try:
            version = cat.version()
            with cat.snapshot():
                plan = self.engine.plan(self.spec, catalog=cat)
                live = live_segments(cat)
                # what this snapshot holds is the initial scan's (or cannot match); of
                # it, only the segments being recorded may grow
                self._seen = cat.db.execute("SELECT coalesce(max(id), 0) FROM segments"
                                            ).fetchone()[0]
                self.positions = dict(cat.db.execute(
                    f"SELECT id, size FROM segments WHERE id IN ({_OPEN})"))
                self._index_flows(cat)
            self._decide(plan, live, halt)  # reads segments: outside the read transaction
            yield from self._run(plan, halt)
            yield from self._header()
            while not halt.is_set():
                changed = self._wait(cat, version, halt)
                if changed is None:
                    return
                version = changed
                with cat.snapshot():
                    delta, foreign = self._delta(cat)
                self.rounds += 1
                yield from self._run(delta, halt)
                yield from self._header()
                self._refuse(foreign, halt)
        finally:
            cat.close()

    def _decide(self, plan: Plan, live: list[Segment], halt: threading.Event) -> None:
        """The output's link types: the settled initial result's and the live segments'."""
        filters = self.engine._filters(plan) if self.spec.bpf else {}
        settle(plan, lambda group: self.engine._probe(group, filters, self.spec, halt,
                                                      self.stats))
        snaplens = dict(plan.snaplens)
        for seg in live:
            snaplens[seg.linktype] = max(snaplens.get(seg.linktype, 0), seg.snaplen)
        self.snaplens = snaplens  # none: an empty window, decided by its first segment
        plan.snaplens = dict(snaplens)

    def _run(self, plan: Plan, halt: threading.Event) -> Iterator[PcapChunk]:
        if not plan.segments:
            return
        plan.settled = True
        for chunk in self.engine.iter_chunks(self.spec, self.query_id, halt, plan,
                                             self.stats):
            yield self._number(chunk)

    def _header(self) -> Iterator[PcapChunk]:
        """A header-only chunk once the output is decided, if no packet has gone out."""
        if self._seq == 0 and self.snaplens:
            (lt, snaplen), *_ = self.snaplens.items()
            yield self._number(PcapChunk(self.query_id, 0, lt, snaplen,
                                         pcap_header(lt, snaplen), 0, 0.0, 0.0))

    def _number(self, chunk: PcapChunk) -> PcapChunk:
        chunk = dataclasses.replace(chunk, seq=self._seq)
        self._seq += 1
        return chunk

    def _wait(self, cat: Snapshots, version: int, halt: threading.Event) -> int | None:
        """The catalog's next version, or None when the follow ends first."""
        while not halt.is_set():
            if self.idle_check is not None and self.idle_check():
                self.stop()
                return None
            now = cat.version()
            if now != version:
                return now
            self.stopped.wait(self.poll_s)
        return None

    # -- what is new -----------------------------------------------------------------------
    def _delta(self, cat: Snapshots) -> tuple[Plan, list[SegmentPlan]]:
        """The grown and new segments (in this snapshot) as a plan of their new bytes, and
        those of a link type (or snaplen) the output cannot carry."""
        start_ns = self.spec.start_ns
        watch = sorted(self.positions)  # open at the last look (sealed since, maybe)
        rows = cat.db.execute(
            f"SELECT id, size, last_ns FROM segments WHERE id > ? OR id IN ({_OPEN})"
            f" OR id IN ({','.join('?' * len(watch))})", (self._seen, *watch)).fetchall()
        open_now = {r[0] for r in cat.db.execute(_OPEN)}
        grown = []
        for sid, size, last_ns in rows:
            self._seen = max(self._seen, sid)
            if size <= self.positions.get(sid, HEADER_LEN):
                continue
            if start_ns is not None and last_ns < start_ns:
                self.positions[sid] = size  # all of it before the window
            else:
                grown.append(sid)
        plans: list[SegmentPlan] = []
        foreign: list[SegmentPlan] = []
        if grown:
            self._index_flows(cat)
        segments = cat.segments(ids=grown) if grown else []
        if not self.snaplens:  # the window was empty when the follow started
            for seg in segments:
                self.snaplens[seg.linktype] = max(self.snaplens.get(seg.linktype, 0),
                                                  seg.snaplen)
        for seg in segments:
            start = self.positions.get(seg.id, HEADER_LEN)
            self.positions[seg.id] = seg.size
            part = self._segment_part(cat, seg, start)
            if part is None:
                continue
            fits = seg.snaplen <= self.snaplens.get(seg.linktype, -1)
            (plans if fits else foreign).append(part)
        # a segment no longer open was read to its end: it never grows again
        self.positions = {k: v for k, v in self.positions.items() if k in open_now}
        return Plan(self.spec, plans, None, dict(self.snaplens), settled=True), foreign

    def _segment_part(self, cat: Snapshots, seg: Segment, start: int) -> SegmentPlan | None:
        """What to read of ``seg`` from byte ``start`` to its committed size."""
        if explicit_sql(self.spec) is None:  # nothing, or a BPF expression, decides
            return SegmentPlan(seg, None, start)
        if self._flows and len(self._flows) <= FLOW_LOOKUP_MAX:
            rows = [(f, o) for _s, f, _p, o in cat.flow_offsets(sorted(self._flows),
                                                                   [seg.id])]
        else:
            rows = [(f, o) for f, o in cat.db.execute(
                "SELECT flow_id, offsets FROM flow_segments WHERE segment_id=?", (seg.id,))
                if f in self._flows]
        merged = array("I")
        for _flow, blob in rows:
            offsets = array("I", blob)  # ascending: appended per commit
            merged.extend(offsets[bisect.bisect_left(offsets, start):])
        if not merged:
            return None
        return SegmentPlan(seg, array("I", sorted(merged)).tobytes())

    def _index_flows(self, cat: Snapshots) -> None:
        """Keep the candidate flows (explicit filters) current: flows are never re-keyed
        and new ones get higher ids, so only those above the last seen are looked at."""
        narrow = narrowing_sql(self.spec)
        if explicit_sql(self.spec) is None or narrow is None:
            return
        top = cat.db.execute("SELECT coalesce(max(id), 0) FROM flows").fetchone()[0]
        if top > self._max_flow:
            self._flows.update(r[0] for r in cat.db.execute(
                f"SELECT id FROM flows WHERE id > ? AND id <= ? AND ({narrow.where})",
                (self._max_flow, top, *narrow.args)))
            self._max_flow = top

    def _refuse(self, foreign: list[SegmentPlan], halt: threading.Event) -> None:
        """End the follow if a segment it cannot carry holds a matching packet."""
        if not foreign:
            return
        plan = Plan(self.spec, foreign, None)
        filters = self.engine._filters(plan) if self.spec.bpf else {}
        for part in foreign:
            if self.engine._probe([part], filters, self.spec, halt, QueryStats()):
                seg = part.segment
                have = ", ".join(f"link type {lt} (snaplen {s})"
                                 for lt, s in sorted(self.snaplens.items()))
                raise QueryError(
                    f"segment {seg.path} recorded a matching packet of link type "
                    f"{seg.linktype} (snaplen {seg.snaplen}), which this follow's output "
                    f"({have}, decided when it started) cannot carry; everything before "
                    "it was delivered. Follow again (--start now) to get both")

    # -- one capture -----------------------------------------------------------------------
    def write(self, out: BinaryIO, record: bool = True) -> QueryStats:
        """Write the follow as one capture to ``out`` (flushed after every chunk), kept in
        the query history when ``record``: ``done`` when stopped (or when the reader of
        ``out`` left), ``error`` otherwise."""
        history = self.engine.store.cases if record else None
        if history is not None:
            history.add_query(self.query_id, self.spec.case, self.spec.event,
                              self.spec.to_dict())
        status, error = "done", None
        fmt: StreamFormatter | None = None
        try:
            for chunk in self.chunks():
                if fmt is None:
                    fmt = StreamFormatter(self.snaplens)
                    out.write(fmt.header())
                out.write(fmt.body(chunk))
                out.flush()
            if fmt is None:  # stopped before anything was recorded in its window
                out.write(StreamFormatter(self.snaplens).header())
        except BrokenPipeError:
            raise  # the reader left: a normal end of a follow
        except BaseException as exc:
            status, error = "error", str(exc) or type(exc).__name__
            raise
        finally:
            if history is not None:
                history.finish_query(self.query_id, status, self.stats.packets,
                                     self.stats.bytes, error)
                events.query(self.engine.store.root, self.spec.case, actor_cli(),
                             self.query_id, self.spec.to_dict(), status, self.stats, [])
        return self.stats
