"""Where the index reads from: the stored outputs of a data directory, as ECS documents.

- flows: the catalog (``catalog.sqlite``), per sealed segment, with the packets-expired
  mark retention keeps (``expired_flows``);
- a workflow run: its verdicts in the case store (``cases.sqlite``), and what its steps
  kept with the case (:mod:`pcapwire.plugins.enginekit.keep`):
  ``cases/<case>/suricata/<query or run>-<step>/eve-metadata*.json`` (Suricata's EVE
  http, dns, tls, fileinfo, smtp, anomaly), ``cases/<case>/zeek/.../metadata.json``
  (Zeek's conn, http, dns, ssl, files, smtp records linked to their 5-tuple) and
  ``cases/<case>/carve/.../files.jsonl`` and ``emails.jsonl`` (carved files and emails);
- a query's carve directory (``results/<query id>.carve/``, written when the API carves
  a result), its case from the query history.

A step that kept its files elsewhere (its ``keep_dir`` setting) is not found here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pcapwire.cases import CASES_FILE, CaseStore
from pcapwire.extract.layout import CarveDir
from pcapwire.query.flows import five_tuple_sql, flow_dict
from pcapwire.records import SEVERITIES, FlowKey, Verdict
from pcapwire.search.ecs import (
    PIVOT_MARGIN_S,
    Doc,
    Origin,
    email_doc,
    eve_doc,
    file_doc,
    flow_doc,
    verdict_doc,
    zeek_doc,
)
from pcapwire.store.catalog import Catalog

log = logging.getLogger(__name__)

#: Flows looked up per SQL statement.
FLOW_BATCH = 500
#: Analyzers whose kept files hold records to index, and the files.
KEPT_FILES = {"suricata": ("eve-metadata*.json",), "zeek": ("metadata.json",),
              "carve": ("files.jsonl", "emails.jsonl")}


class FlowLocator:
    """The catalog flow a 5-tuple at a time belongs to (None when the store has none)."""

    def __init__(self, root: Path) -> None:
        path = root / "catalog.sqlite"
        self.catalog = Catalog(path) if path.exists() else None

    def find(self, flow: FlowKey | None, ts: float) -> int | None:
        if self.catalog is None or flow is None or not flow.src or not flow.dst:
            return None
        try:
            where = five_tuple_sql(flow)
        except ValueError:
            return None
        margin = int(PIVOT_MARGIN_S * 1e9)
        row = self.catalog.db.execute(
            f"SELECT id FROM flows WHERE {where.where} AND first_ns <= ? AND last_ns >= ? "
            "ORDER BY abs(first_ns - ?) LIMIT 1",
            (*where.args, int(ts * 1e9) + margin, int(ts * 1e9) - margin,
             int(ts * 1e9))).fetchone()
        return None if row is None else int(row[0])

    def close(self) -> None:
        if self.catalog is not None:
            self.catalog.close()


# ---- flows ---------------------------------------------------------------------------------
def sealed_segments_after(catalog: Catalog, after: int) -> list[int]:
    """Segment ids above ``after`` up to the first one still being recorded (its flows
    are indexed once it is sealed)."""
    ids = []
    for seg_id, state in catalog.db.execute(
            "SELECT s.id, c.state FROM segments s LEFT JOIN capture_segments c "
            "ON c.segment_id = s.id WHERE s.id > ? ORDER BY s.id", (after,)):
        if state == "open":
            break
        ids.append(int(seg_id))
    return ids


def flow_docs(catalog: Catalog, flow_ids: list[int]) -> Iterator[Doc]:
    for i in range(0, len(flow_ids), FLOW_BATCH):
        part = flow_ids[i:i + FLOW_BATCH]
        marks = ",".join("?" * len(part))
        expired = dict(catalog.db.execute(
            f"SELECT flow_id, packets FROM expired_flows WHERE flow_id IN ({marks})", part))
        for row in catalog.flows(f"id IN ({marks})", part):
            f = flow_dict(row)
            if row.id in expired:
                f["packets_expired"] = expired[row.id]
            yield flow_doc(f, row.first_ns, row.last_ns)


def flows_of_segments(catalog: Catalog, segment_ids: list[int]) -> list[int]:
    out: set[int] = set()
    for i in range(0, len(segment_ids), FLOW_BATCH):
        part = segment_ids[i:i + FLOW_BATCH]
        out.update(r[0] for r in catalog.db.execute(
            f"SELECT DISTINCT flow_id FROM flow_segments WHERE segment_id IN "
            f"({','.join('?' * len(part))})", part))
    return sorted(out)


# ---- runs ----------------------------------------------------------------------------------
def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError:
                log.warning("%s:%d: not JSON, skipped", path, n)
                continue
            if isinstance(value, dict):
                yield value


def sandbox_results(verdicts: list[Verdict]) -> dict[str, dict[str, Any]]:
    """SHA-256 -> the worst sandbox verdict about it (severity, score, signature)."""
    out: dict[str, dict[str, Any]] = {}
    for v in verdicts:
        sha = v.evidence.get("sha256") if isinstance(v.evidence, dict) else None
        if v.analyzer != "sandbox" or not isinstance(sha, str):
            continue
        old = out.get(sha)
        if old is None or SEVERITIES.index(v.severity) > SEVERITIES.index(old["severity"]):
            out[sha] = {"severity": v.severity, "score": v.score, "signature": v.signature}
    return out


def kept_docs(folder: Path, analyzer: str, origin: Origin, flows: FlowLocator,
              sandbox: dict[str, dict[str, Any]]) -> Iterator[Doc]:
    """The records a step kept in ``folder``."""
    if analyzer == "carve":
        carved = CarveDir(folder)
        for rec in carved.files():
            flow = FlowKey.from_dict(rec["flow"])
            yield file_doc(rec, origin, flows.find(flow, rec["ts"]),
                           sandbox.get(rec.get("sha256", "")))
        for rec in carved.emails():
            yield email_doc(rec, origin, flows.find(FlowKey.from_dict(rec["flow"]), rec["ts"]))
        return
    n = 0
    for pattern in KEPT_FILES[analyzer]:
        for path in sorted(folder.glob(pattern)):
            for record in _jsonl(path):
                n += 1
                if analyzer == "suricata":
                    from pcapwire.plugins.suricata.eve import event_ts, flow_key

                    doc = eve_doc(record, origin, n, flows.find(flow_key(record),
                                                                event_ts(record)))
                    if doc is not None:
                        yield doc
                else:
                    flow = FlowKey.from_dict(record["flow"]) if record.get("flow") else None
                    yield zeek_doc(record, origin, n, flows.find(flow, record.get("ts") or 0))


def run_docs(root: Path, run_id: str) -> Iterator[Doc]:
    """Every document of one workflow run (nothing when the case store has no such run)."""
    path = root / CASES_FILE
    if not path.exists():
        return
    cases = CaseStore(path, interrupt_running=False)
    flows = FlowLocator(root)
    try:
        run = cases.run(run_id)
        if run is None:
            return
        verdicts = cases.verdicts(run_id=run_id)
        for n, v in enumerate(verdicts):
            origin = Origin(v.case or run.case, run_id, v.query_id or run.query_id, v.step)
            doc = verdict_doc(v, origin, n, flows.find(v.flow, v.ts))
            yield Doc(f"verdict:{run_id}:{n}", doc.body)
        sandbox = sandbox_results(verdicts)
        from pcapwire.plugins.enginekit.keep import safe_name  # where the step kept them

        leaf_id = safe_name(run.query_id or run_id, "run")
        for step in cases.steps(run_id):
            if step.analyzer not in KEPT_FILES:
                continue
            folder = (root / "cases" / safe_name(run.case, "default") / step.analyzer
                      / f"{leaf_id}-{safe_name(step.step, step.analyzer)}")
            if folder.is_dir():
                origin = Origin(run.case, run_id, run.query_id, step.step)
                yield from kept_docs(folder, step.analyzer, origin, flows, sandbox)
    finally:
        flows.close()
        cases.close()


def carve_docs(root: Path, query_id: str) -> Iterator[Doc]:
    """Files and emails of a query's carve directory (``results/<id>.carve``)."""
    folder = root / "results" / f"{query_id}.carve"
    if not CarveDir(folder).complete:
        return
    path = root / CASES_FILE
    case, sandbox = "", {}
    if path.exists():
        cases = CaseStore(path, interrupt_running=False)
        try:
            row = cases.get_query(query_id)
            case = row["case"] if row else ""
            sandbox = sandbox_results(cases.verdicts(case)) if case else {}
        finally:
            cases.close()
    flows = FlowLocator(root)
    try:
        yield from kept_docs(folder, "carve", Origin(case, "", query_id, "carve"), flows,
                             sandbox)
    finally:
        flows.close()


def run_ids(root: Path) -> list[str]:
    path = root / CASES_FILE
    if not path.exists():
        return []
    cases = CaseStore(path, interrupt_running=False)
    try:
        return [r.run_id for r in cases.runs() if r.status != "running"]
    finally:
        cases.close()


def carved_queries(root: Path) -> list[str]:
    results = root / "results"
    return sorted(p.name[:-len(".carve")] for p in results.glob("*.carve")) \
        if results.is_dir() else []
