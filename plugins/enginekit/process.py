"""An engine subprocess that is always reaped.

Each engine runs in its own session (process group), so stopping it also stops anything
it started. Its output (stdout and stderr, one pipe) is drained continuously (a full pipe
would block the engine) into a bounded tail kept for error messages, and every line can be
handed to a callback (rule load errors, readiness). :meth:`EngineProcess.stop` sends
SIGTERM, then SIGKILL after :data:`KILL_GRACE_S`, and always waits for the exit status, so
no zombie is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from pcapwire.errors import AnalyzerError

log = logging.getLogger(__name__)

#: Lines of an engine's output (stdout + stderr) kept for error messages.
OUTPUT_TAIL_LINES = 200
#: Longest output line kept (longer lines are cut; the engine is never blocked by them).
OUTPUT_MAX_LINE = 64 * 1024
#: Seconds between SIGTERM and SIGKILL when stopping an engine.
KILL_GRACE_S = 5.0


def describe_returncode(rc: int | None) -> str:
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return f"killed by {name}"
    return f"exit status {rc}"


class EngineProcess:
    """One engine subprocess (``argv``), started by :meth:`start`, reaped by :meth:`stop`.

    stdout and stderr share one pipe, so lines keep the order the engine wrote them in
    (Suricata prints info on stdout and errors on stderr; a summary line must not overtake
    the errors it summarises).
    """

    def __init__(self, name: str, argv: Sequence[str], *, cwd: str | Path | None = None,
                 stdin: int | None = asyncio.subprocess.DEVNULL,
                 on_output_line: Callable[[str], None] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.cwd = str(cwd) if cwd is not None else None
        self._stdin, self._env = stdin, env
        self.on_output_line = on_output_line
        self.output_tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
        self.proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    async def start(self) -> None:
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, cwd=self.cwd, stdin=self._stdin, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True, env=self._env,
                limit=OUTPUT_MAX_LINE)
        except FileNotFoundError as exc:
            raise AnalyzerError(f"{self.name}: executable not found: {self.argv[0]}") from exc
        except PermissionError as exc:
            raise AnalyzerError(f"{self.name}: cannot execute {self.argv[0]}: {exc}") from exc
        assert self.proc.stdout is not None
        self._drain = asyncio.create_task(self._drain_lines(self.proc.stdout),
                                          name=f"{self.name}-output")
        log.debug("%s started, pid %s: %s", self.name, self.proc.pid, " ".join(self.argv))

    async def _drain_lines(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # longer than OUTPUT_MAX_LINE: asyncio has dropped it
                raw = f"[output line longer than {OUTPUT_MAX_LINE} bytes cut]\n".encode()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.output_tail.append(line)
            if self.on_output_line is not None:
                try:
                    self.on_output_line(line)
                except Exception:  # a parsing bug must not stop the drain
                    log.exception("%s: output callback failed on %r", self.name, line)

    def output_text(self, lines: int = 20) -> str:
        """The last ``lines`` lines the engine printed (stdout and stderr, in order)."""
        return "\n".join(list(self.output_tail)[-lines:])

    async def wait(self) -> int:
        """Exit status once the process has ended and its output is fully read."""
        assert self.proc is not None
        rc = await self.proc.wait()
        if self._drain is not None and not self._drain.done():
            # asyncio.wait: a drain task cancelled by a closing loop is not our error
            await asyncio.wait({self._drain})
        return rc

    def _signal_group(self, sig: int) -> None:
        # Only while the child is not yet reaped: until then its pid (= process group id)
        # cannot have been reused by another process.
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    async def stop(self, grace: float = KILL_GRACE_S) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (at once when ``grace`` is 0);
        returns the exit status (reaped)."""
        if self.proc is None:
            return None
        if self.proc.returncode is None and grace <= 0:
            self._signal_group(signal.SIGKILL)  # asked for: no warning
        elif self.proc.returncode is None:
            self._signal_group(signal.SIGTERM)
            self._signal_group(signal.SIGCONT)  # a stopped engine must run to handle SIGTERM
            try:
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), grace)
            except TimeoutError:
                log.warning("%s (pid %s) ignored SIGTERM for %.1f s; killing it", self.name,
                            self.proc.pid, grace)
                self._signal_group(signal.SIGKILL)
        return await self.wait()

    def kill_now(self) -> None:
        """SIGKILL without waiting (for synchronous cleanup paths); reap with :meth:`wait`."""
        self._signal_group(signal.SIGKILL)
