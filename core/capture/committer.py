"""The committer: the one thread that writes the recorder's catalog.

Writers hand it :class:`~pcapwire.capture.ledger.SegmentCommit` items; it applies all that
are waiting in one transaction (so a slow catalog, busy with an ingest, costs fewer
transactions, never a stalled writer), then renames the segments sealed in it from
``.live`` to their final name (the row exists before the file has that name, so
an ingest's orphan clean-up never takes it for debris) and appends their seal entries
to the store's custody log (with the SHA-256 the writer computed as it wrote). A commit
that fails (disk full, catalog locked for longer than its busy timeout) is retried, in
order, until it succeeds; each failure counts as a write error and is logged at most
every LOG_EVERY seconds.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from pcapwire.capture import ledger
from pcapwire.capture.ledger import SegmentCommit
from pcapwire.capture.status import LatencyHistogram
from pcapwire.custody import actor_cli, events
from pcapwire.search.indexer import FlowIndexer
from pcapwire.store.catalog import Catalog
from pcapwire.store.segments import LIVE_SUFFIX

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_EVERY = 1.0  # seconds between attempts at a commit that failed
LOG_EVERY = 10.0  # seconds between log lines about failing commits
STORE_BYTES_EVERY = 1.0  # seconds between reads of the store's total size
STOP_RETRIES = 5  # attempts at the last commits when the recorder stops


class Committer(threading.Thread):
    def __init__(self, root: Path, latency: LatencyHistogram) -> None:
        super().__init__(name="pcapwire-capture-commit", daemon=True)
        self.root = root
        self.catalog = Catalog(root / "catalog.sqlite")
        self.latency = latency
        self.ids: dict[str, int] = {}  # catalog path -> segment id
        self.write_errors = 0
        self.commits = 0
        self.store_bytes = ledger.store_bytes(self.catalog)
        self.last_error: str | None = None
        self._pending: list[SegmentCommit] = []
        self._calls: list[tuple[Callable[[Catalog], Any], Future[Any]]] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._last_log = 0.0
        self._bytes_at = 0.0
        self.actor = actor_cli()  # who the seal entries name
        self.search = FlowIndexer(root)  # flows of sealed segments into the metadata index

    # -- from other threads --------------------------------------------------------------------
    def submit(self, item: SegmentCommit) -> None:
        with self._cond:
            self._pending.append(item)
            self._cond.notify_all()

    def call(self, fn: Callable[[Catalog], T]) -> T:
        """Run ``fn(catalog)`` in this thread (the catalog connection is this thread's)
        and return its result."""
        return self.call_soon(fn).result()

    def call_soon(self, fn: Callable[[Catalog], T]) -> Future[T]:
        """Run ``fn(catalog)`` in this thread, before the commits that wait."""
        fut: Future[T] = Future()
        with self._cond:
            self._calls.append((fn, fut))
            self._cond.notify_all()
        return fut

    @property
    def backlog(self) -> int:
        with self._cond:
            return len(self._pending)

    def stop(self) -> None:
        """Commit what is pending (a few more attempts if it keeps failing), then end."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self.join()

    # -- the thread ----------------------------------------------------------------------------
    def run(self) -> None:
        failures = 0
        self.search.start()
        try:
            while True:
                with self._cond:
                    while not (self._pending or self._calls or self._stopping):
                        self._cond.wait()
                    calls, self._calls = self._calls, []
                    items = list(self._pending)
                    stopping = self._stopping
                for fn, fut in calls:
                    self._run_call(fn, fut)
                if items:
                    if self._commit(items):
                        failures = 0
                        with self._cond:
                            del self._pending[:len(items)]
                    else:
                        failures += 1
                        if stopping and failures >= STOP_RETRIES:
                            self._give_up(items)
                            return
                        with self._cond:
                            self._cond.wait(RETRY_EVERY)
                        continue
                with self._cond:
                    if self._stopping and not self._pending and not self._calls:
                        return
        finally:
            self.search.poke()  # segments sealed at the stop
            self.search.stop()
            try:
                self.store_bytes = ledger.store_bytes(self.catalog)
            except sqlite3.Error:
                pass
            self.catalog.close()

    def _run_call(self, fn: Callable[[Catalog], Any], fut: Future[Any]) -> None:
        try:
            fut.set_result(fn(self.catalog))
        except BaseException as exc:  # delivered to the caller
            fut.set_exception(exc)

    def _commit(self, items: list[SegmentCommit]) -> bool:
        try:
            ledger.apply(self.catalog, items, self.ids)
        except Exception as exc:  # disk full, locked too long …: retried, never lost here
            if not isinstance(exc, (sqlite3.Error, OSError)):
                log.exception("catalog commit failed")
            self.write_errors += 1
            self.last_error = f"catalog commit failed: {exc}"
            now = time.monotonic()
            if now - self._last_log >= LOG_EVERY:
                self._last_log = now
                log.error("catalog commit failed (%s); %d commits wait and are retried "
                          "every %.0f s (write errors so far: %d)", exc, len(items),
                          RETRY_EVERY, self.write_errors)
            return False
        self.commits += 1
        done = time.time_ns()
        for c in items:
            for packets, first, last in c.arrivals:
                self.latency.observe_spread(packets, (done - last) / 1e9, (done - first) / 1e9)
            if c.sealed and c.rel is not None:
                self._rename(c.rel)
                self._sealed(c)
                self.search.poke()
        now = time.monotonic()
        if now - self._bytes_at >= STORE_BYTES_EVERY:
            self._bytes_at = now
            self.store_bytes = ledger.store_bytes(self.catalog)
        return True

    def _rename(self, rel: str) -> None:
        final = self.root / rel
        try:
            os.replace(final.with_name(final.name + LIVE_SUFFIX), final)
        except OSError as exc:  # the row says sealed; a restart renames it (recovery)
            log.error("%s: cannot rename the sealed segment into place: %s", rel, exc)

    def _sealed(self, c: SegmentCommit) -> None:
        assert c.rel is not None
        try:
            events.sealed(self.root, [events.segment_object(c.rel, c.sha256, c.size,
                                                            self.ids.get(c.rel))],
                          self.actor, {"source": c.interface})
        except (OSError, ValueError) as exc:  # the segment is stored; its seal is not
            log.error("%s: cannot append its seal to the custody log: %s", c.rel, exc)

    def _give_up(self, items: list[SegmentCommit]) -> None:
        segs = sorted({c.rel for c in items if c.rel is not None})
        log.error("stopping with %d catalog commits not written (%s): %d segments stay open "
                  "and are recovered from their files by the next `pcapwire capture` on "
                  "this data directory; loss counts of that period are lost", len(items),
                  self.last_error, len(segs))
