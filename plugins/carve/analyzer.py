"""The carve analyzers: one :class:`pcapwire.extract.carve.Carver` per run (per step), fed
the run's input in order, emitting each FileRecord/EmailRecord as soon as it is carved.

Artifacts go to ``artifacts_dir`` (content-addressed, shared by runs); without it, to
``<data-dir>/artifacts`` of the run (a tenant's own directory under the API), where the
hash-list step finds every earlier sighting of a file; a run without a data directory
uses the step's scratch directory, removed with the run (the step logs a warning then).

The records themselves are kept with the case, like the engines' logs
(:mod:`..enginekit.keep`): ``files.jsonl`` and ``emails.jsonl`` (the carve directory's
format, :mod:`pcapwire.extract.layout`) in ``<data-dir>/cases/<case>/carve/<query or
run>-<step>/``, where the metadata index (:mod:`pcapwire.search`) reads them.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pcapwire.extract import PROTOCOLS
from pcapwire.extract.artifacts import ArtifactStore
from pcapwire.extract.carve import Carver
from pcapwire.extract.layout import EMAILS, FILES
from pcapwire.extract.source import ChunkFeeder, StreamFeeder
from pcapwire.plugins.enginekit.keep import keep_dir
from pcapwire.records import EmailRecord, FileRecord, PcapChunk, StreamRecord
from pcapwire.workflow import Analyzer, AnalyzerConfig, Session, StepContext, option
from pcapwire.workflow.context import Record

Protocol = Literal["http", "smtp", "pop3", "imap", "ftp"]


@dataclass(frozen=True)
class CarveConfig(AnalyzerConfig):
    protocols: list[Protocol] = option(list(PROTOCOLS),
                                       description="application protocols to carve")
    artifacts_dir: str = option("", kind="server", description="content-addressed artifact store "
                                "(default: <data-dir>/artifacts, else the run's "
                                "scratch directory, removed with the run)")


def _store(ctx: StepContext[CarveConfig]) -> ArtifactStore:
    cfg = ctx.config
    if cfg.artifacts_dir:
        return ArtifactStore(ctx.resolve(cfg.artifacts_dir))
    if ctx.data_dir is not None:
        return ArtifactStore(Path(ctx.data_dir) / "artifacts")
    ctx.log.warning("no artifacts_dir: carved files live in the run's scratch directory "
                    "and are removed with the run")
    return ArtifactStore(ctx.workdir / "artifacts")


class CarveSession(Session[CarveConfig]):
    """Per-run state: the carver and the records waiting to be emitted."""

    def __init__(self, ctx: StepContext[CarveConfig], streams: bool) -> None:
        super().__init__(ctx)
        self.streams = streams
        self.ready: list[FileRecord | EmailRecord] = []
        self.kept: list[FileRecord | EmailRecord] = []  # everything emitted, kept at finish
        self.feeder: StreamFeeder | ChunkFeeder | None = None

    async def start(self) -> None:
        cfg = self.ctx.config
        carver = Carver(_store(self.ctx), protocols=tuple(cfg.protocols),
                        on_file=self.ready.append, on_email=self.ready.append)
        self.feeder = StreamFeeder(carver) if self.streams else ChunkFeeder(carver)

    async def feed(self, record: Record) -> None:
        assert self.feeder is not None
        if isinstance(self.feeder, StreamFeeder) and isinstance(record, StreamRecord):
            self.feeder.feed(record)
        elif isinstance(self.feeder, ChunkFeeder) and isinstance(record, PcapChunk):
            self.feeder.feed(record)
        await self._flush()

    async def finish(self) -> None:
        assert self.feeder is not None
        result = self.feeder.finish()
        await self._flush()
        for note in result.notes:
            self.ctx.log.info("%s", note)
        where, kept = keep_dir(self.ctx, "", "carve")
        if kept and self.kept:
            await asyncio.to_thread(_keep, where, self.kept)

    async def _flush(self) -> None:
        ready = list(self.ready)
        self.ready.clear()  # the carver's callbacks hold this very list
        self.kept += ready
        for rec in ready:
            await self.ctx.emit(rec)


def _keep(where: Path, records: list[FileRecord | EmailRecord]) -> None:
    """The run's records as a carve directory's ``files.jsonl`` and ``emails.jsonl``."""
    where.mkdir(parents=True, exist_ok=True)
    for name, kind in ((FILES, FileRecord), (EMAILS, EmailRecord)):
        rows = [r.to_dict() for r in records if isinstance(r, kind)]
        if rows:
            with open(where / name, "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, sort_keys=True, default=str) + "\n")


class CarveAnalyzer(Analyzer[CarveConfig]):
    name = "carve"
    input_kind = "pcap"
    outputs = ("file", "email")
    version = "1.0"
    description = ("Carve files and emails (HTTP/1.x, SMTP, POP3, IMAP, FTP) from the PCAP "
                   "stream through pcapwire's TCP reassembler")

    def open_session(self, ctx: StepContext[CarveConfig]) -> Session[CarveConfig]:
        return CarveSession(ctx, streams=False)


class CarveStreamsAnalyzer(Analyzer[CarveConfig]):
    name = "carve.streams"
    input_kind = "stream"
    outputs = ("file", "email")
    version = "1.0"
    description = "Carve files and emails from reassembled TCP streams"

    def open_session(self, ctx: StepContext[CarveConfig]) -> Session[CarveConfig]:
        return CarveSession(ctx, streams=True)
