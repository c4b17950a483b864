"""One workflow run through Zeek: chunks in on stdin, logs kept in ``log_dir``, verdicts
and metadata out when Zeek has written its logs (Zeek logs on connection close, so its
findings arrive at the end of the run, unlike Suricata's alerts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pcapwire.errors import AnalyzerError
from pcapwire.pcapformat import LinktypeChangedError
from pcapwire.plugins.zeek.config import ZeekSettings
from pcapwire.plugins.zeek.logs import ZeekLogs
from pcapwire.plugins.zeek.runner import ZeekRunner
from pcapwire.plugins.zeek.verdicts import ZeekMetadata, findings
from pcapwire.records import PcapChunk, Verdict


@dataclass
class ZeekRunResult:
    log_dir: Path
    logs: ZeekLogs
    verdicts: list[Verdict] = field(default_factory=list)
    metadata: list[ZeekMetadata] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class ZeekRun:
    def __init__(self, settings: ZeekSettings, log_dir: str | Path, *, step: str = "",
                 case: str = "", query_id: str = "") -> None:
        self.settings = settings
        self.runner = ZeekRunner(settings, log_dir)
        self.ctx = {"step": step, "case": case, "query_id": query_id}
        self._skipped: dict[int, int] = {}
        self._closed = False

    async def start(self) -> None:
        await self.runner.start()

    async def feed(self, chunk: PcapChunk) -> None:
        await self.feed_bytes(chunk.data, f"query {chunk.query_id} chunk {chunk.seq}")

    async def feed_bytes(self, data: bytes, where: str = "input") -> None:
        """One complete pcap. Chunks of a second link type are skipped and reported (Zeek
        reads one link type per process)."""
        if self._closed:
            raise AnalyzerError("zeek: the run is already finished")
        try:
            await self.runner.feed(data, where)
        except LinktypeChangedError as exc:
            self._skipped[exc.now] = self._skipped.get(exc.now, 0) + 1

    async def finish(self) -> ZeekRunResult:
        self._closed = True
        logs = await self.runner.finish()
        found = findings(logs, notice_severity=self.settings.notice_severity, **self.ctx)
        errors = [f"link type {lt}: {n} chunk(s) not analysed (this run's Zeek reads link "
                  f"type {self.runner.linktype})" for lt, n in self._skipped.items()]
        errors += [f"{log}.log: {n} record(s) beyond the metadata limit (kept in the log file)"
                   for log, n in found.truncated.items()]
        return ZeekRunResult(self.runner.log_dir, logs, found.verdicts, found.metadata, errors)

    async def abort(self) -> None:
        self._closed = True
        await self.runner.kill()
