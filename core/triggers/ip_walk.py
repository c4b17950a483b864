"""IP/CIDR indicators answered from the flow index, SQLite making the result set's rows,
a batch's segments shared out among threads.

The segments' flows (``flow_segments``) and their addresses (``flows``, 16 packed bytes,
IPv4 in the first four) — no packet is read. An address matches an indicator as the query
engine's ``host``/``net`` filters do (:func:`pcapwire.query.bpfplan.host_sql` /
``net_sql``: same IP version, address or network contains it). One hit per (indicator,
flow); its 5-tuple has the flow's initiator as source (``flows.initiator_is_a``), its time
is the flow's first packet in the segment. The scope narrows: its BPF and a time window
that cuts through the segment are checked on the packets of the indicator's flows (the
query engine, restricted to those flows, :func:`.match_index.bpf_flows`), so a flow
matches only if a packet of it in the scope does.

:class:`IpWalkers`: :data:`WALK_THREADS` connections to the catalog (read-only, mapped into
memory), each with a staging database in memory of its own (SQLite's ``memdb``: other
connections of the process attach it by name). :meth:`IpWalkers.walk` walks the index for
a batch's segments (:func:`_stage`: nothing fetched, nothing bound; the texts, keys and
evidence JSON made in SQL, the addresses' text by an SQL function in C,
:data:`IP_TEXT_SQL`), leaving the result set's rows in a staging database (a walker keeps
the indicators of its last walk: loaded again only when they change), and hands each
segment's rows out while that database is attached to the consumer's connection (the
trigger database's, whose units read their rows from there, :class:`~.db.StagedRows`; the
catalog never is: a unit's transaction takes no lock on it). A dense batch is dealt round
the walkers segment by segment, a thread each (Python's sqlite3 lets go of the
interpreter's lock while a statement runs, and the addresses' text takes none): one walker
hands a segment's rows out (the consumer records a unit) while the other walks, so both
cores stay busy. A sparse batch, or one with a segment the scope cuts (packets read), is
one walk by the calling thread.

:func:`ip_batches` (several segments, as :class:`~.db.HitBatch`) and :func:`ip_hits` (one
segment, as hits) read the same tables on walkers of their own.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pcapwire import _native
from pcapwire.query.bpfplan import addr_blob
from pcapwire.query.spec import QuerySpec
from pcapwire.store import Segment, Store
from pcapwire.triggers.db import Hit, HitBatch, StagedRows
from pcapwire.triggers.match_index import address_text, bpf_flows, scope_cuts
from pcapwire.triggers.model import Scope, rule_key

#: Connections (threads) that walk one batch of segments, each a share of them.
WALK_THREADS = 2
#: Bytes of the catalog a walker reads mapped into memory (no read() per page: a dense
#: walk of 8,400 flows takes ~40 % less time).
CATALOG_MMAP_BYTES = 2**30
#: Walker k's staging database is attached as this name and k, in its own connection and
#: in the one its rows are recorded from (:meth:`IpWalkers.attached`).
STAGE_SCHEMA = "ip_walk"
#: A batch is shared out among the walkers when the indicators' ranges hold at least this
#: many flows of the index (per indicator and end, :meth:`IpWalkers.flows_in_ranges`):
#: each walk looks every indicator up, so below it a second walk costs more CPU than its
#: thread saves time (1,000 indicators of which 10 hit: ~4 ms more, nothing gained).
SPLIT_MIN_FLOWS = 2_000
#: The SQL function that makes an address's text: pcapwire._native's (every connection
#: opened after :func:`pcapwire._native.sqlite_functions` has it), or
#: :func:`.match_index.address_text` when this Python's sqlite3 does not load the SQLite
#: library the native module links (the same text, ~10x the time).
IP_TEXT_SQL = "pcapwire_ip_text"
#: Seconds a walker waits for a catalog that another connection holds locked.
BUSY_TIMEOUT_S = 30.0
# The walk's tables, in a walker's staging database {w}:
# - ip_ranges: the indicators, n their position in the definition's list, lo..hi their
#   first and last address in the index's form, with their IP version and rule key;
# - ip_found: one row per (indicator, flow, segment of the flow) with an endpoint in the
#   indicator's range, in the order the walk found it (rowid): side a first, then side b
#   (an indicator containing both ends is found on side a alone), each indicator in turn,
#   its flows in the order of the endpoint's index; the addresses as text;
# - ip_times: per (segment the scope cuts, flow found in it): the time of its first
#   packet in the scope (NULL: none there, the flow is left out); empty when the scope
#   cuts no segment (a flow's time is then its first packet in the segment);
# - ip_rows: the result set's rows (:attr:`.db.HitBatch.rows`) of every segment walked,
#   a segment's rows together, in the order of their first hit: one row per (segment,
#   indicator, flow key), merged as HitBatch.of_rows merges (a match id is taken by every
#   row the result set's upsert sees, so a unit's rows of one match must be one).
_IP_TABLES = """
CREATE TABLE {w}.ip_ranges (n INTEGER PRIMARY KEY, ipver INTEGER NOT NULL,
  lo BLOB NOT NULL, hi BLOB NOT NULL, value TEXT NOT NULL, rule TEXT NOT NULL);
CREATE TABLE {w}.ip_found (seg INTEGER, fid INTEGER, n INTEGER,
  side INTEGER, first INTEGER, proto INTEGER, text_a TEXT, port_a INTEGER, text_b TEXT,
  port_b INTEGER, init INTEGER);
CREATE TABLE {w}.ip_times (seg INTEGER, fid INTEGER, ts INTEGER,
  PRIMARY KEY (seg, fid)) WITHOUT ROWID;
CREATE TABLE {w}.ip_rows (segment_id INTEGER, n INTEGER, rule TEXT,
  flow_key TEXT, flow_id INTEGER, proto INTEGER, src_ip TEXT, src_port INTEGER,
  dest_ip TEXT, dest_port INTEGER, ts REAL, evidence TEXT, hits INTEGER,
  UNIQUE (segment_id, n, flow_key));
"""
# The indicators into ip_ranges in one statement (under half the time of binding 1,000
# rows): :ranges, a JSON list of [IP version, value, rule key] (n: the
# position in it), range n's first and last address bytes 16n..16n+15 of :lo and :hi.
_IP_RANGES_SQL = (
    "INSERT INTO {w}.ip_ranges SELECT j.key, j.value ->> 0, substr(:lo, 16 * j.key + 1, 16), "
    "substr(:hi, 16 * j.key + 1, 16), j.value ->> 1, j.value ->> 2 "
    "FROM json_each(:ranges) j")
# One side of the walk: each indicator's range looked up in the index of that endpoint
# (flows_key: side a, flows_b: side b), then the flow's rows of the wanted segments
# (flow_segments' key). A flow's time span (flows) and a segment's (segments) are the
# min and max of the same packet times, so a flow with packets in one of the segments
# overlaps their span [:first, :last]: one that does not is skipped on its row, before
# its flow_segments rows are looked up (on dense traffic most of a busy host's flows,
# when the segments are a part of the store). Before that, on the index entry alone, a
# flow whose id lies outside the segments' flow ids [:f0, :f1] (_IP_BOUNDS_SQL) is
# skipped: it has no row in them (flow ids are given in the order flows are first seen,
# so on a busy host this skips most of the rows the time check would read).
_IP_WALK_SQL = (
    "INSERT INTO {w}.ip_found SELECT s.segment_id, f.id, r.n, {side}, s.first_ns, "
    "f.proto, {ip_text}(f.ipver, f.addr_a), f.port_a, {ip_text}(f.ipver, f.addr_b), "
    "f.port_b, f.initiator_is_a "
    "FROM {w}.ip_ranges r CROSS JOIN main.flows f INDEXED BY {index} "
    "CROSS JOIN main.flow_segments s WHERE f.addr_{col} BETWEEN r.lo AND r.hi AND "
    "f.id BETWEEN :f0 AND :f1 AND "
    "f.ipver = r.ipver{other} AND f.first_ns <= :last AND f.last_ns >= :first AND "
    "s.flow_id = f.id AND s.segment_id BETWEEN :s0 AND :s1{listed}")
# ... and the ids between :s0 and :s1 that are not the segments' left out (none when the
# segments are a run of ids: the condition left out, ~0.1 us a row)
_LISTED_SQL = " AND s.segment_id IN (SELECT value FROM json_each(:segments))"

# The least and greatest flow id of the segments :segments (a JSON list of ids; per
# segment the two ends of its part of the index flow_segments_seg).
_IP_BOUNDS_SQL = (
    "SELECT min(lo), max(hi) FROM (SELECT (SELECT min(flow_id) FROM main.flow_segments "
    "WHERE segment_id = j.value) AS lo, (SELECT max(flow_id) FROM main.flow_segments "
    "WHERE segment_id = j.value) AS hi FROM json_each(:segments) j)")



_WALK_SIDES = (
    {"side": 0, "col": "a", "index": "flows_key", "other": ""},
    {"side": 1, "col": "b", "index": "flows_b", "other": " AND f.addr_a NOT BETWEEN r.lo AND r.hi"})
# The flows of the whole index in the indicators' ranges, per indicator and end (the two
# endpoint indexes alone read), up to :cap an end (-1: all; a dense list's count stops
# early: 1.6 -> 0.6 ms).
_IP_COUNT_SQL = (
    "SELECT (SELECT count(*) FROM (SELECT 1 FROM {w}.ip_ranges r CROSS JOIN main.flows f "
    "INDEXED BY flows_key WHERE f.addr_a BETWEEN r.lo AND r.hi LIMIT :cap)) + "
    "(SELECT count(*) FROM (SELECT 1 FROM {w}.ip_ranges r CROSS JOIN main.flows f "
    "INDEXED BY flows_b WHERE f.addr_b BETWEEN r.lo AND r.hi LIMIT :cap))")
# The hits in their order: a segment's flows first packet first (in the segment), a tie
# in the order of their ids; a flow's indicators in the order found (side a's as listed,
# then side b's); {columns}: the last ones (ip_hits: the indicator and the address it contains;
# ip_rows: the evidence JSON as db.evidence_json makes it, the indicator, one hit; a
# further hit of a row's (segment, indicator, flow key) adds to it, its time the
# earliest). The catalog's side a is the flow key's first end (flow_key's order:
# (address, port) of side a <= side b's, as the catalog normalises them).
_IP_HITS_SQL = (
    "SELECT h.seg, r.rule, h.proto || ' ' || h.text_a || ' ' || h.port_a || ' ' || "
    "h.text_b || ' ' || h.port_b, h.fid, h.proto, iif(h.init, h.text_a, h.text_b), "
    "iif(h.init, h.port_a, h.port_b), iif(h.init, h.text_b, h.text_a), "
    "iif(h.init, h.port_b, h.port_a), coalesce(t.ts, h.first) / 1e9, {columns} "
    "FROM {w}.ip_found h LEFT JOIN {w}.ip_times t ON t.seg = h.seg AND t.fid = h.fid "
    "JOIN {w}.ip_ranges r ON r.n = h.n WHERE t.seg IS NULL OR t.ts IS NOT NULL "
    "ORDER BY h.seg, h.first, h.fid, h.rowid")
_IP_ROWS_SQL = (
    "INSERT INTO {w}.ip_rows (segment_id, rule, flow_key, flow_id, proto, src_ip, "
    "src_port, dest_ip, dest_port, ts, evidence, n, hits) " + _IP_HITS_SQL.replace(
        "{columns}", "json_object('address', iif(h.side, h.text_b, h.text_a), "
                     "'indicator', r.value), h.n, 1") +
    " ON CONFLICT (segment_id, n, flow_key) DO UPDATE SET hits = hits + 1, "
    "ts = min(ts, excluded.ts)")
_native.sqlite_functions()  # the walkers' connections are opened after it

_ROW_COLUMNS = ("rule, flow_key, flow_id, proto, src_ip, src_port, dest_ip, dest_port, ts, "
                "evidence, hits")


class IpWalkers:
    """Connections that walk the flow index for IP indicators, each with its staging
    database (see the module); up to ``threads`` of them, opened when first needed; a
    batch is dealt round them only when the indicators' ranges hold ``split_min_flows``
    flows or more (default: :data:`SPLIT_MIN_FLOWS`). Use from one thread (:meth:`walk`
    starts its own); close when done (the staging databases go with them)."""

    def __init__(self, catalog: Path, threads: int = WALK_THREADS,
                 split_min_flows: int | None = None) -> None:
        self.catalog, self.threads = catalog, max(1, threads)
        self.split_min_flows = SPLIT_MIN_FLOWS if split_min_flows is None else split_min_flows
        self._dbs: dict[str, sqlite3.Connection] = {}  # staging schema -> its walker
        self._names: dict[str, str] = {}  # staging schema -> its memdb name
        self._loaded: dict[str, tuple[str, ...]] = {}  # staging schema -> its indicators

    def _walker(self, k: int) -> tuple[sqlite3.Connection, str]:
        """Walker ``k``'s connection and staging schema (made on first use)."""
        schema = f"{STAGE_SCHEMA}{k}"
        if schema in self._dbs:
            return self._dbs[schema], schema
        db = sqlite3.connect(f"file:{quote(str(self.catalog))}?mode=ro", uri=True,
                             isolation_level=None, check_same_thread=False,
                             timeout=BUSY_TIMEOUT_S)
        try:
            name = f"file:/pcapwire-ip-walk-{uuid.uuid4().hex}?vfs=memdb"
            db.execute(f"PRAGMA mmap_size={CATALOG_MMAP_BYTES}")
            db.execute(f"ATTACH ? AS {schema}", (name,))
            db.execute(f"PRAGMA {schema}.journal_mode=OFF")  # scratch tables: no rollback
            _ip_text_function(db)
            for create in _IP_TABLES.format(w=schema).split(";")[:-1]:
                db.execute(create)
        except BaseException:
            db.close()
            raise
        self._dbs[schema], self._names[schema] = db, name
        return db, schema

    def _indicators(self, k: int, ips: list[str]) -> tuple[sqlite3.Connection, str]:
        """Walker ``k`` with the indicators ``ips`` loaded (again only when they differ
        from the last ones)."""
        db, schema = self._walker(k)
        if self._loaded.get(schema) != tuple(ips):
            self._loaded.pop(schema, None)
            _load(db, schema, ips)
            self._loaded[schema] = tuple(ips)
        return db, schema

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()
        self._dbs.clear()
        self._names.clear()
        self._loaded.clear()

    def segments_of(self, ids: list[int]) -> list[Segment]:
        """The segments with these ids still in the catalog, as
        :meth:`pcapwire.store.catalog.Catalog.segments` reads them."""
        db, _ = self._walker(0)
        return [Segment(*r) for r in db.execute(
            "SELECT id, path, linktype, snaplen, tsprec, first_ns, last_ns, packets, size "
            "FROM main.segments WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            (json.dumps(ids),))]

    def flows_in_ranges(self, ips: list[str], cap: int = -1) -> int:
        """How many flows of the whole index the indicators' ranges hold, counted per
        (indicator, end of the flow), up to ``cap`` an end (-1: all; the index alone read:
        a dense list's walk is worth sharing out, a sparse one's is not; the capped
        count is ``cap`` or more exactly when the full count is)."""
        db, schema = self._indicators(0, ips)
        return int(db.execute(_IP_COUNT_SQL.format(w=schema), {"cap": cap}).fetchone()[0])

    def walk(self, segments: list[Segment], ips: list[str], scope: Scope,
             stop: threading.Event | None,
             store: Callable[[], AbstractContextManager[Store]],
             into: sqlite3.Connection | None,
             record: Callable[[int, StagedRows, float], None]) -> None:
        """Each segment's rows of the result set (:attr:`.db.HitBatch.rows`) handed to
        ``record`` (segment id, the rows as :class:`~.db.StagedRows`, seconds of walk), in
        the order of ``segments``, while the staging database that holds them is attached
        to ``into`` (a connection that takes URI file names, outside a transaction; None:
        read them with :meth:`rows`, during the call). The rows of earlier calls are
        dropped.

        A dense batch (several segments and walkers, no segment cut by the scope, the
        indicators' ranges holding ``split_min_flows`` flows or more,
        :meth:`flows_in_ranges`) is dealt round the walkers, a thread each (walker k: the
        k-th segment, the (k + threads)-th ...; the calling thread is walker 0): each walks
        one segment, waits for its turn, hands its rows out in its own thread, then walks
        its next, so that one walker's rows are recorded while the other walks (a unit's
        recording takes about half the time of its segment's walk; the dense benchmark hunt:
        ~66-69 -> ~60 ms). A walk of one segment costs its part of a walk of several: the
        indicators' lookups, what each walk repeats, are ~0.5 ms. ``record`` is called by
        one thread at a time. The other walkers' threads open their walker and load the
        indicators while the calling thread counts (wasted when the count says no: the
        sparse walk runs meanwhile). Else one walk of the first walker, in the calling
        thread, makes the rows of them all (a sparse walk is mostly lookups); a scope that
        cuts a segment reads packets then (``store()`` opened in the calling thread) and
        nothing is handed out when ``stop`` is set meanwhile (a partial result)."""
        shareable = (len(segments) > 1 and self.threads > 1
                     and not any(scope_cuts(scope, s) for s in segments))
        count = min(self.threads, len(segments)) if shareable else 1
        turns = _Turns()
        errors: list[BaseException] = []
        decided = threading.Event()  # set when `dense` is final
        dense = False

        def deal(k: int) -> None:
            try:
                db, schema = self._indicators(k, ips) if k else self.first()
                if k:
                    decided.wait()
                    if not dense:
                        return
                for i in range(k, len(segments), count):
                    started = time.monotonic()
                    (rows,) = _stage(db, schema, [segments[i]], scope, stop, store).values()
                    if not turns.wait(i):
                        return
                    with self._lent(schema, into):
                        record(segments[i].id, rows, time.monotonic() - started)
                    turns.done()
            except BaseException as exc:  # raised in the calling thread
                errors.append(exc)
                turns.abort()

        threads = [threading.Thread(target=deal, args=(k,), name=f"pcapwire-ip-walk-{k}")
                   for k in range(1, count)]
        for thread in threads:
            thread.start()
        try:
            try:
                dense = shareable and (self.flows_in_ranges(ips, self.split_min_flows)
                                       >= self.split_min_flows)
            finally:
                decided.set()
            if dense:
                deal(0)
            elif segments:
                self._whole(segments, ips, scope, stop, store, into, record)
        except BaseException:
            turns.abort()
            raise
        finally:
            for thread in threads:
                thread.join()
        if errors:
            raise errors[0]

    def _whole(self, segments: list[Segment], ips: list[str], scope: Scope,
               stop: threading.Event | None,
               store: Callable[[], AbstractContextManager[Store]],
               into: sqlite3.Connection | None,
               record: Callable[[int, StagedRows, float], None]) -> None:
        """:meth:`walk`'s one walk of all the segments by the first walker (each
        segment's seconds: its share of the walk's)."""
        db, schema = self._indicators(0, ips)
        started = time.monotonic()
        staged = _stage(db, schema, segments, scope, stop, store)
        if stop is not None and stop.is_set():  # a scope's packets read in part
            return
        seconds = (time.monotonic() - started) / len(segments)
        with self._lent(schema, into):
            for segment in segments:
                record(segment.id, staged[segment.id], seconds)

    @contextmanager
    def _lent(self, schema: str, into: sqlite3.Connection | None) -> Iterator[None]:
        """Walker ``schema``'s staging database attached to ``into`` as ``schema`` for
        the block (outside a transaction, as attaching), detached after."""
        if into is None:
            yield
            return
        into.execute(f"ATTACH ? AS {schema}", (self._names[schema],))
        try:
            yield
        finally:
            into.execute(f"DETACH {schema}")

    def rows(self, staged: StagedRows) -> tuple[tuple[Any, ...], ...]:
        """The rows :meth:`walk` hands out for a segment, as :attr:`.db.HitBatch.rows`
        (during the call that hands them out: the walker's next walk drops them)."""
        db = self._dbs[staged.table.split(".")[0]]
        return tuple(db.execute(f"SELECT {_ROW_COLUMNS} FROM {staged.table} WHERE rowid "
                                "BETWEEN ? AND ? ORDER BY rowid", (staged.first, staged.last)))

    def first(self) -> tuple[sqlite3.Connection, str]:
        """The first walker's connection and staging schema (the calling thread's)."""
        return self._walker(0)


def ip_hits(store: Store, segment: Segment, ips: list[str], scope: Scope,
            stop: threading.Event | None = None) -> list[Hit]:
    """One hit per (indicator, flow of the segment with an endpoint it contains), first
    packet first (the walk's order, :data:`_IP_HITS_SQL`)."""
    with closing(IpWalkers(store.catalog.path, threads=1)) as walkers:
        db, schema = walkers.first()
        _load(db, schema, ips)
        _walk(db, schema, [segment], scope, stop, lambda: nullcontext(store))
        return [Hit(rule, proto, src, sport, dst, dport, ts,
                    {"indicator": value, "address": address}, fid)
                for _, rule, _, fid, proto, src, sport, dst, dport, ts, value, address
                in db.execute(_IP_HITS_SQL.format(
                    w=schema, columns="r.value, iif(h.side, h.text_b, h.text_a)"))]


def ip_batches(store: Store, segments: list[Segment], ips: list[str], scope: Scope,
               stop: threading.Event | None = None) -> dict[int, HitBatch]:
    """Segment id -> what :func:`ip_hits` finds in it, as the result set takes it
    (:meth:`HitBatch.of` of those hits), from the walkers' rows (:meth:`IpWalkers.walk`;
    ``store``: used by the calling thread alone)."""
    found: dict[int, HitBatch] = {}
    with closing(IpWalkers(store.catalog.path)) as walkers:
        walkers.walk(segments, ips, scope, stop, lambda: nullcontext(store), None,
                     lambda seg, rows, _: found.__setitem__(
                         seg, HitBatch(walkers.rows(rows), rows.hits)))
    return found


class _Turns:
    """Whose turn it is to hand rows out (:meth:`IpWalkers.walk`): the segments' in
    order; aborted when a walker fails: no more turns."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0
        self._aborted = False

    def wait(self, i: int) -> bool:
        """Wait for segment ``i``'s turn; False when aborted instead."""
        with self._cond:
            self._cond.wait_for(lambda: self._next == i or self._aborted)
            return not self._aborted

    def done(self) -> None:
        with self._cond:
            self._next += 1
            self._cond.notify_all()

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._cond.notify_all()


def _ip_text_function(db: sqlite3.Connection) -> None:
    """:data:`IP_TEXT_SQL` on ``db``: the native function, else the Python one."""
    try:
        db.execute(f"SELECT {IP_TEXT_SQL}(0, NULL)")
    except sqlite3.OperationalError:
        db.create_function(IP_TEXT_SQL, 2, address_text, deterministic=True)


def _stage(db: sqlite3.Connection, schema: str, segments: list[Segment], scope: Scope,
           stop: threading.Event | None,
           store: Callable[[], AbstractContextManager[Store]]) -> dict[int, StagedRows]:
    """Segment id -> its rows of the result set in ``schema``'s table ``ip_rows``, made
    by SQLite from one walk of the index for all the segments (:func:`_walk`; the
    indicators loaded, :func:`_load`); the rows of the walker's earlier walk dropped."""
    for table in ("ip_found", "ip_times", "ip_rows"):
        db.execute(f"DELETE FROM {schema}.{table}")
    _walk(db, schema, segments, scope, stop, store)
    db.execute(_IP_ROWS_SQL.format(w=schema))
    table = f"{schema}.ip_rows"
    staged = {s.id: StagedRows(table, 1, 0, 0) for s in segments}
    for seg, first, last, hits in db.execute(
            f"SELECT segment_id, min(rowid), max(rowid), sum(hits) FROM {table} NOT "
            "INDEXED GROUP BY segment_id"):
        staged[seg] = StagedRows(table, first, last, hits)
    return staged


def _load(db: sqlite3.Connection, schema: str, ips: list[str]) -> None:
    """The indicators ``ips`` into ``schema``'s table ``ip_ranges`` (replacing those
    there)."""
    db.execute(f"DELETE FROM {schema}.ip_ranges")
    db.execute(_IP_RANGES_SQL.format(w=schema), _ip_ranges(tuple(ips)))


def _walk(db: sqlite3.Connection, schema: str, segments: list[Segment], scope: Scope,
          stop: threading.Event | None,
          store: Callable[[], AbstractContextManager[Store]]) -> None:
    """Fill ``schema``'s tables ``ip_found`` and ``ip_times`` (:data:`_IP_TABLES`) for
    the indicators loaded (:func:`_load`) in ``segments``: each indicator's address range
    is looked up in the index of each flow endpoint once for all the segments
    (:data:`_IP_WALK_SQL`). A scope that cuts a segment keeps the flows with a packet in
    it, timed by the first (:func:`.match_index.bpf_flows`, the store from ``store()``,
    opened only then)."""
    if not segments:
        return
    args = {"s0": min(s.id for s in segments), "s1": max(s.id for s in segments),
            "first": min(s.first_ns for s in segments),
            "last": max(s.last_ns for s in segments),
            "segments": json.dumps([s.id for s in segments])}
    args["f0"], args["f1"] = db.execute(_IP_BOUNDS_SQL, args).fetchone()
    run = args["s1"] - args["s0"] + 1 == len({s.id for s in segments})
    for side in _WALK_SIDES:
        db.execute(_IP_WALK_SQL.format(w=schema, listed="" if run else _LISTED_SQL,
                                       ip_text=IP_TEXT_SQL, **side),
                   args)
    cut = [s for s in segments if scope_cuts(scope, s)]
    if not cut:
        return
    with store() as opened:
        for segment in cut:
            ids = [r[0] for r in db.execute(
                f"SELECT DISTINCT fid FROM {schema}.ip_found WHERE seg = ? ORDER BY fid",
                (segment.id,))]
            spec = QuerySpec(bpf=scope.bpf, flow_ids=ids, start_ns=scope.start_ns,
                             end_ns=scope.end_ns)
            times = bpf_flows(opened, segment, spec, stop) if ids else {}
            db.executemany(f"INSERT INTO {schema}.ip_times VALUES (?, ?, ?)",
                           [(segment.id, fid, times[fid][0] if fid in times else None)
                            for fid in ids])


@functools.lru_cache(maxsize=4)
def _ip_ranges(ips: tuple[str, ...]) -> dict[str, str | bytes]:
    """A definition's indicators as :data:`_IP_RANGES_SQL` binds them (made once per
    process; not to be changed)."""
    ranges = [(value, *_ip_range(value)) for value in ips]
    return {"ranges": json.dumps([
        [version, value, rule_key("ip", value)] for value, version, lo, hi in ranges]),
        "lo": b"".join(r[2] for r in ranges), "hi": b"".join(r[3] for r in ranges)}


def _ip_range(value: str) -> tuple[int, bytes, bytes]:
    """An indicator as (IP version, first and last address in the index's form)."""
    if "/" not in value:  # inet_pton: a tenth of ipaddress's time, for 1,000s per unit
        family, version = (socket.AF_INET6, 6) if ":" in value else (socket.AF_INET, 4)
        blob = socket.inet_pton(family, value).ljust(16, b"\0")
        return version, blob, blob
    net = ipaddress.ip_network(value, strict=False)
    return net.version, addr_blob(net.network_address), addr_blob(net.broadcast_address)
