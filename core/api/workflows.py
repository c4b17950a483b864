"""The seam between the API and the workflow engine (issue 3): the plugin host (built once,
in the app factory's cleanup context), the workflows this server offers (YAML documents in
the configured directories), validation of a posted document with line:column problems,
and running workflows on a query's chunks with verdicts delivered as plain dicts.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcapwire.api.errors import ApiError
from pcapwire.api.verdicts import native_verdict
from pcapwire.records import PcapChunk, Verdict

if TYPE_CHECKING:
    from pcapwire.api.tenants import TenantStore
    from pcapwire.workflow.queries import PacketQueries

log = logging.getLogger(__name__)

OnVerdict = Callable[[dict[str, Any]], Awaitable[None]]
ENGINE_MODULE = "pcapwire.workflow.engine"
RUN_QUEUE_CHUNKS = 4  # chunks buffered per workflow run of one query
MAX_CONCURRENT_CHECKS = 2  # posted workflow documents checked at once (server-wide)


def _problem(p: Any) -> dict[str, Any]:
    return {"line": p.line, "column": p.column, "key": p.key, "message": p.message,
            "warning": p.warning, "text": str(p)}


class WorkflowService:
    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs
        self.host: Any = None
        self.loaded: dict[str, Any] = {}  # name -> Workflow
        self.broken: list[dict[str, Any]] = []  # documents in the directories that fail
        self.checks = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)  # posted documents checked
        self.checking: set[str] = set()  # tenants with a check running

    @property
    def engine_present(self) -> bool:
        return importlib.util.find_spec(ENGINE_MODULE) is not None

    def start(self) -> None:
        """Build the plugin host and load the workflow directories (app start-up)."""
        from pcapwire.hooks.host import build_host
        from pcapwire.workflow.document import check_workflow

        self.host = build_host()
        for f in self.host.failures:
            log.warning("plugin %s failed to load: %s", f.name, f.error)
        for d in self.dirs:
            for path in sorted(d.glob("*.y*ml")):
                wf, problems = check_workflow(path, self.host)
                if wf is None:
                    self.broken.append({"file": str(path),
                                        "problems": [_problem(p) for p in problems]})
                    log.warning("workflow %s is invalid:\n%s", path,
                                "\n".join(map(str, problems)))
                elif wf.name in self.loaded:
                    log.warning("workflow %s: name %r already loaded from another file",
                                path, wf.name)
                else:
                    self.loaded[wf.name] = wf

    async def stop(self) -> None:
        """App shutdown: the host closes every analyzer (``Analyzer.aclose``: Suricata's
        warm spares are stopped and no new one starts). Called before the running
        queries are cancelled, so that runs ending now warm nothing for later."""
        if self.host is not None:
            await self.host.aclose()

    def workflows(self) -> list[dict[str, Any]]:
        return [{"name": wf.name, "description": wf.description, "file": Path(wf.source).name,
                 "steps": [{"id": s.id, "uses": s.uses, "input": s.input}
                           for s in wf.steps],
                 "on_query": wf.on_query} for wf in self.loaded.values()]

    def plugins(self) -> dict[str, Any]:
        return dict(self.host.describe())

    async def validate(self, ts: TenantStore, text: str, name: str = "<posted>"
                       ) -> dict[str, Any]:
        """Check a posted document confined to the tenant's ``workflows/`` and ``rules/``
        directories, in a child process with limits (:mod:`pcapwire.workflow.isolated`);
        one check per tenant and :data:`MAX_CONCURRENT_CHECKS` in all at a time."""
        from pcapwire.workflow.confine import Confinement
        from pcapwire.workflow.document import Problem
        from pcapwire.workflow.isolated import CheckFailed, check_isolated

        if ts.tenant in self.checking or self.checks.locked():
            raise ApiError(429, "validation_busy", "a workflow validation is already running "
                           "(one per tenant, MAX_CONCURRENT_CHECKS="
                           f"{MAX_CONCURRENT_CHECKS} in all); retry when it has finished",
                           {"limit_name": "max_concurrent_checks"})
        for sub in ("workflows", "rules"):
            (ts.root / sub).mkdir(exist_ok=True)
        self.checking.add(ts.tenant)
        try:
            async with self.checks:
                answer = await check_isolated(text, name, Confinement.for_tenant(ts.root))
        except CheckFailed as exc:
            raise ApiError(422, "validation_failed", str(exc)) from None
        finally:
            self.checking.discard(ts.tenant)
        problems = [Problem(**p) for p in answer["problems"]]
        return {"valid": answer["valid"], "name": answer["name"],
                "problems": [_problem(p) for p in problems]}

    def triggered(self, case: str, event: str) -> list[str]:
        """Workflows whose ``on: query`` trigger matches a query with this case and event."""
        return [name for name, wf in self.loaded.items() if wf.triggered_by(case, event)]

    def check(self, tenant: str, names: list[str]) -> None:
        if not names:
            return
        unknown = [n for n in names if n not in self.loaded]
        if unknown:
            raise ApiError(400, "unknown_workflow", f"no workflow {unknown[0]!r} on this "
                           f"server; available: {', '.join(self.loaded) or 'none'}",
                           {"unknown": unknown, "available": list(self.loaded)})
        if not self.engine_present:
            raise ApiError(400, "workflow_engine_missing", "this pcapwire has no workflow "
                           "engine installed (pcapwire.workflow.engine); submit the query "
                           "without workflows")

    async def run(self, ts: TenantStore, names: list[str], chunks: AsyncIterator[PcapChunk],
                  case: str, event: str, query_id: str, on_verdict: OnVerdict,
                  queries: PacketQueries | None = None) -> list[dict[str, Any]]:
        """Run the named workflows on one chunk stream (each run gets every chunk; a slow
        run slows the feed, memory stays bounded). Runs and verdicts are kept in the
        tenant's case store; steps query the packet store through ``queries`` (the
        tenant's: :mod:`.stepqueries`). Returns the run summaries."""
        from pcapwire.workflow.engine import Engine

        self.check(ts.tenant, names)
        engine = Engine(self.host, store=ts.cases, workdir=ts.work, data_dir=ts.root,
                        queries=queries)

        def sink(run_id: str) -> Callable[[Verdict], Awaitable[None]]:
            async def verdict(v: Verdict) -> None:
                await on_verdict(native_verdict(v, run_id))
            return verdict

        queues: list[asyncio.Queue[PcapChunk | None]] = [asyncio.Queue(RUN_QUEUE_CHUNKS)
                                                          for _ in names]

        async def feed(q: asyncio.Queue[PcapChunk | None]) -> AsyncIterator[PcapChunk]:
            while (chunk := await q.get()) is not None:
                yield chunk

        async def distribute() -> None:
            try:
                async for chunk in chunks:
                    for q in queues:
                        await q.put(chunk)
            finally:
                for q in queues:
                    await q.put(None)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(distribute())
            run_ids = [uuid.uuid4().hex for _ in names]
            runs = [tg.create_task(engine.run(self.loaded[n], feed(q), case=case, event=event,
                                              query_id=query_id, run_id=rid,
                                              on_verdict=sink(rid)))
                    for n, q, rid in zip(names, queues, run_ids, strict=True)]
        return [r.result().to_dict() for r in runs]
