"""Keeping the index up to date, and rebuilding it.

The hooks, each called where that work finishes (all synchronous: callers on an event
loop run them in a worker thread, :func:`asyncio.to_thread`):

- :func:`index_run` after a workflow run (the engine, for runs that keep their outputs,
  does the same in its process's two indexer children: :mod:`pcapwire.search.worker`,
  :mod:`pcapwire.search.pipeline`);
- :func:`index_flows` after an ingest and when the recorder seals a segment
  (:class:`FlowIndexer`, a thread of the recorder's own);
- :func:`index_carve` after the API carved a query's result;
- :func:`index_records` for anything else that has ECS documents to add (trigger hunts and
  watches: ``index_records(root, [ecs.hit_doc(trigger, hit, match_id), ...])``).

:func:`safely` wraps a hook so that a failing index (a full disk, a locked file) is
logged and never fails the work it follows; ``pcapwire search rebuild`` (:func:`rebuild`)
makes it whole again from the stored outputs.

:func:`collector_paused` pauses Python's cyclic garbage collector while a process's own
indexing runs (the indexer child, ``pcapwire search rebuild``): a batch holds thousands
of documents (dicts, lists, tuples) alive at once, and the collector walked them again and
again as the batch grew, 10-20 % of the CPU (~20-45 µs a record, measured in
benchmarks/bench_search_pace.py). The documents are trees: reference counting frees them.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from pcapwire.search import sources
from pcapwire.search.ecs import Doc
from pcapwire.search.index import SearchIndex
from pcapwire.store.catalog import Catalog

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Documents written per transaction, and held in memory at once (~7 KiB each: ~150 MB
#: of an indexer's memory). 20,000 instead of 5,000: 5-8 µs less CPU a record (fewer
#: commits, more postings of a B-tree page written together: bench_search_pace.py runs).
BATCH = 20_000
#: The meta key holding the last segment whose flows are indexed.
FLOWS_CURSOR = "flows.segment"


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block, and as it was after (also when the
    block fails). For a process's own indexing only: other threads of the process get no
    cyclic collection meanwhile."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _batches(docs: Iterable[Doc], replace: bool, index: SearchIndex) -> int:
    """One transaction per :data:`BATCH` documents (others may write in between)."""
    n = 0
    it = iter(docs)
    while batch := list(islice(it, BATCH)):
        with index.write() as w:
            n += w.put_many(batch, replace=replace)
    return n


def index_records(root: str | Path, records: Iterable[dict[str, Any] | Doc]) -> int:
    """Add ECS documents (dicts as :mod:`.ecs` makes them; a document's identity is
    ``pcapwire.key`` when it has one, else its content) or :class:`Doc` s."""
    def docs() -> Iterator[Doc]:
        for r in records:
            if isinstance(r, Doc):
                yield r
                continue
            key = (r.get("pcapwire") or {}).get("key")
            if not key:
                key = "record:" + hashlib.sha256(json.dumps(
                    r, sort_keys=True, default=str).encode()).hexdigest()
            yield Doc(str(key), r)
    with SearchIndex.of(root) as index:
        return _batches(docs(), True, index)


def index_run(root: str | Path, run_id: str) -> int:
    """The documents of one finished workflow run (verdicts and the steps' records)."""
    with SearchIndex.of(root) as index:
        return _batches(sources.run_docs(Path(root), run_id), True, index)


def index_carve(root: str | Path, query_id: str) -> int:
    with SearchIndex.of(root) as index:
        return _batches(sources.carve_docs(Path(root), query_id), True, index)


def _flows(root: Path, index: SearchIndex, replace: bool) -> int:
    path = root / "catalog.sqlite"
    if not path.exists():
        return 0
    catalog = Catalog(path)
    try:
        after = int(index.get_meta(FLOWS_CURSOR, "0"))
        segments = sources.sealed_segments_after(catalog, after)
        if not segments:
            return 0
        flow_ids = sources.flows_of_segments(catalog, segments)
        n = _batches(sources.flow_docs(catalog, flow_ids), replace, index)
        index.set_meta(FLOWS_CURSOR, str(segments[-1]))
        return n
    finally:
        catalog.close()


def index_flows(root: str | Path) -> int:
    """The flows of segments sealed since the last call (a flow that grew into a new
    segment is indexed again, with its new totals)."""
    with SearchIndex.of(root) as index:
        return _flows(Path(root), index, True)


def catch_up(root: str | Path) -> None:
    """Index the flows of segments sealed since the index last looked, if any. An ingest
    does not wait for that (39,403 flows took ten seconds, more than the ingest itself): a
    search does it first, and so does the maintenance loop beside ``serve`` and
    ``capture``."""
    if (Path(root) / "catalog.sqlite").exists():
        safely(index_flows, root)


def rebuild(root: str | Path) -> dict[str, int]:
    """Everything again, from the stored outputs, in one transaction (searches see the
    old index until it commits), the collector paused (:func:`collector_paused`: the
    CLI's own process). Returns the documents per source."""
    root = Path(root)
    counts = {"flows": 0, "runs": 0, "carved": 0, "documents": 0}
    with collector_paused(), SearchIndex.of(root) as index, index.write() as writer:
        writer.clear()
        for run_id in sources.run_ids(root):
            counts["runs"] += 1
            counts["documents"] += writer.put_many(sources.run_docs(root, run_id),
                                                   replace=False)
        for qid in sources.carved_queries(root):
            counts["carved"] += 1
            counts["documents"] += writer.put_many(sources.carve_docs(root, qid),
                                                   replace=False)
        path = root / "catalog.sqlite"
        if path.exists():
            catalog = Catalog(path)
            try:
                segments = sources.sealed_segments_after(catalog, 0)
                flow_ids = sources.flows_of_segments(catalog, segments)
                counts["flows"] = writer.put_many(sources.flow_docs(catalog, flow_ids),
                                                  replace=False)
                if segments:
                    index.set_meta(FLOWS_CURSOR, str(segments[-1]))
            finally:
                catalog.close()
        counts["documents"] += counts["flows"]
    return counts


def safely(fn: Callable[..., T], *args: Any) -> T | None:
    """``fn(*args)``, its failure logged (the index is behind until the next rebuild)."""
    try:
        return fn(*args)
    except Exception as exc:
        log.warning("search index: %s%r failed: %s (run `pcapwire search rebuild`)",
                    getattr(fn, "__name__", fn), args, exc)
        return None


class FlowIndexer(threading.Thread):
    """The recorder's: indexes flows when told that segments were sealed (pokes made
    while it works are coalesced into one more pass)."""

    def __init__(self, root: Path) -> None:
        super().__init__(name="pcapwire-search-flows", daemon=True)
        self.root = root
        self._cond = threading.Condition()
        self._poked = False
        self._stopping = False

    def poke(self) -> None:
        with self._cond:
            self._poked = True
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self.join()

    def run(self) -> None:
        while True:
            with self._cond:
                while not (self._poked or self._stopping):
                    self._cond.wait()
                poked, self._poked = self._poked, False
                if self._stopping and not poked:
                    return
            safely(index_flows, self.root)
