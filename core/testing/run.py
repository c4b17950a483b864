"""One analyzer, run the way pcapwire runs it: a one-step workflow through the real engine
(config validated from ``with:``, timeouts, error records, ``ctx.emit`` checks), on a
capture or on records::

    result = run_analyzer("cleartext.logins", input=pcap_bytes,
                          config={"severity": "high"})
    assert result.step.status == "ok"
    assert_verdicts(result.verdicts, [{"signature_id": "cleartext:user-pass"}])

``input`` is a capture (pcap/pcapng bytes, or a path), a list of
:class:`~pcapwire.records.PcapChunk`, or a list of records of one kind (``stream``,
``file``, ``email`` or ``verdict`` records), which a feeder step of the kit hands to the
step under test. For a capture, the step takes the analyzer's first input kind (streams
are reassembled by the engine, as in a workflow); ``input_kind`` chooses another.

What the step emits besides verdicts (a producer's files, emails or streams) is collected
by steps of the kit and returned as :attr:`AnalyzerRun.outputs`.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcapwire.hooks import RegisterAnalyzer, impl
from pcapwire.records import PcapChunk, Verdict
from pcapwire.workflow import Analyzer, RunSummary, Session, StepContext, StepResult
from pcapwire.workflow.context import Output, Record

#: The id of the step under test (``StepResult.step``, ``Verdict.step``).
STEP = "test"
_FEED, _COLLECT = "feed", "collect"
_PRODUCED = ("stream", "file", "email")  # output kinds the kit collects


@dataclass
class AnalyzerRun:
    """What one :func:`run_analyzer` call saw."""

    #: the verdicts the step emitted (after the engine's checks), in order
    verdicts: list[Verdict]
    #: the step's result: status, errors, records in, outputs by kind, notes, stats
    step: StepResult
    #: the whole run (the kit's own feeder/collector steps included)
    summary: RunSummary
    #: what else the step emitted (file, email and stream records), in order
    outputs: list[Output] = field(default_factory=list)


class _Feeder(Analyzer):
    """Hands the given records to the step under test (its input is the empty pcap feed)."""

    input_kind = "pcap"
    version = "1"

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = records

    def open_session(self, ctx: StepContext[Any]) -> Session[Any]:
        return _FeedSession(self.records, ctx)


class _FeedSession(Session[Any]):
    def __init__(self, records: Sequence[Record], ctx: StepContext[Any]) -> None:
        super().__init__(ctx)
        self.records = records

    async def feed(self, record: Record) -> None:
        pass

    async def finish(self) -> None:
        for rec in self.records:
            await self.ctx.emit(rec)  # type: ignore[arg-type]


class _Collector(Analyzer):
    """Keeps every record the step under test emits (one kind per collector)."""

    version = "1"

    def __init__(self, into: list[Output]) -> None:
        self.into = into

    async def analyze(self, record: Any, ctx: StepContext[Any]) -> AsyncIterator[Output]:
        self.into.append(record)
        return
        yield  # pragma: no cover - an async generator that yields nothing


def _kit_plugin(feeder: Analyzer[Any] | None, collectors: list[Analyzer[Any]]) -> Any:
    class KitPlugin:
        @impl
        def pcapwire_register_analyzers(self, register: RegisterAnalyzer) -> None:
            for a in ([feeder] if feeder is not None else []) + collectors:
                register(a)

    return KitPlugin()


def _analyzer_class(kind_name: str, base: type[Analyzer[Any]], **attrs: Any) -> type:
    return type(f"Kit{base.__name__}", (base,), {"name": kind_name, **attrs})


async def _chunks_of(chunks: Sequence[PcapChunk]) -> AsyncIterator[PcapChunk]:
    for chunk in chunks:
        yield chunk


async def arun_analyzer(analyzer: str | Analyzer[Any] | type[Analyzer[Any]], input: Any,
                        config: dict[str, Any] | None = None, *,
                        input_kind: str | None = None, timeout: str | float | None = None,
                        plugins: Iterable[Any] = (), entry_points: bool | None = None,
                        data_dir: str | Path | None = None, case: str = "test",
                        event: str = "") -> AnalyzerRun:
    """:func:`run_analyzer` in a running event loop (``await`` it in async tests)."""
    from pcapwire.hooks.host import build_host
    from pcapwire.workflow.document import load_workflow
    from pcapwire.workflow.engine import Engine
    from pcapwire.workflow.queries import LocalQueries
    from pcapwire.workflow.sources import file_chunks

    tmp = tempfile.TemporaryDirectory(prefix="pcapwire-testing-")
    records: list[Record] | None = None
    chunk_list: list[PcapChunk] | None = None
    path: Path | None = None
    if isinstance(input, (bytes, bytearray, memoryview)):
        path = Path(tmp.name) / "input.pcap"
        path.write_bytes(bytes(input))
    elif isinstance(input, (str, Path)):
        path = Path(input)
    else:
        items = list(input)
        if all(isinstance(r, PcapChunk) for r in items):
            chunk_list = items
        else:
            kinds = {getattr(r, "kind", type(r).__name__) for r in items}
            if len(kinds) != 1:
                raise ValueError(f"input records are of several kinds ({sorted(kinds)}); "
                                 "run the analyzer once per kind")
            records = items

    outputs: list[Output] = []
    feeder = None
    if records is not None:
        kind = records[0].kind
        feeder = _analyzer_class("kit.feed", _Feeder, outputs=(kind,))(records)
    collectors = [_analyzer_class(f"kit.collect.{kind}", _Collector, input_kind=kind)(outputs)
                  for kind in _PRODUCED]
    extra = [*plugins, _kit_plugin(feeder, collectors)]
    if not isinstance(analyzer, str):
        name = analyzer.name
        extra.append(_single(analyzer))
    else:
        name = analyzer
    host = build_host(entry_points=isinstance(analyzer, str) if entry_points is None
                      else entry_points, extra=extra)

    step: dict[str, Any] = {"id": STEP, "uses": name, "with": dict(config or {})}
    steps: list[dict[str, Any]] = []
    if feeder is not None:
        steps.append({"id": _FEED, "uses": "kit.feed"})
        step["input"] = _FEED
    elif input_kind is not None:
        step["input"] = input_kind
    if timeout is not None:
        step["timeout"] = timeout
    steps.append(step)
    for kind in type(host.analyzer(name)).outputs:
        if kind in _PRODUCED:
            steps.append({"id": f"{_COLLECT}_{kind}", "uses": f"kit.collect.{kind}",
                          "input": STEP})

    doc = {"name": "pcapwire-testing", "verdicts": {"dedupe": False}, "steps": steps}
    wf = load_workflow("<pcapwire.testing>", host, text=json.dumps(doc, default=str))
    queries = LocalQueries(data_dir) if data_dir is not None else None
    engine = Engine(host, data_dir=data_dir, keep=False, keep_warm=False, queries=queries,
                    workdir=tmp.name)
    if path is not None:
        chunks: AsyncIterator[PcapChunk] = file_chunks(path)
    else:
        chunks = _chunks_of(chunk_list or [])
    verdicts: list[Verdict] = []
    try:
        summary = await engine.run(wf, chunks, case=case, event=event,
                                   on_verdict=lambda v: verdicts.append(v)
                                   if v.step == STEP else None)
    finally:
        await host.aclose()
        if queries is not None:
            queries.close()
        tmp.cleanup()
    (result,) = [s for s in summary.steps if s.step == STEP]
    return AnalyzerRun(verdicts, result, summary, outputs)


def run_analyzer(analyzer: str | Analyzer[Any] | type[Analyzer[Any]], input: Any,
                 config: dict[str, Any] | None = None, **kw: Any) -> AnalyzerRun:
    """Run one analyzer, by name (a plugin installed through its entry point) or as a
    class or instance, on ``input`` with ``config`` (the step's ``with:``), in a one-step
    workflow through the real engine; returns its verdicts and step result.

    Keywords: ``input_kind`` (the step's ``input`` for a capture), ``timeout`` (the
    step's, e.g. ``"30s"``), ``plugins`` (more plugin objects to load), ``entry_points``
    (load installed plugins; default: only when ``analyzer`` is a name), ``data_dir``
    (the run's data directory: hash lists, ``{data_dir}`` paths, its packet store for
    ``ctx.query``), ``case`` and ``event``. Not inside a running event loop: there,
    ``await arun_analyzer(...)``."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun_analyzer(analyzer, input, config, **kw))
    raise RuntimeError("run_analyzer() called inside a running event loop; use "
                       "`await pcapwire.testing.arun_analyzer(...)` there")


def _single(analyzer: Analyzer[Any] | type[Analyzer[Any]]) -> Any:
    class Plugin:
        @impl
        def pcapwire_register_analyzers(self, register: RegisterAnalyzer) -> None:
            register(analyzer)

    return Plugin()
