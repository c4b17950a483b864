"""Matchers that answer from the flow index: IP/CIDR indicators and a trigger's BPF, over
one segment (a hunt's unit).

* IP/CIDR indicators: the segment's flows (``flow_segments``) and their addresses
  (``flows``, 16 packed bytes, IPv4 in the first four) — no packet is read. An address
  matches an indicator as the query engine's ``host``/``net`` filters do
  (:func:`pcapwire.query.bpfplan.host_sql` / ``net_sql``: same IP version, address or
  network contains it). One hit per (indicator, flow). :func:`ip_batches` answers several
  segments (a hunt's units) with one walk of the index and returns their hits as the
  result set takes them (:class:`~.db.HitBatch`); :func:`ip_hits` one segment, as hits.
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
import logging
import socket
import threading
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from pcapwire import _native
from pcapwire.query.bpfplan import addr_blob
from pcapwire.query.spec import QuerySpec
from pcapwire.store import FlowRow, Segment, Store
from pcapwire.store.catalog import FLOW_COLUMNS
from pcapwire.triggers.db import Hit, HitBatch, evidence_json
from pcapwire.triggers.model import Scope, rule_key

log = logging.getLogger(__name__)

#: A catalog flow's first packet time is in ns; the records a query returns carry µs
#: (truncated), so a packet's time read back may be up to this much earlier.
TS_SLACK_NS = 999
# The flows in segments :s0..:s1 with an endpoint (side a or b) in one of the ranges of
# an IP version (:class:`_Ranges`: range n's first and last address are bytes
# 16n..16n+15 of :lo and :hi; the rows i(n) count them, no table is filled), one row per
# (range, flow, segment of the flow). A flow's time span (flows) and a segment's
# (segments) are the min and max of the same packet times, so a flow with packets in one
# of the segments overlaps their span [:first, :last]: one that does not is skipped on its
# row, before its flow_segments rows are looked up (on dense traffic most of a busy host's
# flows, when the segments are a part of the store).
_IP_ROWS_SQL = ("WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i "
                "WHERE n + 1 < :count) "
                "SELECT f.id, f.proto, f.addr_a, f.port_a, f.addr_b, f.port_b, "
                "f.initiator_is_a, s.segment_id, s.first_ns, i.n FROM i CROSS JOIN "
                "flows f INDEXED BY {index} CROSS JOIN flow_segments s WHERE "
                "f.addr_{side} BETWEEN substr(:lo, 16 * i.n + 1, 16) AND "
                "substr(:hi, 16 * i.n + 1, 16) AND f.ipver = :ipver AND "
                "f.first_ns <= :last AND f.last_ns >= :first AND "
                "s.flow_id = f.id AND s.segment_id BETWEEN :s0 AND :s1")
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
    packet first (:func:`_ip_flows`)."""
    hits = []
    for r, matched, ts, ends, (src, sport, dst, dport) in _ip_flows(
            store, [segment], ips, scope, stop)[segment.id]:
        for value, end in matched.items():
            hits.append(Hit(rule_key("ip", value), r[1], src, sport, dst, dport, ts / 1e9,
                            {"indicator": value, "address": ends[end]}, r[0]))
    return hits


def ip_batches(store: Store, segments: list[Segment], ips: list[str], scope: Scope,
               stop: threading.Event | None = None) -> dict[int, HitBatch]:
    """Segment id -> what :func:`ip_hits` finds in it, as the result set takes it
    (:meth:`HitBatch.of` of those hits, the rows made here from the index's columns: no
    :class:`Hit` per hit; each address's text, flow key, rule key and evidence made once).
    Each call walks the indicators' flows of the whole store once."""
    rules: dict[str, str] = {}  # indicator -> its rule key
    evidence: dict[tuple[str, str], str] = {}  # (indicator, address) -> the evidence JSON
    out = {}
    for seg, flows in _ip_flows(store, segments, ips, scope, stop).items():
        rows = []
        for r, matched, ts, ends, (src, sport, dst, dport) in flows:
            # the catalog's side a is the flow key's first end (flow_key's order:
            # (address, port) of side a <= side b's, as the catalog normalises them)
            key = f"{r[1]} {ends[0]} {r[3]} {ends[1]} {r[5]}"
            for value, end in matched.items():
                rule = rules.get(value) or rules.setdefault(value, rule_key("ip", value))
                pair = (value, ends[end])
                ev = evidence.get(pair) or evidence.setdefault(pair, evidence_json(
                    {"indicator": value, "address": ends[end]}))
                rows.append((rule, key, r[0], r[1], src, sport, dst, dport, ts / 1e9, ev, 1))
        out[seg] = HitBatch.of_rows(rows)
    return out


# A matching flow of a segment: its row of _IP_ROWS_SQL, {indicator: the side it matched,
# 0 a, 1 b}, its time (ns), its addresses' text (side a, side b) and its 5-tuple's ends
# oriented initiator -> responder (src, sport, dest, dport).
_Found = tuple[tuple[Any, ...], dict[str, int], int, tuple[str, str],
               tuple[str, int, str, int]]


def _ip_flows(store: Store, segments: list[Segment], ips: list[str], scope: Scope,
              stop: threading.Event | None) -> dict[int, list[_Found]]:
    """Segment id -> its flows with an endpoint an indicator contains, first packet first
    (ties in the order found: side a before b, indicators as listed). Each indicator's
    address range is looked up in the index of each flow endpoint (``flows_key``,
    ``flows_b``) once for all the segments, flows outside their span skipped on their row,
    then the flow's rows of the segments (``flow_segments``' key). The indicators are bound
    as two blobs per IP version and SQLite returns the matching flows' plain columns (no
    row objects). A scope that cuts a segment keeps the flows with a packet in it, timed by
    the first (:func:`bpf_flows`)."""
    if not segments:
        return {}
    wanted = {s.id for s in segments}
    db = store.catalog.db
    # (segment, flow) -> [row, {indicator: side}, its order: (first packet, where it was
    # found first: side, indicator's position), the ranges' IP version]
    found: dict[tuple[int, int], list[Any]] = {}
    args = {"s0": min(wanted), "s1": max(wanted),
            "first": min(s.first_ns for s in segments),
            "last": max(s.last_ns for s in segments)}
    for rank, (side, index) in enumerate((("a", "flows_key"), ("b", "flows_b"))):
        sql = _IP_ROWS_SQL.format(side=side, index=index)
        for ranges in _ip_ranges(tuple(ips)):
            values, positions = ranges.values, ranges.positions
            for r in db.execute(sql, {**args, "count": len(values), "lo": ranges.lo,
                                      "hi": ranges.hi, "ipver": ranges.ipver}):
                entry = found.get((r[7], r[0]))
                if entry is None:
                    if r[7] not in wanted:
                        continue
                    entry = found[(r[7], r[0])] = [r, {}, (r[8], rank, positions[r[9]]),
                                                   ranges.ipver]
                entry[1].setdefault(values[r[9]], rank)
    out: dict[int, list[_Found]] = {s.id: [] for s in segments}
    times: dict[int, dict[int, int]] = {}  # a cut segment's flow id -> its time
    for segment in segments:
        if scope_cuts(scope, segment):
            ids = sorted(fid for seg, fid in found if seg == segment.id)
            spec = QuerySpec(bpf=scope.bpf, flow_ids=ids, start_ns=scope.start_ns,
                             end_ns=scope.end_ns)
            times[segment.id] = {fid: ts for fid, (ts, _) in bpf_flows(
                store, segment, spec, stop).items()} if ids else {}
    texts: dict[int, dict[bytes, str]] = {4: {}, 6: {}}  # IP version -> address -> text
    # first packet first; a tie in the order found, as the indicators are listed
    for r, matched, _, ipver in sorted(found.values(), key=itemgetter(2)):
        seg = r[7]
        ts = times[seg].get(r[0]) if seg in times else r[8]
        if ts is None:
            continue
        text = texts[ipver]
        a = text.get(r[2]) or text.setdefault(r[2], _address(ipver, r[2]))
        b = text.get(r[4]) or text.setdefault(r[4], _address(ipver, r[4]))
        out[seg].append((r, matched, ts, (a, b),
                         (a, r[3], b, r[5]) if r[6] else (b, r[5], a, r[3])))
    return out


@dataclass(frozen=True)
class _Ranges:
    """The indicators of one IP version as :data:`_IP_ROWS_SQL` binds them: range n is
    ``values[n]`` (at ``positions[n]`` in the definition's list), its first and last
    address bytes 16n..16n+15 of ``lo`` and ``hi``."""

    ipver: int
    values: tuple[str, ...]
    positions: tuple[int, ...]
    lo: bytes
    hi: bytes


@functools.lru_cache(maxsize=4)
def _ip_ranges(ips: tuple[str, ...]) -> tuple[_Ranges, ...]:
    """A definition's indicators per IP version, made once per process (a hunt's units)."""
    by_version: dict[int, list[tuple[int, tuple[str, int, bytes, bytes]]]] = {}
    for position, value in enumerate(ips):
        r = _ip_range(value)
        by_version.setdefault(r[1], []).append((position, r))
    return tuple(_Ranges(ipver, tuple(r[0] for _, r in rs), tuple(p for p, _ in rs),
                         b"".join(r[2] for _, r in rs), b"".join(r[3] for _, r in rs))
                 for ipver, rs in sorted(by_version.items()))


def _ip_range(value: str) -> tuple[str, int, bytes, bytes]:
    """An indicator as (value, IP version, first and last address in the index's form)."""
    if "/" not in value:  # inet_pton: a tenth of ipaddress's time, for 1,000s per unit
        family, version = (socket.AF_INET6, 6) if ":" in value else (socket.AF_INET, 4)
        blob = socket.inet_pton(family, value).ljust(16, b"\0")
        return value, version, blob, blob
    net = ipaddress.ip_network(value, strict=False)
    return (value, net.version, addr_blob(net.network_address),
            addr_blob(net.broadcast_address))


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
    """An address of the index as text ("" for flows that are not IP, as flow_dict)."""
    if ipver == 4:
        return socket.inet_ntop(socket.AF_INET, blob[:4])
    return socket.inet_ntop(socket.AF_INET6, blob) if ipver == 6 else ""
