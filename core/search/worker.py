"""The indexer processes: a workflow run's documents are made and written in two child
processes of the engine's (a pipeline: :mod:`pcapwire.search.pipeline`), so that indexing
does not share the engine's GIL and uses more than one core.

Measured in ``benchmarks/bench_search_pace.py``: as a thread of the engine's process the
index got 42-62 % of a core while the runs arrived back to back; the engine's own Python
(reading EVE, storing verdicts) held the GIL the rest of the time.

Measured there too (Suricata on the same two cores, load
3.4-4.4): one child that made and wrote the documents in turn (~135-160 µs CPU a record
there) got 0.5-0.8 of a core and indexed 66-88 % of what the analyzers produced; the two
stages (~75-95 µs the builder, ~60-75 the writer, ~5-15 more in all) get 0.8-1.0 cores'
worth and index 91-111 %, and a sequence's last run is searchable in half the time.
With the writer putting the batches that wait into one transaction (up to
:data:`~pcapwire.search.pipeline.MERGE_BATCHES`), alternating runs at load 2-3.5 indexed a
median ~96 % of what was produced against ~87 % before. With 16 KiB pages
(:data:`~pcapwire.search.index.PAGE_BYTES`: the writer ~70-75 instead of ~87 µs a record)
and batches of 5,000, a median ~99-100 %; with up to 6 of those a transaction, medians
of ~100-104 %, keeping pace in 54 of 84 sequences (README, the pace section).

One pair of children per process (:class:`_Pipeline`: the builder and the writer, one
process each), started lazily by the first run to index (``spawn``: the engine's process
has threads, which ``fork`` would copy half-way; not ``forkserver``, whose preload list
the trigger hunts set for their own workers), for every engine and data directory of the
process. A run is handed to both stages at once (under a lock: both take the runs in the
same order, the order they finish); each stage takes its runs one at a time, so the
builder prepares the next run while the writer writes the last one, and an index file
still has one writer at a time from this process (the per-process lock of
:func:`pcapwire.search.index._file_lock` does not reach across processes; writers of other
processes, and of this process outside the children, meet SQLite's busy timeout as
before). :func:`call` runs a function in the writer (or the builder).

A child that dies (killed, out of memory) is replaced with its partner (the link between
them may hold half a run), and the runs the pair had are handed once more to a new pair:
indexing replaces documents by key, so a run indexed in part is indexed whole again (the
runs handed again may take new ids in another order than they came). If that pair dies
too, or indexing fails, the failure is logged (``pcapwire search rebuild`` catches up)
and never fails the run. What the children log (a kept file's line that is not JSON, a
file linking out of the data directory...) goes through a queue to this process's
loggers of the same names. The pair is shut down by :func:`shutdown`, or at the
interpreter's exit (:mod:`concurrent.futures`).

The stages index a run with Python's cyclic garbage collector paused
(:func:`pcapwire.search.indexer.collector_paused`: 10-20 % of its CPU otherwise); the
collector runs again once the run is indexed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from logging.handlers import QueueListener
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any, TypeVar

from pcapwire.search import pipeline

log = logging.getLogger(__name__)

T = TypeVar("T")
#: How a child process is started (see the module docstring).
START_METHOD = "spawn"
#: Times a call is handed to a pair of children before a child that died is taken as its
#: failure.
ATTEMPTS = 2
#: The stages :func:`call` runs a function in.
BUILDER, WRITER = "builder", "writer"


class _Relay(logging.Handler):
    """Hands a record logged in a child to this process's logger of the same name."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


class _Pipeline:
    """The two children, their link (:class:`pcapwire.search.pipeline.Channel`: a pipe,
    :data:`pcapwire.search.pipeline.QUEUE_BATCHES` places in a spool directory of its
    own) and their log listener."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context(START_METHOD)
        queue: Queue[logging.LogRecord] = ctx.Queue()
        self.listener = QueueListener(queue, _Relay())
        self.listener.start()
        self.spool = Path(tempfile.mkdtemp(prefix="pcapwire-index-"))
        # removed by close(), or at the interpreter's exit (after the pools' own join)
        self._remove_spool = weakref.finalize(self, shutil.rmtree, self.spool, True)
        receiving, sending = ctx.Pipe(duplex=False)
        slots, self.abandoned = ctx.Semaphore(pipeline.QUEUE_BATCHES), ctx.Event()
        level = logging.getLogger().getEffectiveLevel()
        self.ends = (receiving, sending)
        self.stages = {
            stage: ProcessPoolExecutor(1, ctx, initializer=pipeline.start_stage, initargs=(
                queue, level, pipeline.Channel(end, slots, self.abandoned, self.spool)))
            for stage, end in ((BUILDER, sending), (WRITER, receiving))}
        #: Both stages get their runs in the same order.
        self.order = threading.Lock()

    def abandon(self) -> None:
        """Give both children up: the calls they have not started are dropped (but one a
        child, already handed to it by :mod:`concurrent.futures`), those they run stop at
        their next wait on the other stage (:class:`pcapwire.search.pipeline.Abandoned`)."""
        self.abandoned.set()
        for pool in self.stages.values():
            pool.shutdown(wait=False, cancel_futures=True)
        # not waited for: a child killed while logging can leave the pipe half-written
        self.listener.enqueue_sentinel()

    def close(self) -> None:
        """Wait for both children to end (after their calls), then drop the link."""
        for pool in self.stages.values():
            pool.shutdown(wait=True)
        if not self.abandoned.is_set():
            self.listener.stop()  # after the children's last records
        for end in self.ends:
            end.close()
        self._remove_spool()


_pipeline: _Pipeline | None = None
_guard = threading.Lock()


def _current() -> _Pipeline:
    global _pipeline
    with _guard:
        if _pipeline is None:
            _pipeline = _Pipeline()
        return _pipeline


def _replace(broken: _Pipeline) -> None:
    """Give ``broken`` up (once, however many callers saw it break); the next call starts
    a new pair."""
    global _pipeline
    with _guard:
        if _pipeline is not broken:
            return
        _pipeline = None
    broken.abandon()


#: What a call that a pair given up had gets: handed to a new pair.
_GIVEN_UP = (BrokenProcessPool, pipeline.Abandoned, concurrent.futures.CancelledError)


def _failure(future: asyncio.Future[Any]) -> BaseException | None:
    if future.cancelled():  # a pair given up drops the calls it had not started
        return concurrent.futures.CancelledError()
    return future.exception()


async def _attempts(name: str, args: tuple[Any, ...],
                    submit: Callable[[_Pipeline], list[concurrent.futures.Future[Any]]]
                    ) -> list[Any]:
    """The results of ``submit``'s futures; a pair that breaks under them is replaced and
    the calls handed to a new pair, up to :data:`ATTEMPTS` times, then
    :class:`BrokenProcessPool` is raised. Other failures are raised as they are (the
    first future's first)."""
    for attempt in range(1, ATTEMPTS + 1):
        pipe = _current()
        try:
            futures = submit(pipe)
        except BrokenProcessPool:
            futures = []
        waiting = [asyncio.wrap_future(f) for f in futures]
        pending = set(waiting)
        while pending:  # asyncio.wait: a caller cancelled leaves the stages' calls be
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            if any(isinstance(_failure(f), BrokenProcessPool) for f in done):
                _replace(pipe)  # its partner stops waiting (Abandoned)
        failures = [_failure(f) for f in waiting]
        if not futures or any(isinstance(e, _GIVEN_UP) for e in failures):
            _replace(pipe)
            # The old writer ends before a new one starts: one writer at a time, in order.
            await asyncio.to_thread(pipe.close)
            if attempt == ATTEMPTS:
                raise BrokenProcessPool(f"the indexer processes died under {name}{args!r}")
            log.warning("search index: the indexer process died; %s%r goes to a new one",
                        name, args)
            continue
        for exc in failures:
            if exc is not None:
                raise exc
        return [f.result() for f in waiting]
    raise AssertionError("unreachable")


async def call(fn: Callable[..., T], *args: Any, stage: str = WRITER) -> T:
    """``fn(*args)`` in one of the indexer children (``fn`` and ``args`` are pickled: a
    module-level function), after the calls that stage already has; a child that dies
    is replaced and the call handed to the new one, up to :data:`ATTEMPTS` times, then
    :class:`BrokenProcessPool` is raised."""
    result: T = (await _attempts(getattr(fn, "__name__", str(fn)), args, lambda pipe: [
        pipe.stages[stage].submit(fn, *args)]))[0]
    return result


async def index_run(root: Path, run_id: str) -> int | None:
    """:func:`pcapwire.search.indexer.index_run` through the pair of children; returns the
    documents indexed, or None when it failed (logged, like
    :func:`pcapwire.search.indexer.safely`)."""
    def submit(pipe: _Pipeline) -> list[concurrent.futures.Future[Any]]:
        with pipe.order:
            built = pipe.stages[BUILDER].submit(pipeline.build_run, root, run_id,
                                                 pipeline.BATCH)
            try:
                return [built, pipe.stages[WRITER].submit(pipeline.write_run, root, run_id)]
            except BrokenProcessPool:
                pipe.abandoned.set()  # the builder's run has no writer: it gives up
                raise

    try:
        written: int = (await _attempts("index_run", (root, run_id), submit))[-1]
    except Exception as exc:
        log.warning("search index: index_run%r failed: %s (run `pcapwire search rebuild`)",
                    (root, run_id), exc or type(exc).__name__)
        return None
    return written


def shutdown() -> None:
    """Stop the indexer children, after the calls they have (a later call starts a new
    pair)."""
    global _pipeline
    with _guard:
        pipe, _pipeline = _pipeline, None
    if pipe is not None:
        pipe.close()
