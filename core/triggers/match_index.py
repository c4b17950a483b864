"""Matchers that answer from the flow index: IP/CIDR indicators and a trigger's BPF, over
one segment (a hunt's unit).

* IP/CIDR indicators: the segment's flows (``flow_segments``) and their addresses
  (``flows``, 16 packed bytes, IPv4 in the first four) — no packet is read. An address
  matches an indicator as the query engine's ``host``/``net`` filters do
  (:func:`pcapwire.query.bpfplan.host_sql` / ``net_sql``: same IP version, address or
  network contains it). One hit per (indicator, flow). SQLite does the work: a walk of
  the index for several segments at once (:func:`walk_ips`, on a connection the catalog
  is attached to read-only, :func:`catalog_attached`) fills temporary tables, from which
  :func:`stage_ip_rows` makes the result set's rows itself, in the trigger database's
  connection (the hunt runner's units: nothing fetched, nothing bound, the texts, keys
  and evidence JSON made in SQL, the addresses' text by an SQL function).
  :func:`ip_batches` (several segments, as :class:`~.db.HitBatch`) and :func:`ip_hits`
  (one segment, as hits) read the same tables on a connection of their own.
* BPF: the query engine restricted to the segment (the index narrows, libpcap judges every
  candidate packet); the matching records are parsed and put into flows by the native
  indexer (:class:`pcapwire._native.SegmentIndexer`, the code that built the catalog's
  flows: same key, fragments with their first fragment), and each flow is found in the
  catalog by its key and time. One hit per flow with a matching packet.

The scope narrows both: its BPF and a time window that cuts through the segment are checked
on the packets of the indicator's flows (the query engine, restricted to those flows), so
a flow matches only if a packet of it in the scope does. A hit's 5-tuple has the flow's
initiator as source (``flows.initiator_is_a``), its time is the flow's first packet in the
segment (first matching packet, when packets were read).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pcapwire import _native
from pcapwire.query.bpfplan import addr_blob
from pcapwire.query.spec import QuerySpec
from pcapwire.store import FlowRow, Segment, Store
from pcapwire.store.catalog import FLOW_COLUMNS
from pcapwire.triggers.db import Hit, HitBatch, StagedRows
from pcapwire.triggers.model import Scope, rule_key

log = logging.getLogger(__name__)

#: A catalog flow's first packet time is in ns; the records a query returns carry µs
#: (truncated), so a packet's time read back may be up to this much earlier.
TS_SLACK_NS = 999
#: The name the catalog is attached under to the connection that walks the flow index
#: for IP indicators (:func:`catalog_attached`).
CATALOG_SCHEMA = "catalog"
#: Bytes of the attached catalog its walk reads mapped into memory (no read() per page: a
#: dense walk of 8,400 flows takes ~40 % less time).
CATALOG_MMAP_BYTES = 2**30
# The walk's tables, in the walking connection's temporary database (in memory):
# - ip_ranges: the indicators, n their position in the definition's list, lo..hi their
#   first and last address in the index's form, with their IP version and rule key;
# - ip_found: one row per (indicator, flow, segment of the flow) with an endpoint in the
#   indicator's range, in the order the walk found it (rowid): side a first, then side b
#   (an indicator containing both ends is found on side a alone), each indicator in turn,
#   its flows in the order of the endpoint's index; the addresses as text;
# - ip_flows: per (segment, flow): ``frow``, the row where the walk found it first, and
#   its time: its first packet in the segment, or its first packet in the scope when the
#   scope cuts the segment (NULL: none there, the flow is left out);
# - ip_rows: the result set's rows (:attr:`.db.HitBatch.rows`) of every segment walked,
#   a segment's rows together, in the order of their first hit: one row per (segment,
#   indicator, flow key), merged as HitBatch.of_rows merges (a match id is taken by every
#   row the result set's upsert sees, so a unit's rows of one match must be one).
_IP_TABLES = """
CREATE TEMP TABLE IF NOT EXISTS ip_ranges (n INTEGER PRIMARY KEY, ipver INTEGER NOT NULL,
  lo BLOB NOT NULL, hi BLOB NOT NULL, value TEXT NOT NULL, rule TEXT NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS ip_found (seg INTEGER, fid INTEGER, n INTEGER,
  side INTEGER, first INTEGER, proto INTEGER, text_a TEXT, port_a INTEGER, text_b TEXT,
  port_b INTEGER, init INTEGER);
CREATE TEMP TABLE IF NOT EXISTS ip_flows (seg INTEGER, fid INTEGER, frow INTEGER,
  ts INTEGER, PRIMARY KEY (seg, fid)) WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS ip_rows (segment_id INTEGER, n INTEGER, rule TEXT,
  flow_key TEXT, flow_id INTEGER, proto INTEGER, src_ip TEXT, src_port INTEGER,
  dest_ip TEXT, dest_port INTEGER, ts REAL, evidence TEXT, hits INTEGER,
  UNIQUE (segment_id, n, flow_key));
"""
# The indicators into ip_ranges in one statement (under half the time of binding 1,000
# rows): :ranges, a JSON list of [IP version, value, rule key] (n: the position in it),
# range n's first and last address bytes 16n..16n+15 of :lo and :hi.
_IP_RANGES_SQL = (
    "INSERT INTO temp.ip_ranges SELECT j.key, j.value ->> 0, substr(:lo, 16 * j.key + 1, 16), "
    "substr(:hi, 16 * j.key + 1, 16), j.value ->> 1, j.value ->> 2 FROM json_each(:ranges) j")
# One side of the walk: each indicator's range looked up in the index of that endpoint
# (flows_key: side a, flows_b: side b), then the flow's rows of the wanted segments
# (flow_segments' key). A flow's time span (flows) and a segment's (segments) are the
# min and max of the same packet times, so a flow with packets in one of the segments
# overlaps their span [:first, :last]: one that does not is skipped on its row, before
# its flow_segments rows are looked up (on dense traffic most of a busy host's flows,
# when the segments are a part of the store).
_IP_WALK_SQL = (
    "INSERT INTO temp.ip_found SELECT s.segment_id, f.id, r.n, {side}, s.first_ns, "
    "f.proto, ip_text(f.ipver, f.addr_a), f.port_a, ip_text(f.ipver, f.addr_b), f.port_b, "
    "f.initiator_is_a FROM temp.ip_ranges r CROSS JOIN {cat}.flows f INDEXED BY {index} "
    "CROSS JOIN {cat}.flow_segments s WHERE f.addr_{col} BETWEEN r.lo AND r.hi AND "
    "f.ipver = r.ipver{other} AND f.first_ns <= :last AND f.last_ns >= :first AND "
    "s.flow_id = f.id AND s.segment_id BETWEEN :s0 AND :s1 AND s.segment_id IN "
    "(SELECT value FROM json_each(:segments))")
# The hits in their order: a segment's flows first packet first, a tie in the order the
# walk found them; a flow's indicators in the order found (side a's as listed, then side
# b's); {columns}: the last ones (ip_hits: the indicator and the address it contains;
# ip_rows: the evidence JSON as db.evidence_json makes it, the indicator, one hit; a
# further hit of a row's (segment, indicator, flow key) adds to it, its time the
# earliest). The catalog's side a is the flow key's first end (flow_key's order:
# (address, port) of side a <= side b's, as the catalog normalises them).
_IP_HITS_SQL = (
    "SELECT h.seg, r.rule, h.proto || ' ' || h.text_a || ' ' || h.port_a || ' ' || "
    "h.text_b || ' ' || h.port_b, h.fid, h.proto, iif(h.init, h.text_a, h.text_b), "
    "iif(h.init, h.port_a, h.port_b), iif(h.init, h.text_b, h.text_a), "
    "iif(h.init, h.port_b, h.port_a), f.ts / 1e9, {columns} "
    "FROM temp.ip_found h JOIN temp.ip_flows f ON f.seg = h.seg AND f.fid = h.fid "
    "JOIN temp.ip_ranges r ON r.n = h.n WHERE f.ts IS NOT NULL "
    "ORDER BY h.seg, h.first, f.frow, h.rowid")
_IP_ROWS_SQL = (
    "INSERT INTO temp.ip_rows (segment_id, rule, flow_key, flow_id, proto, src_ip, "
    "src_port, dest_ip, dest_port, ts, evidence, n, hits) " + _IP_HITS_SQL.format(
        columns="json_object('address', iif(h.side, h.text_b, h.text_a), 'indicator', "
                "r.value), h.n, 1") +
    " ON CONFLICT (segment_id, n, flow_key) DO UPDATE SET hits = hits + 1, "
    "ts = min(ts, excluded.ts)")
_FLOW_COLUMNS = ", ".join(f"f.{c.strip()}" for c in FLOW_COLUMNS.split(","))


@dataclass(frozen=True)
class SegmentFlow:
    """A flow with packets in the segment: its catalog row and its time in the segment."""

    row: FlowRow
    first_ns: int
    last_ns: int

    @property
    def key(self) -> tuple[int, int, bytes, int, bytes, int]:
        r = self.row
        return (r.ipver, r.proto, r.addr_a, r.port_a, r.addr_b, r.port_b)


def segment_flows(store: Store, segment_id: int) -> list[SegmentFlow]:
    """The flows with packets in the segment, first first."""
    return [_segment_flow(r) for r in store.catalog.db.execute(
        f"SELECT {_FLOW_COLUMNS}, s.first_ns, s.last_ns FROM flow_segments s JOIN flows f "
        "ON f.id = s.flow_id WHERE s.segment_id = ? ORDER BY s.first_ns, f.id", (segment_id,))]


def _segment_flow(r: tuple[Any, ...]) -> SegmentFlow:
    row = FlowRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), *r[8:14])
    return SegmentFlow(row, r[14], r[15])


def flow_hit(rule: str, flow: SegmentFlow, ts_ns: int, evidence: dict[str, object]) -> Hit:
    """A hit on a catalog flow, oriented initiator -> responder (as :func:`flow_dict`)."""
    r = flow.row
    a, b = (_address(r.ipver, r.addr_a), r.port_a), (_address(r.ipver, r.addr_b), r.port_b)
    (src, sport), (dst, dport) = (a, b) if r.initiator_is_a else (b, a)
    return Hit(rule, r.proto, src, sport, dst, dport, ts_ns / 1e9, evidence, r.id)


def ip_hits(store: Store, segment: Segment, ips: list[str], scope: Scope,
            stop: threading.Event | None = None) -> list[Hit]:
    """One hit per (indicator, flow of the segment with an endpoint it contains), first
    packet first (the walk's order, :data:`_IP_HITS_SQL`)."""
    with _walker(store.catalog.path) as db:
        walk_ips(db, [segment], ips, scope, stop, lambda: nullcontext(store))
        return [Hit(rule, proto, src, sport, dst, dport, ts,
                    {"indicator": value, "address": address}, fid)
                for _, rule, _, fid, proto, src, sport, dst, dport, ts, value, address
                in db.execute(_IP_HITS_SQL.format(
                    columns="r.value, iif(h.side, h.text_b, h.text_a)"))]


def ip_batches(store: Store, segments: list[Segment], ips: list[str], scope: Scope,
               stop: threading.Event | None = None) -> dict[int, HitBatch]:
    """Segment id -> what :func:`ip_hits` finds in it, as the result set takes it
    (:meth:`HitBatch.of` of those hits), from one walk of the index for all the segments
    (:func:`stage_ip_rows`)."""
    with _walker(store.catalog.path) as db:
        staged = stage_ip_rows(db, segments, ips, scope, stop, lambda: nullcontext(store))
        return {seg: HitBatch(tuple(db.execute(
            "SELECT rule, flow_key, flow_id, proto, src_ip, src_port, dest_ip, dest_port, ts, "
            "evidence, hits FROM temp.ip_rows WHERE rowid BETWEEN ? AND ? ORDER BY rowid",
            (rows.first, rows.last))), rows.hits) for seg, rows in staged.items()}


def stage_ip_rows(db: sqlite3.Connection, segments: list[Segment], ips: list[str],
                  scope: Scope, stop: threading.Event | None,
                  store: Callable[[], AbstractContextManager[Store]]) -> dict[int, StagedRows]:
    """Segment id -> its rows of the result set (:attr:`.db.HitBatch.rows`) in ``db``'s
    table ``ip_rows`` (:data:`_IP_TABLES`), made by SQLite from one walk of the index for
    all the segments (:func:`walk_ips`; ``db``: in :func:`catalog_attached`). The rows of
    earlier calls are dropped."""
    walk_ips(db, segments, ips, scope, stop, store)
    db.execute(_IP_ROWS_SQL)
    staged = {s.id: StagedRows("ip_rows", 1, 0, 0) for s in segments}
    for seg, first, last, hits in db.execute(
            "SELECT segment_id, min(rowid), max(rowid), sum(hits) FROM temp.ip_rows NOT "
            "INDEXED GROUP BY segment_id"):
        staged[seg] = StagedRows("ip_rows", first, last, hits)
    return staged


def walk_ips(db: sqlite3.Connection, segments: list[Segment], ips: list[str], scope: Scope,
             stop: threading.Event | None,
             store: Callable[[], AbstractContextManager[Store]]) -> None:
    """Fill ``db``'s tables ``ip_found`` and ``ip_flows`` (:data:`_IP_TABLES`) for the
    indicators ``ips`` in ``segments``: each indicator's address range is looked up in the
    index of each flow endpoint once for all the segments (:data:`_IP_WALK_SQL`). A scope
    that cuts a segment keeps the flows with a packet in it, timed by the first
    (:func:`bpf_flows`, the store from ``store()``, opened only then)."""
    for table in ("ip_ranges", "ip_found", "ip_flows", "ip_rows"):
        db.execute(f"DELETE FROM temp.{table}")
    if not segments:
        return
    db.execute(_IP_RANGES_SQL, _ip_ranges(tuple(ips)))
    args = {"s0": min(s.id for s in segments), "s1": max(s.id for s in segments),
            "first": min(s.first_ns for s in segments),
            "last": max(s.last_ns for s in segments),
            "segments": json.dumps([s.id for s in segments])}
    for side, (col, index, other) in enumerate((
            ("a", "flows_key", ""), ("b", "flows_b", " AND f.addr_a NOT BETWEEN r.lo AND r.hi"))):
        db.execute(_IP_WALK_SQL.format(side=side, col=col, index=index, other=other,
                                       cat=CATALOG_SCHEMA), args)
    db.execute("INSERT OR IGNORE INTO temp.ip_flows SELECT seg, fid, rowid, first FROM "
               "temp.ip_found ORDER BY rowid")
    cut = [s for s in segments if scope_cuts(scope, s)]
    if not cut:
        return
    with store() as opened:
        for segment in cut:
            ids = [r[0] for r in db.execute(
                "SELECT fid FROM temp.ip_flows WHERE seg = ? ORDER BY fid", (segment.id,))]
            spec = QuerySpec(bpf=scope.bpf, flow_ids=ids, start_ns=scope.start_ns,
                             end_ns=scope.end_ns)
            times = bpf_flows(opened, segment, spec, stop) if ids else {}
            db.execute("UPDATE temp.ip_flows SET ts = NULL WHERE seg = ?", (segment.id,))
            db.executemany("UPDATE temp.ip_flows SET ts = ? WHERE seg = ? AND fid = ?",
                           [(ts, segment.id, fid) for fid, (ts, _) in times.items()])


def segments_of(db: sqlite3.Connection, ids: list[int]) -> list[Segment]:
    """The segments with these ids still in the catalog, read through ``db`` (in
    :func:`catalog_attached`), as :meth:`pcapwire.store.catalog.Catalog.segments` reads
    them."""
    return [Segment(*r) for r in db.execute(
        "SELECT id, path, linktype, snaplen, tsprec, first_ns, last_ns, packets, size FROM "
        f"{CATALOG_SCHEMA}.segments WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
        (json.dumps(ids),))]


@contextmanager
def catalog_attached(db: sqlite3.Connection, catalog: Path) -> Iterator[None]:
    """The catalog attached read-only to ``db`` (a connection that takes URI file names)
    as :data:`CATALOG_SCHEMA`, with the walk's tables and address function, for the
    walks of the block; detached after it, so that ``db``'s transactions take no lock on
    the catalog."""
    db.execute(f"ATTACH ? AS {CATALOG_SCHEMA}", (f"file:{quote(str(catalog))}?mode=ro",))
    try:
        db.execute(f"PRAGMA {CATALOG_SCHEMA}.mmap_size={CATALOG_MMAP_BYTES}")
        db.create_function("ip_text", 2, _address, deterministic=True)
        for create in _IP_TABLES.split(";"):
            db.execute(create)
        yield
    finally:
        db.execute(f"DETACH {CATALOG_SCHEMA}")


@contextmanager
def _walker(catalog: Path) -> Iterator[sqlite3.Connection]:
    """A connection of its own for a walk (its tables in memory), the catalog attached."""
    db = sqlite3.connect(":memory:", isolation_level=None, uri=True)
    try:
        db.execute("PRAGMA temp_store=MEMORY")
        with catalog_attached(db, catalog):
            yield db
    finally:
        db.close()


@functools.lru_cache(maxsize=4)
def _ip_ranges(ips: tuple[str, ...]) -> dict[str, str | bytes]:
    """A definition's indicators as :data:`_IP_RANGES_SQL` binds them (made once per
    process; not to be changed)."""
    ranges = [(value, *_ip_range(value)) for value in ips]
    return {"ranges": json.dumps([[version, value, rule_key("ip", value)]
                                  for value, version, _, _ in ranges]),
            "lo": b"".join(r[2] for r in ranges), "hi": b"".join(r[3] for r in ranges)}


def _ip_range(value: str) -> tuple[int, bytes, bytes]:
    """An indicator as (IP version, first and last address in the index's form)."""
    if "/" not in value:  # inet_pton: a tenth of ipaddress's time, for 1,000s per unit
        family, version = (socket.AF_INET6, 6) if ":" in value else (socket.AF_INET, 4)
        blob = socket.inet_pton(family, value).ljust(16, b"\0")
        return version, blob, blob
    net = ipaddress.ip_network(value, strict=False)
    return net.version, addr_blob(net.network_address), addr_blob(net.broadcast_address)


def bpf_hits(store: Store, segment: Segment, bpf: str, scope: Scope,
             stop: threading.Event | None = None) -> list[Hit]:
    """One hit per flow with a packet that ``bpf`` (and the scope) matches in the segment;
    evidence: the expression and the flow's matching packets in the segment."""
    spec = QuerySpec(bpf=combine_bpf(bpf, scope.bpf), start_ns=scope.start_ns,
                     end_ns=scope.end_ns)
    flows = {f.row.id: f for f in segment_flows(store, segment.id)}
    hits = []
    for fid, (ts, packets) in bpf_flows(store, segment, spec, stop, flows).items():
        hits.append(flow_hit(rule_key("bpf", ""), flows[fid], ts,
                             {"bpf": bpf, "packets": packets}))
    return hits


def combine_bpf(*exprs: str) -> str:
    """The expressions that are not empty, joined with ``and``."""
    parts = [e.strip() for e in exprs if e.strip()]
    return parts[0] if len(parts) == 1 else " and ".join(f"({p})" for p in parts)


def bpf_flows(store: Store, segment: Segment, spec: QuerySpec,
              stop: threading.Event | None = None, flows: dict[int, SegmentFlow] | None = None
              ) -> dict[int, tuple[int, int]]:
    """flow id -> (first matching packet's time in ns, matching packets) of the flows with
    packets that ``spec`` returns from the segment (``flows``: the segment's flows, when the
    caller has them; ``stop``: ends the scan early, the result is then partial)."""
    engine = store.query_engine()
    plan = engine.plan(spec, segment_ids=[segment.id])
    if not plan.segments:
        return {}
    indexer = _native.SegmentIndexer()
    for chunk in engine.iter_chunks(spec, stop=stop, plan=plan):
        reader = _native.Reader(f"segment {segment.id}")
        for batch in [*reader.feed(chunk.data), *reader.finish()]:
            indexer.add(batch[4], 0)
    if flows is None:
        flows = {f.row.id: f for f in segment_flows(store, segment.id)}
    by_key: dict[tuple[int, int, bytes, int, bytes, int], list[SegmentFlow]] = {}
    for f in flows.values():
        by_key.setdefault(f.key, []).append(f)
    out: dict[int, tuple[int, int]] = {}
    for ipver, proto, a, pa, b, pb, _init, first, _last, p_ab, _b, p_ba, _b2, _o in \
            indexer.finish():
        flow = _flow_at(by_key.get((ipver, proto, a, pa, b, pb), []), first)
        if flow is None:
            log.warning("segment %d: matching packets of %s at %d ns belong to no flow of "
                        "the index; left out", segment.id, (ipver, proto, pa, pb), first)
            continue
        ts, packets = out.get(flow.row.id, (first, 0))
        out[flow.row.id] = (min(ts, first), packets + p_ab + p_ba)
    return out


def _flow_at(candidates: list[SegmentFlow], ts_ns: int) -> SegmentFlow | None:
    """The flow of a key whose packets in the segment span ``ts_ns`` (a key has several
    flows only when idle gaps split it)."""
    for f in candidates:
        if f.first_ns - TS_SLACK_NS <= ts_ns <= f.last_ns:
            return f
    return candidates[0] if len(candidates) == 1 else None


def scope_cuts(scope: Scope, segment: Segment) -> bool:
    """Whether the scope needs packets read: a BPF, or a time window not covering the
    whole segment."""
    return bool(scope.bpf.strip()) or (
        scope.start_ns is not None and segment.first_ns < scope.start_ns) or (
        scope.end_ns is not None and segment.last_ns >= scope.end_ns)


def _address(ipver: int, blob: bytes) -> str:
    """An address of the index as text ("" for flows that are not IP, as flow_dict); the
    SQL function of the walk (called for each end of each flow it finds)."""
    if ipver == 4:
        return _ntop(_AF_INET, blob[:4])
    return _ntop(_AF_INET6, blob) if ipver == 6 else ""


# plain values of the socket module's names (an enum member costs a conversion per call)
_ntop = socket.inet_ntop
_AF_INET, _AF_INET6 = int(socket.AF_INET), int(socket.AF_INET6)
