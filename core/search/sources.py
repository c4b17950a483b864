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

A step's files are found where the case store recorded them (:mod:`pcapwire.cases.kept`:
the case folder, or its ``keep_dir`` when that lies inside ``root``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from pcapwire.cases import CASES_FILE, CaseStore
from pcapwire.cases.kept import kept_files, step_dirs
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
    verdict_body,
    zeek_doc,
)
from pcapwire.store.catalog import Catalog

log = logging.getLogger(__name__)
_ORJSON_LOADS, _ORJSON_ERROR = orjson.loads, orjson.JSONDecodeError

#: Flows looked up per SQL statement.
FLOW_BATCH = 500
#: 5-tuples whose flows :class:`FlowLocator` keeps (then it starts again).
FLOW_CACHE_KEYS = 65_536
#: Flows of one 5-tuple :class:`FlowLocator` keeps; a 5-tuple with more is asked per record.
FLOW_CACHE_FLOWS = 64
#: 5-tuples :meth:`FlowLocator.prefetch` asks for in one statement (5 parameters each:
#: under the 999 of SQLite builds before 3.32).
PREFETCH_KEYS = 150
#: Records (verdicts, lines of a kept file) read ahead, so that their flows are asked
#: for together (:meth:`FlowLocator.prefetch`).
PREFETCH_RECORDS = 1000
#: Analyzers whose kept files hold records to index, and the files.
KEPT_FILES = {"suricata": ("eve-metadata*.json",), "zeek": ("metadata.json",),
              "carve": ("files.jsonl", "emails.jsonl")}


#: The flows of many 5-tuples (VALUES rows: five_tuple_sql's arguments), at most LIMIT of
#: each (the flows_key index, one range a 5-tuple).
_PREFETCH_SQL = (
    "SELECT k.column1, k.column2, k.column3, k.column4, k.column5, f.id, f.first_ns, "
    "f.last_ns FROM (VALUES {}) k JOIN flows f ON f.id IN (SELECT id FROM flows WHERE "
    "addr_a = k.column1 AND port_a = k.column2 AND addr_b = k.column3 AND "
    "port_b = k.column4 AND proto = k.column5 LIMIT ?)")


class FlowLocator:
    """The catalog flow a 5-tuple at a time belongs to (None when the store has none): of
    the flows with that 5-tuple (either direction) that were alive within
    :data:`~pcapwire.search.ecs.PIVOT_MARGIN_S` of the time, the one whose first packet
    is nearest to it (then the lowest id).

    A run's records name few flows many times (an HTTP session's request, file and
    alerts), so each 5-tuple's flows are read once and kept (up to
    :data:`FLOW_CACHE_KEYS` 5-tuples of at most :data:`FLOW_CACHE_FLOWS` flows; one that
    has more, e.g. a DNS resolver's port reused all day, is asked per record)."""

    def __init__(self, root: Path) -> None:
        path = root / "catalog.sqlite"
        self.catalog = Catalog(path) if path.exists() else None
        self._flows: dict[tuple[Any, ...], tuple[tuple[int, int, int], ...] | None] = {}

    def find(self, flow: FlowKey | None, ts: float) -> int | None:
        if self.catalog is None or flow is None or not flow.src or not flow.dst:
            return None
        t = int(ts * 1e9)
        margin = int(PIVOT_MARGIN_S * 1e9)
        a, b = (flow.src, flow.sport), (flow.dst, flow.dport)
        key = (flow.proto, a, b) if a <= b else (flow.proto, b, a)  # either direction
        flows = self._flows[key] if key in self._flows else self._read(key, flow)
        if flows is None:  # too many to keep: ask SQLite
            return self._query(flow, t, margin)
        best: tuple[int, int] | None = None
        for flow_id, first_ns, last_ns in flows:
            if first_ns <= t + margin and last_ns >= t - margin:
                rank = (abs(first_ns - t), flow_id)
                if best is None or rank < best:
                    best = rank
        return None if best is None else best[1]

    def prefetch(self, flows: Iterable[FlowKey | None]) -> None:
        """Read the flows of the 5-tuples not kept yet, :data:`PREFETCH_KEYS` a statement:
        what :meth:`_read` keeps, for the 5-tuples of the next records at once (callers
        pass :data:`PREFETCH_RECORDS` records' worth). Asked one at a time, in between
        the making of documents, a 5-tuple cost ~45 µs (the pace benchmark's runs: 8,088
        5-tuples, 21 µs a record); so, about a third of that."""
        if self.catalog is None:
            return
        wanted: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        seen: set[tuple[Any, ...]] = set()  # a 5-tuple once, however many records name it
        kept = self._flows
        for flow in flows:
            if flow is None or not flow.src or not flow.dst:
                continue
            a, b = (flow.src, flow.sport), (flow.dst, flow.dport)
            key = (flow.proto, a, b) if a <= b else (flow.proto, b, a)
            if key in kept or key in seen:
                continue
            seen.add(key)
            try:  # five_tuple_sql's arguments: addr_a, port_a, addr_b, port_b, proto
                args = five_tuple_sql(flow).args
            except ValueError:
                self._keep(key, ())
                continue
            wanted.setdefault(args, []).append(key)
        pending = list(wanted)
        for i in range(0, len(pending), PREFETCH_KEYS):
            part = pending[i:i + PREFETCH_KEYS]
            found: dict[tuple[Any, ...], list[tuple[int, int, int]]] = {a: [] for a in part}
            for *args, flow_id, first_ns, last_ns in self.catalog.db.execute(
                    _PREFETCH_SQL.format(",".join(["(?,?,?,?,?)"] * len(part))),
                    (*(x for a in part for x in a), FLOW_CACHE_FLOWS + 1)):
                found[tuple(args)].append((int(flow_id), int(first_ns), int(last_ns)))
            for args, rows in found.items():
                flows_of = None if len(rows) > FLOW_CACHE_FLOWS else tuple(rows)
                for key in wanted[args]:
                    self._keep(key, flows_of)

    def _keep(self, key: tuple[Any, ...],
              flows: tuple[tuple[int, int, int], ...] | None) -> None:
        if len(self._flows) >= FLOW_CACHE_KEYS:
            self._flows.clear()
        self._flows[key] = flows

    def _read(self, key: tuple[Any, ...], flow: FlowKey
              ) -> tuple[tuple[int, int, int], ...] | None:
        """The flows of a 5-tuple (None: more than :data:`FLOW_CACHE_FLOWS`); kept."""
        try:
            where = five_tuple_sql(flow)
        except ValueError:
            self._flows[key] = ()
            return ()
        assert self.catalog is not None
        rows = self.catalog.db.execute(
            f"SELECT id, first_ns, last_ns FROM flows WHERE {where.where} LIMIT ?",
            (*where.args, FLOW_CACHE_FLOWS + 1)).fetchall()
        flows = None if len(rows) > FLOW_CACHE_FLOWS else tuple(
            (int(i), int(a), int(b)) for i, a, b in rows)
        self._keep(key, flows)
        return flows

    def _query(self, flow: FlowKey, t: int, margin: int) -> int | None:
        assert self.catalog is not None
        where = five_tuple_sql(flow)
        row = self.catalog.db.execute(
            f"SELECT id FROM flows WHERE {where.where} AND first_ns <= ? AND last_ns >= ? "
            "ORDER BY abs(first_ns - ?), id LIMIT 1",
            (*where.args, t + margin, t - margin, t)).fetchone()
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
    """The objects of a JSON-lines file: orjson (4x cheaper than :mod:`json` on EVE
    lines), json for what orjson refuses (NaN, integers beyond 64 bits, lone surrogates)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            try:
                value = _ORJSON_LOADS(line)
            except _ORJSON_ERROR:
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


def kept_docs(root: Path, folder: Path, analyzer: str, origin: Origin, flows: FlowLocator,
              sandbox: dict[str, dict[str, Any]]) -> Iterator[Doc]:
    """The records a step kept in ``folder`` (a file linking out of ``root`` is left out and
    logged, :func:`pcapwire.cases.kept.kept_files`)."""
    if analyzer == "carve":
        carved = CarveDir(folder)
        for rec in carved.files():
            flow = FlowKey.from_dict(rec["flow"])
            yield file_doc(rec, origin, flows.find(flow, rec["ts"]),
                           sandbox.get(rec.get("sha256", "")))
        for rec in carved.emails():
            yield email_doc(rec, origin, flows.find(FlowKey.from_dict(rec["flow"]), rec["ts"]))
        return
    if analyzer == "suricata":
        from pcapwire.plugins.suricata.eve import metadata_record
    n = 0
    for pattern in KEPT_FILES[analyzer]:
        for path in kept_files(root, folder, pattern):
            records = _jsonl(path)
            while chunk := list(islice(records, PREFETCH_RECORDS)):
                if analyzer == "suricata":
                    metas = [metadata_record(record) for record in chunk]
                    flows.prefetch(m.flow for m in metas if m is not None)
                    for record, meta in zip(chunk, metas, strict=True):
                        n += 1
                        if meta is not None:
                            doc = eve_doc(record, origin, n, flows.find(meta.flow, meta.ts),
                                          meta)
                            if doc is not None:
                                yield doc
                    continue
                keys = [FlowKey.from_dict(r["flow"]) if r.get("flow") else None
                        for r in chunk]
                flows.prefetch(keys)
                for record, flow in zip(chunk, keys, strict=True):
                    n += 1
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
        origins: dict[tuple[str, str, str], Origin] = {}  # a run's verdicts have a few
        for n, v in enumerate(verdicts):
            if n % PREFETCH_RECORDS == 0:
                flows.prefetch(w.flow for w in verdicts[n:n + PREFETCH_RECORDS])
            made = (v.case or run.case, v.query_id or run.query_id, v.step)
            origin = origins.get(made)
            if origin is None:
                origin = origins[made] = Origin(made[0], run_id, made[1], made[2])
            yield Doc(f"verdict:{run_id}:{n}",
                      verdict_body(v, origin, n, flows.find(v.flow, v.ts)))
        sandbox = sandbox_results(verdicts)
        for step in cases.steps(run_id):
            if step.analyzer not in KEPT_FILES:
                continue
            for folder in step_dirs(root, run, step):  # as recorded, inside root only
                origin = Origin(run.case, run_id, run.query_id, step.step)
                yield from kept_docs(root, folder, step.analyzer, origin, flows, sandbox)
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
        yield from kept_docs(root, folder, "carve", Origin(case, "", query_id, "carve"), flows,
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
