"""A case's query history: every PCAP query with its case and event, how it ended and
what it returned (the packet store's query engine and the API record here; the API
searches here). Part of :class:`~pcapwire.cases.CaseStore`, in ``cases.sqlite``.

A query is a dict with :data:`QUERY_FIELDS`: ``id``, ``case``, ``event``, ``spec`` (the
QuerySpec as a dict), ``started``, ``finished`` (None while running), ``status``
(``running``, ``done``, ``error``, ``cancelled``), ``packets``, ``bytes``, ``error``.

Stores written before the history moved here kept it in the catalog (``catalog.sqlite``,
table ``queries``); :meth:`QueryHistory.adopt_queries` takes those rows over (see
:meth:`pcapwire.store.Store.move_query_history`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

QUERIES_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    id TEXT PRIMARY KEY, case_id TEXT NOT NULL, event TEXT NOT NULL, spec TEXT NOT NULL,
    started REAL NOT NULL, finished REAL, status TEXT NOT NULL,
    packets INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0, error TEXT);
CREATE INDEX IF NOT EXISTS queries_case ON queries(case_id, event);
CREATE INDEX IF NOT EXISTS queries_started ON queries(started);
"""
QUERY_FIELDS = ("id", "case", "event", "spec", "started", "finished", "status", "packets",
                "bytes", "error")
_SELECT = ("SELECT id, case_id, event, spec, started, finished, status, packets, bytes, "
           "error FROM queries")


def _query(row: Sequence[Any]) -> dict[str, Any]:
    d = dict(zip(QUERY_FIELDS, row, strict=True))
    d["spec"] = json.loads(d["spec"])
    return d


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere (``\\`` escapes)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class QueryHistory:
    """The query-history methods of :class:`~pcapwire.cases.CaseStore`."""

    _db: sqlite3.Connection
    _lock: threading.RLock

    def _writing(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # CaseStore's

    def _commit(self) -> None:
        raise NotImplementedError  # CaseStore's

    # ---- writes ---------------------------------------------------------------------------
    def add_query(self, query_id: str, case: str, event: str, spec: dict[str, Any]) -> None:
        """A query starts (``running``); its case is created if new."""
        with self._writing() as db:
            now = time.time()
            db.execute("INSERT OR IGNORE INTO cases (id, created) VALUES (?,?)", (case, now))
            db.execute("INSERT INTO queries (id, case_id, event, spec, started, status) "
                       "VALUES (?,?,?,?,?, 'running')",
                       (query_id, case, event, json.dumps(spec, sort_keys=True), now))

    def finish_query(self, query_id: str, status: str, packets: int, nbytes: int,
                     error: str | None = None, spec: dict[str, Any] | None = None) -> None:
        """How the query ended: ``done``, ``error`` (with the message) or ``cancelled``;
        ``spec``, if given, replaces the spec recorded at the start (a cluster central's
        adds which sensors were missing)."""
        with self._writing() as db:
            db.execute("UPDATE queries SET finished=?, status=?, packets=?, bytes=?, error=? "
                       "WHERE id=?", (time.time(), status, packets, nbytes, error, query_id))
            if spec is not None:
                db.execute("UPDATE queries SET spec=? WHERE id=?",
                           (json.dumps(spec, sort_keys=True), query_id))

    def adopt_queries(self, rows: Iterable[Sequence[Any]]) -> int:
        """Take over history rows kept elsewhere (the catalog's, before the history moved
        here), in :data:`QUERY_FIELDS` order with ``spec`` as JSON text, in one transaction
        synced to disk before it returns (the caller deletes the originals next). Again
        with the same rows: nothing changes, except that a row running here and finished
        there is finished; returns the number of rows given."""
        rows = [tuple(r) for r in rows]
        with self._lock:
            self._commit()  # verdicts waiting to be committed go first
            self._db.execute("PRAGMA synchronous=FULL")
            try:
                with self._writing() as db:
                    db.executemany("INSERT OR IGNORE INTO cases (id, created) VALUES (?,?)",
                                   sorted({(r[1], r[4]) for r in rows}))
                    db.executemany(
                        "INSERT INTO queries (id, case_id, event, spec, started, finished, "
                        "status, packets, bytes, error) VALUES (?,?,?,?,?,?,?,?,?,?) "
                        "ON CONFLICT (id) DO UPDATE SET finished=excluded.finished, "
                        "status=excluded.status, packets=excluded.packets, "
                        "bytes=excluded.bytes, error=excluded.error "
                        "WHERE queries.finished IS NULL AND excluded.finished IS NOT NULL",
                        rows)
            finally:
                self._db.execute("PRAGMA synchronous=NORMAL")
        return len(rows)

    # ---- reads ----------------------------------------------------------------------------
    def get_query(self, query_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(_SELECT + " WHERE id=?", (query_id,)).fetchone()
        return None if row is None else _query(row)

    def search_queries(self, *, case: str | None = None, text: str | None = None,
                       status: str | None = None, since: float | None = None,
                       until: float | None = None, oldest_first: bool = False
                       ) -> list[dict[str, Any]]:
        """Newest first (``oldest_first``: in the order they started). ``text`` matches a
        substring of the case or event name (case-insensitive for ASCII); ``since`` and
        ``until`` bound the start time (Unix seconds; ``until`` exclusive)."""
        where: list[str] = ["1=1"]
        args: list[Any] = []
        if case is not None:
            where.append("case_id = ?")
            args.append(case)
        if text:
            where.append("(case_id LIKE ? ESCAPE '\\' OR event LIKE ? ESCAPE '\\')")
            args += [_like(text), _like(text)]
        if status:
            where.append("status = ?")
            args.append(status)
        if since is not None:
            where.append("started >= ?")
            args.append(since)
        if until is not None:
            where.append("started < ?")
            args.append(until)
        order = "started, rowid" if oldest_first else "started DESC, id"
        with self._lock:
            rows = self._db.execute(f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY {order}",
                                    args).fetchall()
        return [_query(r) for r in rows]

    def query_history(self, case: str | None = None) -> list[dict[str, Any]]:
        """The queries (of one case), in the order they started."""
        return self.search_queries(case=case, oldest_first=True)
