"""Verdicts as JSON lines in the Elastic Common Schema (ECS 8.11).

Why ECS (not Suricata EVE): a verdict is not always an IDS alert (YARA on a file, a
sandbox report, a hash-list hit); ECS has a field for each part of a verdict
(``rule.*``, ``event.risk_score``, ``event.severity``, ``source.*``/``destination.*``,
``file.hash.*``) and a place for our own (``pcapwire.*``), and Elastic, OpenSearch,
Splunk CIM mappings and most SIEMs ingest it without a custom parser.

Mapping: ``@timestamp`` (ISO 8601, UTC, microseconds) = verdict time; ``event.kind`` =
``alert``; ``event.severity`` = severity rank (0 info, 1 low, 2 medium, 3 high, 4
critical); ``event.risk_score`` = score (0-100); ``event.dataset`` =
``pcapwire.<analyzer>``; ``rule.id``/``rule.name``/``rule.category``/``rule.ruleset``
= signature id/name, category, analyzer; ``tags``; ``source``/``destination``/
``network.transport``/``network.iana_number`` = the 5-tuple; ``pcapwire.*`` = severity
name, subject, step, case, run, query, evidence and ``pcapwire.pivot.bpf`` (the BPF
expression that selects the flow again).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pcapwire.records import SEVERITIES, Verdict

ECS_VERSION = "8.11.0"


#: First year ``isoformat`` writes as ``strftime("%Y")`` does (4 digits, no padding).
ISO_YEAR_MIN = 1000


def _timestamp(ts: float) -> str:
    """``%Y-%m-%dT%H:%M:%S.%fZ``, made by ``isoformat`` (half the CPU of ``strftime``;
    the search index makes one a verdict) from :data:`ISO_YEAR_MIN` on; before it by
    ``strftime``, whose years have no leading zeros (``999-...``), as exports always had."""
    dt = datetime.fromtimestamp(ts, UTC)
    if dt.year < ISO_YEAR_MIN:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.isoformat(timespec="microseconds")[:-6] + "Z"


def verdict_to_ecs(v: Verdict, *, run_id: str = "", verdict_id: int | None = None
                   ) -> dict[str, Any]:
    flow = v.flow
    doc: dict[str, Any] = {
        "@timestamp": _timestamp(v.ts),
        "ecs": {"version": ECS_VERSION},
        "event": {"kind": "alert", "module": "pcapwire", "dataset": f"pcapwire.{v.analyzer}",
                  "severity": SEVERITIES.index(v.severity), "risk_score": float(v.score),
                  "category": ["malware"] if v.subject_kind == "file"
                  else ["email"] if v.subject_kind == "email" else ["intrusion_detection"],
                  "type": ["indicator"]},
        "rule": {"id": v.signature_id, "name": v.signature, "category": v.category,
                 "ruleset": v.analyzer},
        "source": {"ip": flow.src, "port": flow.sport},
        "destination": {"ip": flow.dst, "port": flow.dport},
        "network": {"transport": flow.proto_name, "iana_number": str(flow.proto)},
        "observer": {"product": "pcapwire", "type": "nsm"},
        "tags": list(v.tags),
        "pcapwire": {"analyzer": v.analyzer, "step": v.step, "severity": v.severity,
                     "score": v.score, "subject": {"kind": v.subject_kind, "id": v.subject_id},
                     "case": v.case, "query_id": v.query_id, "run_id": run_id,
                     "evidence": v.evidence, "pivot": {"bpf": flow.bpf(), "ts": v.ts}},
    }
    if verdict_id is not None:
        doc["event"]["id"] = str(verdict_id)
    sha = v.evidence.get("sha256") if isinstance(v.evidence, dict) else None
    if v.subject_kind == "file" and isinstance(sha, str):
        doc["file"] = {"hash": {"sha256": sha}}
    return doc


def ecs_line(v: Verdict, **kw: Any) -> str:
    return json.dumps(verdict_to_ecs(v, **kw), sort_keys=True, separators=(",", ":"),
                      default=str)
