"""The workflow engine: chunks in, steps running concurrently, verdicts out (design §3).

One :meth:`Engine.run` per workflow run::

    host = build_host()                       # pcapwire.hooks.host
    wf = load_workflow("workflows/yara-streams.yaml", host)
    engine = Engine(host, store=CaseStore(path))
    summary = await engine.run(wf, chunks, case="IR-1", on_verdict=callback)

``chunks`` is any ``AsyncIterator[PcapChunk]``: :meth:`pcapwire.query.QueryEngine.run`, or
:func:`pcapwire.workflow.sources.file_chunks`. Work starts on the first chunk.

Data flow: the *source* task puts each chunk into the queue of every ``pcap`` step and
feeds the reassembler (only if a step takes ``stream``), whose StreamRecords go to every
``stream`` step as soon as their connection closes. Each step reads its own bounded
queue (``queue_size``, default 16) with one task, or ``concurrency`` tasks when its
session accepts concurrent feeds: a full queue blocks the producer, so a slow analyzer
slows the feed and memory stays bounded (each step reports its ``queue_peak``). A
step's outputs go to its subscribers: steps whose ``input`` names it, steps whose
``input`` is a kind it outputs (``file``, ``email``, ``stream``), and ``verdict`` steps
for its verdicts. Each verdict
first passes the workflow's aggregation policy, then is stored with the case, then
handed to the ``pcapwire_verdict`` sinks and ``on_verdict``, then to verdict steps.

Fault isolation: every call into an analyzer runs under the step's timeout; exceptions
and timeouts become :class:`~pcapwire.workflow.results.StepError` entries; a failed step
keeps draining its queue (so producers never block on it) and the rest of the run goes
on. Time an analyzer spends blocked in ``ctx.emit`` (downstream back-pressure) does not
count against its timeout. Cancelling the task running :meth:`Engine.run` cancels every
step, awaits each session's ``aclose()`` (bounded by :data:`CLOSE_TIMEOUT`), records
the run as ``cancelled`` and re-raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcapwire.reassembly import Limits, Reassembler, StreamCollector
from pcapwire.records import PcapChunk, StreamRecord, Verdict
from pcapwire.workflow.analyzer import RecordSession, Session
from pcapwire.workflow.context import Output, RunInfo, StepContext
from pcapwire.workflow.document import Step, Workflow
from pcapwire.workflow.expr import RUN_FIELDS, record_context
from pcapwire.workflow.policy import Aggregator
from pcapwire.workflow.queries import PacketQueries
from pcapwire.workflow.results import RunSummary, StepError, StepResult, format_traceback
from pcapwire.workflow.severity import severity_rank
from pcapwire.workflow.timeouts import CallTimeout, Watchdog, paused

log = logging.getLogger(__name__)

#: Errors kept per step (further ones are counted in ``errors_dropped``); a per-record
#: analyzer that reaches it stops being called for the rest of the run.
MAX_STEP_ERRORS = 100
#: Seconds a session's ``aclose()`` may take before it is abandoned (and logged).
CLOSE_TIMEOUT = 30.0
_END = object()  # a producer has ended
_STOP = object()  # a step's last reader tells the others to stop
OnVerdict = Callable[[Verdict], Awaitable[None] | None]


class _StreamSource:
    """Chunks to StreamRecords (reassembler + collector): only finished records reach
    the steps' queues, never the per-segment events."""

    def __init__(self, limits: Limits | None) -> None:
        self.reassembler = Reassembler(limits)
        self.collector = StreamCollector()

    def feed(self, chunk: PcapChunk) -> list[StreamRecord]:
        push, out = self.collector.push, []
        for ev in self.reassembler.feed_chunk(chunk):
            recs = push(ev)
            if recs:
                out += recs
        return out

    def flush(self) -> list[StreamRecord]:
        out = []
        for ev in self.reassembler.flush():
            out += self.collector.push(ev)
        return out + self.collector.flush()


class _PeakQueue(asyncio.Queue):  # type: ignore[type-arg]
    """A bounded queue that remembers its high-water mark (reported per step)."""

    peak = 0

    def _put(self, item: Any) -> None:
        super()._put(item)  # type: ignore[misc]
        self.peak = max(self.peak, self.qsize())


@dataclass
class _Node:
    step: Step
    queue: _PeakQueue
    result: StepResult
    producers: int = 0
    subs: dict[str, list[_Node]] = field(default_factory=dict)
    failed: tuple[str, str] | None = None  # (status, message) once the step gave up


class _Run:
    """State of one run (the engine itself holds none, so runs can overlap)."""

    def __init__(self, engine: Engine, wf: Workflow, info: RunInfo,
                 on_verdict: OnVerdict | None, workdir: Path) -> None:
        self.engine, self.wf, self.info = engine, wf, info
        self.on_verdict = on_verdict
        self.workdir = workdir
        self.aggregator = Aggregator(wf.policy)
        self.run_ctx = {name: getattr(info, name) for name in RUN_FIELDS}
        self.nodes = {s.id: _Node(s, _PeakQueue(wf.queue_size),
                                  StepResult(step=s.id, analyzer=s.uses,
                                             analyzer_version=type(s.analyzer).version))
                      for s in wf.steps}
        self.source_subs: dict[str, list[_Node]] = {"pcap": [], "stream": []}
        self.sinks = engine.host.has_impls("pcapwire_verdict")
        self.chunks = 0
        self.source_error = ""
        self._wire()

    def _wire(self) -> None:
        nodes = list(self.nodes.values())
        for m in nodes:
            if m.step.input in self.source_subs:
                self.source_subs[m.step.input].append(m)
                m.producers += 1
        for n in nodes:
            outs = type(n.step.analyzer).outputs
            for kind in outs:
                subs = []
                for m in nodes:
                    if m is n or m.step.kind != kind:
                        continue
                    if m.step.input == n.step.id:
                        subs.append(m)
                    elif m.step.input == kind and (kind != "verdict" or n.step.kind != "verdict"):
                        subs.append(m)
                n.subs[kind] = subs
            for m in {id(x): x for xs in n.subs.values() for x in xs}.values():
                m.producers += 1

    # ---- outputs --------------------------------------------------------------------------
    async def emit(self, node: _Node, item: Output) -> None:
        """Route one output; only the waits (a full queue downstream, a sink's awaitable)
        are taken off the analyzer's timeout, so the common case costs no timer work."""
        kind = item.kind
        outputs = node.result.outputs
        outputs[kind] = outputs.get(kind, 0) + 1
        if isinstance(item, Verdict):
            if not self.aggregator.keep(item):
                return
            if self.engine.store is not None:
                self.engine.store.add_verdict(self.info.run_id, item)
            if self.sinks:
                await paused(self.engine.host.verdict(item, self.info))
            if self.on_verdict is not None:
                res = self.on_verdict(item)
                if inspect.isawaitable(res):
                    await paused(res)
        for sub in node.subs.get(kind, ()):
            if not self._admit(sub, item):
                continue
            queue = sub.queue
            if queue.full():
                await paused(queue.put(item))
            else:
                queue.put_nowait(item)

    def _admit(self, node: _Node, item: Any) -> bool:
        """Whether ``item`` goes into the step's queue: its ``if:`` is checked as the
        record is offered, so a record the step skips costs no hand-over (it is counted
        in and skipped). A failed step's reader discards what it is given."""
        condition = node.step.condition
        if condition is None or node.failed is not None:
            return True
        if condition(record_context(item, self.run_ctx)):
            return True
        r = node.result
        r.records_in += 1
        r.records_skipped += 1
        return False

    # ---- the source -----------------------------------------------------------------------
    async def source(self, chunks: AsyncIterator[PcapChunk]) -> None:
        pcap_subs, stream_subs = self.source_subs["pcap"], self.source_subs["stream"]
        streams = _StreamSource(self.engine.stream_limits) if stream_subs else None
        try:
            async for chunk in chunks:
                self.chunks += 1
                for sub in pcap_subs:
                    if self._admit(sub, chunk):
                        await sub.queue.put(chunk)
                if streams is not None:
                    # Reassembly runs here, one chunk at a time (a few ms): a worker thread
                    # would not free the loop any sooner (it holds the GIL as long) and
                    # the hand-overs cost more than they save (see bench_workflow.py).
                    for rec in streams.feed(chunk):
                        for sub in stream_subs:
                            if self._admit(sub, rec):
                                await sub.queue.put(rec)
                    await asyncio.sleep(0)  # let the steps run between two chunks
            if streams is not None:
                for rec in streams.flush():
                    for sub in stream_subs:
                        if self._admit(sub, rec):
                            await sub.queue.put(rec)
        except Exception as exc:
            self.source_error = f"input failed after {self.chunks} chunk(s): {exc}"
            log.warning("run %s: %s", self.info.run_id, self.source_error)
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        for sub in pcap_subs + stream_subs:
            await sub.queue.put(_END)

    # ---- one step -------------------------------------------------------------------------
    def _error(self, node: _Node, kind: str, message: str, subject: str = "",
               exc: BaseException | None = None) -> None:
        r = node.result
        trace = format_traceback(exc) if exc is not None else ""
        if len(r.errors) < MAX_STEP_ERRORS:
            r.errors.append(StepError(kind, message, subject, trace))  # type: ignore[arg-type]
        else:
            r.errors_dropped += 1
        if not r.reason:
            r.reason = message
        log.warning("run %s step %s: %s%s", self.info.run_id, node.step.id, message,
                    f" ({subject})" if subject else "")
        if trace:
            log.info("run %s step %s:\n%s", self.info.run_id, node.step.id, trace)

    async def _feed(self, node: _Node, session: Session, item: Any, per_record: bool,
                    dog: Watchdog) -> None:
        step = node.step
        failure: tuple[str, str] | None = None
        raised: Exception | None = None
        dog.start()
        try:
            await session.feed(item)
        except asyncio.CancelledError:
            if not dog.timed_out():
                raise  # the run is being cancelled
            failure = ("timeout", "")
        except Exception as exc:
            failure = ("error", f"{type(exc).__name__}: {exc}")
            raised = exc
        finally:
            dog.stop()
        if failure is None and dog.expired:  # it swallowed the cancellation
            dog.timed_out()
            failure = ("timeout", "")
        if failure is not None:
            kind, msg = failure
            if kind == "timeout":
                msg = f"no result within the step timeout of {step.timeout:g} s"
            subject = getattr(item, "id", "") or f"chunk {getattr(item, 'seq', '')}"
            self._error(node, kind, msg, subject, raised)
            if not per_record:
                node.failed = (kind, msg)
        if per_record and len(node.result.errors) + node.result.errors_dropped >= MAX_STEP_ERRORS:
            node.failed = node.failed or ("error", f"stopped after MAX_STEP_ERRORS="
                                          f"{MAX_STEP_ERRORS} errors")

    async def _consume(self, node: _Node, session: Session | None, per_record: bool,
                       ends: list[int], workers: int) -> None:
        """Read the step's queue until every producer has ended (one of ``workers``
        readers; ``ends`` is shared by them). A failed step keeps draining its queue."""
        queue, r = node.queue, node.result
        dog = Watchdog(node.step.timeout)
        try:
            while node.producers:
                item = await queue.get()
                if item is _STOP:
                    return
                if item is _END:
                    ends[0] += 1
                    if ends[0] >= node.producers:
                        for _ in range(workers - 1):  # wake the other readers
                            await queue.put(_STOP)
                        return
                    continue
                if node.failed is not None or session is None:
                    continue
                r.records_in += 1  # its if: held (see _admit)
                await self._feed(node, session, item, per_record, dog)
        finally:
            dog.close()

    async def step(self, node: _Node) -> None:
        step, r = node.step, node.result
        r.started = time.time()
        session: Session[Any] | None = None
        ctx: StepContext[Any] | None = None
        tasks: set[asyncio.Task[None]] = set()
        workdir = self.workdir / step.id
        reason = step.analyzer.unavailable()
        if reason:
            node.failed = ("skipped", reason)
        try:
            if node.failed is None:
                workdir.mkdir(parents=True, exist_ok=True)
                ctx = StepContext(run=self.info, step=step.id, analyzer=step.uses,
                                  config=step.config, workdir=workdir,
                                  outputs=tuple(type(step.analyzer).outputs),
                                  emit_fn=functools.partial(self.emit, node),
                                  base_dir=self.wf.base_dir, data_dir=self.engine.data_dir,
                                  keep=self.engine.keep, confinement=self.wf.confinement,
                                  keep_warm=self.engine.keep_warm,
                                  queries=self.engine.queries)
                session = step.analyzer.open_session(ctx)
                try:
                    async with CallTimeout(step.timeout):
                        await session.start()
                except TimeoutError:
                    node.failed = ("timeout", f"start took longer than {step.timeout:g} s")
                    self._error(node, "timeout", node.failed[1])
                except Exception as exc:
                    node.failed = ("error", f"start failed: {type(exc).__name__}: {exc}")
                    self._error(node, "error", node.failed[1], exc=exc)
            per_record = isinstance(session, RecordSession)
            workers = (step.concurrency if session is not None and session.concurrent_feed
                       else 1)
            if workers > 1:  # N readers of the one queue: no task per record
                done = [0]
                tasks = {asyncio.create_task(self._consume(node, session, per_record, done,
                                                           workers))
                         for _ in range(workers)}
                await asyncio.gather(*tasks)
                tasks.clear()
            else:
                await self._consume(node, session, per_record, [0], 1)
            if session is not None and node.failed is None:
                try:
                    async with CallTimeout(step.timeout):
                        await session.finish()
                except TimeoutError:
                    node.failed = ("timeout", f"finish took longer than {step.timeout:g} s")
                    self._error(node, "timeout", node.failed[1])
                except Exception as exc:
                    node.failed = ("error", f"{type(exc).__name__}: {exc}")
                    self._error(node, "error", node.failed[1], exc=exc)
        except asyncio.CancelledError:
            node.failed = ("cancelled", "run cancelled")
            raise
        finally:
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if session is not None:
                try:
                    await asyncio.wait_for(session.aclose(), CLOSE_TIMEOUT)
                except BaseException as exc:  # noqa: BLE001 - report, never mask the run
                    if isinstance(exc, asyncio.CancelledError) and _cancelling():
                        raise
                    self._error(node, "error", f"aclose failed: {type(exc).__name__}: {exc}",
                                exc=exc)
            if ctx is not None:  # what the analyzer said about its run (ctx.note)
                r.notes, r.stats = list(ctx.notes), dict(ctx.stats)
            r.kept = list(ctx.kept) if ctx is not None else []  # ctx.kept_in
            self._conclude(node)
        for sub in {id(x): x for xs in node.subs.values() for x in xs}.values():
            await sub.queue.put(_END)

    def _conclude(self, node: _Node) -> None:
        r = node.result
        r.finished = time.time()
        r.queue_peak = node.queue.peak
        if node.failed is not None:
            r.status = node.failed[0]  # type: ignore[assignment]
            r.reason = node.failed[1] if node.failed[0] != "error" or not r.reason else r.reason
        elif r.errors:
            r.status = "timeout" if any(e.kind == "timeout" for e in r.errors) else "error"
        elif r.records_in == 0:
            r.status, r.reason = "skipped", "no input records"
        elif r.records_skipped == r.records_in:
            r.status, r.reason = "skipped", "condition false for every record"
        else:
            r.status = "ok"
        if self.engine.store is not None:
            self.engine.store.finish_step(self.info.run_id, r)


def _cancelling() -> bool:
    task = asyncio.current_task()
    return bool(task and task.cancelling())


async def _index_run(data_dir: Path, run_id: str) -> None:
    """Add the run's verdicts and kept records to the data directory's metadata index, in
    the process's indexer child (:mod:`pcapwire.search.worker`: not sharing this
    process's GIL; a failure is logged: ``pcapwire search rebuild`` catches up)."""
    from pcapwire.search import worker

    await worker.index_run(data_dir, run_id)


class Engine:
    """Runs workflows with the analyzers of a :class:`~pcapwire.hooks.host.PluginHost`;
    persists runs in a :class:`~pcapwire.cases.CaseStore` when given one.

    ``keep_warm=False``: the caller runs this one workflow and exits (the CLI), so steps
    start nothing for later runs (:attr:`StepContext.keep_warm`). ``queries``: what steps
    may query the packet store through (:mod:`pcapwire.workflow.queries`; None: no store).
    """

    def __init__(self, host: Any, store: Any = None, *, workdir: str | Path | None = None,
                 data_dir: str | Path | None = None, keep: bool = True,
                 stream_limits: Limits | None = None, keep_warm: bool = True,
                 queries: PacketQueries | None = None) -> None:
        self.host = host
        self.store = store
        self.data_dir = Path(data_dir) if data_dir else None
        self.keep = keep
        self.workdir = Path(workdir) if workdir else None
        self.stream_limits = stream_limits
        self.keep_warm = keep_warm
        self.queries = queries

    async def run(self, wf: Workflow, chunks: AsyncIterator[PcapChunk], *, case: str = "",
                  event: str = "", query_id: str = "", run_id: str | None = None,
                  on_verdict: OnVerdict | None = None) -> RunSummary:
        info = RunInfo(run_id=run_id or uuid.uuid4().hex, workflow=wf.name,
                       case=case or "default", event=event, query_id=query_id,
                       started=time.time())
        if self.store is not None:
            self.store.start_run(info, wf.digest)
        workdir = Path(tempfile.mkdtemp(prefix=f"pcapwire-run-{info.run_id[:8]}-",
                                        dir=self.workdir))
        run = _Run(self, wf, info, on_verdict, workdir)
        status = "ok"
        try:
            await self.host.run_started(info, wf.document)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(run.source(chunks))
                for node in run.nodes.values():
                    tg.create_task(run.step(node))
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            summary = self._summary(run, status)
            if self.store is not None:
                self.store.finish_run(summary)
            with contextlib.suppress(Exception):
                await asyncio.shield(self.host.case_completed(info, summary))
            if self.store is not None and self.data_dir is not None and self.keep:
                with contextlib.suppress(Exception):  # the metadata index: pcapwire.search
                    await asyncio.shield(_index_run(self.data_dir, info.run_id))
        return summary

    @staticmethod
    def _summary(run: _Run, status: str) -> RunSummary:
        results = [n.result for n in run.nodes.values()]
        if status != "cancelled":
            if run.source_error:
                status = "failed"
            elif any(r.status in ("error", "timeout") for r in results):
                status = "partial"
        agg = run.aggregator
        ranks = Counter({k: v for k, v in agg.by_severity.items()})
        top = max(ranks, key=severity_rank, default="")
        return RunSummary(run_id=run.info.run_id, workflow=run.info.workflow,
                          case=run.info.case, event=run.info.event,
                          query_id=run.info.query_id, status=status,  # type: ignore[arg-type]
                          started=run.info.started, finished=time.time(), steps=results,
                          verdicts=agg.kept, verdicts_by_severity=dict(ranks),
                          max_severity=top, chunks=run.chunks, error=run.source_error)
