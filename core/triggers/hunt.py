"""The hunt runner: a trigger version's retro-hunt over the store's history, unit by unit.

:func:`run_hunt` plans the hunt's units once (:func:`.units.plan`: the sealed segments in
the scope, up to the bound the watch left it, :meth:`.db.TriggerDB.hunt_scope`; a resumed
hunt keeps its units) and runs the queued ones in worker processes (a ``forkserver``
:class:`~concurrent.futures.ProcessPoolExecutor`, ``workers`` at a time, each opening the
store itself). A hunt of domain, URL, JA3 and JA4 indicators alone plans only the segments
the metadata index does not rule out (:mod:`.match_metadata`). The runner process alone
writes the trigger database: each unit is started
(:meth:`~.db.TriggerDB.start_units`), then finished with its hits in one transaction (the
checkpoint, :meth:`~.db.TriggerDB.finish_unit`) or failed (retried up to
:data:`~.db.UNIT_ATTEMPTS`, then listed). A finished unit never runs again: a runner
killed at any moment resumes the hunt with the same result set and no duplicates (the
units it left ``running`` are queued again, their attempt counted).

Units that read no packets (:func:`.units.reads_packets`: IP indicators alone, answered
by the flow index) run in the runner itself, :data:`INDEX_BATCH_UNITS` at a time: the
batch's segments are walked in the index by the IP walkers (:class:`.ip_walk.IpWalkers`: a
dense batch's dealt round their threads, a segment at a time; SQLite making the result
set's rows in staging databases in memory) and each unit is recorded from its rows as
its own checkpoint, in order, as soon as they are handed out (a dense batch's while the
next segments are walked: the walker's thread records it; its ``seconds``: its walk's),
the staging database attached to the trigger database's connection meanwhile. No worker
pool is started for them.

The next units are handed out before the finished ones are recorded (the workers do not
wait for the runner's writes). Between units (batches of index units) the runner reads the
hunt's status (every :data:`POLL_S` while units run): ``paused`` (or the trigger paused)
-> no new units; those running (handed out before the pause) finish and are kept, and
the runner waits (or returns, ``wait_paused=False``) until the hunt is ``queued`` or
``running`` again; ``aborted`` (or the trigger deleted) -> the running units are stopped,
their work dropped. ``stop`` (the service ends) stops them too and leaves the hunt to
resume later. When every unit is done or failed the hunt is ``finished`` (``failed`` when
every unit failed). :func:`progress` is what the CLI and the API show.

One runner per hunt: a second :func:`run_hunt` of the same hunt (another process) returns
at once (a lock file under ``<data-dir>/triggers-work/``).
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pcapwire.store import Store
from pcapwire.triggers import match_metadata, units
from pcapwire.triggers.db import HitBatch, Hunt, StagedRows, TriggerDB
from pcapwire.triggers.ip_walk import IpWalkers
from pcapwire.triggers.match_engines import EngineSettings
from pcapwire.triggers.model import TriggerDef

log = logging.getLogger(__name__)

#: Seconds between reads of a hunt's status while its units run or while it is paused.
POLL_S = 0.5
#: Under the data directory: the runners' lock files and the carving scratch space.
WORK_DIR = "triggers-work"
#: Test hook: the runner kills itself (SIGKILL) right after recording this many units.
KILL_AFTER_ENV = "PCAPWIRE_TEST_HUNT_KILL_AFTER"
ENDED = ("aborted", "finished", "failed")
#: Imported once by the forkserver the worker processes are forked from (each worker
#: would import them itself: ~0.5 s of start on a loaded machine).
FORKSERVER_PRELOAD = ["pcapwire.triggers.units", "pcapwire.plugins.suricata.eve"]
#: Units that read no packets answered by one walk of the flow index (each walk visits the
#: indicators' flows of the whole store; the status is read between batches).
INDEX_BATCH_UNITS = 16

OnMatches = Callable[[int, list[int]], None]


def run_hunt(root: str | os.PathLike[str], hunt_id: int, stop: threading.Event,
             workers: int = os.cpu_count() or 1, on_matches: OnMatches | None = None,
             wait_paused: bool = True, engine_settings: EngineSettings | None = None,
             narrow: bool = True) -> list[int]:
    """Run (or resume) a hunt until it ends, is aborted, or ``stop`` is set; returns the ids
    of the matches it found that are new to the trigger (also handed to ``on_matches``
    (trigger id, match ids) after every unit: in the calling thread, or an IP walker's
    for the units the flow index answers). ``engine_settings``: the content engines'
    server settings (:class:`~.match_engines.EngineSettings`); ``narrow``: plan only the
    units the metadata index leaves to scan (:mod:`.match_metadata`; False: every one)."""
    root = Path(root)
    with _hunt_lock(root, hunt_id) as held, TriggerDB(root) as tdb:
        if not held:
            log.info("hunt %d: another runner has it", hunt_id)
            return []
        return _Runner(root, tdb, tdb.hunt(hunt_id), stop, max(1, workers), on_matches,
                       wait_paused, engine_settings, narrow).run()


def run_pending(root: str | os.PathLike[str], stop: threading.Event,
                workers: int = os.cpu_count() or 1, on_matches: OnMatches | None = None,
                engine_settings: EngineSettings | None = None) -> list[int]:
    """Every queued or running hunt of an active trigger, oldest first, one after the
    other (a hunt paused meanwhile is left for a later call); returns the new match ids."""
    with TriggerDB(root) as tdb:
        hunts = [h.id for h in tdb.hunts(statuses=("queued", "running"))
                 if tdb.state(h.trigger_id) == "active"]
    new: list[int] = []
    for hunt_id in hunts:
        if stop.is_set():
            break
        new += run_hunt(root, hunt_id, stop, workers, on_matches, False, engine_settings)
    return new


def progress(hunt: Hunt, now: float | None = None) -> dict[str, Any]:
    """Bytes and units done of the total, percent, the rate so far (bytes done per second
    since the hunt started) and the ETA at that rate (None while unknown)."""
    now = time.time() if now is None else now
    done = hunt.status in ("finished", "failed")
    percent = (100.0 * hunt.bytes_done / hunt.bytes_total if hunt.bytes_total
               else 100.0 if done else 0.0)
    elapsed = ((hunt.finished or now) - hunt.started) if hunt.started else 0.0
    rate = hunt.bytes_done / elapsed if elapsed > 0 and hunt.bytes_done else None
    remaining = hunt.bytes_total - hunt.bytes_done
    eta = 0.0 if done else (remaining / rate if rate else None)
    return {"status": hunt.status, "percent": round(percent, 2),
            "bytes_done": hunt.bytes_done, "bytes_total": hunt.bytes_total,
            "units_done": hunt.units_done, "units_failed": hunt.units_failed,
            "units_total": hunt.units_total,
            "rate_bytes_s": None if rate is None else round(rate, 1),
            "eta_s": None if eta is None else round(eta, 1)}


@contextmanager
def _hunt_lock(root: Path, hunt_id: int) -> Iterator[bool]:
    work = root / WORK_DIR
    work.mkdir(exist_ok=True)
    with open(work / f"hunt-{hunt_id}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


class _Inline(Executor):
    """Runs each unit at once, in the runner: a unit of an index batch whose segment the
    batch did not find (its error is the unit function's)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as exc:  # the unit's outcome, recorded like a worker's
            fut.set_exception(exc)
        return fut


class _Runner:
    def __init__(self, root: Path, tdb: TriggerDB, hunt: Hunt, stop: threading.Event,
                 workers: int, on_matches: OnMatches | None, wait_paused: bool,
                 engine_settings: EngineSettings | None, narrow: bool) -> None:
        self.root, self.tdb, self.hunt, self.stop = root, tdb, hunt, stop
        self.engine_settings, self.narrow = engine_settings, narrow
        self.workers, self.on_matches, self.wait_paused = workers, on_matches, wait_paused
        self.new: list[int] = []
        self.recorded = 0
        self.defn: TriggerDef = tdb.version_definition(hunt.trigger_id, hunt.version)

    @functools.cached_property
    def definition(self) -> str:
        """The definition as the unit function takes it (made once, when needed)."""
        return json.dumps(self.defn.to_dict())

    def _unit_args(self, seg: int) -> tuple[Any, ...]:
        """The unit function's arguments (:func:`.units.run_batch`) for a segment."""
        return (str(self.root), seg, self.definition, str(self.root / WORK_DIR),
                self.engine_settings)

    def run(self) -> list[int]:
        hunt, tdb, defn = self.hunt, self.tdb, self.defn
        if hunt.status in ENDED:
            return []
        if not tdb.units(hunt.id):
            bound, live = tdb.hunt_scope(hunt.trigger_id)
            planned = []  # a data directory nothing was stored in yet: nothing to hunt
            if (self.root / "catalog.sqlite").is_file():
                with Store.existing(self.root) as store:
                    planned = units.plan(store.catalog, defn)
                    if self.narrow and match_metadata.narrowable(defn) and planned:
                        keep = match_metadata.needed_segments(
                            self.root, store.catalog, defn, [s for s, _ in planned])
                        log.info("hunt %d: the metadata index leaves %d of %d segments to "
                                 "scan", hunt.id, len(keep), len(planned))
                        planned = [(s, b) for s, b in planned if s in keep]
            tdb.plan_units(hunt.id, [(s, b) for s, b in planned
                                     if s <= bound and s not in live])
        tdb.requeue_units(hunt.id)  # what a runner killed earlier left running
        queued = deque(u["segment_id"] for u in tdb.units(hunt.id, ("queued",)))
        if not units.reads_packets(defn):
            return self._run_index(queued)
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(FORKSERVER_PRELOAD)
        stop_units = ctx.Event()
        pool: Executor = ProcessPoolExecutor(min(self.workers, max(1, len(queued))), ctx,
                                             initializer=units.watch_stop,
                                             initargs=(stop_units,))
        inflight: dict[Future[tuple[HitBatch, float]], int] = {}
        try:
            while True:
                status = self._status()
                if status == "aborted" or self.stop.is_set():
                    stop_units.set()
                    self._drain(inflight, queued, interrupted=True,
                                keep_finished=status != "aborted")
                    return self.new
                if status == "paused" and not inflight and not self.wait_paused:
                    return self.new
                if status == "queued":
                    tdb.move_hunt(hunt.id, "running", ("queued",))
                if status != "paused":
                    self._submit(pool, inflight, queued)
                if not inflight:
                    if status == "paused":
                        self.stop.wait(POLL_S)
                        continue
                    self._finish()
                    return self.new
                done, _ = wait(inflight, timeout=POLL_S, return_when=FIRST_COMPLETED)
                ended = [(fut, inflight.pop(fut)) for fut in done]
                if (ended and isinstance(pool, ProcessPoolExecutor)
                        and not any(isinstance(f.exception(), BrokenProcessPool)
                                    for f, _ in ended)
                        and not self.stop.is_set() and self._status() == "running"):
                    # the next units start before these are recorded: a unit's tens of
                    # thousands of hits take the runner ~0.5 s to write
                    self._submit(pool, inflight, queued)
                broken = False
                for fut, seg in ended:
                    broken |= self._record(fut, seg, queued)
                if broken:  # a worker died: its pool cannot run more units
                    self._drain(inflight, queued, interrupted=False)
                    pool.shutdown(wait=True)
                    pool = ProcessPoolExecutor(self.workers, ctx, initializer=units.watch_stop,
                                               initargs=(stop_units,))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _run_index(self, queued: deque[int]) -> list[int]:
        """The units of a definition that reads no packets, in the runner, a batch of up to
        :data:`INDEX_BATCH_UNITS` at a time; the status is obeyed between batches."""
        walkers = IpWalkers(self.root / "catalog.sqlite")  # connects on the first batch
        try:
            while True:
                status = self._status()
                if status == "aborted" or self.stop.is_set():
                    return self.new
                if status == "paused":
                    if not self.wait_paused:
                        return self.new
                    self.stop.wait(POLL_S)
                    continue
                if status == "queued":
                    self.tdb.move_hunt(self.hunt.id, "running", ("queued",))
                if not queued:
                    self._finish()
                    return self.new
                batch = [queued.popleft() for _ in range(min(INDEX_BATCH_UNITS, len(queued)))]
                self._index_batch(walkers, batch, queued)
        finally:
            walkers.close()

    def _index_batch(self, walkers: IpWalkers, batch: list[int], queued: deque[int]) -> None:
        """The batch's segments walked in the flow index (:meth:`.ip_walk.IpWalkers.walk`),
        each unit recorded from the rows SQLite made as they are handed out, in order (a
        dense batch's while the next segments are walked; their staging database attached
        to the trigger database's connection; the catalog never is: the units'
        transactions take no lock on it). Units ``stop`` left unrecorded are queued again;
        a segment no longer in the store goes through the unit function: its error is the
        unit's."""
        self.tdb.start_units(self.hunt.id, batch)
        segments = walkers.segments_of(batch)

        def record(seg: int, rows: StagedRows, seconds: float) -> None:
            self._done(seg, rows, seconds)
            self._count()

        walkers.walk(segments, self.defn.indicators.ips, self.defn.scope, self.stop,
                     lambda: Store.existing(self.root), self.tdb.db, record)
        if self.stop.is_set():  # those left running (a scope's packets read in part)
            self.tdb.requeue_units(self.hunt.id, batch, attempt_counts=False)
            return
        walked = {s.id for s in segments}
        for seg in batch:
            if seg not in walked:
                self._record(_Inline().submit(units.run_batch, *self._unit_args(seg)),
                             seg, queued)

    def _submit(self, pool: Executor, inflight: dict[Future[tuple[HitBatch, float]], int],
                queued: deque[int]) -> None:
        """Hand out queued units while a worker is free."""
        while queued and len(inflight) < self.workers:
            seg = queued.popleft()
            self.tdb.start_units(self.hunt.id, [seg])
            inflight[pool.submit(units.run_batch, *self._unit_args(seg))] = seg

    def _status(self) -> str:
        """The hunt's status as the runner obeys it (a paused trigger pauses its hunt)."""
        hunt = self.tdb.hunt(self.hunt.id)
        state = self.tdb.state(hunt.trigger_id)
        if state == "deleted":
            return "aborted"
        return "paused" if state == "paused" and hunt.status not in ENDED else hunt.status

    def _record(self, fut: Future[tuple[HitBatch, float]], seg: int,
                queued: deque[int]) -> bool:
        """Checkpoint one unit's outcome; True when its worker process died."""
        hunt = self.hunt
        try:
            hits, seconds = fut.result()
        except units.UnitStopped:
            self.tdb.requeue_units(hunt.id, [seg], attempt_counts=False)
            return False
        except BrokenProcessPool as exc:
            self._fail(seg, f"the worker process running it died: {exc}", queued)
            return True
        except Exception as exc:  # the unit's own error: retried, then listed
            self._fail(seg, f"{type(exc).__name__}: {exc}", queued)
        else:
            self._done(seg, hits, seconds)
        self._count()
        return False

    def _done(self, seg: int, hits: HitBatch | StagedRows, seconds: float) -> None:
        """A unit's checkpoint: its hits and its state in one transaction."""
        hunt = self.hunt
        new = self.tdb.finish_unit(hunt.id, seg, hits, hunt.version, seconds)
        self.new += new
        if new and self.on_matches is not None:
            self.on_matches(hunt.trigger_id, new)

    def _count(self) -> None:
        """One more unit recorded (the test hook kills the runner after the N-th)."""
        self.recorded += 1
        if os.environ.get(KILL_AFTER_ENV) == str(self.recorded):
            os.kill(os.getpid(), signal.SIGKILL)

    def _fail(self, seg: int, error: str, queued: deque[int]) -> None:
        log.warning("hunt %d, segment %d: %s", self.hunt.id, seg, error)
        if not self.tdb.fail_unit(self.hunt.id, seg, error):
            queued.append(seg)

    def _drain(self, inflight: dict[Future[tuple[HitBatch, float]], int], queued: deque[int],
               interrupted: bool, keep_finished: bool = True) -> None:
        """Wait for the units in flight: kept when they finished (unless not
        ``keep_finished``: an aborted hunt drops what was still in flight when the abort was
        seen, finished or not); when ``interrupted`` (stopped, aborted) the rest are queued
        again without counting the attempt."""
        wait(inflight)
        for fut, seg in inflight.items():
            if interrupted and (not keep_finished or fut.cancelled() or isinstance(
                    fut.exception(), units.UnitStopped)):
                self.tdb.requeue_units(self.hunt.id, [seg], attempt_counts=False)
            else:
                self._record(fut, seg, queued)
        inflight.clear()

    def _finish(self) -> None:
        hunt = self.tdb.hunt(self.hunt.id)
        failed = hunt.units_total > 0 and hunt.units_failed == hunt.units_total
        error = None
        if failed:
            first = self.tdb.units(hunt.id, ("failed",))[0]
            error = f"every unit failed; segment {first['segment_id']}: {first['error']}"
        self.tdb.move_hunt(hunt.id, "failed" if failed else "finished", ("queued", "running"),
                           error)
