"""The Zeek analyzer under the workflow contract: input kind ``pcap``, one ``zeek -r -``
process per run (:class:`ZeekSession`), its logs kept in the step's keep directory
(:mod:`..enginekit.keep`) in Zeek's own format and layout.

Zeek logs a connection when it ends, so its verdicts (notice, intel, weird) are emitted at
``finish``; the conn/http/dns/ssl/files/smtp records are the case metadata (the log files
themselves, plus ``metadata.json``: each record with the 5-tuple it was linked to).
Without a zeek binary the step ends with one clear error (:data:`.config.NOT_FOUND`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pcapwire.errors import AnalyzerError, ConfigError
from pcapwire.plugins.enginekit.keep import keep_dir
from pcapwire.plugins.zeek.config import FINISH_TIMEOUT_S, ZeekSettings
from pcapwire.plugins.zeek.run import ZeekRun, ZeekRunResult
from pcapwire.records import PcapChunk
from pcapwire.workflow import Analyzer, AnalyzerConfig, Session, StepContext, option
from pcapwire.workflow.confine import Confinement
from pcapwire.workflow.context import DATA_DIR_PLACEHOLDER, resolve_path

VERSION = "1.0"
METADATA_FILE = "metadata.json"


@dataclass(frozen=True, repr=False)
class ZeekConfig(AnalyzerConfig):
    binary: str = option("zeek", kind="server", description="zeek executable (looked up on PATH)")
    scripts: list[str] = option([], kind="server", description="scripts to @load, e.g. "
                                "policy/protocols/conn/community-id-logging")
    redefs: dict[str, str] = option({}, kind="server",
                                    description="redef NAME = VALUE (one expression)")
    intel_files: list[str] = option([], kind="glob",
                                    description="Intel framework files (IoC lists)")
    log_format: Literal["json", "tsv"] = option("json", description="Zeek's JSON or ASCII "
                                                "(TSV: zeek-cut, ZAT) logs")
    args: list[str] = option([], kind="server", description="extra zeek arguments")
    finish_timeout: float = option(FINISH_TIMEOUT_S, minimum=0.001,
                                   description="seconds to finish after the end of input")
    notice_severity: dict[str, str] = option({}, kind="text", description="notice type -> severity")
    keep_dir: str = option("", kind="server",
                           description="where the logs are kept (default: the case)")


def to_settings(config: ZeekConfig, base_dir: Path | None = None,
                data_dir: Path | None = None) -> ZeekSettings:
    raw = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    raw.pop("keep_dir")
    raw["intel_files"] = [str(resolve_path(p, base_dir, data_dir)) for p in raw["intel_files"]]
    return ZeekSettings.from_mapping(raw)


class ZeekAnalyzer(Analyzer[ZeekConfig]):
    name = "zeek"
    input_kind = "pcap"
    outputs = ("verdict",)
    version = VERSION
    description = ("Zeek on the query's PCAP stream (pcap on stdin): notice/intel/weird as "
                   "verdicts; logs kept with the case in Zeek's own format")

    def unavailable(self) -> str | None:
        # Not reported here: the contract's unavailable() sees no step config, and a step
        # may name its own zeek binary. Without one, start() fails the step with NOT_FOUND.
        return None

    def check_config(self, config: ZeekConfig, base_dir: Path | None,
                     confinement: Confinement | None = None) -> list[str]:
        """``pcapwire workflow validate``: scripts, redefs, intel files (a missing zeek
        binary is not a document problem: the step reports it when it runs)."""
        try:
            to_settings(config, base_dir, None)
        except ConfigError as exc:
            return [] if DATA_DIR_PLACEHOLDER in str(exc) else [str(exc)]
        return []

    def open_session(self, ctx: StepContext[ZeekConfig]) -> Session[ZeekConfig]:
        return ZeekSession(ctx)


class ZeekSession(Session[ZeekConfig]):
    def __init__(self, ctx: StepContext[ZeekConfig]) -> None:
        super().__init__(ctx)
        self.run: ZeekRun | None = None
        self.result: ZeekRunResult | None = None
        self.log_dir: Path | None = None

    async def start(self) -> None:
        config = self.ctx.config
        self.log_dir, kept = keep_dir(self.ctx, config.keep_dir, "zeek")
        if not kept:
            self.ctx.log.info("zeek logs in the run's scratch directory %s (no case "
                              "directory; set keep_dir to keep them)", self.log_dir)
        self.run = ZeekRun(to_settings(config, self.ctx.base_dir, self.ctx.data_dir),
                           self.log_dir, step=self.ctx.step,
                           case=self.ctx.run.case, query_id=self.ctx.run.query_id)
        await self.run.start()

    async def feed(self, record: Any) -> None:
        if not isinstance(record, PcapChunk):
            raise AnalyzerError(f"zeek takes pcap chunks, not {type(record).__name__}")
        assert self.run is not None
        await self.run.feed(record)

    async def finish(self) -> None:
        assert self.run is not None and self.log_dir is not None
        self.result = result = await self.run.finish()
        for verdict in result.verdicts:
            await self.ctx.emit(verdict)
        await asyncio.to_thread(_write_metadata, self.log_dir, result)
        if result.errors:
            raise AnalyzerError("; ".join(result.errors))

    async def aclose(self) -> None:
        if self.run is not None:
            await self.run.abort()


def _write_metadata(where: Path, result: ZeekRunResult) -> None:
    with open(where / METADATA_FILE, "w", encoding="utf-8") as f:
        for meta in result.metadata:
            f.write(json.dumps(meta.to_dict(), separators=(",", ":"), default=str) + "\n")
