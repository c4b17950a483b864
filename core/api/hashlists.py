"""Hash lists over the API: the upload goes to a file in the tenant's ``uploads/``, then a
``hashlist_import`` job loads it in a worker child process (:func:`pcapwire.jobs.local.run`:
parsing and indexing millions of lines never competes with the event loop), into the
tenant's own ``hashlists.sqlite``. Lookups read the tenant's lists and the server's global ones
(:func:`pcapwire.hashlist.databases_for`) through a read-only connection.

Scopes: a tenant creates, replaces and removes its own lists (analyst role); global lists
(``DATA/hashlists.sqlite``, managed by the operator with ``pcapwire --data-dir DATA
hashlist ...``) are shown and consulted, never changed through the API.

Limits (:class:`~pcapwire.api.config.ApiConfig`, defaults in :mod:`.limits`): the job
gets the server's ``max_hashlist_rows``, ``max_hashlist_steps`` and
``hashlist_import_timeout_s`` (over one: 413 ``hashlist_limit_exceeded`` naming it); the
server stops a child still running past that time, and one whose client has gone
(checked every ``CLIENT_GONE_POLL_S``): SIGTERM (the import removes what it wrote), SIGKILL
after ``HASHLIST_IMPORT_KILL_GRACE_S``, then whatever a killed import left is removed. One
import per tenant at a time; the next can start as soon as one has stopped.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pcapwire.api.bodies import receive_upload
from pcapwire.api.errors import ApiError
from pcapwire.api.limits import CLIENT_GONE_POLL_S, HASHLIST_IMPORT_KILL_GRACE_S
from pcapwire.hashlist import DB_NAME, HashListStore
from pcapwire.jobs import Job, JobResult, local

if TYPE_CHECKING:
    from pcapwire.api.config import ApiConfig
    from pcapwire.api.tenants import TenantStore

STATUS_BY_CODE = {"hashlist_exists": 409, "hashlist_import_busy": 409,
                  "hashlist_not_found": 404, "invalid_hashlist": 400,
                  "hashlist_limit_exceeded": 413, "hashlist_import_cancelled": 499}
#: The import's limits (their names in the job, :mod:`pcapwire.jobs.handlers_hashlist`) by
#: the name the server's config gives them.
LIMITS = {"max_hashlist_rows": "max_rows", "max_hashlist_steps": "max_steps",
          "hashlist_import_timeout_s": "max_seconds"}


@dataclass(frozen=True)
class ImportParams:
    name: str
    kind: str
    mode: str = "create"
    severity: str | None = None
    format: str = "auto"
    columns: tuple[str, ...] = ()
    label_column: str | None = None
    description: str | None = None
    filename: str = "upload"

    def job(self, tenant: str, upload: Path, config: ApiConfig) -> Job:
        """The ``hashlist_import`` job loading ``upload`` with the server's limits."""
        return Job("hashlist_import", uuid.uuid4().hex, tenant, {
            "path": str(upload), "name": self.name, "kind": self.kind, "mode": self.mode,
            "severity": self.severity, "format": self.format, "columns": list(self.columns),
            "label_column": self.label_column, "description": self.description,
            "shown": self.filename,
            "limits": {job: getattr(config, name) for name, job in LIMITS.items()}})


async def receive(request: web.Request, directory: Path, limit: int) -> Path:
    """Stream the body to a file, refusing more than ``limit`` bytes (413)."""
    return await receive_upload(request, directory, limit, what="hash list",
                                limit_name="max_hashlist_bytes", suffix=".hashlist",
                                instead="import it on the server with `pcapwire hashlist "
                                        "import`")


async def import_upload(ts: TenantStore, upload: Path, params: ImportParams, *,
                        config: ApiConfig, request: web.Request) -> dict[str, Any]:
    """Run the import; returns its report or raises the matching ApiError (the module
    docstring says how it is bounded and stopped)."""
    if ts.importing_hashlist.locked():
        raise ApiError(409, "hashlist_import_busy", f"tenant {ts.tenant!r} is already "
                       "importing a hash list; retry when it finishes")
    job = params.job(ts.tenant, upload, config)
    async with ts.importing_hashlist:
        task = asyncio.ensure_future(local.run(job, ts.root,
                                               kill_grace_s=HASHLIST_IMPORT_KILL_GRACE_S))
        try:
            result = await _wait(task, request, config.hashlist_import_timeout_s)
        except BaseException:
            task.cancel()  # SIGTERM: the import removes what it wrote; SIGKILL after grace
            await asyncio.wait({task})
            await asyncio.to_thread(_discard_interrupted, ts.root / DB_NAME)
            raise
    if result.ok:
        return result.data
    message = (result.message or f"import failed ({result.code})").replace(str(upload),
                                                                           params.filename)
    code = result.code if result.code in STATUS_BY_CODE else "invalid_hashlist"
    details = {"report": result.data["report"]} if result.data.get("report") else {}
    limit = result.data.get("limit") or {}
    api_name = next((n for n, job_name in LIMITS.items()
                     if job_name == limit.get("limit_name")), None)
    if api_name is not None:
        what = str(limit.get("what", "")).replace(str(upload), params.filename)
        raise _over_limit(what, api_name, getattr(config, api_name))
    raise ApiError(STATUS_BY_CODE.get(code, 400), code, message, details)


def _over_limit(what: str, name: str, value: float) -> ApiError:
    return ApiError(413, "hashlist_limit_exceeded",
                    f"{what}: over the server's limit {name} ({value}); nothing was "
                    "imported (an operator imports larger lists with `pcapwire hashlist "
                    "import`)", {"limit": value, "limit_name": name})


def client_gone(request: web.Request) -> bool:
    """The client closed its connection (aiohttp lets the handler run on)."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def _wait(task: asyncio.Future[JobResult], request: web.Request, timeout: float
                ) -> JobResult:
    """The job's result once it is done; ApiError when the client goes (499) or the
    import outlives ``timeout`` (plus the grace its own limit needs to stop it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout + HASHLIST_IMPORT_KILL_GRACE_S
    while True:
        done, _ = await asyncio.wait({task}, timeout=CLIENT_GONE_POLL_S)
        if done:
            return task.result()
        if client_gone(request):
            raise ApiError(499, "client_closed_request", "the client closed the "
                           "connection; the import was cancelled")
        if loop.time() > deadline:
            raise _over_limit("the import ran too long", "hashlist_import_timeout_s",
                              timeout)


def _discard_interrupted(path: Path) -> None:
    """Remove what a killed import left in the store ``path`` (blocking)."""
    if path.exists():
        with HashListStore(path) as store:
            store.discard_interrupted()


def remove(ts: TenantStore, name: str) -> bool:
    """Remove one of the tenant's lists (blocking: call it in a thread)."""
    path = ts.root / DB_NAME
    if not path.exists():
        return False
    with HashListStore(path) as store:
        return store.remove(name)
