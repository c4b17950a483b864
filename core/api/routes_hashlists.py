"""Hash lists: list, create from an upload (text, CSV, NSRL RDS 2.x or RDSv3), show,
remove, and look up a batch of hashes (see :mod:`.hashlists` for scopes and the import)."""

from __future__ import annotations

import asyncio
from collections import Counter

from aiohttp import web
from pcapwire.api import hashlists
from pcapwire.api.auth import role
from pcapwire.api.bodies import read_json
from pcapwire.api.errors import ApiError, not_found
from pcapwire.api.keys import CONFIG
from pcapwire.api.routes_queries import tenant_store
from pcapwire.hashlist import FORMATS, KINDS, MODES, VERDICTS, HashListError, parse_digest
from pcapwire.hashlist import check_list_name as _check_name
from pcapwire.records import SEVERITIES

routes = web.RouteTableDef()
UPLOAD_TYPES = ("text/plain", "text/csv", "application/octet-stream", "application/gzip",
                "application/vnd.sqlite3", "application/x-sqlite3")
#: Longest value of each free-text query parameter of an upload.
MAX_PARAM = {"description": 500, "filename": 200, "column": 1000, "label_column": 200}


def _param(request: web.Request, name: str, choices: tuple[str, ...] | None = None,
           required: bool = False) -> str | None:
    value = request.query.get(name)
    if value is None:
        if required:
            raise ApiError(400, "invalid_parameter", f"{name} is required",
                           {"parameter": name})
        return None
    if choices is not None and value not in choices:
        raise ApiError(400, "invalid_parameter", f"{name} must be one of "
                       f"{', '.join(choices)}", {"parameter": name})
    if len(value) > MAX_PARAM.get(name, 200):
        raise ApiError(400, "invalid_parameter", f"{name} is longer than "
                       f"{MAX_PARAM.get(name, 200)} characters", {"parameter": name})
    return value


def _list_name(name: str | None, parameter: str = "name") -> str:
    try:
        return _check_name(name or "")
    except HashListError as exc:
        raise ApiError(400, "invalid_parameter", str(exc), {"parameter": parameter}) from None


@routes.get("/api/v1/hashlists")
@role("viewer")
async def list_hashlists(request: web.Request) -> web.Response:
    lists = await asyncio.to_thread(tenant_store(request).hashlists.lists)
    return web.json_response({"lists": [hl.to_dict() for hl in lists]})


@routes.post("/api/v1/hashlists")
@role("analyst")
async def create_hashlist(request: web.Request) -> web.Response:
    """Create a list from the uploaded file (``mode=replace``/``append`` change an
    existing one); bad lines are skipped and listed in the report."""
    params = hashlists.ImportParams(
        name=_list_name(_param(request, "name", required=True)),
        kind=str(_param(request, "kind", KINDS, required=True)),
        mode=_param(request, "mode", MODES) or "create",
        severity=_param(request, "severity", SEVERITIES),
        format=_param(request, "format", FORMATS) or "auto",
        columns=tuple(c.strip() for c in (_param(request, "column") or "").split(",")
                      if c.strip()),
        label_column=_param(request, "label_column") or None,
        description=_param(request, "description"),
        filename=(_param(request, "filename") or "upload").replace("\n", " ") or "upload")
    if request.content_type not in UPLOAD_TYPES:
        raise ApiError(415, "unsupported_media_type", "upload the hash list as text/plain, "
                       "text/csv, application/gzip or application/vnd.sqlite3 (RDSv3)")
    ts = tenant_store(request)
    upload = await hashlists.receive(request, ts.uploads, request.app[CONFIG].max_hashlist_bytes)
    try:
        report = await hashlists.import_upload(ts, upload, params,
                                               config=request.app[CONFIG], request=request)
    finally:
        upload.unlink(missing_ok=True)
    created = await asyncio.to_thread(ts.hashlists.stores[0].get, params.name)
    if created is None:  # removed by someone else meanwhile
        raise not_found("hash list", params.name)
    return web.json_response({"list": created.to_dict(), "report": report},
                             status=201 if params.mode == "create" else 200)


@routes.post("/api/v1/hashlists/lookup")
@role("viewer")
async def lookup(request: web.Request) -> web.Response:
    hashes = (await read_json(request, "HashLookup"))["hashes"]
    for i, h in enumerate(hashes):
        try:
            parse_digest(h)
        except ValueError as exc:
            raise ApiError(400, "invalid_hash", f"hashes[{i}]: {exc}",
                           {"index": i, "hash": h[:200]}) from None
    results = await asyncio.to_thread(tenant_store(request).hashlists.triage_hex, hashes)
    counts = Counter(r["verdict"] for r in results)
    return web.json_response({"results": results,
                              "summary": {v: counts.get(v, 0) for v in VERDICTS}})


@routes.get("/api/v1/hashlists/{list}")
@role("viewer")
async def show_hashlist(request: web.Request) -> web.Response:
    name = request.match_info["list"]
    lists = await asyncio.to_thread(tenant_store(request).hashlists.lists)
    found = next((hl for hl in lists if hl.name == name and hl.scope == "tenant"), None) \
        or next((hl for hl in lists if hl.name == name), None)
    if found is None:
        raise not_found("hash list", name)
    return web.json_response(found.to_dict())


@routes.delete("/api/v1/hashlists/{list}")
@role("analyst")
async def remove_hashlist(request: web.Request) -> web.Response:
    name = request.match_info["list"]
    ts = tenant_store(request)
    if await asyncio.to_thread(hashlists.remove, ts, name):
        return web.Response(status=204)
    lists = await asyncio.to_thread(ts.hashlists.lists)
    if any(hl.name == name and hl.scope == "global" for hl in lists):
        raise ApiError(403, "global_hashlist", f"{name!r} is a global list, shared by every "
                       "tenant; the server's operator manages it with `pcapwire hashlist`",
                       {"list": name, "scope": "global"})
    raise not_found("hash list", name)
