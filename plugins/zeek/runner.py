"""One Zeek process per run, reading the run's chunks as one pcap on stdin (``-r -``).

The process runs in the run's log directory, so Zeek writes its logs there in its own
format and layout (``conn.log``, ``http.log``, ...), where they stay with the case for
``zeek-cut``, ZAT or any other Zeek tooling. Lifecycle::

    runner = ZeekRunner(settings, log_dir)
    await runner.start()
    await runner.feed(chunk.data)        # any number of times
    logs = await runner.finish()         # end of input; waits finish_timeout; ZeekLogs
    # or: await runner.kill()            # on timeout/cancel; always reaps the process
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from pcapwire.errors import AnalyzerError
from pcapwire.pcapformat import PcapJoiner
from pcapwire.plugins.enginekit.process import EngineProcess, describe_returncode
from pcapwire.plugins.zeek.config import NOT_FOUND, ZeekSettings
from pcapwire.plugins.zeek.logs import ZeekLogs

log = logging.getLogger(__name__)

SCRIPT_NAME = "pcapwire.zeek"


class ZeekNotFoundError(AnalyzerError):
    def __init__(self) -> None:
        super().__init__(NOT_FOUND)


class ZeekRunner:
    def __init__(self, settings: ZeekSettings, log_dir: str | Path) -> None:
        self.settings = settings
        self.log_dir = Path(log_dir)
        self.process: EngineProcess | None = None
        self._joiner = PcapJoiner()

    async def start(self) -> None:
        binary = self.settings.resolve_binary()
        if binary is None:
            raise ZeekNotFoundError()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        script = self.log_dir / SCRIPT_NAME
        script.write_text(self.settings.script_text())
        # -C: no checksum validation (captures taken on the sending host carry offloaded
        # checksums); the generated script comes last so its redefs win.
        argv = [binary, "-C", "-r", "-", *self.settings.args, str(script)]
        self.process = EngineProcess("zeek", argv, cwd=self.log_dir,
                                     stdin=asyncio.subprocess.PIPE)
        await self.process.start()

    @property
    def linktype(self) -> int | None:
        return self._joiner.linktype

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _describe(self, what: str) -> str:
        assert self.process is not None
        rc = self.process.returncode
        status = what if rc is None else f"{what} ({describe_returncode(rc)})"
        return f"zeek {status}; its last output:\n{self.process.output_text()}"

    async def feed(self, data: bytes, where: str = "") -> None:
        proc = self.process.proc if self.process else None
        if proc is None or proc.stdin is None:
            raise AnalyzerError("zeek: the runner is not started")
        out = self._joiner.join(data, where)
        try:
            proc.stdin.write(out)
            await proc.stdin.drain()
        except (ConnectionError, OSError) as exc:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.finish_timeout):
                    await proc.wait()
            raise AnalyzerError(self._describe(
                f"stopped reading its input at {where or 'a chunk'}")) from exc

    async def finish(self) -> ZeekLogs:
        """End of input; wait for Zeek to write its logs and exit; the run's logs."""
        assert self.process is not None and self.process.proc is not None
        proc = self.process.proc
        if self._joiner.header is None:
            # Nothing was fed: nothing to analyse (zeek refuses an input without a header).
            await self.kill()
            return ZeekLogs(self.log_dir)
        try:
            if proc.stdin is not None:
                proc.stdin.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await proc.stdin.wait_closed()
            try:
                async with asyncio.timeout(self.settings.finish_timeout):
                    rc = await self.process.wait()
            except TimeoutError:
                raise AnalyzerError(self._describe(
                    f"did not finish within {self.settings.finish_timeout:g} s after the end "
                    "of its input")) from None
            if rc != 0:
                raise AnalyzerError(self._describe("failed"))
        finally:
            await self.kill()
        return ZeekLogs(self.log_dir)

    async def kill(self) -> None:
        """Stop now (idempotent); the process is reaped. Logs written so far stay."""
        if self.process is None:
            return
        proc = self.process.proc
        if proc is not None and proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        await self.process.stop()
