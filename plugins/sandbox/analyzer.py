"""The ``sandbox`` analyzer: one verdict per carved file, from local emulation and static
analysis (``backend: local``, the default) or from a CAPEv2 sandbox (``backend: cape``).

``local``: each file is analysed in its own process (:mod:`.local`, :mod:`.worker`):
x86/x64 Windows PE files are emulated by speakeasy (never executed on the host) and also
parsed by pefile; other PE files (ARM, .NET) get static analysis; Office documents go
through olevba; every file gets its libmagic type. ``cape``: the file is submitted to CAPE
and its report fetched (:mod:`.cape`). Either way the report becomes
:class:`~.scoring.Observations`, the declared heuristics of :mod:`.scoring` fire, and
their points make the score (README.md has the table).

Failures are step errors of that file (the engine records them and goes on with the next
file): an emulator crash (speakeasy raising inside one of its API handlers), a file over
``max_file_bytes``, an analysis process killed at ``wall_timeout``, CAPE unreachable or
failing the task. When an emulator crash comes after behaviour that scores, that partial
verdict is emitted first (tagged ``emulation-error``), then the error is raised.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
from pcapwire.errors import AnalyzerError
from pcapwire.extract.artifacts import sanitize_filename
from pcapwire.plugins.sandbox import cape, scoring
from pcapwire.plugins.sandbox.local import WALL_GRACE, Limits, run_worker
from pcapwire.records import FileRecord, Verdict
from pcapwire.workflow import Analyzer, AnalyzerConfig, StepContext, option
from pcapwire.workflow.confine import Confinement

#: Python packages the ``local`` backend needs (import name -> distribution).
LOCAL_REQUIREMENTS = {"speakeasy": "speakeasy-emulator", "pefile": "pefile",
                      "oletools": "oletools", "magic": "python-magic"}
DEFAULT_MAX_FILE_BYTES = 64 * 2**20
_HANDLER_FRAME = re.compile(r'speakeasy[/\\]winenv[/\\]api[/\\]\w+[/\\](\w+)\.py", line \d+, '
                            r"in (\w+)")


def _speakeasy_version() -> str:
    try:
        return importlib.metadata.version("speakeasy-emulator")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@dataclass(frozen=True)
class SandboxConfig(AnalyzerConfig):
    backend: Literal["local", "cape"] = option(
        "local", description="local: speakeasy emulation and static analysis on this host; "
        "cape: submit to a CAPEv2 sandbox")
    timeout: int = option(60, minimum=1, maximum=3600, description="local: speakeasy's "
                          "emulation time budget per entry point (seconds)")
    wall_timeout: int = option(0, minimum=0, maximum=86400, description="local: seconds "
                               f"before the analysis process is killed (0: timeout + "
                               f"{WALL_GRACE})")
    max_instructions: int = option(10_000_000, minimum=0, description="local: instructions "
                                   "emulated per entry point (0: no limit)")
    max_api_calls: int = option(10_000, minimum=1, description="local: API calls emulated "
                                "per entry point")
    memory_mb: int = option(2048, minimum=64, maximum=65536, description="local: address "
                            "space limit of the analysis process (MiB)")
    emulate: bool = option(True, description="local: emulate x86/x64 PE files (false: "
                           "static analysis only)")
    max_file_bytes: int = option(DEFAULT_MAX_FILE_BYTES, minimum=1, description="larger "
                                 "files are not analysed (a step error names the file)")
    cape_url: str = option("", kind="server",
                           description="cape: base URL of CAPE's web service, e.g. "
                           "https://cape.example.org (the /apiv2/ paths are added)")
    cape_token: str = option("", secret=True, kind="server", description="cape: API token (sent as "
                             "'Authorization: Token …'; never logged)")
    cape_token_env: str = option("PCAPWIRE_CAPE_TOKEN", kind="server",
                                 description="cape: environment "
                                 "variable holding the token when cape_token is empty")
    cape_package: str = option("", kind="server", description="cape: analysis package (empty: CAPE "
                               "chooses)")
    cape_options: str = option("", kind="server", description="cape: options string passed to CAPE")
    cape_analysis_timeout: int = option(0, minimum=0, description="cape: analysis duration "
                                        "in the VM (seconds; 0: CAPE's default)")
    cape_poll_interval: float = option(10.0, minimum=0.001, description="cape: seconds "
                                       "between status polls")
    cape_wait: float = option(1200.0, minimum=1, description="cape: seconds from submission "
                              "to report before giving up (keep it below the step timeout)")
    cape_request_timeout: float = option(60.0, minimum=0.1, description="cape: timeout of "
                                         "each HTTP request (seconds)")
    cape_retries: int = option(3, minimum=0, maximum=20, description="cape: retries of a "
                               "request after a connection error, a timeout, HTTP 429 or 5xx")
    cape_backoff: float = option(2.0, minimum=0.0, description="cape: first retry delay "
                                 "(seconds), doubled each retry")


class SandboxAnalyzer(Analyzer[SandboxConfig]):
    name = "sandbox"
    input_kind = "file"
    version = f"1.0 (speakeasy {_speakeasy_version()})"
    description = ("Windows PE emulation (speakeasy) with static PE/Office analysis, or a "
                   "CAPEv2 sandbox")

    def check_config(self, config: SandboxConfig, base_dir: Path | None,
                     confinement: Confinement | None = None) -> list[str]:
        if config.backend == "cape":
            if not config.cape_url:
                return ["cape_url: required when backend is cape"]
            try:
                cape.api_root(config.cape_url)
            except AnalyzerError as exc:
                return [str(exc)]
            return []
        missing = [dist for mod, dist in LOCAL_REQUIREMENTS.items()
                   if importlib.util.find_spec(mod) is None]
        if missing:
            return [f"backend local needs the Python packages {', '.join(missing)} "
                    f"(pip install {' '.join(missing)})"]
        return []

    async def analyze(self, record: Any, ctx: StepContext[SandboxConfig]
                      ) -> AsyncIterator[Verdict]:
        if not isinstance(record, FileRecord):
            raise AnalyzerError(f"sandbox takes file records, not {record.kind!r}")
        cfg = ctx.config
        path = Path(record.path).absolute()  # the worker runs in its own directory
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise AnalyzerError(f"file {record.sha256[:16]} is not readable at {path}: "
                                f"{exc.strerror}") from None
        if size > cfg.max_file_bytes:
            raise AnalyzerError(f"file {record.sha256[:16]} ({size} bytes) is larger than "
                                f"max_file_bytes={cfg.max_file_bytes}; not analysed")
        if cfg.backend == "cape":
            yield await self._cape(record, path, cfg, ctx)
            return
        workdir = ctx.workdir / f"sandbox-{record.sha256[:16]}-{uuid.uuid4().hex[:8]}"
        try:
            verdict, crash = await self._local(record, path, cfg, ctx, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if verdict is not None:
            yield verdict
        if crash:
            raise AnalyzerError(crash)

    # ---- local ----------------------------------------------------------------------------
    async def _local(self, record: FileRecord, path: Path, cfg: SandboxConfig,
                     ctx: StepContext[SandboxConfig], workdir: Path
                     ) -> tuple[Verdict | None, str]:
        limits = Limits(timeout=cfg.timeout,
                        wall_timeout=cfg.wall_timeout or cfg.timeout + WALL_GRACE,
                        max_instructions=cfg.max_instructions,
                        max_api_calls=cfg.max_api_calls, memory_mb=cfg.memory_mb,
                        emulate=cfg.emulate)
        result = await run_worker(path, limits, workdir)
        if result.get("errors"):  # a parser refused the file
            err = result["errors"][0]
            raise AnalyzerError(f"{err['stage']} could not parse file {record.sha256[:16]} "
                                f"({result.get('file_type', {}).get('description', '?')}): "
                                f"{err['message']}")
        findings = scoring.Findings()
        evidence = _base_evidence(record, "local")
        evidence["file_type"] = result.get("file_type", {})
        tags = ["sandbox"]
        crash = ""
        kind = result.get("kind")
        if kind == "pe":
            pe = result["pe"]
            emu = result.get("emulation") or {}
            report = emu.get("report")
            scoring.pe_findings(pe, findings, emulated=report is not None)
            evidence["pe"] = scoring.pe_summary(pe)
            evidence["engine"] = emu.get("engine", "pefile")
            analysis = "static"
            if report is not None:
                obs = scoring.from_speakeasy(report)
                scoring.behaviour_findings(obs, findings)
                evidence.update(obs.evidence())
                evidence["emulation"] = _emulation_summary(emu, limits)
                crash = emulator_crash(report, record)
                if any("stopped" in ep for ep in evidence["emulation"]["entry_points"]):
                    tags.append("incomplete")
                analysis = "emulation"
            else:
                if "error" in emu:
                    err = emu["error"]
                    crash = (f"speakeasy could not {err['stage']} file {record.sha256[:16]}: "
                             f"{err['message']}")
                    if "NOMEM" in err["message"] or "MemoryError" in err["message"]:
                        crash += f" (memory_mb={cfg.memory_mb} is too low)"
                evidence["emulation"] = {"skipped": emu.get("skipped")
                                         or "emulator error (see the step's errors)"}
        elif kind in DOCUMENT_ANALYSES:
            score_facts, engine = DOCUMENT_ANALYSES[kind]
            facts = result[kind]
            score_facts(facts, findings)
            evidence["engine"], evidence[kind] = engine, facts
            analysis = kind
            if facts.get("limits"):  # a limit stopped the analysis early
                tags.append("incomplete")
        else:
            evidence["engine"] = "libmagic"
            analysis = "unsupported"
        if crash:
            tags.append("emulation-error")
        score, severity = scoring.grade(findings)
        if crash and not findings.fired:
            return None, crash
        return _verdict(ctx, record, "local", analysis, findings, score, severity, evidence,
                        tags), crash

    # ---- CAPE -----------------------------------------------------------------------------
    async def _cape(self, record: FileRecord, path: Path, cfg: SandboxConfig,
                    ctx: StepContext[SandboxConfig]) -> Verdict:
        if not cfg.cape_url:
            raise AnalyzerError("backend cape needs cape_url")
        token = cfg.cape_token or os.environ.get(cfg.cape_token_env, "")
        fields = {"package": cfg.cape_package, "options": cfg.cape_options,
                  "timeout": str(cfg.cape_analysis_timeout) if cfg.cape_analysis_timeout
                  else ""}
        filename = sanitize_filename(record.filename, default=f"{record.sha256}.bin")
        async with aiohttp.ClientSession() as session:
            client = cape.CapeClient(cfg.cape_url, token, session=session,
                                     request_timeout=cfg.cape_request_timeout,
                                     retries=cfg.cape_retries, backoff=cfg.cape_backoff)
            task_id, report = await cape.analyze(
                client, path, filename, {k: v for k, v in fields.items() if v},
                poll_interval=cfg.cape_poll_interval, wait=cfg.cape_wait)
        findings = scoring.Findings()
        obs = scoring.from_cape(report)
        scoring.behaviour_findings(obs, findings)
        sigs, floor = scoring.cape_findings(report, findings)
        score, severity = scoring.grade(findings, floor)
        evidence = _base_evidence(record, "cape")
        evidence.update(obs.evidence())
        info = report.get("info") or {}
        evidence["engine"] = f"CAPE {info.get('version', '')}".strip()
        evidence["cape"] = {"task_id": task_id, "api": cape.public_url(client.api),
                            "malscore": report.get("malscore"), "score_floor": floor,
                            "signatures": sigs[:scoring.MAX_ITEMS],
                            "detections": report.get("detections"),
                            "package": info.get("package"), "duration": info.get("duration")}
        return _verdict(ctx, record, "cape", "cape", findings, score, severity, evidence,
                        ["sandbox", "cape"])


#: Static analyses of documents in the worker: kind -> (scoring of its facts, engine named
#: in the evidence). The facts are under the kind's name in the worker's result.
DOCUMENT_ANALYSES: dict[str, tuple[Callable[[dict[str, Any], scoring.Findings], None], str]] = {
    "office": (scoring.office_findings, "olevba"),
    "pdf": (scoring.pdf_findings, "pdf names (pdfid's list, compressed objects included)"),
    "rtf": (scoring.rtf_findings, "rtfobj"),
}


def _base_evidence(record: FileRecord, backend: str) -> dict[str, Any]:
    return {"backend": backend, "sha256": record.sha256, "size": record.size,
            "filename": record.filename}


def _verdict(ctx: StepContext[SandboxConfig], record: FileRecord, backend: str,
             analysis: str, findings: scoring.Findings, score: int, severity: str,
             evidence: dict[str, Any], tags: list[str]) -> Verdict:
    evidence["analysis"] = analysis
    evidence["score"] = score
    evidence["behaviours"] = findings.to_list()
    ids = list(findings.fired)
    if ids:
        signature = "sandbox: " + ", ".join(ids)
    elif analysis == "unsupported":
        signature = "sandbox: file type not analysed"
    else:
        signature = "sandbox: nothing suspicious found"
    return ctx.verdict_for(record, severity=severity, score=score,
                           signature_id=f"sandbox.{backend}.{analysis}", signature=signature,
                           category="sandbox", tags=list(dict.fromkeys([*tags, analysis, *ids])),
                           evidence=evidence)


def _stopped(ep: dict[str, Any], limits: Limits) -> str | None:
    err = ep.get("error") or {}
    etype = str(err.get("type", ""))
    if err.get("traceback"):
        return "the emulator crashed (see the step's errors)"
    if etype == "max_api_count":
        return f"max_api_calls={limits.max_api_calls} reached (last {err.get('last_api')})"
    if etype == "unsupported_api":
        return f"API not emulated by speakeasy: {err.get('api_name')}"
    if etype:
        return f"the sample faulted: {etype} at {err.get('pc')}"
    if ep.get("ret_val") is None:
        return (f"did not return within timeout={limits.timeout} s or max_instructions="
                f"{limits.max_instructions or 'unlimited'}")
    return None


def _emulation_summary(emu: dict[str, Any], limits: Limits) -> dict[str, Any]:
    eps = []
    for ep in emu["report"].get("entry_points", []):
        item = {"type": ep.get("ep_type"), "returned": ep.get("ret_val"),
                "api_calls": len(ep.get("apis") or [])}
        why = _stopped(ep, limits)
        if why:
            item["stopped"] = why
        eps.append(item)
    return {"engine": emu.get("engine"), "seconds": emu.get("elapsed"),
            "arch": emu["report"].get("arch"), "os": emu["report"].get("os_run"),
            "entry_points": eps,
            "limits": {"timeout": limits.timeout, "max_instructions": limits.max_instructions,
                       "max_api_calls": limits.max_api_calls}}


def emulator_crash(report: dict[str, Any], record: FileRecord) -> str:
    """A clear message when speakeasy itself raised (an emulator bug), else ``""``."""
    for ep in report.get("entry_points", []):
        err = ep.get("error") or {}
        tb = str(err.get("traceback") or "")
        if not tb:
            continue
        frames = _HANDLER_FRAME.findall(tb)
        where = (f"its {frames[-1][0]}.{frames[-1][1]} API handler" if frames
                 else "its own code")
        lines = [ln for ln in tb.splitlines() if ln.strip()]
        exc = lines[-1].strip() if lines else str(err.get("type"))
        done = len(ep.get("apis") or [])
        return (f"speakeasy crashed in {where} while emulating {ep.get('ep_type')} of file "
                f"{record.sha256[:16]} (pc {err.get('pc')}): {exc} - an emulator bug, not a "
                f"property of the file; {done} API calls of that entry point were emulated "
                "before it")
    return ""
