"""Run workflows to the end in this process, outside a server: what ``pcapwire run``,
``pcapwire workflow test`` and the ``workflow`` job kind (:mod:`pcapwire.jobs`) share.

One host per call: the runs go one after the other in one event loop, steps start nothing
for later runs (``keep_warm=False``), and the host closes every analyzer in that loop
before it ends. Steps query ``data_dir``'s store (:class:`~.queries.LocalQueries`); with
``store`` the runs and their verdicts are recorded in its case store.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from pcapwire.records import PcapChunk, Verdict
from pcapwire.workflow.results import RunSummary

#: makes the chunk iterator of one run and names its query id (called once per run, all
#: before the case store is opened)
Chunks = Callable[[], tuple[AsyncIterator[PcapChunk], str]]


def run_workflows(host: Any, workflows: Sequence[Any], chunks: Chunks, *,
                  data_dir: str | Path, case: str = "", event: str = "", store: bool = True,
                  run_ids: Sequence[str] | None = None,
                  on_verdict: Callable[[Verdict], None] | None = None
                  ) -> list[tuple[RunSummary, list[Verdict]]]:
    """Run each of ``workflows`` (loaded with ``host``) on the chunks ``chunks()`` gives
    it; returns each run's summary and verdicts, in order. ``run_ids``: one per workflow
    (default: new ones)."""
    from pcapwire.cases import CASES_FILE, CaseStore
    from pcapwire.workflow.engine import Engine
    from pcapwire.workflow.queries import LocalQueries

    ids = list(run_ids) if run_ids is not None else [uuid.uuid4().hex for _ in workflows]
    sources = [chunks() for _ in workflows]  # a bad input fails before anything is written
    cases = CaseStore(Path(data_dir) / CASES_FILE) if store else None
    queries = LocalQueries(data_dir)
    engine = Engine(host, cases, data_dir=data_dir, keep=store, keep_warm=False,
                    queries=queries)

    async def run_all() -> list[tuple[RunSummary, list[Verdict]]]:
        done: list[tuple[RunSummary, list[Verdict]]] = []
        try:
            for wf, run_id, (source, query_id) in zip(workflows, ids, sources, strict=True):
                verdicts: list[Verdict] = []

                def collect(v: Verdict, verdicts: list[Verdict] = verdicts) -> None:
                    verdicts.append(v)
                    if on_verdict is not None:
                        on_verdict(v)

                summary = await engine.run(wf, source, case=case, event=event,
                                           query_id=query_id, run_id=run_id,
                                           on_verdict=collect)
                done.append((summary, verdicts))
        finally:
            await host.aclose()
        return done

    try:
        return asyncio.run(run_all())
    finally:
        queries.close()
        if cases is not None:
            cases.close()
