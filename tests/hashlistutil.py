"""Helpers for the hash-list tests: a capture of HTTP downloads (one TCP connection per
file, from :mod:`pcapwire.testing`) and the step context of an analyzer outside the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pcapwire.testing import http_download, write_capture
from pcapwire.workflow import RunInfo, StepContext
from pcapwire.workflow.queries import LocalQueries

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"
T0 = 1_700_000_000.0


def http_pcap(path: Path, files: list[tuple[str, bytes]], first_port: int = 40000) -> None:
    """One HTTP/1.1 GET per file, each on its own connection from port ``first_port + i``
    to port 80, 1 ms between packets from :data:`T0`."""
    write_capture(path, [http_download(f"{CLIENT}:{first_port + i} > {SERVER}:80",
                                       f"/files/{name}", body)
                         for i, (name, body) in enumerate(files)], start=T0)


def step_context(tmp_path: Path, config: Any, out: list[Any], *, data_dir: Path | None,
                 case: str = "IR-9", outputs: tuple[str, ...] = ("verdict", "file"),
                 analyzer: str = "hashlist") -> StepContext:
    async def emit(item: Any) -> None:
        out.append(item)

    # the CLI's query function on the data directory's store (the follow-up queries)
    queries = LocalQueries(data_dir) if data_dir is not None else None
    return StepContext(run=RunInfo("run-1", "wf", case=case, query_id="q-1"), step="triage",
                       analyzer=analyzer, config=config, workdir=tmp_path / "work",
                       outputs=outputs, emit_fn=emit, data_dir=data_dir, queries=queries)
