"""Job kind ``sandbox``: analyse one carved file with the ``sandbox`` plugin's local backend
(:class:`pcapwire.plugins.sandbox.SandboxAnalyzer`: speakeasy emulation and static analysis
in a process of its own, bounded in time and memory; the file is never executed on the
host) and return its verdicts.

Parameters: ``file`` (inside the tenant's directory, in a carve directory: under its
``artifacts/`` or ``named/``), optional ``profile`` (a key of :data:`PROFILES`, default
``emulate``). The analyser's options come from the profile, never from the job. Output:
``sha256``, ``filename``, ``profile``, ``severity`` and ``score`` (the highest of the
verdicts; ``info``/0 when none), ``verdicts`` (as dicts).

Fails with ``not_carved`` when the file is not a file of a complete carve directory
(``summary.json`` written, the file listed in ``files.jsonl``: its record, flow and
hashes come from there), ``sandbox_unavailable`` when the analyser's Python packages are
missing, ``sandbox_error`` when the analysis failed (an emulator crash, a parser refusing
the file, a limit: the message says which; ``data.verdicts`` keeps a verdict emitted
before the crash).
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path
from typing import Any

from pcapwire.jobs.handlers import JobContext, param
from pcapwire.jobs.model import JobError

#: profile -> the sandbox options it sets (the rest are the analyser's defaults)
PROFILES: dict[str, dict[str, Any]] = {"emulate": {}, "static": {"emulate": False}}
DEFAULT_PROFILE = "emulate"


def run(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    from pcapwire.errors import AnalyzerError
    from pcapwire.plugins.sandbox import SandboxAnalyzer, SandboxConfig
    from pcapwire.records import FileRecord, Verdict
    from pcapwire.workflow import RunInfo, StepContext, severity_for_score

    path = ctx.path(params, "file")
    profile = param(params, "profile", str, DEFAULT_PROFILE)
    if profile not in PROFILES:
        raise JobError("invalid_params", f"parameter 'profile': no profile {profile!r:.80}; "
                       f"choose from {', '.join(PROFILES)}")
    record = FileRecord.from_dict({**_carved(path, ctx), "path": str(path)})
    config = SandboxConfig.from_mapping(PROFILES[profile])
    analyzer = SandboxAnalyzer()
    problems = analyzer.check_config(config, None)
    if problems:
        raise JobError("sandbox_unavailable", "; ".join(problems))

    async def analyze(workdir: Path) -> tuple[list[Verdict], str]:
        step = StepContext(run=RunInfo(uuid.uuid4().hex, "sandbox-job"), step="sandbox",
                           analyzer="sandbox", config=config, workdir=workdir,
                           data_dir=ctx.root, keep=False, keep_warm=False)
        verdicts: list[Verdict] = []
        try:
            async for v in analyzer.analyze(record, step):
                verdicts.append(v)
        except AnalyzerError as exc:
            return verdicts, str(exc)
        finally:
            await analyzer.aclose()
        return verdicts, ""

    with tempfile.TemporaryDirectory(prefix="pcapwire-sandbox-job-") as tmp:
        verdicts, error = asyncio.run(analyze(Path(tmp)))
    found = [v.to_dict() for v in verdicts]
    if error:
        raise JobError("sandbox_error", error, {"verdicts": found})
    score = max((v.score for v in verdicts), default=0)
    return {"sha256": record.sha256, "filename": record.filename, "profile": profile,
            "score": score, "severity": severity_for_score(score), "verdicts": found}


def _carved(path: Path, ctx: JobContext) -> dict[str, Any]:
    """The ``files.jsonl`` record of ``path`` in the nearest complete carve directory
    above it (inside the tenant's directory)."""
    from pcapwire.extract.layout import CarveDir

    shown = path.relative_to(ctx.root)
    if not path.is_file():
        raise JobError("not_carved", f"{shown} is not a file")
    for folder in path.parents:
        if folder == ctx.root or not folder.is_relative_to(ctx.root):
            break
        carve = CarveDir(folder)
        if not carve.complete:
            continue
        for row in carve.files():
            content = carve.content(str(row.get("sha256", "")))
            if content is not None and content.samefile(path):
                return row
        break
    raise JobError("not_carved", f"{shown} is not a carved file: give a file of a complete "
                   "carve directory (under its artifacts/ or named/, listed in files.jsonl)")
