"""A case owns its query history (``cases.sqlite``): the CaseStore's history methods, the
one-time move of an old catalog's ``queries`` table, and the case store's write lock,
which another connection (the packet store recording a query) waits for only briefly."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from conftest import corpus_file
from pcapwire.cases import CASES_FILE, QUERY_FIELDS, CaseStore
from pcapwire.cases.store import COMMIT_SECONDS
from pcapwire.query import QuerySpec
from pcapwire.records import FlowKey, Verdict
from pcapwire.store import Store
from pcapwire.store.catalog import Catalog
from pcapwire.workflow.context import RunInfo

#: The catalog schema before the query history moved (pcapwire up to schema_version 1),
#: verbatim.
OLD_CATALOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
  id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL UNIQUE, path TEXT NOT NULL,
  size INTEGER NOT NULL, state TEXT NOT NULL, packets_done INTEGER NOT NULL DEFAULT 0,
  errors TEXT NOT NULL DEFAULT '[]', started REAL NOT NULL, finished REAL);
CREATE TABLE IF NOT EXISTS segments (
  id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, linktype INTEGER NOT NULL,
  snaplen INTEGER NOT NULL, tsprec INTEGER NOT NULL, first_ns INTEGER NOT NULL,
  last_ns INTEGER NOT NULL, packets INTEGER NOT NULL, size INTEGER NOT NULL,
  source_id INTEGER NOT NULL REFERENCES sources(id));
CREATE INDEX IF NOT EXISTS segments_time ON segments(first_ns, last_ns);
CREATE TABLE IF NOT EXISTS flows (
  id INTEGER PRIMARY KEY, ipver INTEGER NOT NULL, proto INTEGER NOT NULL,
  addr_a BLOB NOT NULL, port_a INTEGER NOT NULL, addr_b BLOB NOT NULL, port_b INTEGER NOT NULL,
  initiator_is_a INTEGER NOT NULL, first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL,
  pkts_a2b INTEGER NOT NULL, bytes_a2b INTEGER NOT NULL,
  pkts_b2a INTEGER NOT NULL, bytes_b2a INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS flows_key ON flows(addr_a, addr_b, port_a, port_b, proto);
CREATE INDEX IF NOT EXISTS flows_b ON flows(addr_b);
CREATE INDEX IF NOT EXISTS flows_ports ON flows(port_a, port_b);
CREATE INDEX IF NOT EXISTS flows_port_b ON flows(port_b);
CREATE INDEX IF NOT EXISTS flows_time ON flows(first_ns);
CREATE TABLE IF NOT EXISTS flow_segments (
  flow_id INTEGER NOT NULL, segment_id INTEGER NOT NULL, packets INTEGER NOT NULL,
  first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL, offsets BLOB NOT NULL,
  PRIMARY KEY (flow_id, segment_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS flow_segments_seg ON flow_segments(segment_id);
CREATE TABLE IF NOT EXISTS queries (
  id TEXT PRIMARY KEY, case_name TEXT NOT NULL, event TEXT NOT NULL, spec TEXT NOT NULL,
  started REAL NOT NULL, finished REAL, status TEXT NOT NULL, packets INTEGER NOT NULL DEFAULT 0,
  bytes INTEGER NOT NULL DEFAULT 0, error TEXT);
CREATE INDEX IF NOT EXISTS queries_case ON queries(case_name, event);
"""
#: What the old catalog's add_query and finish_query wrote, for each query.
OLD_ROWS = [
    ("q-done", "IR-1", "alert-7", {"bpf": "tcp port 80", "case": "IR-1", "hosts": []},
     1000.5, 1001.25, "done", 42, 4200, None),
    ("q-error", "IR-1", "", {"bpf": "tcp and and"}, 1002.0, 1002.5, "error", 0, 0,
     "syntax error"),
    ("q-running", "IR-2", "ünïcode/évent", {"hosts": ["10.0.0.1"]}, 1003.0, None, "running",
     0, 0, None),
    ("q-cancelled", "default", "x_%", {}, 1004.0, 1009.0, "cancelled", 7, 700, None),
]
FLOW = FlowKey(6, "10.0.0.1", 40000, "192.0.2.9", 80)


def old_catalog(root: Path, rows: list[tuple] = OLD_ROWS) -> Path:
    """A store directory whose catalog an old pcapwire created and queried."""
    root.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(root / "catalog.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(OLD_CATALOG_SCHEMA)
    db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', '1')")
    for qid, case, event, spec, started, finished, status, packets, nbytes, error in rows:
        db.execute("INSERT INTO queries (id, case_name, event, spec, started, status) "
                   "VALUES (?,?,?,?,?,?)",
                   (qid, case, event, json.dumps(spec, sort_keys=True), started, "running"))
        if status != "running":
            db.execute("UPDATE queries SET finished=?, status=?, packets=?, bytes=?, error=? "
                       "WHERE id=?", (finished, status, packets, nbytes, error, qid))
    db.close()
    return root


def expected(rows: list[tuple] = OLD_ROWS) -> list[dict]:
    return [dict(zip(QUERY_FIELDS, r, strict=True)) for r in rows]


def tables(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()


def dump(path: Path) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return [*db.execute("SELECT * FROM queries ORDER BY id"),
                *db.execute("SELECT * FROM cases ORDER BY id")]
    finally:
        db.close()


# ---- the history methods ----------------------------------------------------------------
def test_add_finish_get_and_search(tmp_path: Path) -> None:
    store = CaseStore(tmp_path / CASES_FILE)
    try:
        spec = QuerySpec(hosts=["10.0.0.1"], case="IR-9", event="alert 1").to_dict()
        store.add_query("a", "IR-9", "alert 1", spec)
        got = store.get_query("a")
        assert got is not None and got["finished"] is None
        assert (got["id"], got["case"], got["event"], got["spec"], got["status"],
                got["packets"], got["bytes"], got["error"]) == (
            "a", "IR-9", "alert 1", spec, "running", 0, 0, None)
        assert set(got) == set(QUERY_FIELDS)
        assert [c["id"] for c in store.cases()] == ["IR-9"]  # the query made its case
        store.finish_query("a", "done", 10, 1000)
        done = store.get_query("a")
        assert done is not None and done["finished"] >= done["started"]
        assert (done["status"], done["packets"], done["bytes"]) == ("done", 10, 1000)
        time.sleep(0.01)
        store.add_query("b", "IR-9", "100%_sure", {})
        store.finish_query("b", "error", 0, 0, "bad filter")
        time.sleep(0.01)
        store.add_query("c", "other", "alert 2", {})
        assert store.get_query("nope") is None

        ids = [q["id"] for q in store.search_queries()]
        assert ids == ["c", "b", "a"]  # newest first
        assert [q["id"] for q in store.query_history()] == ["a", "b", "c"]
        assert [q["id"] for q in store.query_history("IR-9")] == ["a", "b"]
        assert [q["id"] for q in store.search_queries(case="IR-9")] == ["b", "a"]
        assert [q["id"] for q in store.search_queries(text="ALERT")] == ["c", "a"]
        assert [q["id"] for q in store.search_queries(text="0%_")] == ["b"]  # literal % _
        assert [q["id"] for q in store.search_queries(text="%")] == ["b"]
        assert [q["id"] for q in store.search_queries(status="error")] == ["b"]
        b = store.get_query("b")
        assert b is not None and b["error"] == "bad filter"
        assert [q["id"] for q in store.search_queries(since=b["started"])] == ["c", "b"]
        assert [q["id"] for q in store.search_queries(until=b["started"])] == ["a"]
    finally:
        store.close()
    again = CaseStore(tmp_path / CASES_FILE)  # committed: another open sees all of it
    try:
        assert [q["id"] for q in again.query_history()] == ["a", "b", "c"]
    finally:
        again.close()


def test_engine_records_queries_in_the_case_store(tmp_path: Path) -> None:
    with Store(tmp_path / "store") as store:
        store.ingest([corpus_file("zeek-http-get")])
        store.query_engine().to_bytes(QuerySpec(case="IR-5", event="e"), record=True)
        (q,) = store.cases.query_history("IR-5")
        assert (q["event"], q["status"]) == ("e", "done")
        assert q["packets"] == store.catalog.stats()["packets"]
    assert "queries" not in tables(tmp_path / "store" / "catalog.sqlite")
    assert "queries" in tables(tmp_path / "store" / CASES_FILE)


# ---- moving an old catalog's history ----------------------------------------------------
def test_old_catalog_history_moves_to_the_case_store_once(tmp_path: Path) -> None:
    root = old_catalog(tmp_path / "store")
    with Store(root) as store:
        assert store.cases.query_history() == expected()
        assert store.cases.get_query("q-running")["status"] == "running"  # type: ignore[index]
        assert [c["id"] for c in store.cases.cases()] == ["IR-1", "IR-2", "default"]
        # the store works on: ingest, query, and the new query joins the old ones
        store.ingest([corpus_file("zeek-http-get")])
        store.query_engine().to_bytes(QuerySpec(case="IR-1", event="new"), record=True)
        assert [q["id"] for q in store.cases.query_history("IR-1")][:2] == [
            "q-done", "q-error"]
        assert len(store.cases.query_history("IR-1")) == 3
    assert "queries" not in tables(root / "catalog.sqlite")
    catalog = sqlite3.connect(root / "catalog.sqlite")
    assert catalog.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() \
        == ("2",)
    catalog.close()
    before = dump(root / CASES_FILE)
    with Store(root) as store:  # again: nothing to move, nothing changes
        assert store.catalog.legacy_queries() is None
    with Store(root):
        pass
    assert dump(root / CASES_FILE) == before


def test_an_interrupted_move_completes_without_duplicates_or_losses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = old_catalog(tmp_path / "store")

    def crash(self: Catalog, moved: object) -> bool:
        raise KeyboardInterrupt  # killed between the copy and the drop

    with monkeypatch.context() as m:
        m.setattr(Catalog, "drop_legacy_queries", crash)
        with pytest.raises(KeyboardInterrupt):
            Store(root)
    assert "queries" in tables(root / "catalog.sqlite")
    # meanwhile an old pcapwire finished the running query in the catalog
    db = sqlite3.connect(root / "catalog.sqlite", isolation_level=None)
    db.execute("UPDATE queries SET finished=1010.0, status='done', packets=5, bytes=50 "
               "WHERE id='q-running'")
    db.close()
    with Store(root) as store:
        rows = store.cases.query_history()
    finished = list(OLD_ROWS)
    finished[2] = (*OLD_ROWS[2][:5], 1010.0, "done", 5, 50, None)
    assert rows == expected(finished)
    assert "queries" not in tables(root / "catalog.sqlite")


def test_the_catalog_keeps_rows_that_were_not_moved(tmp_path: Path) -> None:
    """A row added to the old table after it was read (an old pcapwire still running)
    keeps the table: the next read moves it too."""
    root = old_catalog(tmp_path / "store", OLD_ROWS[:2])
    catalog = Catalog(root / "catalog.sqlite")
    try:
        rows = catalog.legacy_queries()
        assert rows is not None and len(rows) == 2
        assert not catalog.drop_legacy_queries(rows[:1])
        assert catalog.legacy_queries() == rows
        assert catalog.drop_legacy_queries(rows)
        assert catalog.legacy_queries() is None
        assert catalog.drop_legacy_queries([])  # already gone: nothing to do
    finally:
        catalog.close()


def test_an_empty_old_history_is_dropped_without_opening_the_case_store(tmp_path: Path
                                                                        ) -> None:
    root = old_catalog(tmp_path / "store", [])
    with Store(root):
        pass
    assert "queries" not in tables(root / "catalog.sqlite")
    assert not (root / CASES_FILE).exists()


# ---- the write lock ---------------------------------------------------------------------
def _verdict(case: str) -> Verdict:
    return Verdict(analyzer="a", subject_kind="flow", subject_id="f1", flow=FLOW, ts=5.0,
                   severity="low", score=30, case=case)


def test_uncommitted_verdicts_hold_the_write_lock_briefly(tmp_path: Path) -> None:
    """The engine's case store writes a batch of verdicts; the packet store of the same
    data directory (a step's query, ``pcapwire query`` in another process) records a
    query meanwhile: it waits at most about COMMIT_SECONDS, never until the step ends."""
    engine_side = CaseStore(tmp_path / CASES_FILE)
    recorder = CaseStore(tmp_path / CASES_FILE, interrupt_running=False)
    try:
        engine_side.start_run(RunInfo("r1", "w", case="IR-1", started=1.0))
        engine_side.add_verdict("r1", _verdict("IR-1"))  # a batch is open
        t0 = time.monotonic()
        recorder.add_query("q1", "IR-1", "pivot", {})
        waited = time.monotonic() - t0
        assert waited < COMMIT_SECONDS + 2.0
        assert len(recorder.verdicts("IR-1")) == 1  # the batch was committed meanwhile
        assert engine_side.get_query("q1") is not None  # reads see others' commits at once
        assert engine_side.run("r1").status == "running"  # type: ignore[union-attr]
    finally:
        recorder.close()
        engine_side.close()


def test_a_recording_open_leaves_running_runs_alone(tmp_path: Path) -> None:
    owner = CaseStore(tmp_path / CASES_FILE)
    try:
        owner.start_run(RunInfo("r1", "w", case="IR-1", started=1.0))
        CaseStore(tmp_path / CASES_FILE, interrupt_running=False).close()
        assert owner.run("r1").status == "running"  # type: ignore[union-attr]
    finally:
        owner.close()
    CaseStore(tmp_path / CASES_FILE).close()  # an owner's open: the run was cut short
    reopened = CaseStore(tmp_path / CASES_FILE)
    try:
        assert reopened.run("r1").status == "interrupted"  # type: ignore[union-attr]
    finally:
        reopened.close()


def test_verdicts_are_committed_by_the_flusher_without_further_writes(tmp_path: Path
                                                                     ) -> None:
    store = CaseStore(tmp_path / CASES_FILE)
    try:
        store.start_run(RunInfo("r1", "w", case="IR-1", started=1.0))
        store.add_verdict("r1", _verdict("IR-1"))
        deadline = time.monotonic() + COMMIT_SECONDS + 5
        while time.monotonic() < deadline:
            other = sqlite3.connect(tmp_path / CASES_FILE)
            n = other.execute("SELECT count(*) FROM verdicts").fetchone()[0]
            other.close()
            if n == 1:
                break
            time.sleep(0.05)
        assert n == 1
        flushers = [t for t in threading.enumerate() if t.name.startswith("casestore-flush")]
        assert flushers
    finally:
        store.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("casestore-flush")
                and t.is_alive() and t in flushers]
