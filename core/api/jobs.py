"""Running queries: each one is a background task that spools its result as one continuous
capture (``results/<id>.pcap``) while feeding the chunks to the requested workflows.

Readers never wait for the end: ``GET …/pcap`` follows the spool file as it grows and the
verdict stream follows the job's verdict list; both wake on the job's condition. The
workflow engine keeps runs and verdicts in the tenant's case store, so finished results
outlive the process. A follow query (``follow: true``, :mod:`pcapwire.query.follow`) runs
until cancelled or until the last reader of its PCAP leaves; stopped, it ends ``done``
(what it spooled is its result) and its workflows finish with the chunks they got.

A cluster's central (:mod:`pcapwire.cluster.central`) gives the manager a
:class:`RemoteSource`: its queries spool the bytes the sensors' merged answers make, and
record which sensors were asked (``sensors``) and which did not answer (``missing``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from pcapwire.api.errors import ApiError
from pcapwire.api.limits import (
    MAX_BPF_PORT_TERMS,
    MAX_QUERY_RESULT_BYTES,
    RUNNING_JOBS_KEPT,
    QuerySlots,
)
from pcapwire.api.stepqueries import TenantQueries
from pcapwire.api.tenants import TenantStore
from pcapwire.api.workflows import WorkflowService
from pcapwire.custody import events, file_object
from pcapwire.errors import QueryError
from pcapwire.query import Plan, QuerySpec, QueryStats, StreamFormatter
from pcapwire.query.bpfcache import is_compiled, precompile
from pcapwire.query.follow import Follow
from pcapwire.records import PcapChunk

log = logging.getLogger(__name__)

FINAL = ("done", "error", "cancelled")
#: how far a query streamed to its one reader (``POST /api/v1/queries/pcap``) spools ahead
#: of what that reader was sent (:class:`Pace`)
SPOOL_AHEAD_BYTES = 2**20
Deliver = Callable[[PcapChunk], Awaitable[None]]
Source = Callable[[Deliver], Awaitable[None]]  # produces a job's chunks


class RemoteSource(Protocol):
    """Where a central's queries get their packets (:mod:`pcapwire.cluster.fanout`)."""

    async def plan(self, tenant: str, spec: QuerySpec, actor: str, role: str) -> list[str]:
        """The sources (sensor names) to ask for ``actor`` with ``role``; refuses (raises)
        what cannot be fanned out."""

    def run(self, job: QueryJob) -> AsyncGenerator[bytes, None]:
        """The bytes of the job's one capture; adds to ``job.stats``, ``job.received`` and
        ``job.missing``; cancelled, it cancels the sources' own queries before it ends."""


class SourceFailed(Exception):
    """A remote source delivered nothing usable; ``code`` is the job's ``error_code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def spec_of(record: dict[str, Any]) -> QuerySpec:
    """The QuerySpec of a history record (:meth:`QueryJob.spec_record`)."""
    return QuerySpec.from_dict({k: v for k, v in record.items()
                                if k not in ("workflows", "rerun_of", "cluster")})


class Pace:
    """A query streamed to one reader waits after its first chunk until the reader was
    sent it (the first bytes leave before the scan goes on), and then spools at most
    :data:`SPOOL_AHEAD_BYTES` ahead of what that reader was sent (its scan thread stops
    once its hand-off is full). A reader that waits (a central holding a sensor's answer
    until its other sensors' first pieces are in) thus stops the query, which leaves the
    cores to the queries it waits for; a reader that leaves cancels the query."""

    def __init__(self) -> None:
        self.sent = 0
        self.held = False  # the spool waits for the reader now
        self._moved = asyncio.Event()

    def advance(self, sent: int) -> None:
        """The reader was sent the spool up to ``sent``."""
        self.sent = max(self.sent, sent)  # another reader of the query may be behind
        self._moved.set()

    async def wait(self, written: int) -> None:
        """Return once the reader was sent the spool's ``written`` bytes (before it was sent
        any), or once they are no more than :data:`SPOOL_AHEAD_BYTES` ahead of it."""
        while written - self.sent > (SPOOL_AHEAD_BYTES if self.sent else 0):
            self._moved.clear()
            self.held = True
            try:
                await self._moved.wait()
            finally:
                self.held = False


@dataclass
class QueryJob:
    id: str
    tenant: str
    spec: QuerySpec
    workflows: list[str]
    segments_planned: int
    pcap_path: Path
    status: str = "running"
    error: str | None = None
    error_code: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    stats: QueryStats = field(default_factory=QueryStats)
    written: int = 0  # bytes of the spool file readers may read
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)  # workflow run summaries
    rerun_of: str = ""  # the query whose stored result this job replays
    follow: Follow | None = None  # a follow query (spec.follow): stopped, it ends "done"
    actor: str = ""  # who asked (pcapwire.api.auth.actor): the custody log names them
    segments: list[dict[str, Any]] = field(default_factory=list)  # the plan's (custody)
    readers: int = 0  # clients streaming the PCAP of a follow (the last one to leave stops it)
    sensors: list[str] | None = None  # a central's query: the sensors asked
    missing: list[dict[str, str]] = field(default_factory=list)  # [{sensor, reason}]
    received: dict[str, int] = field(default_factory=dict)  # bytes from each sensor so far
    role: str = ""  # the caller's role (a central asks its sensors with it)
    # SHA-256 of the spooled result as it is written (the custody entry needs it at the
    # end; hashing the whole file then would delay the end of every stream); None: not
    # spooled here (a rerun links its original's file)
    spooled: Any = None
    pace: Pace | None = None  # streamed to one reader: the spool waits for it
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None

    def spec_record(self) -> dict[str, Any]:
        """The spec as kept in the history: the query, its workflows, what it replays; a
        central's, which sensors it asked and which were missing (``cluster``)."""
        out = {**self.spec.to_dict(), "workflows": self.workflows}
        if self.rerun_of:
            out["rerun_of"] = self.rerun_of
        if self.sensors is not None:
            out["cluster"] = {"sensors": self.sensors, "missing": self.missing}
        return out

    @property
    def final(self) -> bool:
        return self.status in FINAL

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_change(self, timeout: float) -> None:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait(), timeout)
            except TimeoutError:
                pass

    def progress(self) -> float:
        if self.status == "done":
            return 1.0
        if not self.segments_planned:
            return 0.0
        return min(0.99, self.stats.segments_scanned / self.segments_planned)


def partial_message(missing: list[dict[str, str]]) -> str:
    """The error text of a result some sensors are missing from."""
    return "partial result: " + "; ".join(f"sensor {m['sensor']} is missing ({m['reason']})"
                                          for m in missing)


async def compile_off_loop(engine: Any, spec: QuerySpec) -> None:
    """Compile the query's BPF in a worker thread (libpcap's compiler can take seconds and
    releases the GIL) so planning on the event loop finds it compiled; refuse more than
    :data:`MAX_BPF_PORT_TERMS` ``port``/``portrange`` terms, the terms that make libpcap
    slow."""
    if not spec.bpf:
        return
    terms = len(re.findall(r"\bport(?:range)?\b", spec.bpf))
    if terms > MAX_BPF_PORT_TERMS:
        raise QueryError(f"the BPF expression has {terms} port/portrange terms, more than "
                         f"the limit of {MAX_BPF_PORT_TERMS} (max_bpf_port_terms) that libpcap "
                         "compiles in reasonable time; use a portrange, or several queries")
    keys = engine.filter_keys(spec)
    if not is_compiled(spec.bpf, keys):  # a repeated query does not wait for a thread
        await asyncio.to_thread(precompile, spec.bpf, keys)


class QueryManager:
    def __init__(self, slots: QuerySlots, workflows: WorkflowService,
                 max_result_bytes: int = MAX_QUERY_RESULT_BYTES,
                 remote: RemoteSource | None = None) -> None:
        self.slots = slots
        self.workflows = workflows
        self.max_result_bytes = max_result_bytes  # caps the queries of workflow steps
        self.remote = remote  # a central's: every query goes to the sensors
        self.jobs: OrderedDict[str, QueryJob] = OrderedDict()

    def get(self, tenant: str, query_id: str) -> QueryJob | None:
        job = self.jobs.get(query_id)
        return job if job is not None and job.tenant == tenant else None

    def running(self, tenant: str) -> list[QueryJob]:
        return [j for j in self.jobs.values() if j.tenant == tenant and not j.final]

    async def submit(self, ts: TenantStore, spec: QuerySpec, workflows: list[str] | None,
                     actor: str, role: str = "", streamed: bool = False) -> QueryJob:
        """Start a query for ``actor`` whose role is ``role`` (a central's sensors run it
        with that role). ``workflows=None``: the workflows whose trigger matches the
        query's case and event; a list (possibly empty): exactly those. ``streamed``: one
        reader streams the result as it comes, and the spool keeps pace with it
        (:class:`Pace`). The query starts before its start is in the history: the write
        runs alongside, and the submit returns once it is done
        (:meth:`_start_recorded`)."""
        if self.remote is not None:
            return await self._submit_remote(ts, self.remote, spec, workflows, actor, role,
                                             streamed)
        if workflows is None:
            workflows = self.workflows.triggered(spec.case, spec.event)
        self.workflows.check(ts.tenant, workflows)
        engine = ts.engine()
        await compile_off_loop(engine, spec)
        plan = engine.plan(spec)  # QueryError (bad BPF...) before anything starts
        self.slots.acquire(ts.tenant)
        qid = uuid.uuid4().hex
        job = QueryJob(qid, ts.tenant, spec, workflows, len(plan.segments),
                       ts.results / f"{qid}.pcap", actor=actor,
                       segments=events.plan_segments(plan), pace=Pace() if streamed else None)
        try:
            job.pcap_path.write_bytes(b"")  # the header follows once the plan is settled
        except BaseException:
            self.slots.release(ts.tenant)
            raise
        if spec.follow:
            job.follow = Follow(engine, spec, qid, job.stats)
        return await self._start_recorded(ts, job, self._scan(engine, job, plan))

    async def _submit_remote(self, ts: TenantStore, remote: RemoteSource, spec: QuerySpec,
                             workflows: list[str] | None, actor: str, role: str,
                             streamed: bool) -> QueryJob:
        """A central's query: the sensors run it (no workflows: those run where the packets
        are), the merged answer is spooled here."""
        if workflows:
            raise ApiError(400, "no_workflows_at_central", "a central runs no workflows; "
                           "run them on a sensor (its verdicts show at the central)")
        engine = ts.engine()
        await compile_off_loop(engine, spec)  # a bad BPF is refused here, once
        engine.plan(spec)
        if not role:
            raise ValueError("a central's query needs the caller's role")
        sensors = await remote.plan(ts.tenant, spec, actor, role)
        self.slots.acquire(ts.tenant)
        qid = uuid.uuid4().hex
        job = QueryJob(qid, ts.tenant, spec, [], 0, ts.results / f"{qid}.pcap", actor=actor,
                       sensors=sensors, role=role,  # no segments here: progress 0 until done
                       pace=Pace() if streamed else None)
        try:
            job.pcap_path.write_bytes(b"")
        except BaseException:
            self.slots.release(ts.tenant)
            raise

        async def pull(deliver: Deliver) -> None:
            with open(job.pcap_path, "ab") as out:
                async with aclosing(remote.run(job)) as pieces:
                    async for piece in pieces:
                        await self._spool(job, out, piece)
                        if job.pace is not None:
                            await job.pace.wait(job.written)

        # The sensors are asked first: their planning overlaps with the history's write.
        return await self._start_recorded(ts, job, pull)

    async def _start_recorded(self, ts: TenantStore, job: QueryJob, source: Source
                              ) -> QueryJob:
        """Start ``job`` and write its start to the history alongside; return once the
        write is done. The job's workflows and its end wait for the write. Should it fail,
        the job is cancelled (a central's sensors' queries too) and forgotten, its spool
        file removed, and the caller gets the error."""
        recorded = asyncio.ensure_future(ts.write("add_query", job.id, job.spec.case,
                                                  job.spec.event, job.spec_record()))
        self._start(job, self._run(ts, job, source, recorded))
        try:
            await asyncio.shield(recorded)
        except BaseException:
            assert job.task is not None
            job.task.cancel()
            await asyncio.gather(job.task, recorded, return_exceptions=True)
            self.jobs.pop(job.id, None)
            job.pcap_path.unlink(missing_ok=True)
            raise
        return job

    def _trim(self) -> None:
        while len(self.jobs) > RUNNING_JOBS_KEPT:
            oldest = next((k for k, j in self.jobs.items() if j.final), None)
            if oldest is None:
                return
            del self.jobs[oldest]

    async def _run(self, ts: TenantStore, job: QueryJob, source: Source,
                   recorded: Awaitable[None] | None = None) -> None:
        """Run ``source`` (which hands each chunk to ``deliver``) with the job's workflows
        consuming the chunks, and record how it ended (once the query's start is recorded:
        ``recorded``, when that runs alongside; if it failed, nothing more is recorded)."""
        feed: asyncio.Queue[PcapChunk | None] = asyncio.Queue(4)

        async def workflows() -> None:  # their runs name the query: once it is recorded
            if recorded is not None:
                await recorded
            await self._workflows(ts, job, feed)

        runner = asyncio.create_task(workflows()) if job.workflows else None

        async def deliver(chunk: PcapChunk) -> None:
            if runner is None or runner.done():
                return
            put = asyncio.ensure_future(feed.put(chunk))
            await asyncio.wait({put, runner}, return_when=asyncio.FIRST_COMPLETED)
            put.cancel()  # no-op once done; a failed runner no longer takes chunks

        # The job turns final only once its end is in the query history: whoever sees it
        # final (the SSE stream's end event, a rerun) finds the history row final too.
        status = "error"
        try:
            await source(deliver)
            if runner is not None:
                if not runner.done():
                    await feed.put(None)
                await runner
            status = "done"
        except asyncio.CancelledError:
            status = "cancelled"
        except QueryError as exc:
            job.error = str(exc)
            job.error_code = "result_too_large" if "exceeds the limit" in str(exc) \
                else "invalid_query"
        except SourceFailed as exc:
            job.error, job.error_code = str(exc), exc.code
        except Exception as exc:
            log.exception("query %s failed", job.id)
            job.error, job.error_code = str(exc), "internal_error"
        finally:
            if runner is not None and not runner.done():
                runner.cancel()
            job.finished = time.time()
            self.slots.release(job.tenant)
            if job.missing and job.error is None:  # kept in the history too
                job.error = partial_message(job.missing)
            try:
                if recorded is not None:
                    await recorded
                await ts.write("finish_query", job.id, status, job.stats.packets,
                               job.stats.bytes, job.error,
                               job.spec_record() if job.sensors is not None else None)
                await asyncio.to_thread(self._custody, ts, job, status)
            finally:
                job.status = status
                await job.notify()

    @staticmethod
    def _custody(ts: TenantStore, job: QueryJob, status: str) -> None:
        """The query's entry in its case's custody log, with its stored result (hashed as
        it was spooled; a rerun's result, its original's bytes, is hashed here, off the
        loop)."""
        digest = job.spooled.hexdigest() if job.spooled is not None else None
        result = (file_object("result", job.pcap_path, ts.root, digest)
                  if job.pcap_path.exists() else None)
        events.query(ts.root, job.spec.case, job.actor, job.id, job.spec_record(), status,
                     job.stats, job.segments, result)

    def _scan(self, engine: Any, job: QueryJob, plan: Plan) -> Source:
        async def scan(deliver: Deliver) -> None:
            # The engine settles the plan's link types before its first chunk (or its end):
            # only then is the format known (classic pcap, or pcapng if they really mix).
            # A follow decides them when its initial scan ends (pcapwire.query.follow).
            fmt: StreamFormatter | None = None
            follow = job.follow
            chunks = engine.run(job.spec, job.id, record=False, stats=job.stats, plan=plan,
                                source=follow.chunks if follow is not None else None)
            with open(job.pcap_path, "ab") as out:
                async with aclosing(chunks):
                    async for chunk in chunks:
                        if fmt is None:
                            fmt = StreamFormatter(follow.snaplens if follow is not None
                                                  else plan.snaplens)
                            await self._spool(job, out, fmt.header())
                        await self._spool(job, out, fmt.body(chunk))
                        if chunk.packets:  # a follow's first chunk may be its header alone
                            await deliver(chunk)
                        if job.pace is not None:
                            await job.pace.wait(job.written)
                        # Let the loop run between chunks: while the scan keeps ahead,
                        # nothing here waits, and the result's readers (and every other
                        # request) would not be served until the scan ran dry.
                        await asyncio.sleep(0)
                if fmt is None:
                    await self._spool(job, out, StreamFormatter(plan.snaplens).header())
        return scan

    async def rerun(self, ts: TenantStore, row: dict[str, Any], workflows: list[str],
                    actor: str) -> QueryJob:
        """Run workflows on the stored result of query ``row`` (a finished query of this
        tenant), as a new query of the same case whose result is that same capture."""
        from pcapwire.workflow.sources import file_chunks

        if not workflows:
            raise ApiError(400, "no_workflows", "name at least one workflow to run")
        self.workflows.check(ts.tenant, workflows)
        src = ts.results / f"{row['id']}.pcap"
        if row["status"] != "done" or not src.exists():
            raise ApiError(409, "no_result", f"query {row['id']} has no complete stored "
                           f"result (status {row['status']}); run the query again")
        spec = spec_of(row["spec"])
        self.slots.acquire(ts.tenant)
        qid = uuid.uuid4().hex
        job = QueryJob(qid, ts.tenant, spec, workflows, 0, ts.results / f"{qid}.pcap",
                       rerun_of=row["id"], actor=actor)
        try:
            os.link(src, job.pcap_path)  # the same bytes, under the new id
            await ts.write("add_query", qid, spec.case, spec.event, job.spec_record())
        except BaseException:
            self.slots.release(ts.tenant)
            job.pcap_path.unlink(missing_ok=True)
            raise
        job.written = job.pcap_path.stat().st_size
        job.stats.packets, job.stats.bytes = row["packets"], row["bytes"]

        async def replay(deliver: Deliver) -> None:
            async for chunk in file_chunks(job.pcap_path, query_id=qid):
                job.stats.chunks += 1
                await deliver(chunk)

        self._start(job, self._run(ts, job, replay))
        return job

    def _start(self, job: QueryJob, coro: Coroutine[Any, Any, None]) -> None:
        self.jobs[job.id] = job
        self._trim()
        job.task = asyncio.create_task(coro, name=f"query-{job.id[:8]}")

    @staticmethod
    async def _spool(job: QueryJob, out: BinaryIO, data: bytes | memoryview) -> None:
        if job.spooled is None:
            job.spooled = hashlib.sha256()
        job.spooled.update(data)
        out.write(data)
        out.flush()
        job.written = out.tell()
        await job.notify()

    async def _workflows(self, ts: TenantStore, job: QueryJob,
                         feed: asyncio.Queue[PcapChunk | None]) -> None:
        async def chunks() -> AsyncIterator[PcapChunk]:
            while (chunk := await feed.get()) is not None:
                yield chunk

        async def on_verdict(verdict: dict[str, Any]) -> None:
            job.verdicts.append(verdict)
            await job.notify()

        queries = TenantQueries(self, ts, self.max_result_bytes,  # steps' own queries
                                f"workflow of {job.actor}")
        job.runs = await self.workflows.run(ts, job.workflows, chunks(), job.spec.case,
                                            job.spec.event, job.id, on_verdict, queries)

    def cancel(self, job: QueryJob) -> None:
        """Cancel a query; a follow is stopped instead: what it delivered is its result
        (``done``), its workflows finish with it."""
        if job.final:
            raise ApiError(409, "query_finished", f"query {job.id} already ended ({job.status})")
        if job.follow is not None:
            job.follow.stop()
        elif job.task is not None:
            job.task.cancel()

    async def close(self) -> None:
        tasks = [j.task for j in self.jobs.values() if j.task is not None and not j.task.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
