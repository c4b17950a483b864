"""Content rules on recorded segments, live: one streaming engine per (trigger version,
segment being recorded), fed each commit round's new bytes as they come.

A trigger's Suricata rules, YARA rules and content indicators (domains, URLs, JA3/JA4)
need the engines (:mod:`.match_engines`). Over a segment the recorder still writes, the
watch (:mod:`.watch`) hands each round's new bytes, as the query engine's chunks, to the
one engine of that (trigger version, segment) — :class:`~.match_engines.TriggerEngines`
reading an :class:`asyncio.Queue`-backed iterator (:class:`ChunkFeed`) — so Suricata
starts once per segment, not once per round, and a TCP stream spanning rounds is one
stream to it. Hits are written (:meth:`~.db.TriggerDB.add_engine_hits`) the moment the
engine raises them, by one writer thread, whatever arrived together in one transaction.
When the segment is sealed the watch feeds its last bytes and ends the input; the engine
flushes, exits, and once its last hit is written the segment is :meth:`finished`.

The engines run on an event loop of their own (a thread, started with the first engine):
the watch's thread waits only while an engine's queue is full
(:data:`MAX_QUEUED_CHUNKS`: back-pressure, never unbounded memory).

**A restart in the middle of a segment** (the service stopped, an engine failed, the
trigger paused then resumed, a new version): the new engine reads the segment again from
its first byte (a stream engine cannot start in the middle of TCP streams), so it raises
again the alerts its predecessor raised. They are not counted twice: every hit carries its
ordinal among the engine's hits of its (rule, flow), and the database keeps, per (segment,
version, rule, flow), the highest ordinal counted; a hit at or below it is skipped. For
Suricata over the same packets in the same order the n-th alert of a rule on a flow is the
same alert, so the count per (rule, flow) ends as one pass over the segment counts it (as
a hunt unit would), however often the engine started. A new version counts for itself
(its own ordinals), from the segment's first byte. An engine that fails is started again,
up to :data:`ENGINE_ATTEMPTS` times per (trigger version, segment); then the segment's
content rules are given up (logged) and the segment goes on as finished.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcapwire.pcapformat import HEADER_LEN
from pcapwire.query.flows import five_tuple_sql
from pcapwire.records import FlowKey, PcapChunk
from pcapwire.triggers.db import Hit, TriggerDB, flow_key
from pcapwire.triggers.match_engines import EngineSettings, TriggerEngines
from pcapwire.triggers.match_index import TS_SLACK_NS
from pcapwire.triggers.model import TriggerDef

log = logging.getLogger(__name__)

#: Chunks handed to one engine and not yet taken by it; the watch's thread waits beyond.
MAX_QUEUED_CHUNKS = 16
#: Engines started for one (trigger version, segment) before its content rules are given up.
ENGINE_ATTEMPTS = 3
#: Seconds between looks at ``stop`` while the watch waits for room in an engine's queue.
PUT_POLL_S = 0.1
#: A hit's time is a double of seconds: about 256 ns of resolution at today's epoch, on
#: top of the µs truncation (:data:`~.match_index.TS_SLACK_NS`).
FLOAT_SLACK_NS = 256

#: ``on_matches(trigger_id, new match ids)``, as the watch's.
OnMatches = Callable[[int, list[int]], None]
Key = tuple[int, int]  # (trigger id, segment id)


def with_flow_id(catalog: sqlite3.Connection, hit: Hit) -> Hit:
    """The hit with the catalog's id of its flow (the latest flow of its 5-tuple that
    began by the hit's time), when the hit has none."""
    if hit.flow_id is not None:
        return hit
    try:
        where = five_tuple_sql(FlowKey(hit.proto, hit.src_ip, hit.src_port, hit.dest_ip,
                                       hit.dest_port))
    except ValueError:
        return hit
    row = catalog.execute(
        f"SELECT id FROM flows WHERE {where.where} AND first_ns <= ? ORDER BY first_ns "
        "DESC LIMIT 1", (*where.args, int(hit.ts * 1e9) + TS_SLACK_NS + FLOAT_SLACK_NS)
    ).fetchone()
    return dataclasses.replace(hit, flow_id=row[0]) if row else hit


class ChunkFeed:
    """The chunks of one engine: put from the watch's thread (:meth:`LiveEngines.feed`),
    taken on the engines' loop; None ends it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[PcapChunk | None] = asyncio.Queue(MAX_QUEUED_CHUNKS)

    def __aiter__(self) -> ChunkFeed:
        return self

    async def __anext__(self) -> PcapChunk:
        chunk = await self.queue.get()
        if chunk is None:
            raise StopAsyncIteration
        return chunk


@dataclass(eq=False)
class LiveEngine:
    """The engine of one (trigger version, segment): ``fed`` is the segment's byte offset
    handed to it so far (it starts at the segment's first record)."""

    trigger_id: int
    version: int
    segment_id: int
    attempt: int
    feed: ChunkFeed = field(default_factory=ChunkFeed)
    fed: int = HEADER_LEN
    seq: int = 0
    ended: bool = False  # the input is over (the segment is sealed and fed to its end)
    done: bool = False  # ran to the end and every hit is written
    failed: bool = False  # stopped by an error: started again by the next step
    given_up: bool = False  # failed ENGINE_ATTEMPTS times
    task: asyncio.Task[None] | None = None  # on the engines' loop
    pool: Any = None  # its Suricata pool (no spares) while it runs: ``started`` counts


class LiveEngines:
    """The live engines of one store's watch, keyed by (trigger id, segment id). Called
    from the watch's live thread; the engines run on a loop thread of their own, their
    hits are written by a writer thread of their own (own connections)."""

    def __init__(self, root: Path, work_dir: Path, on_matches: OnMatches,
                 settings: EngineSettings | None = None) -> None:
        self.root, self.work_dir, self.on_matches = root, work_dir, on_matches
        self.settings = settings
        self.engines: dict[Key, LiveEngine] = {}
        self._started: Counter[Key] = Counter()  # Suricata starts of engines that ended
        self._starts_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._writer = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="pcapwire-triggers-engine-hits")
        self._db: TriggerDB | None = None  # the writer thread's
        self._catalog: sqlite3.Connection | None = None  # the writer thread's
        self._out: asyncio.Queue[tuple[LiveEngine, Hit | None, int]] | None = None
        self._write_task: asyncio.Task[None] | None = None

    # -- from the watch's thread -----------------------------------------------------------
    def engine(self, trigger_id: int, version: int, segment_id: int, defn: TriggerDef
               ) -> LiveEngine | None:
        """The running engine of (trigger, segment) for ``version``, started when there is
        none (or it failed, or was of another version); None once given up."""
        eng = self.engines.get((trigger_id, segment_id))
        if eng is not None and eng.version == version and (eng.given_up or not eng.failed):
            return None if eng.given_up else eng
        attempt = eng.attempt + 1 if eng is not None and eng.version == version else 1
        if eng is not None:
            self._cancel(eng)
        new = LiveEngine(trigger_id, version, segment_id, attempt)
        self.engines[(trigger_id, segment_id)] = new
        if attempt > ENGINE_ATTEMPTS:
            log.error("trigger %s: content rules on segment %s given up after %s failed "
                      "engines (see the errors above)", trigger_id, segment_id,
                      ENGINE_ATTEMPTS)
            new.given_up = True
            return None
        loop = self._start_loop()
        asyncio.run_coroutine_threadsafe(self._spawn(new, defn), loop).result()
        return new

    def feed(self, eng: LiveEngine, chunks: Iterator[PcapChunk], upto: int,
             stop: threading.Event | None) -> bool:
        """Hand ``chunks`` (the segment's bytes from ``eng.fed`` to ``upto``) to the engine,
        waiting while its queue is full; False when cut short (``stop``, or the engine
        stopped: it starts again from the segment's first byte)."""
        for chunk in chunks:
            eng.seq += 1
            if not self._put(eng, dataclasses.replace(chunk, seq=eng.seq), stop):
                return False
        eng.fed = upto
        return True

    def end(self, eng: LiveEngine, stop: threading.Event | None) -> None:
        """The segment is sealed and fed to its end: the engine's input ends."""
        if not eng.ended and self._put(eng, None, stop):
            eng.ended = True

    def starts(self) -> Counter[Key]:
        """Suricata processes started per (trigger id, segment id) so far, from the engines'
        own pool counters (an int per segment the watch has read while it runs)."""
        with self._starts_lock:
            out = Counter(self._started)
            for key, eng in list(self.engines.items()):
                if eng.pool is not None:
                    out[key] += eng.pool.started
        return out

    def finished(self, trigger_id: int, segment_id: int) -> bool:
        """Whether the segment's engine ran to its end and its hits are written (or the
        segment's content rules were given up)."""
        eng = self.engines.get((trigger_id, segment_id))
        return eng is not None and (eng.done or eng.given_up)

    def forget(self, trigger_id: int, segment_id: int) -> None:
        eng = self.engines.pop((trigger_id, segment_id), None)
        if eng is not None:
            self._cancel(eng)

    def keep_only(self, keys: set[Key]) -> None:
        """Stop the engines of other (trigger, segment) pairs (a trigger paused or deleted,
        a segment no longer read live)."""
        for key in [k for k in self.engines if k not in keys]:
            self.forget(*key)

    def close(self) -> None:
        """Stop every engine (each Suricata reaped) and the threads."""
        for key in list(self.engines):
            self.forget(*key)
        if self._loop is not None and self._thread is not None:
            asyncio.run_coroutine_threadsafe(self._stop_writer(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
        self._writer.submit(self._close_writer).result()
        self._writer.shutdown()

    # -- internals ------------------------------------------------------------------------
    def _start_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, daemon=True,
                                            name="pcapwire-triggers-engines")
            self._thread.start()
            asyncio.run_coroutine_threadsafe(self._start_writer(), loop).result()
        return self._loop

    async def _start_writer(self) -> None:
        self._out = asyncio.Queue()
        self._write_task = asyncio.create_task(self._write_loop())

    async def _stop_writer(self) -> None:
        if self._write_task is not None:
            self._write_task.cancel()
            await asyncio.wait([self._write_task])

    async def _spawn(self, eng: LiveEngine, defn: TriggerDef) -> None:
        eng.task = asyncio.create_task(self._run(eng, defn))

    async def _stop(self, eng: LiveEngine) -> None:
        if eng.task is not None and not eng.task.done():
            eng.task.cancel()
            await asyncio.wait([eng.task])  # the engines stopped, Suricata reaped

    def _put(self, eng: LiveEngine, item: PcapChunk | None, stop: threading.Event | None
             ) -> bool:
        assert self._loop is not None
        fut = asyncio.run_coroutine_threadsafe(eng.feed.queue.put(item), self._loop)
        while True:
            try:
                fut.result(PUT_POLL_S)
                return True
            except concurrent.futures.TimeoutError:
                if ((stop is not None and stop.is_set()) or eng.task is None
                        or eng.task.done()):
                    fut.cancel()
                    return False

    def _cancel(self, eng: LiveEngine) -> None:
        if self._loop is not None and eng.task is not None:
            asyncio.run_coroutine_threadsafe(self._stop(eng), self._loop).result()

    async def _run(self, eng: LiveEngine, defn: TriggerDef) -> None:
        """The engine over its feed: each hit, with its ordinal among this engine's hits
        of its (rule, flow), goes to the writer as it comes; at the end, a marker."""
        assert self._out is not None
        seen: Counter[tuple[str, str]] = Counter()
        settings = self.settings or EngineSettings()
        # a pool that keeps no spare: its counter counts the Suricata processes started
        settings = dataclasses.replace(settings, suricata={**settings.suricata,
                                                           "warm_spares": 0})
        try:
            engines = TriggerEngines(defn, self.work_dir, settings, keep_warm=True)
        except Exception:
            log.exception("trigger %s: no engine for segment %s (attempt %s of %s)",
                          eng.trigger_id, eng.segment_id, eng.attempt, ENGINE_ATTEMPTS)
            eng.failed = True
            return
        if engines.files.suricata:
            eng.pool = engines.host.analyzer("suricata").pool()
        try:
            async for hit in engines.hits(eng.feed):
                key = (hit.rule, flow_key(hit.proto, hit.src_ip, hit.src_port, hit.dest_ip,
                                          hit.dest_port))
                seen[key] += 1
                await self._out.put((eng, hit, seen[key]))
            await self._out.put((eng, None, 0))  # done once what came before is written
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("trigger %s: the engine over segment %s failed (attempt %s of %s)",
                          eng.trigger_id, eng.segment_id, eng.attempt, ENGINE_ATTEMPTS)
            eng.failed = True
        finally:
            with self._starts_lock:
                if eng.pool is not None:
                    self._started[(eng.trigger_id, eng.segment_id)] += eng.pool.started
                eng.pool = None
            await engines.aclose()

    async def _write_loop(self) -> None:
        """Writes what the engines raise: whatever is waiting, in one transaction."""
        assert self._out is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._out.get()]
            while not self._out.empty():
                batch.append(self._out.get_nowait())
            try:
                await loop.run_in_executor(self._writer, self._write, batch)
            except Exception:
                log.exception("trigger watch: writing %s engine hits failed", len(batch))

    def _write(self, batch: list[tuple[LiveEngine, Hit | None, int]]) -> None:
        """(In the writer thread.) The hits of ``batch`` per engine; engines whose end
        marker came are done after their hits."""
        if self._db is None:
            self._db = TriggerDB(self.root)
            self._catalog = sqlite3.connect(f"file:{self.root / 'catalog.sqlite'}?mode=ro",
                                            uri=True)
            self._catalog.execute("PRAGMA busy_timeout=30000")
        assert self._catalog is not None
        by_engine: dict[LiveEngine, list[tuple[Hit, int]]] = {}
        for eng, hit, ordinal in batch:
            hits = by_engine.setdefault(eng, [])
            if hit is not None:
                hits.append((with_flow_id(self._catalog, hit), ordinal))
        for eng, hits in by_engine.items():
            if hits:
                new = self._db.add_engine_hits(eng.trigger_id, eng.version, eng.segment_id,
                                               hits)
                if new:
                    self.on_matches(eng.trigger_id, new)
        for eng, hit, _ordinal in batch:
            if hit is None:
                eng.done = True

    def _close_writer(self) -> None:
        if self._db is not None:
            self._db.close()
        if self._catalog is not None:
            self._catalog.close()
