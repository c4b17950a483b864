"""The ``local`` backend, parent side: one analysis process per file
(:mod:`pcapwire.plugins.sandbox.worker`), bounded in wall time, address space and CPU time,
killed with its whole process group when a limit is passed, and always reaped.

:func:`run_worker` returns the worker's raw facts; :class:`WorkerError` says what went
wrong (with the process id, so callers can check nothing was left behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcapwire.errors import AnalyzerError

#: Seconds added to ``timeout`` for the process's wall-clock limit when ``wall_timeout``
#: is 0 (interpreter start, imports, report writing).
WALL_GRACE = 30
#: Largest result file read back from a worker (bytes); the worker's RLIMIT_FSIZE too.
MAX_RESULT_BYTES = 64 * 2**20
#: Bytes of the worker's stderr quoted in an error.
STDERR_TAIL = 2000
#: The worker runs as a script (``-I``: isolated mode), so it imports nothing of pcapwire.
WORKER_SCRIPT = Path(__file__).with_name("worker.py")


@dataclass(frozen=True)
class Limits:
    timeout: int  # speakeasy's emulation budget (seconds)
    wall_timeout: float  # seconds before the process is killed
    max_instructions: int  # 0: none
    max_api_calls: int
    memory_mb: int
    emulate: bool = True

    def to_job(self) -> dict[str, Any]:
        return {"timeout": self.timeout, "max_instructions": self.max_instructions,
                "max_api_calls": self.max_api_calls, "memory_mb": self.memory_mb,
                "cpu_seconds": int(self.wall_timeout) + 5, "emulate": self.emulate,
                "max_result_bytes": MAX_RESULT_BYTES}


class WorkerError(AnalyzerError):
    """The analysis process failed; ``pid`` is the process that was started (and reaped)."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


def _env() -> dict[str, str]:
    """A minimal environment: no secrets of the host process reach the worker."""
    keep = ("PATH", "LANG", "LC_ALL")
    return {k: os.environ[k] for k in keep if k in os.environ}


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - STDERR_TAIL))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the worker's process group, then reap it (no zombie is left)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()


async def run_worker(sample: str | Path, limits: Limits, workdir: Path) -> dict[str, Any]:
    """Analyse ``sample`` in a fresh worker process; the worker's result (raw facts)."""
    workdir.mkdir(parents=True, exist_ok=True)
    job_path = workdir / "job.json"
    result_path = workdir / "result.json"
    stderr_path = workdir / "stderr.txt"
    job_path.write_text(json.dumps({"sample": str(sample), "result": str(result_path),
                                    "limits": limits.to_job()}))
    with stderr_path.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", str(WORKER_SCRIPT), str(job_path),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=err, cwd=str(workdir), env=_env(), start_new_session=True)
    try:
        await asyncio.wait_for(proc.wait(), limits.wall_timeout)
    except TimeoutError:
        await asyncio.shield(_kill(proc))
        raise WorkerError(f"analysis exceeded wall_timeout={limits.wall_timeout:g} s; the "
                          f"emulator process (pid {proc.pid}) was killed", proc.pid) from None
    finally:
        if proc.returncode is None:  # cancelled (step timeout, run cancelled)
            await asyncio.shield(_kill(proc))
    rc = proc.returncode
    if rc != 0:
        assert rc is not None
        how = f"was killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"
        tail = _tail(stderr_path)
        hint = ""
        if rc in (-signal.SIGXCPU, -signal.SIGKILL):
            hint = " (its CPU-time limit was reached)"
        elif any(s in tail for s in ("MemoryError", "Cannot allocate memory", "failed to map")):
            hint = f" (its address-space limit memory_mb={limits.memory_mb} was reached)"
        raise WorkerError(f"analysis process (pid {proc.pid}) {how}{hint}"
                          + (f": {tail.splitlines()[-1]}" if tail else ""), proc.pid)
    try:
        size = result_path.stat().st_size
        if size > MAX_RESULT_BYTES:
            raise WorkerError(f"analysis result is {size} bytes, over MAX_RESULT_BYTES="
                              f"{MAX_RESULT_BYTES}", proc.pid)
        result: dict[str, Any] = json.loads(result_path.read_text())
    except (OSError, ValueError) as exc:
        raise WorkerError(f"analysis process (pid {proc.pid}) left no readable result: "
                          f"{exc}", proc.pid) from None
    result["pid"] = proc.pid
    return result
