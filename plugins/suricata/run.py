"""One workflow run through Suricata: chunks in, alert verdicts out as they happen, the
metadata EVE file at the end.

A run owns one engine per link type (a query that mixes link types cannot be one pcap
stream; each link type gets its own engine, the first one taken warm from the pool). Each
engine has a consumer task that turns EVE events into verdicts the moment they arrive and
hands every verdict to ``on_verdict`` (the workflow's live stream), so verdicts flow while
the query is still producing chunks. A caller that needs the EVE events alone (a trigger
hunt's file mode) takes them raw, batch by batch (``on_events``): no verdicts are made.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcapwire.errors import AnalyzerError
from pcapwire.pcapformat import HEADER_LEN, parse_header
from pcapwire.plugins.suricata.config import METADATA_EVE, SuricataSettings
from pcapwire.plugins.suricata.engine import EngineResult, SuricataEngine
from pcapwire.plugins.suricata.eve import EveMetadata, EveSummary, sid_counts
from pcapwire.plugins.suricata.pool import EnginePool
from pcapwire.plugins.suricata.ruleload import RuleError
from pcapwire.records import PcapChunk, Verdict

log = logging.getLogger(__name__)

VerdictSink = Callable[[Verdict], Awaitable[None] | None]
EventSink = Callable[[list[dict[str, Any]]], None]
#: EVE events turned into verdicts between two turns given to the other tasks (a backlog
#: of alerts must not hold up the chunks that keep Suricata busy).
YIELD_EVERY_EVENTS = 64


@dataclass
class RunResult:
    verdicts: list[Verdict] = field(default_factory=list)
    metadata: list[EveMetadata] = field(default_factory=list)
    metadata_files: list[Path] = field(default_factory=list)
    event_counts: dict[str, int] = field(default_factory=dict)
    engines: list[EngineResult] = field(default_factory=list)
    rule_errors: list[RuleError] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def sid_counts(self) -> dict[int, int]:
        return sid_counts(self.verdicts)

    @property
    def invalid_checksums(self) -> int | None:
        """Packets the engines counted with an invalid TCP checksum; None when no engine
        validated checksums (``checksum_validation: no``)."""
        counts = [e.invalid_checksums for e in self.engines if e.invalid_checksums is not None]
        return sum(counts) if counts else None

    @property
    def packets(self) -> int:
        return sum(e.packets or 0 for e in self.engines)


class SuricataRun:
    def __init__(self, settings: SuricataSettings, *, pool: EnginePool | None = None,
                 on_verdict: VerdictSink | None = None, step: str = "", case: str = "",
                 query_id: str = "", on_events: EventSink | None = None) -> None:
        """``on_events``: every EVE event batch goes there as decoded, instead of becoming
        verdicts and metadata (the result's verdicts, metadata and event counts are then
        empty; ``on_verdict`` is not called)."""
        self.settings = settings
        self.pool = pool
        self.on_verdict = on_verdict
        self.on_events = on_events
        self.ctx = {"step": step, "case": case, "query_id": query_id}
        self.summary = EveSummary()
        self._engines: dict[int, tuple[SuricataEngine, asyncio.Task[None]]] = {}
        self._first: SuricataEngine | None = None
        self._failed: dict[int, str] = {}
        self._skipped: dict[int, int] = {}
        self._sink_error = ""
        self._had_engine = False
        self._released = False
        self._closed = False

    async def _engine(self) -> SuricataEngine:
        if self.pool is not None:
            engine = await self.pool.acquire(self.settings)
        else:
            engine = SuricataEngine(self.settings)
            await engine.start()
        self._had_engine = True
        return engine

    async def start(self) -> None:
        """Take (or start) the first engine now, so rules are loaded before chunks arrive."""
        if self._first is None and not self._engines:
            self._first = await self._engine()

    async def _consume(self, engine: SuricataEngine) -> None:
        """Drain the engine's EVE stream to its end, whatever the sink does: a sink that
        fails is reported at ``finish`` (draining stops nothing; an undrained engine would
        block on its socket)."""
        add, ctx = self.summary.add, self.ctx
        n = 0
        async for batch in engine.batches():
            if self.on_events is not None:
                self._sink_events(self.on_events, batch)
                await asyncio.sleep(0)  # the feeder and the EVE reader get their turn
                continue
            for event in batch:
                n += 1
                if n % YIELD_EVERY_EVENTS == 0:
                    await asyncio.sleep(0)  # let the feeder run: it keeps the engine busy
                item = add(event, **ctx)
                if (self.on_verdict is None or self._sink_error
                        or not isinstance(item, Verdict)):
                    continue
                try:
                    res = self.on_verdict(item)
                    if inspect.isawaitable(res):
                        await res
                except Exception as exc:
                    self._sink_error = f"verdict sink failed: {exc}"
                    log.warning("suricata: %s", self._sink_error)

    def _sink_events(self, sink: EventSink, batch: list[dict[str, Any]]) -> None:
        """Hand a batch to ``on_events``; a sink that fails is reported at ``finish``."""
        if self._sink_error or not batch:
            return
        try:
            sink(batch)
        except Exception as exc:
            self._sink_error = f"event sink failed: {exc}"
            log.warning("suricata: %s", self._sink_error)

    async def _engine_for(self, linktype: int) -> SuricataEngine:
        if linktype in self._engines:
            return self._engines[linktype][0]
        if self._first is not None:
            engine, self._first = self._first, None
        else:
            engine = await self._engine()
        task = asyncio.create_task(self._consume(engine), name=f"suricata-eve-{linktype}")
        self._engines[linktype] = (engine, task)
        return engine

    async def feed(self, chunk: PcapChunk) -> None:
        await self.feed_bytes(chunk.data, f"query {chunk.query_id} chunk {chunk.seq}")

    async def feed_bytes(self, data: bytes, where: str = "input") -> None:
        """Feed one complete pcap (a chunk, or a whole capture for ``--pcap FILE`` runs).

        A chunk that is not a pcap, or changes byte order within a link type, raises
        :class:`~pcapwire.errors.CaptureFormatError`. An engine that dies (or refuses the
        link type) is recorded in the result's ``errors``; chunks of its link type are
        skipped from then on, the other link types' engines carry on.
        """
        if self._closed:
            raise AnalyzerError("suricata: the run is already finished")
        linktype = parse_header(data, where).linktype
        if linktype in self._failed:
            self._skipped[linktype] = self._skipped.get(linktype, 0) + 1
            return
        engine = await self._engine_for(linktype)
        try:
            await engine.feed(data, where)
        except AnalyzerError as exc:
            await self._engine_failed(linktype, engine, exc)

    async def run_file(self, path: Path, metadata_dir: Path | None = None) -> RunResult:
        """The whole run over one pcap file that Suricata reads itself (``suricata -r
        FILE``, :class:`SuricataEngine` in file mode; no warm spare, nothing fed): the
        same verdicts and result as :meth:`feed_bytes` of the file then :meth:`finish`."""
        if self._closed or self._engines or self._first is not None:
            raise AnalyzerError("suricata: run_file takes a new run")
        with open(path, "rb") as f:
            linktype = parse_header(f.read(HEADER_LEN), str(path)).linktype
        engine = SuricataEngine(self.settings, input_file=path)
        await engine.start()
        self._had_engine = True
        self._engines[linktype] = (engine, asyncio.create_task(
            self._consume(engine), name=f"suricata-eve-{linktype}"))
        return await self.finish(metadata_dir)

    async def _engine_failed(self, linktype: int, engine: SuricataEngine,
                             exc: BaseException) -> None:
        self._failed[linktype] = f"link type {linktype}: {exc}"
        log.warning("suricata: engine for link type %d failed: %s", linktype, exc)
        await engine.kill()

    async def finish(self, metadata_dir: Path | None = None) -> RunResult:
        """End of input: every engine flushes and exits; returns everything they said.

        With ``metadata_dir``, each engine's metadata EVE file is moved there
        (``eve-metadata.json``; a second link type's ``eve-metadata-linktype<N>.json``)
        and listed in ``result.metadata_files``; without it the records are parsed into
        ``result.metadata``. Engine failures do not raise: they are in ``result.errors``
        next to the verdicts the engines produced before failing (nothing valid is lost).
        """
        self._closed = True
        result = RunResult()
        try:
            if not self._engines and self._first is not None:
                await self._engine_for(1)  # an empty run still gets a clean engine exit
            for n, (linktype, (engine, task)) in enumerate(self._engines.items()):
                if linktype not in self._failed:
                    name = METADATA_EVE if n == 0 else f"eve-metadata-linktype{linktype}.json"
                    try:
                        done = await engine.finish(metadata_dir / name if metadata_dir else None)
                    except AnalyzerError as exc:
                        await self._engine_failed(linktype, engine, exc)
                    else:
                        result.engines.append(done)
                        if done.metadata_file is not None:
                            result.metadata_files.append(done.metadata_file)
                        if self.on_events is not None:
                            self._sink_events(self.on_events, done.metadata_events)
                        else:
                            for event in done.metadata_events:
                                self.summary.add(event, **self.ctx)
                await task
        finally:
            await self.abort()
        result.verdicts = list(self.summary.verdicts)
        result.metadata = list(self.summary.metadata)
        result.event_counts = dict(self.summary.counts)
        result.errors = list(self._failed.values())
        if self._sink_error:
            result.errors.append(self._sink_error)
        for linktype, count in self._skipped.items():
            result.errors.append(f"link type {linktype}: {count} later chunk(s) not analysed")
        for r in result.engines:
            result.rule_errors.extend(r.rule_errors)
        return result

    async def abort(self) -> None:
        """Stop everything now (idempotent); used on timeout, cancel and after finish."""
        self._closed = True
        engines: list[Any] = [e for e, _t in self._engines.values()]
        if self._first is not None:
            engines.append(self._first)
            self._first = None
        for engine in engines:
            await engine.kill()
        for _engine, task in self._engines.values():
            if not task.done():
                task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self._had_engine and not self._released and self.pool is not None:
            self._released = True
            self.pool.release(self.settings)  # the next run's spare, loaded from now on
