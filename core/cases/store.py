"""The case store: SQLite, one file (``<data-dir>/cases.sqlite`` by default).

::

    store = CaseStore(path)                       # creates the schema
    store.create_case("IR-42", title="phishing")  # optional: runs create their case
    store.start_run(run_info, workflow_digest)    # the engine does this
    store.add_verdict(run_id, verdict)            # as verdicts stream
    store.finish_step(run_id, step_result)
    store.finish_run(summary)                     # commits
    store.verdicts("IR-42")                       # -> [Verdict]
    store.export_jsonl("IR-42", fh)               # ECS JSON lines

Durability: verdicts are committed at least every :data:`COMMIT_EVERY` verdicts and at
every step and run end, in WAL mode. A run found ``running`` when a store is opened was
cut short by a restart: it is marked ``interrupted`` (its committed verdicts and finished
steps stay).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pcapwire.cases.export import ecs_line
from pcapwire.errors import ConfigError
from pcapwire.records import SEVERITIES, Verdict
from pcapwire.workflow.context import RunInfo
from pcapwire.workflow.results import RunSummary, StepResult

#: Verdicts inserted between two commits, at most.
COMMIT_EVERY = 256
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cases (
    id TEXT PRIMARY KEY, title TEXT NOT NULL DEFAULT '', created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, case_id TEXT NOT NULL REFERENCES cases(id),
    workflow TEXT NOT NULL, workflow_digest TEXT NOT NULL DEFAULT '',
    event TEXT NOT NULL DEFAULT '', query_id TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL, started REAL NOT NULL, finished REAL,
    summary TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS runs_case ON runs(case_id, started);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs(run_id), step TEXT NOT NULL,
    analyzer TEXT NOT NULL, analyzer_version TEXT NOT NULL, status TEXT NOT NULL,
    reason TEXT NOT NULL, records_in INTEGER NOT NULL, records_skipped INTEGER NOT NULL,
    outputs TEXT NOT NULL, errors TEXT NOT NULL, started REAL, finished REAL,
    report TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, step));
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL REFERENCES runs(run_id),
    case_id TEXT NOT NULL, ts REAL NOT NULL, severity TEXT NOT NULL,
    severity_rank INTEGER NOT NULL, score INTEGER NOT NULL, analyzer TEXT NOT NULL,
    step TEXT NOT NULL, subject_kind TEXT NOT NULL, subject_id TEXT NOT NULL,
    signature_id TEXT NOT NULL, signature TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS verdicts_case ON verdicts(case_id, id);
CREATE INDEX IF NOT EXISTS verdicts_run ON verdicts(run_id, id);
"""


@dataclass(frozen=True)
class RunRow:
    run_id: str
    case: str
    workflow: str
    workflow_digest: str
    event: str
    query_id: str
    status: str
    started: float
    finished: float | None
    summary: dict[str, Any]


class CaseStore:
    """A small, synchronous API (fast local SQLite calls); safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False,
                                       isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"case store {self.path}: {exc}") from None
        self._lock = threading.RLock()
        self._pending = 0
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(steps)")}
            if "report" not in columns:  # a store written before steps kept notes and stats
                self._db.execute("ALTER TABLE steps ADD COLUMN report TEXT NOT NULL "
                                 "DEFAULT '{}'")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
            self._db.execute("UPDATE runs SET status='interrupted' WHERE status='running'")
            self._db.execute("BEGIN")

    # ---- writes ---------------------------------------------------------------------------
    def _commit(self) -> None:
        with self._lock:
            self._db.execute("COMMIT")
            self._db.execute("BEGIN")
            self._pending = 0

    def create_case(self, case_id: str, title: str = "") -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO cases (id, title, created) VALUES (?,?,?)",
                             (case_id, title, time.time()))
            if title:
                self._db.execute("UPDATE cases SET title=? WHERE id=?", (title, case_id))
            self._commit()

    def start_run(self, run: RunInfo, workflow_digest: str = "") -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO cases (id, created) VALUES (?,?)",
                             (run.case, time.time()))
            self._db.execute(
                "INSERT INTO runs (run_id, case_id, workflow, workflow_digest, event, "
                "query_id, status, started) VALUES (?,?,?,?,?,?, 'running', ?)",
                (run.run_id, run.case, run.workflow, workflow_digest, run.event,
                 run.query_id, run.started))
            self._commit()

    def add_verdict(self, run_id: str, v: Verdict) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO verdicts (run_id, case_id, ts, severity, severity_rank, score, "
                "analyzer, step, subject_kind, subject_id, signature_id, signature, doc) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, v.case, v.ts, v.severity, SEVERITIES.index(v.severity), v.score,
                 v.analyzer, v.step, v.subject_kind, v.subject_id, v.signature_id,
                 v.signature, json.dumps(v.to_dict(), default=str)))
            self._pending += 1
            if self._pending >= COMMIT_EVERY:
                self._commit()
            return int(cur.lastrowid or 0)

    def finish_step(self, run_id: str, r: StepResult) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, r.step, r.analyzer, r.analyzer_version, r.status, r.reason,
                 r.records_in, r.records_skipped, json.dumps(r.outputs),
                 json.dumps([e.__dict__ for e in r.errors]), r.started, r.finished,
                 json.dumps({"notes": r.notes, "stats": r.stats}, default=str)))
            self._commit()

    def finish_run(self, s: RunSummary) -> None:
        with self._lock:
            self._db.execute("UPDATE runs SET status=?, finished=?, summary=? WHERE run_id=?",
                             (s.status, s.finished, json.dumps(s.to_dict(), default=str),
                              s.run_id))
            self._commit()

    def close(self) -> None:
        with self._lock:
            self._db.execute("COMMIT")
            self._db.close()

    # ---- reads ----------------------------------------------------------------------------
    def cases(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT c.id, c.title, c.created, COUNT(v.id) FROM cases c LEFT JOIN verdicts "
                "v ON v.case_id = c.id GROUP BY c.id ORDER BY c.created").fetchall()
        return [{"id": r[0], "title": r[1], "created": r[2], "verdicts": r[3]} for r in rows]

    def runs(self, case_id: str | None = None) -> list[RunRow]:
        sql = ("SELECT run_id, case_id, workflow, workflow_digest, event, query_id, status, "
               "started, finished, summary FROM runs")
        args: tuple[Any, ...] = ()
        if case_id is not None:
            sql += " WHERE case_id=?"
            args = (case_id,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY started, rowid", args).fetchall()
        return [RunRow(run_id=r[0], case=r[1], workflow=r[2], workflow_digest=r[3],
                       event=r[4], query_id=r[5], status=r[6], started=r[7], finished=r[8],
                       summary=json.loads(r[9])) for r in rows]

    def run(self, run_id: str) -> RunRow | None:
        return next((r for r in self.runs() if r.run_id == run_id), None)

    def steps(self, run_id: str) -> list[StepResult]:
        with self._lock:
            rows = self._db.execute(
                "SELECT step, analyzer, analyzer_version, status, reason, records_in, "
                "records_skipped, outputs, errors, started, finished, report FROM steps "
                "WHERE run_id=? ORDER BY rowid", (run_id,)).fetchall()
        from pcapwire.workflow.results import StepError
        return [StepResult(step=r[0], analyzer=r[1], analyzer_version=r[2], status=r[3],
                           reason=r[4], records_in=r[5], records_skipped=r[6],
                           outputs=json.loads(r[7]),
                           errors=[StepError(**e) for e in json.loads(r[8])],
                           started=r[9] or 0.0, finished=r[10] or 0.0,
                           notes=json.loads(r[11]).get("notes", []),
                           stats=json.loads(r[11]).get("stats", {})) for r in rows]

    def _verdict_rows(self, case_id: str | None, run_id: str | None,
                      min_severity: str | None) -> Iterator[tuple[int, str, str]]:
        where, args = [], []
        if case_id is not None:
            where.append("case_id=?")
            args.append(case_id)
        if run_id is not None:
            where.append("run_id=?")
            args.append(run_id)
        if min_severity is not None:
            where.append("severity_rank>=?")
            args.append(SEVERITIES.index(min_severity))
        sql = "SELECT id, run_id, doc FROM verdicts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        yield from rows

    def verdicts(self, case_id: str | None = None, *, run_id: str | None = None,
                 min_severity: str | None = None) -> list[Verdict]:
        return [Verdict.from_dict(json.loads(doc))
                for _id, _run, doc in self._verdict_rows(case_id, run_id, min_severity)]

    def export_jsonl(self, case_id: str | None, out: IO[str], *, run_id: str | None = None,
                     min_severity: str | None = None) -> int:
        """Write the verdicts as ECS JSON lines; returns how many."""
        n = 0
        for vid, run, doc in self._verdict_rows(case_id, run_id, min_severity):
            out.write(ecs_line(Verdict.from_dict(json.loads(doc)), run_id=run,
                               verdict_id=vid) + "\n")
            n += 1
        return n
