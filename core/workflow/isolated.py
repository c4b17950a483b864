"""Validate a workflow from outside the server in a child process with limits.

A posted document's checks compile rules and run ``suricata -T``: CPU, memory and I/O that
must never run on the API's event loop, nor without bounds. :func:`check_isolated` runs
:func:`pcapwire.workflow.document.check_workflow` (confined, :mod:`.confine`) in
``python -m pcapwire.workflow.isolated`` with an address-space, CPU-time and file-size
limit; the child is killed (with everything it started: its own process group) when the
wall-clock limit passes or the caller is cancelled. The child answers one JSON object.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import resource
import signal
import sys
from dataclasses import dataclass
from typing import Any

from pcapwire.errors import WorkflowError
from pcapwire.workflow.confine import Confinement

#: Wall-clock seconds one isolated check may take (then it is killed).
MAX_CHECK_SECONDS = 60.0
#: CPU seconds the child may use (RLIMIT_CPU; engines it starts have their own count).
MAX_CHECK_CPU_SECONDS = 60
#: Address space of the child and what it starts (RLIMIT_AS, bytes).
MAX_CHECK_MEMORY_BYTES = 4 * 2**30
#: Largest file the child may write (RLIMIT_FSIZE; Suricata's check writes its logs).
MAX_CHECK_WRITE_BYTES = 64 * 2**20
#: Most bytes of answer read from the child (problems of a 1 MiB document fit easily).
MAX_CHECK_OUTPUT_BYTES = 8 * 2**20
#: Most bytes of the child's diagnostics kept for the server log.
MAX_CHECK_STDERR_BYTES = 64 * 2**10


@dataclass(frozen=True)
class CheckLimits:
    seconds: float = MAX_CHECK_SECONDS
    cpu_seconds: int = MAX_CHECK_CPU_SECONDS
    memory_bytes: int = MAX_CHECK_MEMORY_BYTES
    write_bytes: int = MAX_CHECK_WRITE_BYTES


class CheckFailed(WorkflowError):
    """The isolated check did not answer (killed at a limit, crashed)."""


async def check_isolated(text: str, name: str, confinement: Confinement,
                         limits: CheckLimits | None = None) -> dict[str, Any]:
    """``{"valid", "name", "problems": [Problem as dict]}`` for a posted document."""
    limits = limits or CheckLimits()
    request = json.dumps({"text": text, "name": name, "confinement": confinement.to_dict(),
                          "limits": dataclasses.asdict(limits)}).encode()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pcapwire.workflow.isolated", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(limits.seconds):
            proc.stdin.write(request)
            await proc.stdin.drain()
            proc.stdin.close()
            out, err = await asyncio.gather(_read(proc.stdout, MAX_CHECK_OUTPUT_BYTES),
                                            _read(proc.stderr, MAX_CHECK_STDERR_BYTES))
            code = await proc.wait()
    except TimeoutError:
        raise CheckFailed(f"the workflow's checks took longer than MAX_CHECK_SECONDS="
                          f"{limits.seconds:g} s and were stopped; name fewer or smaller "
                          "rule files") from None
    finally:
        _kill_group(proc.pid)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if code != 0 or len(out) > MAX_CHECK_OUTPUT_BYTES:
        reason = (f"killed by signal {-code}" if code < 0 else f"exit {code}")
        if code == -signal.SIGXCPU or b"MemoryError" in err:
            reason = "a CPU or memory limit was reached"
        raise CheckFailed(f"the workflow's checks failed ({reason}; limits: "
                          f"MAX_CHECK_CPU_SECONDS={limits.cpu_seconds}, "
                          f"MAX_CHECK_MEMORY_BYTES={limits.memory_bytes}); "
                          "name fewer or smaller rule files", )
    return dict(json.loads(out))


async def _read(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes; the rest is drained and dropped."""
    data = await stream.read(limit + 1)
    while await stream.read(65536):
        pass
    return data


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _apply(limits: dict[str, Any]) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"],) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["write_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main() -> int:
    request = json.loads(sys.stdin.buffer.read())
    _apply(request["limits"])
    from pcapwire.hooks.host import build_host
    from pcapwire.workflow.document import check_workflow

    host = build_host()
    wf, problems = check_workflow(request["name"], host, text=request["text"],
                                  confinement=Confinement.from_dict(request["confinement"]))
    answer = {"valid": wf is not None, "name": wf.name if wf is not None else None,
              "problems": [dataclasses.asdict(p) for p in problems]}
    sys.stdout.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
