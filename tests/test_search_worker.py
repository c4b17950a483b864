"""The indexer process (pcapwire.search.worker): a finished Engine.run is searchable, its
documents written by the child process; a killed child is replaced and the next run is
indexed; a call whose child dies every time fails after ATTEMPTS children; what the child
logs reaches this process's loggers."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
import workflow_plugins as wp
from conftest import corpus_file
from pcapwire.cases import CASES_FILE, CaseStore
from pcapwire.hooks.host import build_host
from pcapwire.search import worker
from pcapwire.search.index import SearchIndex
from pcapwire.search.query import search
from pcapwire.workflow.document import load_workflow
from pcapwire.workflow.engine import Engine
from pcapwire.workflow.sources import file_chunks

SMTP = corpus_file("zeek-smtp-two-messages")  # two EHLO streams: two verdicts
NEEDLE = """
name: t
steps:
  - uses: t.needle
    with: {needle: EHLO}
"""


@pytest.fixture(autouse=True)
def child() -> Iterator[None]:
    wp.STATE = wp.State()
    yield
    worker.shutdown()


async def _run(root: Path, run_id: str) -> list[str]:
    """One run of the needle workflow; the keys of its documents, found by searching."""
    host = build_host(entry_points=False, extra=[wp])
    cases = CaseStore(root / CASES_FILE)
    try:
        summary = await Engine(host, cases, data_dir=root).run(
            load_workflow("<test>", host, text=NEEDLE), file_chunks(SMTP), case="c1",
            run_id=run_id)
    finally:
        cases.close()
    assert summary.status == "ok" and summary.verdicts == 2
    with SearchIndex.of(root) as index:
        return sorted(h["key"] for h in search(index, f"pcapwire.run_id:{run_id}").hits)


async def test_a_finished_run_is_searchable_indexed_by_the_child(tmp_path: Path) -> None:
    assert await _run(tmp_path, "r1") == ["verdict:r1:0", "verdict:r1:1"]
    pid = await worker.call(os.getpid)
    assert pid != os.getpid()
    assert await _run(tmp_path, "r2") == ["verdict:r2:0", "verdict:r2:1"]
    assert await worker.call(os.getpid) == pid  # one long-lived child


async def test_a_killed_child_is_replaced_and_the_next_run_indexed(tmp_path: Path) -> None:
    pid = await worker.call(os.getpid)
    os.kill(pid, signal.SIGKILL)
    assert await _run(tmp_path, "r1") == ["verdict:r1:0", "verdict:r1:1"]
    assert await worker.call(os.getpid) not in (pid, os.getpid())


async def test_a_call_whose_children_all_die_fails_after_attempts(
        caplog: pytest.LogCaptureFixture) -> None:
    assert worker.ATTEMPTS == 2
    with caplog.at_level(logging.WARNING, "pcapwire.search.worker"), \
            pytest.raises(BrokenProcessPool):
        await worker.call(os._exit, 3)
    assert [r.getMessage() for r in caplog.records] == [
        "search index: the indexer process died; _exit(3,) goes to a new one"]
    assert await worker.call(os.getpid) != os.getpid()  # a new child again


async def test_what_the_child_logs_reaches_this_process_s_loggers(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "pcapwire.search.sources"):
        child_log = logging.getLogger("pcapwire.search.sources")
        await worker.call(child_log.warning, "%s:%d: not JSON, skipped", "eve.json", 7)
        await worker.call(child_log.debug, "below the level: not sent")
        worker.shutdown()  # the child's queue is drained before shutdown returns
    assert [(r.name, r.levelname, r.getMessage(), r.process != os.getpid())
            for r in caplog.records] == [
        ("pcapwire.search.sources", "WARNING", "eve.json:7: not JSON, skipped", True)]
