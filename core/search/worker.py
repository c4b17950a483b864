"""The indexer process: a workflow run's documents are made and written in a child
process of the engine's, so that indexing does not share the engine's GIL.

Measured in ``benchmarks/bench_search_pace.py``: as a thread of the engine's process the
index got 42-62 % of a core while the runs arrived back to back; the engine's own Python
(reading EVE, storing verdicts) held the GIL the rest of the time.

One child per process, started lazily by the first run to index (``spawn``: the engine's
process has threads, which ``fork`` would copy half-way; not ``forkserver``, whose
preload list the trigger hunts set for their own workers), for every engine and data
directory of the process. Runs go to it in the order they finish and it indexes them one
at a time, so an index file still has one writer at a time from this process (the
per-process lock of :func:`pcapwire.search.index._file_lock` does not reach across
processes; writers of other processes, and of this process outside the child, meet
SQLite's busy timeout as before).

A child that dies (killed, out of memory) is replaced, and the run it had is handed once
more to the new child: indexing replaces documents by key, so a run indexed in part is
indexed whole again. If that child dies too, or indexing fails, the failure is logged
(``pcapwire search rebuild`` catches up) and never fails the run. What the child logs
(a kept file's line that is not JSON, a file linking out of the data directory...) goes
through a queue to this process's loggers of the same names. The child is shut down by
:func:`shutdown`, or at the interpreter's exit (:mod:`concurrent.futures`).

The child indexes a run with Python's cyclic garbage collector paused
(:func:`pcapwire.search.indexer.collector_paused`: 10-20 % of its CPU otherwise); the
collector runs again once the run is indexed.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from logging.handlers import QueueHandler, QueueListener
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
#: How a child process is started (see the module docstring).
START_METHOD = "spawn"
#: Times a call is handed to a child before a child that died is taken as its failure.
ATTEMPTS = 2

_pool: ProcessPoolExecutor | None = None
_listener: QueueListener | None = None
_pool_guard = threading.Lock()


class _Relay(logging.Handler):
    """Hands a record logged in the child to this process's logger of the same name."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def _child_logging(queue: Queue[logging.LogRecord], level: int) -> None:
    """The child's logging: every record at ``level`` (the parent's) or above, to the
    parent through ``queue``."""
    root = logging.getLogger()
    root.handlers[:] = [QueueHandler(queue)]
    root.setLevel(level)


def _current() -> ProcessPoolExecutor:
    global _pool, _listener
    with _pool_guard:
        if _pool is None:
            ctx = multiprocessing.get_context(START_METHOD)
            queue: Queue[logging.LogRecord] = ctx.Queue()
            _listener = QueueListener(queue, _Relay())
            _listener.start()
            _pool = ProcessPoolExecutor(1, ctx, initializer=_child_logging, initargs=(
                queue, logging.getLogger().getEffectiveLevel()))
        return _pool


def _replace(broken: ProcessPoolExecutor) -> None:
    """Drop ``broken`` (once, however many callers saw it break); the next call starts a
    new child. Its log listener is told to stop but not waited for (a child killed while
    writing a record can leave the queue's pipe half-written)."""
    global _pool, _listener
    with _pool_guard:
        if _pool is not broken:
            return
        listener, _pool, _listener = _listener, None, None
    broken.shutdown(wait=False, cancel_futures=True)
    if listener is not None:
        listener.enqueue_sentinel()


async def call(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the indexer child (``fn`` and ``args`` are pickled: a module-level
    function); a child that dies is replaced and the call handed to the new one, up to
    :data:`ATTEMPTS` times, then :class:`BrokenProcessPool` is raised."""
    loop = asyncio.get_running_loop()
    for attempt in range(1, ATTEMPTS + 1):
        pool = _current()
        try:
            return await loop.run_in_executor(pool, fn, *args)
        except BrokenProcessPool:
            _replace(pool)
            if attempt == ATTEMPTS:
                raise
            log.warning("search index: the indexer process died; %s%r goes to a new one",
                        getattr(fn, "__name__", fn), args)
    raise AssertionError("unreachable")


def _index_run(root: Path, run_id: str) -> int:
    """In the child: the run's documents, with the cyclic garbage collector paused (see
    the module's docstring)."""
    from pcapwire.search.indexer import collector_paused, index_run

    with collector_paused():
        return index_run(root, run_id)


async def index_run(root: Path, run_id: str) -> int | None:
    """:func:`pcapwire.search.indexer.index_run` in the indexer child; returns the
    documents indexed, or None when it failed (logged, like
    :func:`pcapwire.search.indexer.safely`)."""
    try:
        return await call(_index_run, root, run_id)
    except Exception as exc:
        log.warning("search index: index_run%r failed: %s (run `pcapwire search rebuild`)",
                    (root, run_id), exc or type(exc).__name__)
        return None


def shutdown() -> None:
    """Stop the indexer child, after the calls it has (a later call starts a new one)."""
    global _pool, _listener
    with _pool_guard:
        pool, listener, _pool, _listener = _pool, _listener, None, None
    if pool is not None:
        pool.shutdown(wait=True)
    if listener is not None:
        listener.stop()  # after the child's last records
