"""The ``sandbox`` analyzer's ``cape`` backend against a stand-in CAPEv2 server.

No CAPE installation is available to the tests, so :class:`CapeStandIn` is a small aiohttp
application (on the loopback address) that follows CAPEv2's documented REST API
(``docs/book/src/usage/api.rst``, ``web/apiv2/urls.py`` and ``views.py``): token
authentication (``Authorization: Token …``, DRF's 401 ``{"detail": …}`` otherwise),
``POST /apiv2/tasks/create/file/`` answering ``{"error": [], "data": {"task_ids": [N]}}``,
``GET /apiv2/tasks/view/N/`` answering ``{"error": false, "data": {"status": …}}`` with
CAPE's task statuses, ``GET /apiv2/tasks/get/report/N/json/`` serving ``report.json``, and
``{"error": true, "error_value": …}`` for CAPE's own errors. It is the only stand-in in the
sandbox tests; everything on the pcapwire side is real."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pcapwire.errors import AnalyzerError
from pcapwire.extract.artifacts import ArtifactStore
from pcapwire.plugins.sandbox import SandboxAnalyzer, SandboxConfig
from pcapwire.records import FileRecord, FlowKey
from pcapwire.workflow import RunInfo, StepContext

TOKEN = "cape-test-token-5f1e9a"  # made up for the stand-in
SAMPLE = b"MZ" + b"\0" * 62 + b"not really a program, just bytes for the stand-in"

CAPE_REPORT: dict[str, Any] = {  # the shape of CAPEv2's reports/report.json (abridged)
    "info": {"id": 7, "version": "2.4-CAPE", "package": "exe", "duration": 120,
             "category": "file"},
    "malscore": 6.5,
    "detections": [{"family": "TestFamily", "details": [{"Yara": "TestFamily"}]}],
    "signatures": [
        {"name": "persistence_autorun", "description": "Installs itself for autorun at "
         "Windows startup", "severity": 3, "confidence": 100, "weight": 1,
         "categories": ["persistence"], "data": []},
        {"name": "network_http", "description": "Performs some HTTP requests",
         "severity": 2, "confidence": 100, "weight": 1, "categories": ["network"],
         "data": []}],
    "network": {
        "hosts": [{"ip": "192.0.2.10", "country_name": "", "hostname": "", "inaddrarpa": "",
                   "ports": [80]}],
        "domains": [{"domain": "update.example.invalid", "ip": "192.0.2.10"}],
        "dns": [{"request": "update.example.invalid", "type": "A",
                 "answers": [{"type": "A", "data": "192.0.2.10"}]}],
        "http": [{"host": "update.example.invalid", "port": 80, "method": "GET",
                  "path": "/payload.bin", "uri": "http://update.example.invalid/payload.bin",
                  "user-agent": "test", "version": "1.1", "data": "GET /payload.bin …"}]},
    "behavior": {"processes": [], "summary": {
        "files": ["C:\\Users\\Public\\payload.bin"], "read_files": [],
        "write_files": ["C:\\Users\\Public\\payload.bin"], "delete_files": [],
        "keys": ["HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run",
                 "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Cryptography"],
        "read_keys": [],
        "write_keys": ["HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Run"
                       "\\updater"],
        "delete_keys": [], "executed_commands": ["C:\\Users\\Public\\payload.bin /quiet"],
        "resolved_apis": [], "mutexes": [], "created_services": [], "started_services": []}},
}


class CapeStandIn:
    """A stand-in CAPEv2 web service following CAPE's documented REST API (module docstring)."""

    def __init__(self, statuses: list[str], report: dict[str, Any] | None = None, *,
                 fail_first: int = 0, task_errors: list[str] | None = None,
                 hang: bool = False) -> None:
        self.statuses = list(statuses)
        self.report = report if report is not None else CAPE_REPORT
        self.fail_first = fail_first
        self.task_errors = task_errors or []
        self.hang = hang
        self.requests: list[tuple[str, str, str]] = []  # method, path, Authorization
        self.submitted: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/apiv2/tasks/create/file/", self.create)
        app.router.add_get("/apiv2/tasks/view/{task_id}/", self.view)
        app.router.add_get("/apiv2/tasks/get/report/{task_id}/json/", self.get_report)
        return app

    def _refused(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        self.requests.append((request.method, request.path, auth))
        if auth != f"Token {TOKEN}":
            return web.json_response({"detail": "Invalid token."}, status=401)
        return None

    async def create(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        if self.hang:
            await asyncio.Event().wait()  # never answers (cancelled at shutdown)
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=503, text="busy")
        form = await request.post()
        f = form["file"]
        assert isinstance(f, web.FileField)
        self.submitted.append({"filename": f.filename, "data": f.file.read(),
                               "fields": {k: v for k, v in form.items() if k != "file"}})
        return web.json_response({"error": [], "errors": [], "data": {
            "task_ids": [7], "message": "Task ID 7 has been submitted"}})

    async def view(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        if request.match_info["task_id"] != "7":
            return web.json_response({"error": True, "error_value": "Task not found in database"})
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return web.json_response({"error": False, "data": {
            "id": 7, "category": "file", "target": "sample.exe", "status": status,
            "errors": self.task_errors, "guest": {}, "sample": {}}})

    async def get_report(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        return web.Response(body=json.dumps(self.report).encode(),
                            content_type="application/json", charset="utf-8")


@pytest.fixture
def sample(tmp_path: Path) -> FileRecord:
    a = ArtifactStore(tmp_path / "artifacts").put(SAMPLE)
    return FileRecord(id="f-cape", sha256=a.sha256, md5=a.md5, sha1=a.sha1, size=a.size,
                      path=a.path, flow=FlowKey(6, "10.0.0.1", 50000, "10.0.0.2", 80),
                      ts=5.0, protocol="http", filename="../evil/setup.exe")


async def run(server: Any, rec: FileRecord, tmp_path: Path, **extra: Any) -> list[Any]:
    config = {"backend": "cape", "cape_url": str(server.make_url("/")), "cape_token": TOKEN,
              "cape_poll_interval": 0.01, "cape_backoff": 0.01, "cape_wait": 30,
              "cape_request_timeout": 10, **extra}
    out: list[Any] = []

    async def emit(item: Any) -> None:
        out.append(item)

    ctx = StepContext(run=RunInfo("run-c", "wf"), step="cape", analyzer="sandbox",
                      config=SandboxConfig.from_mapping(config), workdir=tmp_path / "w",
                      emit_fn=emit)
    async for v in SandboxAnalyzer().analyze(rec, ctx):
        out.append(v)
    return out


async def test_cape_standin_submit_poll_fetch_report_and_score(aiohttp_server, sample,
                                                               tmp_path, caplog) -> None:
    """Against the stand-in that follows CAPE's documented API: the file is submitted with
    the token, polled through pending/running/completed until reported, and the report's
    network, files, registry, commands and signatures become the verdict."""
    caplog.set_level(logging.DEBUG)
    cape = CapeStandIn(["pending", "running", "completed", "reported"])
    server = await aiohttp_server(cape.app())
    (v,) = await run(server, sample, tmp_path, cape_package="exe", cape_analysis_timeout=120)
    (sub,) = cape.submitted
    assert sub == {"filename": "setup.exe", "data": SAMPLE,
                   "fields": {"package": "exe", "timeout": "120"}}
    assert [(m, p) for m, p, _ in cape.requests] == [
        ("POST", "/apiv2/tasks/create/file/"), *[("GET", "/apiv2/tasks/view/7/")] * 4,
        ("GET", "/apiv2/tasks/get/report/7/json/")]
    assert {auth for _, _, auth in cape.requests} == {f"Token {TOKEN}"}
    ev = v.evidence
    assert ev["backend"] == "cape" and ev["engine"] == "CAPE 2.4-CAPE"
    assert ev["network"] == {"dns": ["update.example.invalid"],
                             "urls": ["http://update.example.invalid/payload.bin"],
                             "ips": ["192.0.2.10"]}
    assert ev["files_written"] == ["C:\\Users\\Public\\payload.bin"]
    assert ev["registry"] == [
        {"op": "write", "key": "HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\updater"},
        {"op": "open", "key": "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"}]
    assert ev["processes"] == ["C:\\Users\\Public\\payload.bin /quiet"]
    assert [b["id"] for b in ev["behaviours"]] == [
        "network.download", "network.contact", "persistence.autorun_write", "file.write",
        "process.create", "cape.signature_high", "cape.signature_medium"]
    assert (v.score, v.severity) == (100, "critical")
    assert ev["cape"]["task_id"] == 7 and ev["cape"]["malscore"] == 6.5
    assert [s["name"] for s in ev["cape"]["signatures"]] == ["persistence_autorun",
                                                             "network_http"]
    assert v.signature_id == "sandbox.cape.cape" and "cape" in v.tags
    assert TOKEN not in json.dumps(v.to_dict()) and TOKEN not in caplog.text


async def test_cape_standin_retries_5xx_with_backoff_and_malscore_floor(aiohttp_server, sample,
                                                                        tmp_path) -> None:
    """Stand-in following CAPE's documented API answers 503 twice: the submission is retried
    and succeeds; a report with no behaviour keeps CAPE's malscore as the score floor."""
    cape = CapeStandIn(["reported"], {"info": {"id": 7}, "malscore": 7.3}, fail_first=2)
    server = await aiohttp_server(cape.app())
    (v,) = await run(server, sample, tmp_path, cape_retries=2)
    assert [p for _, p, _ in cape.requests].count("/apiv2/tasks/create/file/") == 3
    assert len(cape.submitted) == 1
    assert (v.score, v.severity, v.evidence["behaviours"]) == (73, "high", [])
    assert v.evidence["cape"]["score_floor"] == 73


async def test_cape_standin_retries_exhausted_is_an_error(aiohttp_server, sample,
                                                          tmp_path) -> None:
    """Stand-in following CAPE's documented API stays busy (503): the error names the
    endpoint and the attempts."""
    cape = CapeStandIn(["reported"], fail_first=10)
    server = await aiohttp_server(cape.app())
    with pytest.raises(AnalyzerError, match=r"CAPE POST http://127\.0\.0\.1:\d+/apiv2/tasks/"
                                            r"create/file/ failed after 2 attempts: HTTP 503"):
        await run(server, sample, tmp_path, cape_retries=1)


async def test_cape_standin_refused_token_is_not_retried_nor_echoed(aiohttp_server, sample,
                                                                    tmp_path, caplog) -> None:
    """Stand-in following CAPE's documented API (DRF token auth) refuses a wrong token."""
    caplog.set_level(logging.DEBUG)
    cape = CapeStandIn(["reported"])
    server = await aiohttp_server(cape.app())
    with pytest.raises(AnalyzerError) as err:
        await run(server, sample, tmp_path, cape_token="wrong-" + TOKEN, cape_retries=3)
    assert "HTTP 401 - the token was refused" in str(err.value)
    assert len(cape.requests) == 1
    assert TOKEN not in str(err.value) and TOKEN not in caplog.text


async def test_cape_standin_token_from_the_environment(aiohttp_server, sample, tmp_path,
                                                       monkeypatch) -> None:
    """Stand-in following CAPE's documented API; the token comes from $PCAPWIRE_CAPE_TOKEN."""
    monkeypatch.setenv("PCAPWIRE_CAPE_TOKEN", TOKEN)
    cape = CapeStandIn(["reported"], {"info": {"id": 7}, "malscore": 0})
    server = await aiohttp_server(cape.app())
    (v,) = await run(server, sample, tmp_path, cape_token="")
    assert (v.score, v.severity) == (0, "info")


async def test_cape_standin_failed_task_is_an_error(aiohttp_server, sample, tmp_path) -> None:
    """Stand-in following CAPE's documented API reports the task as failed_analysis."""
    cape = CapeStandIn(["pending", "failed_analysis"], task_errors=["Timeout hit"])
    server = await aiohttp_server(cape.app())
    with pytest.raises(AnalyzerError, match="CAPE task 7 ended with status failed_analysis: "
                                            "Timeout hit"):
        await run(server, sample, tmp_path)


async def test_cape_standin_task_not_reported_within_cape_wait(aiohttp_server, sample,
                                                               tmp_path) -> None:
    """Stand-in following CAPE's documented API keeps the task running past cape_wait."""
    cape = CapeStandIn(["running"])
    server = await aiohttp_server(cape.app())
    with pytest.raises(AnalyzerError, match=r"CAPE task 7 was not reported within "
                                            r"cape_wait=1 s \(last status 'running'\)"):
        await run(server, sample, tmp_path, cape_wait=1, cape_poll_interval=0.05)


async def test_cape_standin_request_timeout_is_retried_then_reported(aiohttp_server, sample,
                                                                     tmp_path) -> None:
    """Stand-in following CAPE's documented API never answers the submission: every request
    is bounded by cape_request_timeout and retried."""
    cape = CapeStandIn(["reported"], hang=True)
    server = await aiohttp_server(cape.app())
    with pytest.raises(AnalyzerError, match="failed after 2 attempts: TimeoutError"):
        await run(server, sample, tmp_path, cape_request_timeout=0.2, cape_retries=1)
    assert len(cape.requests) == 2


async def test_cape_standin_errors_in_json_are_reported(aiohttp_server, sample, tmp_path) -> None:
    """Stand-in following CAPE's documented API: CAPE's {"error": true, "error_value"}
    answers (HTTP 200) become errors with CAPE's text."""
    cape = CapeStandIn(["reported"], {"error": True,
                                      "error_value": "Reports directory does not exist"})
    server = await aiohttp_server(cape.app())
    with pytest.raises(AnalyzerError, match="report/7/json/: Reports directory does not exist"):
        await run(server, sample, tmp_path)


async def test_cape_unreachable(sample, tmp_path, unused_tcp_port) -> None:
    """No server at all (a closed loopback port): connection errors are retried, then a
    clear error."""
    class Nowhere:
        def make_url(self, path: str) -> str:
            return f"http://127.0.0.1:{unused_tcp_port}{path}"

    with pytest.raises(AnalyzerError, match=r"failed after 2 attempts: ClientConnectorError"):
        await run(Nowhere(), sample, tmp_path, cape_retries=1)
