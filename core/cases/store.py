"""The case store: SQLite, one file (``<data-dir>/cases.sqlite`` by default, see
:data:`CASES_FILE`): a case's query history, its workflow runs, their steps and verdicts.

::

    store = CaseStore(path)                       # creates the schema
    store.create_case("IR-42", title="phishing")  # optional: queries and runs create theirs
    store.add_query(query_id, "IR-42", "alert-7", spec.to_dict())   # a query starts ...
    store.finish_query(query_id, "done", packets, nbytes)            # ... and ends
    store.start_run(run_info, workflow_digest)    # the engine does this
    store.add_verdict(run_id, verdict)            # as verdicts stream
    store.finish_step(run_id, step_result)
    store.finish_run(summary)                     # commits
    store.verdicts("IR-42")                       # -> [Verdict]
    store.search_queries(case="IR-42")            # -> the history, newest first
    store.export_jsonl("IR-42", fh)               # ECS JSON lines

Durability: verdicts are committed at least every :data:`COMMIT_EVERY` verdicts, at most
:data:`COMMIT_SECONDS` after the first uncommitted one (a background flusher), and at
every step and run end, in WAL mode; every other write commits at once. Between writes no
transaction is open, so other connections (another process, the packet store recording a
query's history) wait for the write lock at most that long, and reads always see what
others committed. A run found ``running`` when a store is opened was cut short by a
restart: it is marked ``interrupted`` (its committed verdicts and finished steps stay),
unless the store is opened with ``interrupt_running=False`` (by whoever only records
queries while another process may be running workflows).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson
from pcapwire.cases.export import ecs_line
from pcapwire.cases.queries import QUERIES_SCHEMA, QueryHistory
from pcapwire.errors import ConfigError
from pcapwire.records import SEVERITIES, Verdict

if TYPE_CHECKING:  # the workflow package costs a tenth of a second to import
    from pcapwire.workflow.context import RunInfo
    from pcapwire.workflow.results import RunSummary, StepResult

log = logging.getLogger(__name__)
_ORJSON_LOADS, _ORJSON_ERROR = orjson.loads, orjson.JSONDecodeError

#: The case store's file in a data directory.
CASES_FILE = "cases.sqlite"
#: Verdicts inserted between two commits, at most.
COMMIT_EVERY = 256
#: Seconds the first uncommitted verdict waits for its commit, at most (the write lock of
#: the case store is held that long at most, see the module's docstring).
COMMIT_SECONDS = 0.2
#: How long a write waits for another connection's write lock before it fails.
BUSY_TIMEOUT_SECONDS = 30.0
SCHEMA_VERSION = 2

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
""" + QUERIES_SCHEMA


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


def _loads(doc: str) -> Any:
    """A stored verdict's JSON: orjson (3x cheaper than :mod:`json` on verdicts, which the
    search indexer reads back for every run), json for what orjson refuses (NaN, integers
    beyond 64 bits, lone surrogates)."""
    try:
        return _ORJSON_LOADS(doc)
    except _ORJSON_ERROR:
        return json.loads(doc)


class CaseStore(QueryHistory):
    """A small, synchronous API (fast local SQLite calls); safe to share between threads.
    The query history's methods come from :class:`~pcapwire.cases.queries.QueryHistory`."""

    def __init__(self, path: str | Path, *, interrupt_running: bool = True) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False,
                                       isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"case store {self.path}: {exc}") from None
        self._lock = threading.RLock()
        self._flushed = threading.Condition(self._lock)
        self._flusher: threading.Thread | None = None
        self._pending = 0  # verdicts in the open transaction
        self._batch_started = 0.0  # monotonic time of the first of them
        self._closed = False
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
            self._db.execute("UPDATE meta SET value=? WHERE key='schema_version' AND "
                             "CAST(value AS INTEGER) < ?", (str(SCHEMA_VERSION), SCHEMA_VERSION))
            if interrupt_running:
                self._db.execute("UPDATE runs SET status='interrupted' WHERE status='running'")

    # ---- writes ---------------------------------------------------------------------------
    def _commit(self) -> None:
        with self._lock:
            if self._db.in_transaction:
                self._db.execute("COMMIT")
            self._pending = 0

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One write, committed when the block ends (with the verdicts still uncommitted,
        if any); rolled back if it raises and no verdicts are waiting in it."""
        with self._lock:
            if not self._db.in_transaction:
                self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if not self._pending and self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._commit()

    def create_case(self, case_id: str, title: str = "") -> None:
        with self._writing() as db:
            db.execute("INSERT OR IGNORE INTO cases (id, title, created) VALUES (?,?,?)",
                       (case_id, title, time.time()))
            if title:
                db.execute("UPDATE cases SET title=? WHERE id=?", (title, case_id))

    def start_run(self, run: RunInfo, workflow_digest: str = "") -> None:
        with self._writing() as db:
            db.execute("INSERT OR IGNORE INTO cases (id, created) VALUES (?,?)",
                       (run.case, time.time()))
            db.execute(
                "INSERT INTO runs (run_id, case_id, workflow, workflow_digest, event, "
                "query_id, status, started) VALUES (?,?,?,?,?,?, 'running', ?)",
                (run.run_id, run.case, run.workflow, workflow_digest, run.event,
                 run.query_id, run.started))

    def add_verdict(self, run_id: str, v: Verdict) -> int:
        with self._lock:
            if not self._db.in_transaction:
                self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT INTO verdicts (run_id, case_id, ts, severity, severity_rank, "
                    "score, analyzer, step, subject_kind, subject_id, signature_id, "
                    "signature, doc) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (run_id, v.case, v.ts, v.severity, SEVERITIES.index(v.severity), v.score,
                     v.analyzer, v.step, v.subject_kind, v.subject_id, v.signature_id,
                     v.signature, json.dumps(v.to_dict(), default=str)))
            except BaseException:
                if not self._pending:
                    self._db.execute("ROLLBACK")
                raise
            self._pending += 1
            if self._pending >= COMMIT_EVERY:
                self._commit()
            elif self._pending == 1:
                self._batch_started = time.monotonic()
                self._flush_later()
            return int(cur.lastrowid or 0)

    def _flush_later(self) -> None:
        """Have the flusher commit the open batch of verdicts by COMMIT_SECONDS."""
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                             name=f"casestore-flush-{self.path.name}")
            self._flusher.start()
        else:
            self._flushed.notify()

    def _flush_loop(self) -> None:
        with self._flushed:
            while not self._closed:
                if not self._pending:
                    self._flushed.wait()
                    continue
                left = self._batch_started + COMMIT_SECONDS - time.monotonic()
                if left > 0:
                    self._flushed.wait(left)
                    continue
                try:
                    self._commit()
                except sqlite3.Error as exc:  # e.g. a full disk: the next verdict retries
                    log.warning("case store %s: committing verdicts failed: %s",
                                self.path, exc)
                    self._batch_started = time.monotonic()

    def finish_step(self, run_id: str, r: StepResult) -> None:
        with self._writing() as db:
            db.execute(
                "INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, r.step, r.analyzer, r.analyzer_version, r.status, r.reason,
                 r.records_in, r.records_skipped, json.dumps(r.outputs),
                 json.dumps([e.__dict__ for e in r.errors]), r.started, r.finished,
                 json.dumps({"notes": r.notes, "stats": r.stats, "kept": r.kept},
                            default=str)))

    def finish_run(self, s: RunSummary) -> None:
        with self._writing() as db:
            db.execute("UPDATE runs SET status=?, finished=?, summary=? WHERE run_id=?",
                       (s.status, s.finished, json.dumps(s.to_dict(), default=str),
                        s.run_id))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._flushed.notify_all()
            try:
                self._commit()
            finally:
                self._db.close()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join()

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
        from pcapwire.workflow.results import StepError, StepResult
        return [StepResult(step=r[0], analyzer=r[1], analyzer_version=r[2], status=r[3],
                           reason=r[4], records_in=r[5], records_skipped=r[6],
                           outputs=json.loads(r[7]),
                           errors=[StepError(**e) for e in json.loads(r[8])],
                           started=r[9] or 0.0, finished=r[10] or 0.0,
                           notes=report.get("notes", []), stats=report.get("stats", {}),
                           kept=report.get("kept"))
                for r in rows for report in (json.loads(r[11]),)]

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

    def signature_counts(self, analyzer: str, case_id: str | None = None) -> dict[str, int]:
        """Verdicts per signature id of one analyzer (Suricata: alerts per sid), in one case
        or in all."""
        sql = ("SELECT signature_id, count(*) FROM verdicts WHERE analyzer=?"
               + (" AND case_id=?" if case_id is not None else "") + " GROUP BY signature_id")
        args = (analyzer,) if case_id is None else (analyzer, case_id)
        with self._lock:
            return {str(sid): int(n) for sid, n in self._db.execute(sql, args)}

    def verdicts(self, case_id: str | None = None, *, run_id: str | None = None,
                 min_severity: str | None = None) -> list[Verdict]:
        return [Verdict.from_dict(_loads(doc))
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
