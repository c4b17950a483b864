"""File-hash indicators (sha256, md5, sha1): carve the files of a segment's connections with
the extraction of ``pcapwire extract`` (:func:`pcapwire.extract.source.carve_chunks`: TCP
reassembly, HTTP/SMTP/POP3/IMAP/FTP) into a scratch directory, and compare their hashes.

A unit carves the TCP flows whose first packet is in its segment, each whole (its packets
in every segment it spans, through the query engine's flow filter), so a file that crosses
a segment boundary is carved once and complete. The scope's BPF and time window apply to
the packets carved. Emails count as files (their ``.eml`` SHA-256). One hit per (indicator,
file), with the file's flow (initiator as source) and its name, hashes, size and protocol
as evidence.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

from pcapwire.extract.artifacts import ArtifactStore
from pcapwire.extract.source import carve_chunks
from pcapwire.query.flows import flow_dict
from pcapwire.query.spec import QuerySpec
from pcapwire.records import EmailRecord, FileRecord, FlowKey
from pcapwire.store import Segment, Store
from pcapwire.triggers.db import Hit, flow_key
from pcapwire.triggers.match_index import TS_SLACK_NS, SegmentFlow, flow_hit, segment_flows
from pcapwire.triggers.model import TriggerDef, rule_key

HASH_KINDS = ("sha256", "md5", "sha1")


def wanted(defn: TriggerDef) -> dict[str, set[str]]:
    """The definition's file-hash indicators by kind (empty: nothing to carve)."""
    return {k: set(getattr(defn.indicators, k)) for k in HASH_KINDS
            if getattr(defn.indicators, k)}


def starting_flows(store: Store, segment: Segment) -> list[SegmentFlow]:
    """The segment's TCP flows whose first packet is in it (ties: the lowest segment id)."""
    first = {r[0] for r in store.catalog.db.execute(
        "SELECT s.flow_id FROM flow_segments s JOIN flows f ON f.id = s.flow_id "
        "WHERE s.segment_id = ? AND f.proto = 6 AND NOT EXISTS (SELECT 1 FROM flow_segments "
        "e WHERE e.flow_id = s.flow_id AND (e.first_ns < s.first_ns OR "
        "(e.first_ns = s.first_ns AND e.segment_id < s.segment_id)))", (segment.id,))}
    return [f for f in segment_flows(store, segment.id) if f.row.id in first]


def file_hits(store: Store, segment: Segment, defn: TriggerDef, scratch: Path | None = None,
              stop: threading.Event | None = None) -> list[Hit]:
    """Hits of the definition's file hashes among the files carved from the flows that
    start in the segment; ``scratch``: where the carved files are kept meanwhile; ``stop``
    ends the scan early (the result is then partial)."""
    hashes = wanted(defn)
    flows = starting_flows(store, segment)
    if not hashes or not flows:
        return []
    scope = defn.scope
    spec = QuerySpec(bpf=scope.bpf, flow_ids=[f.row.id for f in flows],
                     start_ns=scope.start_ns, end_ns=scope.end_ns)
    engine = store.query_engine()
    with tempfile.TemporaryDirectory(prefix="pcapwire-hunt-carve-", dir=scratch) as tmp:
        chunks = engine.iter_chunks(spec, stop=stop, plan=engine.plan(spec))
        result, _damage = carve_chunks(chunks, ArtifactStore(Path(tmp)))
    by_key: dict[str, list[SegmentFlow]] = {}
    for f in flows:
        by_key.setdefault(_key(f), []).append(f)
    hits = []
    for rec in [*result.files, *result.emails]:
        for kind, values in hashes.items():
            value = getattr(rec, kind, "")
            if value and value in values:
                hits.append(_hit(rule_key(kind, value), rec, by_key))
    return hits


def _key(flow: SegmentFlow) -> str:
    d = flow_dict(flow.row)
    return flow_key(flow.row.proto, d["src_ip"], d["src_port"], d["dest_ip"], d["dest_port"])


def _hit(rule: str, rec: FileRecord | EmailRecord, by_key: dict[str, list[SegmentFlow]]
         ) -> Hit:
    key: FlowKey = rec.flow
    evidence: dict[str, Any] = {"kind": rec.kind, "protocol": rec.protocol,
                                "sha256": rec.sha256, "size": rec.size}
    if isinstance(rec, FileRecord):
        evidence.update(filename=rec.filename, md5=rec.md5, sha1=rec.sha1,
                        mime_type=rec.mime_type, incomplete=rec.incomplete)
    else:
        evidence.update(subject=rec.subject, incomplete=rec.incomplete)
    ts_ns = int(rec.ts * 1e9)
    # a key has several flows only when idle gaps split it: the last to start before it
    candidates = by_key.get(flow_key(key.proto, key.src, key.sport, key.dst, key.dport), [])
    started = [f for f in candidates if f.first_ns - TS_SLACK_NS <= ts_ns]
    flow = started[-1] if started else (candidates[0] if candidates else None)
    if flow is not None:
        return flow_hit(rule, flow, ts_ns, evidence)
    return Hit(rule, key.proto, key.src, key.sport, key.dst, key.dport, rec.ts, evidence)
