"""The carve analyzers: one :class:`pcapwire.extract.carve.Carver` per run (per step), fed
the run's input in order, emitting each FileRecord/EmailRecord as soon as it is carved.

Artifacts go to ``artifacts_dir`` (content-addressed, shared by runs); without it, to
``<data-dir>/artifacts`` of the run (a tenant's own directory under the API), where the
hash-list step finds every earlier sighting of a file; a run without a data directory
uses the step's scratch directory, removed with the run (the step logs a warning then).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pcapwire.extract import PROTOCOLS
from pcapwire.extract.artifacts import ArtifactStore
from pcapwire.extract.carve import Carver
from pcapwire.extract.source import ChunkFeeder, StreamFeeder
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

    async def _flush(self) -> None:
        ready = list(self.ready)
        self.ready.clear()  # the carver's callbacks hold this very list
        for rec in ready:
            await self.ctx.emit(rec)


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
