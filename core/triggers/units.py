"""A hunt's unit of work: one sealed segment, every matcher a definition needs run over it.

:func:`plan` lists the units of a hunt: the store's segments overlapping the scope's time
window, except those the recorder has not sealed (``capture_segments`` state ``open``, or
``missing``: its file was gone when the recorder restarted), each with the bytes it takes
as stored (:func:`pcapwire.store.compression.stored_sizes`).

:func:`run_unit` runs in a worker process of the hunt runner (:mod:`.hunt`, through
:func:`run_batch`): it opens the store itself and returns the unit's hits (before
deduplication) and its wall seconds; :func:`run_batch` returns them as the result set's
rows (:class:`~.db.HitBatch`), Suricata's alerts in file mode made rows as they arrive.
Matchers, each only when the definition asks for it:

- IP/CIDR indicators and the BPF: the flow index and the query engine (:mod:`.ip_walk`,
  :mod:`.match_index`);
- file hashes: carving (:mod:`.match_files`);
- Suricata and YARA rules, domains, URLs, JA3/JA4: the real engines (the engines' module,
  :mod:`.match_engines`). A plain segment the scope does not narrow is read by Suricata
  itself (file mode: ``suricata -r SEGMENT`` with the engines' configuration, so the unit
  finds exactly what that finds, at its speed); otherwise (scope BPF, a time window
  cutting the segment, a compressed segment, YARA rules) the engines are fed the
  segment's chunks from the query engine.

The scope's BPF and time window narrow every one of them. A unit the runner stops (abort)
raises :class:`UnitStopped`: what it found so far is not a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from pcapwire.errors import PcapwireError
from pcapwire.query.spec import QuerySpec
from pcapwire.records import PcapChunk
from pcapwire.store import Segment, Store
from pcapwire.store.catalog import Catalog
from pcapwire.store.compression import stored_sizes
from pcapwire.store.segments import segment_files
from pcapwire.triggers import match_engines
from pcapwire.triggers.db import Hit, HitBatch, stored_definition
from pcapwire.triggers.ip_walk import ip_hits
from pcapwire.triggers.match_engines import EngineSettings
from pcapwire.triggers.match_files import file_hits, wanted
from pcapwire.triggers.match_index import bpf_hits, scope_cuts
from pcapwire.triggers.model import TriggerDef

#: Recorder states of segments a hunt does not read (see :mod:`pcapwire.capture.ledger`).
UNSEALED_STATES = ("open", "missing")
#: Set in a worker process when the runner stops its units (:func:`watch_stop`).
STOP = threading.Event()
#: Seconds between looks at :data:`STOP` while Suricata reads a segment file.
STOP_POLL_S = 0.2
_T = TypeVar("_T")
_Found = TypeVar("_Found", list[Hit], HitBatch)


class UnitError(PcapwireError):
    """A unit that cannot run (its segment is gone): the attempt fails."""


class UnitStopped(PcapwireError):
    """The runner stopped the unit before it finished: not an attempt, not a result."""


def plan(catalog: Catalog, defn: TriggerDef) -> list[tuple[int, int]]:
    """(segment id, stored bytes) of every sealed segment in the scope's time window."""
    unsealed = {r[0] for r in catalog.db.execute(
        f"SELECT segment_id FROM capture_segments WHERE state IN "
        f"({','.join('?' * len(UNSEALED_STATES))})", UNSEALED_STATES)}
    ids = [s.id for s in catalog.segments(defn.scope.start_ns, defn.scope.end_ns)
           if s.id not in unsealed]
    if not ids:
        return []
    sizes = stored_sizes(catalog, ids)
    return [(i, sizes[i]) for i in ids]


def watch_stop(stop: object) -> None:
    """Worker-process initializer: :data:`STOP` follows the runner's ``stop`` (a
    multiprocessing event)."""
    def follow() -> None:
        stop.wait()  # type: ignore[attr-defined]
        STOP.set()

    threading.Thread(target=follow, name="hunt-unit-stop", daemon=True).start()


def run_unit(root: str, segment_id: int, stored_definition: str, scratch: str | None = None,
             settings: EngineSettings | None = None) -> tuple[list[Hit], float]:
    """The hits of one unit and the seconds it took (everything it takes and returns is
    plain data). ``scratch``: the carving's and the engines' work directory;
    ``settings``: the engines' server settings."""
    return _run(unit_hits, root, segment_id, stored_definition, scratch, settings)


def run_batch(root: str, segment_id: int, stored_definition: str, scratch: str | None = None,
              settings: EngineSettings | None = None) -> tuple[HitBatch, float]:
    """:func:`run_unit` with its hits as the result set takes them (a worker process's
    entry point: the runner, which writes them, gets plain rows; Suricata's alerts in
    file mode become rows as they arrive, :func:`unit_batch`)."""
    return _run(unit_batch, root, segment_id, stored_definition, scratch, settings)


def _run(matchers: Callable[[Store, Segment, TriggerDef, Path | None, EngineSettings | None],
                            _Found],
         root: str, segment_id: int, stored_definition: str, scratch: str | None,
         settings: EngineSettings | None) -> tuple[_Found, float]:
    started = time.monotonic()
    defn = _definition(stored_definition)
    with Store.existing(root) as store:
        segments = store.catalog.segments(ids=[segment_id])
        if not segments:
            raise UnitError(f"segment {segment_id} is no longer in the store (deleted by "
                            "retention since the hunt was planned)")
        found = matchers(store, segments[0], defn, Path(scratch) if scratch else None,
                         settings)
    if STOP.is_set():
        raise UnitStopped(f"segment {segment_id}: stopped")
    return found, time.monotonic() - started


@functools.lru_cache(maxsize=4)
def _definition(stored: str) -> TriggerDef:
    """A worker reads a hunt's definition once (stored: checked when it was written)."""
    return stored_definition(stored)


def reads_packets(defn: TriggerDef) -> bool:
    """Whether the definition's units read packets (else they are a few index lookups:
    IP indicators, the scope's time window cutting a segment aside)."""
    return bool(defn.bpf.strip() or defn.scope.bpf.strip() or wanted(defn)
                or needs_engines(defn))


def unit_hits(store: Store, segment: Segment, defn: TriggerDef, scratch: Path | None = None,
              settings: EngineSettings | None = None) -> list[Hit]:
    """Every matcher the definition needs, over one segment."""
    hits = _index_and_file_hits(store, segment, defn, scratch)
    if needs_engines(defn) and not STOP.is_set():
        hits += asyncio.run(_segment_engine_hits(store, segment, defn, scratch, settings))
    return hits


def unit_batch(store: Store, segment: Segment, defn: TriggerDef, scratch: Path | None = None,
               settings: EngineSettings | None = None) -> HitBatch:
    """:func:`unit_hits` as the result set's rows: those of Suricata in file mode made
    as its alerts arrive (:func:`.match_engines.collect_file_batch`: tens of thousands of
    alerts a segment, no object kept per alert)."""
    batch = HitBatch.of(_index_and_file_hits(store, segment, defn, scratch))
    if needs_engines(defn) and not STOP.is_set():
        found = asyncio.run(_segment_engine_batch(store, segment, defn, scratch, settings))
        batch = HitBatch.of_rows([*batch.rows, *found.rows]) if batch.rows else found
    return batch


def _index_and_file_hits(store: Store, segment: Segment, defn: TriggerDef,
                         scratch: Path | None) -> list[Hit]:
    """The matchers other than the engines: IPs, the BPF, file hashes."""
    hits: list[Hit] = []
    if defn.indicators.ips:
        hits += ip_hits(store, segment, defn.indicators.ips, defn.scope, STOP)
    if defn.bpf.strip() and not STOP.is_set():
        hits += bpf_hits(store, segment, defn.bpf, defn.scope, STOP)
    if wanted(defn) and not STOP.is_set():
        hits += file_hits(store, segment, defn, scratch, STOP)
    return hits


def plain_file(store: Store, segment: Segment) -> Path | None:
    """The segment's plain pcap file when it is one (not compressed; the size indexed),
    for Suricata to read itself; else None."""
    path = store.root / segment.path  # absolute when indexed in place
    if path not in segment_files(store.root, segment.path):
        return None
    try:
        return path if path.stat().st_size == segment.size else None
    except OSError:
        return None


async def _segment_engine_hits(store: Store, segment: Segment, defn: TriggerDef,
                               scratch: Path | None, settings: EngineSettings | None
                               ) -> list[Hit]:
    work = scratch or Path(store.root)
    path = _file_mode(store, segment, defn)
    if path is not None:
        hits = await _unless_stopped(match_engines.collect_file_hits(path, defn, work,
                                                                     settings), [])
        if hits is not None:
            return hits
    return await _chunk_hits(store, segment, defn, work, settings)


async def _segment_engine_batch(store: Store, segment: Segment, defn: TriggerDef,
                                scratch: Path | None, settings: EngineSettings | None
                                ) -> HitBatch:
    work = scratch or Path(store.root)
    path = _file_mode(store, segment, defn)
    if path is not None:
        batch = await _unless_stopped(match_engines.collect_file_batch(path, defn, work,
                                                                       settings),
                                      HitBatch((), 0))
        if batch is not None:
            return batch
    return HitBatch.of(await _chunk_hits(store, segment, defn, work, settings))


def _file_mode(store: Store, segment: Segment, defn: TriggerDef) -> Path | None:
    """The segment's file when Suricata reads it itself: plain, not cut by the scope."""
    path = plain_file(store, segment)
    return path if path is not None and not scope_cuts(defn.scope, segment) else None


async def _unless_stopped(work: Awaitable[_T], stopped: _T) -> _T:
    """``work``'s result; ``stopped`` when :data:`STOP` is set first (``work`` is
    cancelled: Suricata is killed; the caller raises UnitStopped)."""
    found = asyncio.ensure_future(work)
    while not found.done():
        await asyncio.wait({found}, timeout=STOP_POLL_S)
        if STOP.is_set() and not found.done():
            found.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await found
            return stopped
    return found.result()


async def _chunk_hits(store: Store, segment: Segment, defn: TriggerDef, work: Path,
                      settings: EngineSettings | None) -> list[Hit]:
    """The engines fed the segment's chunks from the query engine."""
    spec = QuerySpec(bpf=defn.scope.bpf, start_ns=defn.scope.start_ns,
                     end_ns=defn.scope.end_ns)
    engine = store.query_engine()
    plan = engine.plan(spec, segment_ids=[segment.id])

    async def chunks() -> AsyncIterator[PcapChunk]:
        async for chunk in engine.run(spec, record=False, plan=plan):
            if STOP.is_set():
                return
            yield chunk

    return await engine_hits(chunks(), defn, work, settings)


# -- the content engines (pcapwire.triggers.match_engines, the engines' module) -------------
def needs_engines(defn: TriggerDef) -> bool:
    """Whether the definition needs the content engines."""
    return match_engines.needs_engines(defn)


async def engine_hits(chunks: AsyncIterator[PcapChunk], defn: TriggerDef, work_dir: Path,
                      settings: EngineSettings | None) -> list[Hit]:
    """The engines' hits over a stream of chunks (the one call into their module)."""
    return await match_engines.collect_engine_hits(chunks, defn, work_dir, settings)
