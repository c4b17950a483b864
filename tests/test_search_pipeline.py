"""The indexer's two stages (pcapwire.search.pipeline, pcapwire.search.worker): prepared
batches write the same rows as one process does; runs go through both children whole,
exactly and in order; the spool holds QUEUE_BATCHES batches at most; a stage killed
mid-run has the run indexed whole again by a new pair, with no duplicates."""

from __future__ import annotations

import asyncio
import hashlib
import json
import marshal
import os
import signal
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pytest
from pcapwire.cases import CASES_FILE, CaseStore
from pcapwire.records import FlowKey, Verdict
from pcapwire.search import indexer, pipeline, sources, worker
from pcapwire.search.ecs import Doc
from pcapwire.search.index import SearchIndex, prepare
from pcapwire.workflow.context import RunInfo

T0 = 1_700_000_000.0


@pytest.fixture(autouse=True)
def children() -> Iterator[None]:
    yield
    worker.shutdown()


def _stored_run(root: Path, run_id: str, verdicts: int) -> list[str]:
    """A finished run with ``verdicts`` verdicts in the case store; its documents' keys."""
    cases = CaseStore(root / CASES_FILE)
    try:
        cases.start_run(RunInfo(run_id=run_id, workflow="w", case="c1", started=T0))
        for i in range(verdicts):
            cases.add_verdict(run_id, Verdict(
                analyzer="t.needle", subject_kind="stream", subject_id=f"s{i}",
                flow=FlowKey(6, "10.0.0.1", 1000 + i, "10.0.0.2", 25), ts=T0 + i,
                severity="low", score=10, signature="needle", case="c1", step="n"))
    finally:
        cases.close()
    return [f"verdict:{run_id}:{i}" for i in range(verdicts)]


def _tables(path: Path) -> dict[str, str]:
    """Every table of an index file, row for row (ids included), as a digest."""
    db = sqlite3.connect(path)
    try:
        out = {}
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                   "AND name != 'fts' ORDER BY name"):
            rows = db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            out[table] = f"{len(rows)} {hashlib.sha256(repr(rows).encode()).hexdigest()}"
        return out
    finally:
        db.close()


def _keys(root: Path) -> list[tuple[int, str]]:
    with SearchIndex.of(root) as index:
        return [(int(i), str(k)) for i, k in index.db.execute(
            "SELECT id, key FROM docs ORDER BY id")]


class _Sub(dict[str, Any]):
    """A dict subclass: the native walk hands the document to the Python one."""


def _docs(tag: str) -> list[Doc]:
    return [Doc("k1", {"@timestamp": "2024-01-02T03:04:05.000006Z", "tags": ["A", "b"],
                       "source": {"ip": "10.0.0.1", "port": 80}, "pcapwire": {"case": "c"}}),
            Doc("k2", {"@timestamp": T0, "url": {"domain": f"{tag}.Example"},
                       "email": {"subject": f"hello {tag}"}}),
            Doc("k1", {"@timestamp": T0 + 1, "tags": f"last {tag}"}),  # the last k1 wins
            Doc("k3", {"@timestamp": T0 + 2, "labels": _Sub(x="y"), "tags": _Sub()})]


def test_prepared_batches_write_the_rows_one_process_writes(tmp_path: Path) -> None:
    """put_many (one process) and a prepared batch as the writer stage takes it (through
    marshal, as it crosses between the processes), the second batch replacing the first's
    documents: every table the same, row for row."""
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        root.mkdir()
        with SearchIndex.of(root) as index:
            for tag in ("first", "second"):
                with index.write() as w:
                    if root == one:
                        assert w.put_many(_docs(tag)) == 3
                    else:
                        batch = marshal.loads(marshal.dumps(prepare(_docs(tag))))
                        assert w.put_prepared(batch) == 3
    assert _tables(one / "search.sqlite") == _tables(two / "search.sqlite")
    assert _keys(two) == [(1, "k1"), (2, "k2"), (3, "k3")]  # all three replaced
    with SearchIndex.of(two) as index:
        assert json.loads(index.db.execute("SELECT body FROM docs WHERE id=1").fetchone()[0]
                          ) == {"@timestamp": T0 + 1, "tags": "last second",
                                "event": {"id": "k1"}}


def _content(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """An index file's content with documents named by key and fields by name (not by
    their ids): the documents in id order, their FTS rows, the postings, the field names."""
    db = sqlite3.connect(path)
    try:
        names = dict(db.execute("SELECT id, name FROM fields"))
        keys = dict(db.execute("SELECT id, key FROM docs"))
        out = {"docs": db.execute("SELECT key, case_id, ts, body FROM docs ORDER BY id"
                                  ).fetchall(),
               "fts": db.execute("SELECT d.key, f.* FROM fts f JOIN docs d ON d.id = f.rowid "
                                 "ORDER BY d.id").fetchall(),
               "fields": sorted(db.execute("SELECT name FROM fields").fetchall())}
        for table in ("terms", "nums"):
            out[table] = sorted((names[abs(f)], f < 0, v, keys[doc]) for f, v, doc
                                in db.execute(f"SELECT f, v, doc FROM {table}"))
        return out
    finally:
        db.close()


def test_the_pipeline_batch_is_a_quarter_of_one_process_batch() -> None:
    assert pipeline.BATCH == 5_000
    assert indexer.BATCH == 4 * pipeline.BATCH


async def test_pipeline_batches_index_what_one_process_indexes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run in three of the pipeline's batches (2 + 2 + 1 documents; batches waiting
    share a transaction) and in one of one process's (indexer.index_run): the same
    documents at the same ids,
    the same FTS rows and postings; indexed again (each document replaced by itself), the
    same content in the same order (ids may differ: a batch deletes its own keys only)."""
    monkeypatch.setattr(pipeline, "BATCH", 2)
    pipe, one = tmp_path / "pipe", tmp_path / "one"
    for root in (pipe, one):
        root.mkdir()
        _stored_run(root, "r1", 5)
    assert await worker.index_run(pipe, "r1") == 5
    assert indexer.index_run(one, "r1") == 5
    assert _tables(pipe / "search.sqlite")["docs"] == _tables(one / "search.sqlite")["docs"]
    assert _content(pipe / "search.sqlite") == _content(one / "search.sqlite")
    first = _content(one / "search.sqlite")
    assert len(first["docs"]) == 5 and len(first["fts"]) == 5 and len(first["terms"]) > 5
    assert await worker.index_run(pipe, "r1") == 5
    assert indexer.index_run(one, "r1") == 5
    assert _content(pipe / "search.sqlite") == _content(one / "search.sqlite") == first
    keys = [f"verdict:r1:{i}" for i in range(5)]
    assert _keys(one) == list(enumerate(keys, 1))  # all 5 deleted first, then max(id) = 0
    assert _keys(pipe) == list(enumerate(keys, 6))  # 2 deleted, max(id) = 5: 6, 7; ...


async def test_runs_go_through_both_stages_whole_and_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs handed out at once, one document a batch (those waiting share a transaction): every
    document once, in run order; a run unknown to the case store is 0 documents."""
    monkeypatch.setattr(pipeline, "BATCH", 1)
    keys = _stored_run(tmp_path, "r1", 3) + _stored_run(tmp_path, "r2", 2)
    assert await asyncio.gather(worker.index_run(tmp_path, "r1"),
                                worker.index_run(tmp_path, "r2"),
                                worker.index_run(tmp_path, "nothing")) == [3, 2, 0]
    assert _keys(tmp_path) == list(enumerate(keys, 1))
    builder = await worker.call(os.getpid, stage=worker.BUILDER)
    assert len({builder, await worker.call(os.getpid), os.getpid()}) == 3
    spool = worker._current().spool
    assert list(spool.iterdir()) == []  # every batch taken
    worker.shutdown()
    assert not spool.exists()


async def test_a_failing_index_fails_the_run_and_the_next_run_is_indexed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The writer cannot open the index (a directory in its place): the run fails
    (logged, None) after the builder's batches were taken, so the next run starts at its
    own first batch."""
    monkeypatch.setattr(pipeline, "BATCH", 1)
    _stored_run(tmp_path, "r1", 3)
    keys = _stored_run(tmp_path, "r2", 2)
    (tmp_path / "search.sqlite").mkdir()
    assert await worker.index_run(tmp_path, "r1") is None
    assert "search index: index_run" in caplog.text and "r1" in caplog.text
    (tmp_path / "search.sqlite").rmdir()
    assert await worker.index_run(tmp_path, "r2") == 2
    assert _keys(tmp_path) == list(enumerate(keys, 1))


def test_the_spool_holds_queue_batches_at_most(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The builder with no writer: it sends QUEUE_BATCHES batches, then waits for a free
    place; the pair given up, it stops there (Abandoned)."""
    assert pipeline.QUEUE_BATCHES == 2
    monkeypatch.setattr(pipeline, "POLL_S", 0.01)
    _stored_run(tmp_path, "r1", pipeline.QUEUE_BATCHES + 2)
    ctx = get_context("spawn")
    receiving, sending = ctx.Pipe(duplex=False)
    abandoned = ctx.Event()
    abandoned.set()
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(pipeline, "_channel", pipeline.Channel(
        sending, ctx.Semaphore(pipeline.QUEUE_BATCHES), abandoned, spool))
    with pytest.raises(pipeline.Abandoned):
        pipeline.build_run(tmp_path, "r1", 1)
    messages = []
    while receiving.poll():
        messages.append(receiving.recv())
    assert [(kind, rid) for kind, rid, _ in messages] == [("batch", "r1")] * 2
    assert sorted(p.name for p in spool.iterdir()) == sorted(m[2] for m in messages)


async def _until(check: Any) -> None:
    """Wait for a child's state the test cannot be told of (at most 30 s)."""
    async with asyncio.timeout(30):
        while not check():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("killed", [worker.BUILDER, worker.WRITER])
async def test_a_stage_killed_mid_run_has_the_run_indexed_whole_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, killed: str) -> None:
    """One document a batch; the writer held up (reading a FIFO) until the builder has
    filled the spool and waits; one stage killed: a new pair indexes the run whole, once
    (the documents the old pair wrote replaced by key)."""
    monkeypatch.setattr(pipeline, "BATCH", 1)
    keys = _stored_run(tmp_path, "r1", pipeline.QUEUE_BATCHES + 2)
    # indexed in part before (as a pair that died after two batches leaves it)
    assert indexer.index_records(tmp_path, islice(sources.run_docs(tmp_path, "r1"), 2)) == 2
    pids = {stage: await worker.call(os.getpid, stage=stage)
            for stage in (worker.BUILDER, worker.WRITER)}
    fifo = tmp_path / "hold"
    os.mkfifo(fifo)
    held = asyncio.ensure_future(worker.call(Path.read_bytes, fifo))
    run = asyncio.ensure_future(worker.index_run(tmp_path, "r1"))
    spool = worker._current().spool
    await _until(lambda: len(list(spool.iterdir())) == pipeline.QUEUE_BATCHES)
    os.kill(pids[killed], signal.SIGKILL)
    # the held call reads to the end (a new writer's, when the writer was the one killed)
    os.close(await asyncio.to_thread(os.open, fifo, os.O_WRONLY))
    assert await run == len(keys)
    assert await held == b""
    # each once, in order (the old pair may have written the batches it had, before)
    indexed = _keys(tmp_path)
    assert [k for _, k in indexed] == keys
    assert [i for i, _ in indexed] == list(range(indexed[0][0], indexed[0][0] + len(keys)))
    assert await worker.call(os.getpid, stage=killed) != pids[killed]
    assert not spool.exists()  # the old pair's, with the batches the dead builder sent


def test_the_writer_takes_the_batches_waiting_into_one_transaction(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five one-document batches sent before the writer starts: it writes them
    MERGE_BATCHES (3 here; 6 shipped) and 2 a transaction, and the rows are those one
    process writes."""
    assert pipeline.MERGE_BATCHES == 6
    monkeypatch.setattr(pipeline, "MERGE_BATCHES", 3)
    one, pipe = tmp_path / "one", tmp_path / "pipe"
    for root in (one, pipe):
        root.mkdir()
        _stored_run(root, "r1", 5)
    assert indexer.index_run(one, "r1") == 5
    ctx = get_context("spawn")
    receiving, sending = ctx.Pipe(duplex=False)
    slots, abandoned, spool = ctx.Semaphore(5), ctx.Event(), tmp_path / "spool"
    spool.mkdir()
    committed: list[int] = []
    write = SearchIndex.write

    @contextmanager
    def counted(self: SearchIndex) -> Iterator[Any]:
        with write(self) as w:
            yield w
        committed.append(self.count())

    monkeypatch.setattr(SearchIndex, "write", counted)
    monkeypatch.setattr(pipeline, "_channel", pipeline.Channel(sending, slots, abandoned,
                                                               spool))
    assert pipeline.build_run(pipe, "r1", 1) == 5
    monkeypatch.setattr(pipeline, "_channel", pipeline.Channel(receiving, slots, abandoned,
                                                               spool))
    assert pipeline.write_run(pipe, "r1") == 5
    assert committed == [3, 5]
    assert list(spool.iterdir()) == []
    assert _tables(pipe / "search.sqlite")["docs"] == _tables(one / "search.sqlite")["docs"]
    assert _content(pipe / "search.sqlite") == _content(one / "search.sqlite")
