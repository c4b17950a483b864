"""The API is a client of the library: it keeps no SQL of the case store or the catalog,
reads no layout the CLI defines, and records the query history through the case store
from a worker thread (no write after close; close waits for a write in flight)."""

from __future__ import annotations

import ast
import asyncio
import logging
import re
import threading
from pathlib import Path

import pytest
from pcapwire.api.history import get_query, search_queries
from pcapwire.api.tenants import TenantStore
from pcapwire.cases import CASES_FILE, CaseStore

API = Path(__file__).resolve().parents[1] / "core" / "api"
#: Tables of the case store (cases.sqlite) and of the catalog (catalog.sqlite).
TABLES = ("queries", "runs", "steps", "verdicts", "cases", "meta", "sources", "segments",
          "flows", "flow_segments")
SQL = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN|TABLE|DELETE)\s+(?:" + "|".join(TABLES)
                 + r")\b", re.I)
#: Names of the carve directory's files (pcapwire.extract.layout owns them).
LAYOUT_NAMES = ("files.jsonl", "emails.jsonl", "http.jsonl", "ftp.jsonl", "summary.json")


def _sources() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(), str(p))) for p in sorted(API.glob("*.py"))]


def _strings(tree: ast.Module) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append(node.value)
        elif isinstance(node, ast.JoinedStr):  # f-strings: their literal parts together
            out.append(" ".join(v.value for v in node.values
                                if isinstance(v, ast.Constant) and isinstance(v.value, str)))
    return out


def test_the_api_has_no_sql_of_the_case_store_or_the_catalog() -> None:
    found = [(p.name, s[:80]) for p, tree in _sources() for s in _strings(tree)
             if SQL.search(s)]
    assert found == []
    for path, _ in _sources():  # nor a connection of either store
        assert not re.search(r"\b(?:catalog|cases|_writer)\.(?:_?db)\b", path.read_text()), \
            path.name


def test_the_scan_finds_sql_like_the_old_history_module() -> None:
    old = ('SELECT = ("SELECT id, case_name FROM queries")\nx = f"UPDATE runs SET {a}=1"\n'
           'r = ts.catalog.db.execute(SELECT)')
    hits = [s for s in _strings(ast.parse(old)) if SQL.search(s)]
    assert "SELECT id, case_name FROM queries" in hits
    assert any(h.startswith("UPDATE runs SET") for h in hits)
    assert re.search(r"\b(?:catalog|cases|_writer)\.(?:_?db)\b", old)


def test_the_api_imports_nothing_from_the_cli() -> None:
    """Its long work runs as jobs (pcapwire.jobs), whose results are structured: the API
    no longer reads a child CLI's exit status or error text."""
    imported = set()
    for _path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "pcapwire.cli"):
                imported |= {(node.module, a.name) for a in node.names}
            elif isinstance(node, ast.Import):
                assert not [a for a in node.names if a.name.startswith("pcapwire.cli")]
    assert imported == set()


def test_the_api_reads_the_carve_layout_through_the_library() -> None:
    for path, tree in _sources():
        assert not [s for s in _strings(tree) if s in LAYOUT_NAMES], path.name


# ---- TenantStore's history writes -------------------------------------------------------
async def test_history_is_written_off_the_loop_and_read_back(tmp_path: Path) -> None:
    ts = TenantStore("acme", tmp_path / "acme")
    try:
        loop_thread = threading.current_thread()
        seen: list[threading.Thread] = []
        add = ts._writer.add_query

        def spy(*args: object) -> None:
            seen.append(threading.current_thread())
            add(*args)  # type: ignore[arg-type]

        ts._writer.add_query = spy  # type: ignore[method-assign]
        await ts.write("add_query", "q1", "IR-1", "alert", {"hosts": ["10.0.0.1"]})
        await ts.write("finish_query", "q1", "done", 3, 300, None)
        assert seen and seen[0] is not loop_thread
        row = get_query(ts, "q1")
        assert row is not None and (row["status"], row["packets"], row["bytes"]) == (
            "done", 3, 300)
        assert [r["id"] for r in search_queries(ts, ip="10.0.0.1")] == ["q1"]
        assert search_queries(ts, ip="10.0.0.2") == []
    finally:
        ts.close()
    cases = CaseStore(tmp_path / "acme" / CASES_FILE)
    try:
        assert [q["id"] for q in cases.query_history("IR-1")] == ["q1"]
    finally:
        cases.close()


async def test_a_write_after_close_is_dropped(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    ts = TenantStore("acme", tmp_path / "acme")
    ts.close()
    with caplog.at_level(logging.WARNING, logger="pcapwire.api.tenants"):
        await ts.write("add_query", "late", "IR-1", "", {})
    assert "add_query after close, dropped" in caplog.text
    cases = CaseStore(tmp_path / "acme" / CASES_FILE)
    try:
        assert cases.get_query("late") is None
    finally:
        cases.close()


async def test_close_waits_for_a_write_in_flight(tmp_path: Path) -> None:
    ts = TenantStore("acme", tmp_path / "acme")
    entered, release = threading.Event(), threading.Event()
    add = ts._writer.add_query

    def slow(*args: object) -> None:
        entered.set()
        release.wait(10)
        add(*args)  # type: ignore[arg-type]

    ts._writer.add_query = slow  # type: ignore[method-assign]
    write = asyncio.ensure_future(ts.write("add_query", "q1", "IR-1", "", {}))
    await asyncio.to_thread(entered.wait, 10)
    closer = threading.Thread(target=ts.close)
    closer.start()
    await asyncio.sleep(0.2)
    assert closer.is_alive()  # waiting for the write
    release.set()
    await write
    await asyncio.to_thread(closer.join, 10)
    assert not closer.is_alive()
    cases = CaseStore(tmp_path / "acme" / CASES_FILE)
    try:
        assert cases.get_query("q1") is not None  # the write completed and was committed
    finally:
        cases.close()
