"""The workflow engine: concurrency, routing, fault isolation (raise, hang, killed
subprocess), back-pressure, cancellation, persistence, aggregation, broadcast hooks.

Analyzers come from tests/workflow_plugins.py (real analyzers written for the tests).
Synchronisation is by asyncio events; step timeouts are the behaviour under test where
they appear (short values keep the tests fast)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import workflow_plugins as wp
from conftest import corpus_file
from pcapwire.cases import CaseStore
from pcapwire.hooks.host import build_host
from pcapwire.reassembly import streams_from_file
from pcapwire.records import PcapChunk
from pcapwire.workflow.document import load_workflow
from pcapwire.workflow.engine import MAX_STEP_ERRORS, Engine
from pcapwire.workflow.sources import file_chunks, iter_file_chunks

SMTP = corpus_file("zeek-smtp-two-messages")  # 6 TCP connections + 2 UDP flows


@pytest.fixture(autouse=True)
def plugin_state() -> None:
    wp.STATE = wp.State()


@pytest.fixture
def host():
    return build_host(entry_points=False, extra=[wp])


def wf(host, text: str):
    return load_workflow("<test>", host, text=text)


async def run(host, text: str, chunks=None, store=None, **kw):
    chunks = chunks if chunks is not None else file_chunks(SMTP)
    return await Engine(host, store).run(wf(host, text), chunks, **kw)


def step(summary, sid):
    return next(s for s in summary.steps if s.step == sid)


async def test_streams_reach_stream_steps_and_verdicts_carry_the_flow(host) -> None:
    expected = [r for r in streams_from_file(SMTP) if b"EHLO" in r.data]
    assert len(expected) == 2
    got = []
    s = await run(host, """
name: t
steps:
  - uses: t.needle
    with: {needle: EHLO}
""", on_verdict=got.append, case="c1", query_id="q1")
    assert s.status == "ok" and s.verdicts == 2
    assert sorted(v.subject_id for v in got) == sorted(r.id for r in expected)
    for v in got:
        rec = next(r for r in expected if r.id == v.subject_id)
        assert (v.flow, v.ts, v.case, v.query_id, v.step) == (rec.flow, rec.start_ts, "c1",
                                                            "q1", "t.needle")
    st = step(s, "t.needle")
    assert st.records_in == 12 and st.outputs == {"verdict": 2}


async def test_condition_skips_records(host) -> None:
    s = await run(host, """
name: t
steps:
  - uses: t.needle
    with: {needle: EHLO}
    if: "stream.flow.dest_port == 25 and stream.direction == 'orig'"
""")
    st = step(s, "t.needle")
    assert (st.records_in, st.records_skipped, st.outputs) == (12, 10, {"verdict": 2})


async def test_step_that_raises_yields_error_records_and_the_run_completes(host) -> None:
    s = await run(host, """
name: t
steps:
  - uses: t.raise
  - uses: t.needle
    with: {needle: EHLO}
""")
    assert s.status == "partial" and s.verdicts == 2
    bad = step(s, "t.raise")
    assert bad.status == "error" and len(bad.errors) == 12
    assert bad.errors[0].message.startswith("ValueError: cannot handle ")
    assert bad.errors[0].subject.startswith("C")
    assert step(s, "t.needle").status == "ok"


async def test_step_that_hangs_times_out_and_the_run_completes(host) -> None:
    s = await run(host, """
name: t
steps:
  - uses: t.hang
    input: pcap
    timeout: 0.2
  - uses: t.needle
    with: {needle: EHLO}
""")
    hang = step(s, "t.hang")
    assert hang.status == "timeout"
    assert hang.errors[0].message == "no result within the step timeout of 0.2 s"
    assert s.status == "partial" and s.verdicts == 2


async def test_killed_subprocess_yields_an_error_record(host) -> None:
    async def killer() -> None:
        await wp.STATE.spawned.wait()
        os.kill(wp.STATE.pid, signal.SIGKILL)

    k = asyncio.create_task(killer())
    s = await run(host, """
name: t
steps:
  - uses: t.subprocess
  - uses: t.needle
    with: {needle: EHLO}
""")
    await k
    sub = step(s, "t.subprocess")
    assert sub.status == "error"
    assert sub.reason == "AnalyzerError: engine process killed by signal 9"
    assert wp.STATE.proc.returncode == -9 and wp.STATE.closed == ["t.subprocess"]
    assert s.status == "partial" and step(s, "t.needle").outputs == {"verdict": 2}


async def test_errors_are_capped(host) -> None:
    chunks = list(iter_file_chunks(SMTP, chunk_bytes=4096))
    many = [chunks[0]] * 0

    async def streams_source() -> AsyncIterator[PcapChunk]:
        for c in chunks:
            yield c

    assert not many
    s = await run(host, "name: t\nsteps:\n  - uses: t.raise\n", chunks=streams_source())
    assert len(step(s, "t.raise").errors) == 12 <= MAX_STEP_ERRORS


async def test_work_starts_on_the_first_chunk(host) -> None:
    """The source waits for the analyzer to have seen chunk 0 before it yields chunk 1:
    an engine that buffered the whole input first would never finish (guarded by a
    timeout)."""
    chunks = list(iter_file_chunks(SMTP, chunk_bytes=8192))
    assert len(chunks) > 3
    seen_first = asyncio.Event()

    class First(wp.Analyzer):
        name = "t.first"
        input_kind = "pcap"
        version = "1"

        async def analyze(self, record, ctx):
            seen_first.set()
            return
            yield

    class P:
        @wp.impl
        def pcapwire_register_analyzers(self, register):
            register(First)

    h = build_host(entry_points=False, extra=[P()])

    async def source() -> AsyncIterator[PcapChunk]:
        yield chunks[0]
        await seen_first.wait()
        for c in chunks[1:]:
            yield c

    async with asyncio.timeout(10):
        s = await run(h, "name: t\nsteps:\n  - uses: t.first\n", chunks=source())
    assert s.chunks == len(chunks) and step(s, "t.first").records_in == len(chunks)


async def test_back_pressure_bounds_the_queue_and_the_feed(host) -> None:
    """A blocked analyzer stops the source: while it holds its first chunk, at most
    queue_size more chunks are taken from the source (and the queue never holds more
    than queue_size). The loop below only lets the event loop run (no timing)."""
    produced = 0
    total = 200
    chunk = next(iter_file_chunks(SMTP))

    async def source() -> AsyncIterator[PcapChunk]:
        nonlocal produced
        for i in range(total):
            produced += 1
            yield PcapChunk("q", i, chunk.linktype, chunk.snaplen, chunk.data, chunk.packets,
                            chunk.first_ts, chunk.last_ts)

    task = asyncio.create_task(run(host, """
name: t
queue_size: 4
steps:
  - uses: t.block
    input: pcap
""", chunks=source()))
    await wp.STATE.started.wait()
    for _ in range(500):
        await asyncio.sleep(0)
    assert produced <= 4 + 2  # queue + the one being analyzed + the one waiting to be put
    wp.STATE.release.set()
    s = await task
    st = step(s, "t.block")
    assert produced == total and st.records_in == total and st.queue_peak == 4
    assert s.verdicts == total


async def test_concurrency_runs_records_in_parallel(host) -> None:
    async def release_when_three() -> None:
        while wp.STATE.inflight < 3:
            await asyncio.sleep(0)
        wp.STATE.release.set()

    r = asyncio.create_task(release_when_three())
    async with asyncio.timeout(10):
        s = await run(host, """
name: t
steps:
  - uses: t.block
    input: stream
    concurrency: 3
""")
    await r
    assert wp.STATE.max_inflight == 3 and step(s, "t.block").records_in == 12


async def test_cancelling_a_run_stops_everything_it_started(host, tmp_path: Path) -> None:
    store = CaseStore(tmp_path / "cases.sqlite")
    task = asyncio.create_task(run(host, """
name: t
steps:
  - uses: t.subprocess
  - uses: t.hang
    input: stream
    timeout: 3600
""", store=store, case="cx"))
    await wp.STATE.spawned.wait()
    await wp.STATE.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wp.STATE.proc.returncode == -9  # aclose killed and reaped it
    assert wp.STATE.closed == ["t.subprocess"]
    row = store.runs("cx")[0]
    assert row.status == "cancelled"
    assert {s.step: s.status for s in store.steps(row.run_id)} == {
        "t.subprocess": "cancelled", "t.hang": "cancelled"}
    assert ("case_completed", "cancelled") in wp.STATE.hook_calls


async def test_producer_files_feed_file_steps_and_verdict_steps(host) -> None:
    s = await run(host, """
name: t
steps:
  - id: files
    uses: t.producer
  - id: scan
    uses: t.needle
    input: file
    with: {needle: EHLO}
  - id: escalate
    uses: t.escalate
    input: verdict
""")
    assert s.status == "ok"
    assert step(s, "files").outputs == {"file": 12}
    assert step(s, "scan").records_in == 12 and step(s, "scan").outputs == {"verdict": 2}
    assert step(s, "escalate").records_in == 2
    assert s.verdicts_by_severity == {"low": 2, "critical": 2} and s.max_severity == "critical"


async def test_session_lifecycle_order(host) -> None:
    s = await run(host, "name: t\nsteps:\n  - uses: t.session\n")
    n = s.chunks
    assert wp.STATE.seen == ["start", *["feed"] * n, "finish", "aclose"]
    assert s.verdicts == 1 and s.verdicts_by_severity == {"medium": 1}


async def test_policy_filters_and_dedupes(host) -> None:
    text = """
name: t
verdicts: {min_severity: medium}
steps:
  - uses: t.needle
    with: {needle: EHLO, severity: low}
  - id: n2
    uses: t.needle
    with: {needle: EHLO, severity: high}
"""
    got = []
    s = await run(host, text, on_verdict=got.append)
    assert s.verdicts == 2 and {v.severity for v in got} == {"high"}
    text2 = """
name: t
verdicts: {max_per_subject: 1}
steps:
  - uses: t.needle
    with: {needle: EHLO}
  - id: n2
    uses: t.needle
    with: {needle: EHLO}
"""
    s2 = await run(host, text2)
    assert s2.verdicts == 2  # two subjects, one verdict each


async def test_runs_and_verdicts_persist_across_restart(host, tmp_path: Path) -> None:
    db = tmp_path / "cases.sqlite"
    store = CaseStore(db)
    s = await run(host, "name: t\nsteps:\n  - uses: t.needle\n    with: {needle: EHLO}\n",
                  store=store, case="IR-7", event="alert-1")
    store.close()
    again = CaseStore(db)
    rows = again.runs("IR-7")
    assert [(r.run_id, r.status, r.event) for r in rows] == [(s.run_id, "ok", "alert-1")]
    verdicts = again.verdicts("IR-7")
    assert len(verdicts) == 2 and {v.signature for v in verdicts} == {"needle"}
    assert [x.status for x in again.steps(s.run_id)] == ["ok"]
    assert rows[0].summary["verdicts"] == 2


async def test_broadcast_hooks_are_called(host) -> None:
    s = await run(host, "name: t\nsteps:\n  - uses: t.needle\n    with: {needle: EHLO}\n")
    assert wp.STATE.hook_calls == [("run_started", s.run_id), ("verdict", "needle"),
                                   ("verdict", "needle"), ("case_completed", "ok")]


async def test_failing_source_marks_the_run_failed(host) -> None:
    async def broken() -> AsyncIterator[PcapChunk]:
        yield next(iter_file_chunks(SMTP))
        raise OSError("disk gone")

    s = await run(host, "name: t\nsteps:\n  - uses: t.needle\n    with: {needle: EHLO}\n",
                  chunks=broken())
    assert s.status == "failed" and s.error == "input failed after 1 chunk(s): disk gone"


async def test_unavailable_analyzer_is_skipped(host) -> None:
    class Gone(wp.Analyzer):
        name = "t.gone"
        input_kind = "pcap"
        version = "1"

        def unavailable(self):
            return "binary 'gone' not found on PATH"

        async def analyze(self, record, ctx):
            yield

    class P:
        @wp.impl
        def pcapwire_register_analyzers(self, register):
            register(Gone)

    h = build_host(entry_points=False, extra=[P()])
    w = wf(h, "name: t\nsteps:\n  - uses: t.gone\n")
    assert [str(p.message) for p in w.warnings] == [
        "analyzer 't.gone' is unavailable here (binary 'gone' not found on PATH); the step "
        "will be skipped"]
    s = await Engine(h).run(w, file_chunks(SMTP))
    assert (s.status, step(s, "t.gone").status, step(s, "t.gone").reason) == (
        "ok", "skipped", "binary 'gone' not found on PATH")


async def test_emails_flow_from_a_producer_to_email_steps(host) -> None:
    got = []
    s = await run(host, """
name: t
steps:
  - id: mail
    uses: t.mailer
  - id: subj
    uses: t.subject
    input: email
    with: {word: Bro}
""", on_verdict=got.append)
    assert s.status == "ok"
    assert step(s, "mail").outputs == {"email": 2} and step(s, "subj").records_in == 2
    assert [(v.subject_kind, v.subject_id, v.evidence) for v in got] == [
        ("email", "ECf26d4ab3b5bddf1c-orig", {"subject": "Re: Bro SMTP CC Header"})]


async def test_a_session_that_fails_to_start_is_an_error_and_is_closed(host, tmp_path) -> None:
    store = CaseStore(tmp_path / "cases.sqlite")
    s = await run(host, """
name: t
steps:
  - uses: t.badstart
  - uses: t.needle
    with: {needle: EHLO}
""", store=store, case="c")
    bad = step(s, "t.badstart")
    assert (bad.status, bad.reason, bad.records_in) == (
        "error", "start failed: OSError: rules directory unreadable", 0)
    assert wp.STATE.closed == ["t.badstart"]
    assert s.status == "partial" and step(s, "t.needle").outputs == {"verdict": 2}
    # the error record is persisted with the run
    (saved,) = [x for x in store.steps(s.run_id) if x.step == "t.badstart"]
    assert [(e.kind, e.message) for e in saved.errors] == [
        ("error", "start failed: OSError: rules directory unreadable")]
    store.close()


async def test_a_failed_producer_ends_its_consumers_cleanly(host) -> None:
    """The step feeding another raises on every record: the consumer sees no input and
    ends (skipped), nothing waits forever, the run is partial."""
    s = await run(host, """
name: t
steps:
  - id: files
    uses: t.raise
  - id: escalate
    uses: t.escalate
    input: verdict
""")
    assert [(x.step, x.status) for x in s.steps] == [("files", "error"),
                                                    ("escalate", "skipped")]
    assert step(s, "escalate").reason == "no input records" and s.status == "partial"


async def test_a_slow_stream_step_holds_the_reassembler_back(host) -> None:
    """Back-pressure reaches the source through the stream path as well: while the
    analyzer holds its first stream, the source stops pulling chunks."""
    chunks = list(iter_file_chunks(SMTP, chunk_bytes=2048))
    pulled = 0

    async def source() -> AsyncIterator[PcapChunk]:
        nonlocal pulled
        for c in chunks:
            pulled += 1
            yield c

    task = asyncio.create_task(run(host, """
name: t
queue_size: 1
steps:
  - uses: t.block
    input: stream
""", chunks=source()))
    await wp.STATE.started.wait()
    for _ in range(500):  # let every other task run as far as it can (no timing)
        await asyncio.sleep(0)
    held = pulled
    wp.STATE.release.set()
    s = await task
    assert held < len(chunks) == pulled
    assert step(s, "t.block").queue_peak == 1 and step(s, "t.block").records_in == 12


async def test_time_blocked_in_emit_does_not_count_against_the_timeout(host) -> None:
    """A producer whose outputs wait on a full queue downstream: while it waits, its
    call's clock is stopped (deadline cleared), and it runs again when the wait ends."""
    task = asyncio.create_task(run(host, """
name: t
queue_size: 1
steps:
  - id: flood
    uses: t.flood
    timeout: 3600
  - id: slow
    uses: t.block
    input: flood
""", chunks=file_chunks(SMTP, chunk_bytes=4096)))
    await wp.STATE.started.wait()
    for _ in range(200):  # let the producer fill the queue and block (no timing)
        await asyncio.sleep(0)
    timer = wp.STATE.timer
    assert timer.active and timer.deadline is None  # inside the call, clock stopped
    wp.STATE.release.set()
    s = await task
    assert [(x.step, x.status) for x in s.steps] == [("flood", "ok"), ("slow", "ok")]
    assert step(s, "slow").records_in == 5 * s.chunks and step(s, "slow").queue_peak == 1
    assert timer.deadline is None and not timer.active  # between calls after the run


async def test_an_analyzer_that_swallows_the_timeout_still_times_out(host) -> None:
    class Stubborn(wp.Analyzer):
        name = "t.stubborn"
        input_kind = "pcap"
        version = "1"

        async def analyze(self, record, ctx):
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                pass  # wrong, but it happens
            return
            yield

    class P:
        @wp.impl
        def pcapwire_register_analyzers(self, register):
            register(Stubborn)

    h = build_host(entry_points=False, extra=[P()])
    s = await run(h, "name: t\nsteps:\n  - uses: t.stubborn\n    timeout: 0.05\n",
                  chunks=file_chunks(SMTP, chunk_bytes=65536))
    st = step(s, "t.stubborn")
    assert st.status == "timeout" and len(st.errors) == s.chunks
    assert {e.message for e in st.errors} == {"no result within the step timeout of 0.05 s"}


def test_step_notes_and_stats_persist_also_in_a_store_from_before_them(tmp_path: Path) -> None:
    import sqlite3

    from pcapwire.workflow.context import RunInfo
    from pcapwire.workflow.results import StepResult

    path = tmp_path / "cases.sqlite"
    CaseStore(path).close()
    with sqlite3.connect(path) as db:  # the steps table as it was before the report column
        db.execute("ALTER TABLE steps DROP COLUMN report")
    store = CaseStore(path)
    store.start_run(RunInfo(run_id="r1", workflow="w", case="c"))
    store.finish_step("r1", StepResult(step="ids", analyzer="suricata", status="ok",
                                       notes=["14 packets had invalid checksums"],
                                       stats={"invalid_checksums": 14}))
    store.close()
    (step,) = CaseStore(path).steps("r1")
    assert (step.notes, step.stats) == (["14 packets had invalid checksums"],
                                        {"invalid_checksums": 14})
