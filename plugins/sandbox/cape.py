"""The ``cape`` backend: a client of CAPEv2's REST API (``/apiv2/``, Django REST framework).

Per file: submit (``POST /apiv2/tasks/create/file/``, multipart field ``file``), poll
(``GET /apiv2/tasks/view/{id}/`` until ``data.status`` is ``reported``), fetch the report
(``GET /apiv2/tasks/get/report/{id}/json/``). Authentication is CAPE's token header
``Authorization: Token <token>`` (only sent when a token is configured). CAPE answers API
errors with HTTP 200 and ``{"error": true, "error_value": "..."}``; on success ``error`` is
``false`` or an empty list and the payload is under ``data``.

Every request has a timeout (``cape_request_timeout``). Connection errors, timeouts, HTTP
429 and 5xx are retried ``cape_retries`` times with exponential backoff
(``cape_backoff * 2**attempt`` seconds); other HTTP errors and CAPE's own errors are not.
The whole submission is bounded by ``cape_wait``. The token never appears in a log line,
an error message or a verdict (URLs are shown without credentials).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
from pcapwire.errors import AnalyzerError
from yarl import URL

#: Task statuses after which no report will come (CAPEv2 ``lib/cuckoo/core/database.py``).
FAILED_STATUSES = frozenset({"failed_analysis", "failed_processing", "failed_reporting",
                             "banned"})
#: The status at which ``report.json`` exists.
DONE_STATUS = "reported"
#: Largest report read (bytes); a larger one is an error, not a memory problem.
MAX_REPORT_BYTES = 256 * 2**20
#: Longest single backoff (seconds).
MAX_BACKOFF = 60.0

log = logging.getLogger(__name__)


class CapeError(AnalyzerError):
    """CAPE refused or failed a request (message names the endpoint, never the token)."""


class _Retryable(Exception):
    pass


def public_url(url: str | URL) -> str:
    """``url`` without user name and password (for messages)."""
    u = URL(url)
    return str(u.with_user(None)) if u.is_absolute() else str(u)


def api_root(base_url: str) -> URL:
    """``https://cape.example.org`` (or ``…/apiv2``) -> ``https://cape.example.org/apiv2/``."""
    root = base_url.rstrip("/")
    if URL(root).scheme not in ("http", "https") or not URL(root).host:
        raise CapeError(f"cape_url must be http(s)://host[:port], got {public_url(root)!r}")
    return URL(root + "/" if root.endswith("/apiv2") else root + "/apiv2/")


class CapeClient:
    def __init__(self, base_url: str, token: str, *, session: aiohttp.ClientSession,
                 request_timeout: float, retries: int, backoff: float) -> None:
        self.api = api_root(base_url)
        self._headers = {"Authorization": f"Token {token}"} if token else {}
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=request_timeout)
        self.retries = retries
        self.backoff = backoff

    def _url(self, path: str) -> URL:
        return URL(str(self.api) + path)

    async def _request(self, method: str, path: str, *, data_factory: Any = None,
                       max_bytes: int = 16 * 2**20) -> Any:
        url = self._url(path)
        where = f"{method} {public_url(url)}"
        for attempt in range(self.retries + 1):
            try:
                return await self._once(method, url, where, data_factory, max_bytes)
            except _Retryable as exc:
                if attempt >= self.retries:
                    raise CapeError(f"CAPE {where} failed after {attempt + 1} attempts: "
                                    f"{exc}") from None
                delay = min(MAX_BACKOFF, self.backoff * 2 ** attempt)
                log.warning("CAPE %s: %s; retry %d/%d in %.2g s", where, exc, attempt + 1,
                            self.retries, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _once(self, method: str, url: URL, where: str, data_factory: Any,
                    max_bytes: int) -> Any:
        data = data_factory() if data_factory else None
        try:
            async with self.session.request(method, url, headers=self._headers, data=data,
                                            timeout=self.timeout) as resp:
                if resp.status == 429 or resp.status >= 500:
                    raise _Retryable(f"HTTP {resp.status}")
                if resp.status in (401, 403):
                    raise CapeError(f"CAPE {where}: HTTP {resp.status} - the token was "
                                    "refused (set cape_token or $PCAPWIRE_CAPE_TOKEN)")
                if resp.status >= 400:
                    raise CapeError(f"CAPE {where}: HTTP {resp.status}")
                body = await resp.content.read(max_bytes + 1)
                if len(body) > max_bytes:
                    raise CapeError(f"CAPE {where}: response larger than {max_bytes} bytes")
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
                TimeoutError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}" if str(exc)
                             else type(exc).__name__) from None
        try:
            doc = json.loads(body)
        except ValueError:
            raise CapeError(f"CAPE {where}: the answer is not JSON") from None
        if isinstance(doc, dict) and doc.get("error") is True:
            raise CapeError(f"CAPE {where}: {doc.get('error_value') or 'error'}")
        return doc

    async def submit(self, path: Path, filename: str, fields: dict[str, str]) -> int:
        content = await asyncio.to_thread(path.read_bytes)

        def form() -> aiohttp.FormData:  # a fresh body for each attempt
            fd = aiohttp.FormData()
            for k, v in fields.items():
                fd.add_field(k, v)
            fd.add_field("file", content, filename=filename,
                         content_type="application/octet-stream")
            return fd

        doc = await self._request("POST", "tasks/create/file/", data_factory=form)
        try:
            return int(doc["data"]["task_ids"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            raise CapeError("CAPE tasks/create/file/ answered without data.task_ids") from None

    async def status(self, task_id: int) -> tuple[str, list[Any]]:
        doc = await self._request("GET", f"tasks/view/{task_id}/")
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, dict) or "status" not in data:
            raise CapeError(f"CAPE tasks/view/{task_id}/ answered without data.status")
        return str(data["status"]), list(data.get("errors") or [])

    async def report(self, task_id: int) -> dict[str, Any]:
        doc = await self._request("GET", f"tasks/get/report/{task_id}/json/",
                                  max_bytes=MAX_REPORT_BYTES)
        if not isinstance(doc, dict):
            raise CapeError(f"CAPE report of task {task_id} is not a JSON object")
        return doc


async def analyze(client: CapeClient, path: Path, filename: str, fields: dict[str, str], *,
                  poll_interval: float, wait: float) -> tuple[int, dict[str, Any]]:
    """Submit, poll until reported (or failed, or ``wait`` seconds), fetch the report."""
    task_id = await client.submit(path, filename, fields)
    log.info("CAPE task %d submitted for %s", task_id, filename)
    deadline = time.monotonic() + wait
    status = "pending"
    while True:
        status, errors = await client.status(task_id)
        if status == DONE_STATUS:
            return task_id, await client.report(task_id)
        if status in FAILED_STATUSES:
            detail = f": {'; '.join(map(str, errors))}" if errors else ""
            raise CapeError(f"CAPE task {task_id} ended with status {status}{detail}")
        if time.monotonic() + poll_interval > deadline:
            raise CapeError(f"CAPE task {task_id} was not reported within cape_wait="
                            f"{wait:g} s (last status {status!r})")
        await asyncio.sleep(poll_interval)
