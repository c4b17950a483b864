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
``stream`` step as soon as their connection closes. Each step is one task reading its own
bounded queue (``queue_size``, default 16): a full queue blocks the producer, so a slow
analyzer slows the feed and memory stays bounded. A step's outputs go to its
subscribers: steps whose ``input`` names it, steps whose ``input`` is a kind it outputs
(``file``, ``email``, ``stream``), and ``verdict`` steps for its verdicts. Each verdict
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
import contextvars
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
from pcapwire.records import PcapChunk, Verdict
from pcapwire.workflow.analyzer import RecordSession, Session
from pcapwire.workflow.context import Output, RunInfo, StepContext
from pcapwire.workflow.document import Step, Workflow
from pcapwire.workflow.expr import record_context
from pcapwire.workflow.policy import Aggregator
from pcapwire.workflow.results import RunSummary, StepError, StepResult
from pcapwire.workflow.severity import severity_rank

log = logging.getLogger(__name__)

#: Errors kept per step (further ones are counted in ``errors_dropped``); a per-record
#: analyzer that reaches it stops being called for the rest of the run.
MAX_STEP_ERRORS = 100
#: Seconds a session's ``aclose()`` may take before it is abandoned (and logged).
CLOSE_TIMEOUT = 30.0
_END = object()
OnVerdict = Callable[[Verdict], Awaitable[None] | None]


class _CallTimer:
    """The timeout of the analyzer call running in this task (paused during ``emit``)."""

    def __init__(self, cm: asyncio.Timeout) -> None:
        self.cm = cm
        self.active = True


_current_call: contextvars.ContextVar[_CallTimer | None] = contextvars.ContextVar(
    "pcapwire_call_timer", default=None)


@contextlib.asynccontextmanager
async def _call_timeout(seconds: float) -> AsyncIterator[None]:
    async with asyncio.timeout(seconds) as cm:
        timer = _CallTimer(cm)
        token = _current_call.set(timer)
        try:
            yield
        finally:
            timer.active = False
            _current_call.reset(token)


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
        self.run_ctx = {"case": info.case, "event": info.event, "query_id": info.query_id,
                        "workflow": info.workflow, "run_id": info.run_id}
        self.nodes = {s.id: _Node(s, _PeakQueue(wf.queue_size),
                                  StepResult(step=s.id, analyzer=s.uses,
                                             analyzer_version=type(s.analyzer).version))
                      for s in wf.steps}
        self.source_subs: dict[str, list[_Node]] = {"pcap": [], "stream": []}
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
        timer = _current_call.get()
        loop = asyncio.get_running_loop()
        remaining = None
        if timer is not None and timer.active and timer.cm.when() is not None:
            remaining = timer.cm.when() - loop.time()  # type: ignore[operator]
            timer.cm.reschedule(None)
        try:
            await self._route(node, item)
        finally:
            if remaining is not None and timer is not None and timer.active:
                timer.cm.reschedule(loop.time() + remaining)

    async def _route(self, node: _Node, item: Output) -> None:
        kind = item.kind
        node.result.outputs[kind] = node.result.outputs.get(kind, 0) + 1
        if isinstance(item, Verdict):
            if not self.aggregator.keep(item):
                return
            if self.engine.store is not None:
                self.engine.store.add_verdict(self.info.run_id, item)
            await self.engine.host.verdict(item, self.info)
            if self.on_verdict is not None:
                res = self.on_verdict(item)
                if inspect.isawaitable(res):
                    await res
        for sub in node.subs.get(kind, ()):
            await sub.queue.put(item)

    # ---- the source -----------------------------------------------------------------------
    async def source(self, chunks: AsyncIterator[PcapChunk]) -> None:
        pcap_subs, stream_subs = self.source_subs["pcap"], self.source_subs["stream"]
        reasm = Reassembler(self.engine.stream_limits) if stream_subs else None
        collector = StreamCollector() if stream_subs else None
        try:
            async for chunk in chunks:
                self.chunks += 1
                for sub in pcap_subs:
                    await sub.queue.put(chunk)
                if reasm is not None and collector is not None:
                    events = await asyncio.to_thread(lambda c=chunk: list(reasm.feed_chunk(c)))
                    for ev in events:
                        for rec in collector.push(ev):
                            for sub in stream_subs:
                                await sub.queue.put(rec)
            if reasm is not None and collector is not None:
                for ev in reasm.flush():
                    for rec in collector.push(ev):
                        for sub in stream_subs:
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
    def _error(self, node: _Node, kind: str, message: str, subject: str = "") -> None:
        r = node.result
        if len(r.errors) < MAX_STEP_ERRORS:
            r.errors.append(StepError(kind, message, subject))  # type: ignore[arg-type]
        else:
            r.errors_dropped += 1
        if not r.reason:
            r.reason = message
        log.warning("run %s step %s: %s%s", self.info.run_id, node.step.id, message,
                    f" ({subject})" if subject else "")

    async def _feed(self, node: _Node, session: Session, item: Any, per_record: bool) -> None:
        step = node.step
        subject = getattr(item, "id", "") or f"chunk {getattr(item, 'seq', '')}"
        try:
            async with _call_timeout(step.timeout):
                await session.feed(item)
        except TimeoutError:
            msg = f"no result within the step timeout of {step.timeout:g} s"
            self._error(node, "timeout", msg, subject)
            if not per_record:
                node.failed = ("timeout", msg)
        except Exception as exc:
            msg = f"{type(exc).__name__}: {exc}"
            self._error(node, "error", msg, subject)
            if not per_record:
                node.failed = ("error", msg)
        if per_record and len(node.result.errors) + node.result.errors_dropped >= MAX_STEP_ERRORS:
            node.failed = node.failed or ("error", f"stopped after MAX_STEP_ERRORS="
                                          f"{MAX_STEP_ERRORS} errors")

    async def step(self, node: _Node) -> None:
        step, r = node.step, node.result
        r.started = time.time()
        session: Session | None = None
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
                                  emit_fn=lambda item, n=node: self.emit(n, item),
                                  base_dir=self.wf.base_dir, data_dir=self.engine.data_dir)
                session = step.analyzer.open_session(ctx)
                try:
                    async with _call_timeout(step.timeout):
                        await session.start()
                except TimeoutError:
                    node.failed = ("timeout", f"start took longer than {step.timeout:g} s")
                    self._error(node, "timeout", node.failed[1])
                except Exception as exc:
                    node.failed = ("error", f"start failed: {type(exc).__name__}: {exc}")
                    self._error(node, "error", node.failed[1])
            per_record = isinstance(session, RecordSession)
            parallel = bool(session and session.concurrent_feed and step.concurrency > 1)
            ends = 0
            while ends < node.producers:
                item = await node.queue.get()
                if item is _END:
                    ends += 1
                    continue
                if node.failed is not None or session is None:
                    continue
                r.records_in += 1
                if step.condition is not None and not step.condition(
                        record_context(item, self.run_ctx)):
                    r.records_skipped += 1
                    continue
                if parallel:
                    while len(tasks) >= step.concurrency:
                        _done, tasks = await asyncio.wait(
                            tasks, return_when=asyncio.FIRST_COMPLETED)
                    tasks.add(asyncio.create_task(self._feed(node, session, item, per_record)))
                else:
                    await self._feed(node, session, item, per_record)
            if tasks:
                await asyncio.gather(*tasks)
                tasks.clear()
            if session is not None and node.failed is None:
                try:
                    async with _call_timeout(step.timeout):
                        await session.finish()
                except TimeoutError:
                    node.failed = ("timeout", f"finish took longer than {step.timeout:g} s")
                    self._error(node, "timeout", node.failed[1])
                except Exception as exc:
                    node.failed = ("error", f"{type(exc).__name__}: {exc}")
                    self._error(node, "error", node.failed[1])
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
                    self._error(node, "error", f"aclose failed: {type(exc).__name__}: {exc}")
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


class Engine:
    """Runs workflows with the analyzers of a :class:`~pcapwire.hooks.host.PluginHost`;
    persists runs in a :class:`~pcapwire.cases.CaseStore` when given one."""

    def __init__(self, host: Any, store: Any = None, *, workdir: str | Path | None = None,
                 data_dir: str | Path | None = None,
                 stream_limits: Limits | None = None) -> None:
        self.host = host
        self.store = store
        self.data_dir = Path(data_dir) if data_dir else None
        self.workdir = Path(workdir) if workdir else None
        self.stream_limits = stream_limits

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
