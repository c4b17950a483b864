"""Run a job on this machine, in a child process: ``python -m pcapwire.cli --data-dir D
worker --job -`` with the job's JSON on stdin and its :class:`~pcapwire.jobs.JobResult` on
stdout. The child isolates the parsing of untrusted bytes and keeps CPU work off the
caller's event loop; cancelling :func:`run` stops the child.

A child that dies without a result (killed, crashed) gives ``worker_died`` with the tail of
its stderr; the submitter never parses that text, it only shows it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pcapwire.jobs.model import Job, JobError, JobResult

#: stderr of a dead worker kept in its ``worker_died`` message
STDERR_TAIL_CHARS = 500


def worker_argv(data_dir: Path, read_roots: Sequence[Path] = (),
                workflow_dirs: Sequence[Path] = ()) -> list[str]:
    """The command line of a one-job worker on the store ``data_dir``."""
    flags = [f"--read-root={r}" for r in read_roots]
    flags += [f"--workflows={d}" for d in workflow_dirs]
    return [sys.executable, "-m", "pcapwire.cli", "--data-dir", str(data_dir), "worker",
            "--job", "-", *flags]


async def run(job: Job, data_dir: Path, *, read_roots: Sequence[Path] = (),
              workflow_dirs: Sequence[Path] = (), kill_grace_s: float = 0.0,
              started: Callable[[int], None] | None = None) -> JobResult:
    """Run ``job`` on the store ``data_dir`` in a worker child; ``read_roots`` and
    ``workflow_dirs`` as in :func:`pcapwire.jobs.runner.run_job` (given to the child as
    ``--read-root`` / ``--workflows``); ``started`` is told the child's pid. When the
    caller is cancelled the child gets SIGTERM (a job that can stop cleanly does so) and
    SIGKILL after ``kill_grace_s`` (at once by default); the cancellation then goes on."""
    proc = await asyncio.create_subprocess_exec(
        *worker_argv(data_dir, read_roots, workflow_dirs), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        if started is not None:
            started(proc.pid)
        out, err = await proc.communicate(job.to_json())
    except BaseException:
        await _stop(proc, kill_grace_s)
        raise
    try:
        return JobResult.from_json(out)
    except JobError:
        tail = err.decode(errors="replace").strip()[-STDERR_TAIL_CHARS:]
        return JobResult(job.unit_id, False, "worker_died",
                         f"the worker exited {proc.returncode} without a result: {tail}")


async def _stop(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds (0: SIGKILL only)."""
    try:
        if grace > 0:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), grace)
                return
            except TimeoutError:
                pass
        proc.kill()
    except ProcessLookupError:  # exited meanwhile
        pass
    await proc.wait()
