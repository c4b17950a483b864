"""Matchers that answer from the flow index over one segment (a hunt's unit): a trigger's
BPF, and the flows and addresses the IP indicators' walk (:mod:`.ip_walk`) uses.

The BPF: the query engine restricted to the segment (the index narrows, libpcap judges every
candidate packet); the matching records are parsed and put into flows by the native indexer
(:class:`pcapwire._native.SegmentIndexer`, the code that built the catalog's flows: same
key, fragments with their first fragment), and each flow is found in the catalog by its key
and time. One hit per flow with a matching packet (:func:`bpf_hits`; :func:`bpf_flows` also
narrows the IP indicators' flows to a scope's BPF and time window).

The scope narrows: its BPF and a time window that cuts through the segment
(:func:`scope_cuts`) are checked on the packets. A hit's 5-tuple has the flow's initiator as
source (``flows.initiator_is_a``), its time is the first matching packet.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any

from pcapwire import _native
from pcapwire.query.spec import QuerySpec
from pcapwire.store import FlowRow, Segment, Store
from pcapwire.store.catalog import FLOW_COLUMNS
from pcapwire.triggers.db import Hit
from pcapwire.triggers.model import Scope, rule_key

log = logging.getLogger(__name__)

#: A catalog flow's first packet time is in ns; the records a query returns carry µs
#: (truncated), so a packet's time read back may be up to this much earlier.
TS_SLACK_NS = 999
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
    a, b = (address_text(r.ipver, r.addr_a), r.port_a), (address_text(r.ipver, r.addr_b),
                                                           r.port_b)
    (src, sport), (dst, dport) = (a, b) if r.initiator_is_a else (b, a)
    return Hit(rule, r.proto, src, sport, dst, dport, ts_ns / 1e9, evidence, r.id)


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


def address_text(ipver: int, blob: bytes) -> str:
    """An address of the index as text ("" for flows that are not IP, as flow_dict); the
    SQL function of the IP indicators' walk (:mod:`.ip_walk`: called for each end of a
    flow it finds)."""
    if ipver == 4:
        return _ntop(_AF_INET, blob[:4])
    return _ntop(_AF_INET6, blob) if ipver == 6 else ""


# plain values of the socket module's names (an enum member costs a conversion per call)
_ntop = socket.inet_ntop
_AF_INET, _AF_INET6 = int(socket.AF_INET), int(socket.AF_INET6)
