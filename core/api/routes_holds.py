"""Legal holds of the caller's tenant (:mod:`pcapwire.holds`): create (copies at once),
list, show, release (admin, with a reason; the evidence stays), download a part.

Every call runs in a worker thread on a store connection of its own (a creation copies
packets for as long as the result takes); a creation counts as one of the tenant's
running queries. Another tenant's hold is a 404.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web
from pcapwire import custody
from pcapwire.api.auth import actor, role
from pcapwire.api.bodies import id_param, read_json
from pcapwire.api.downloads import download_headers
from pcapwire.api.errors import ApiError, not_found
from pcapwire.api.keys import CONFIG, QUERIES
from pcapwire.api.routes_queries import spec_from_body, tenant_store
from pcapwire.holds import (
    HoldReleased,
    NoSuchHold,
    create_hold,
    get_hold,
    hold_view,
    list_holds,
    release_hold,
)
from pcapwire.holds.table import STATES, Hold
from pcapwire.query import QuerySpec
from pcapwire.store import Store

routes = web.RouteTableDef()
PCAP_TYPE = "application/vnd.tcpdump.pcap"
MAX_ID = 2**62


def _int(request: web.Request, name: str) -> int:
    return id_param(request, name, MAX_ID)


def _view(store: Store, hold: Hold) -> dict[str, Any]:
    view = hold_view(store, hold)
    for part in view["parts"]:
        part["url"] = f"/api/v1/holds/{hold.id}/parts/{part['n']}"
    return view


def _in_store(root: Path, hold_id: int | None, fn: Any, *args: Any) -> Any:
    """``fn(store, *args)`` on a store of its own (in a worker thread); a missing hold
    is a 404."""
    try:
        with Store(root) as store:
            return fn(store, *args)
    except NoSuchHold:
        raise not_found("hold", str(hold_id)) from None


def _create(store: Store, spec: QuerySpec, reason: str, actor: str) -> dict[str, Any]:
    return _view(store, create_hold(store, spec, reason, actor))


def _show(store: Store, hold_id: int) -> dict[str, Any]:
    return _view(store, get_hold(store.root, hold_id))


def _list(store: Store, case: str | None, states: list[str] | None) -> dict[str, Any]:
    return {"holds": [_view(store, h) for h in list_holds(store.root, case, states)]}


def _release(store: Store, hold_id: int, reason: str, actor: str) -> dict[str, Any]:
    try:
        return _view(store, release_hold(store.root, hold_id, reason, actor))
    except HoldReleased as exc:
        raise ApiError(409, "hold_released", str(exc)) from None


@routes.post("/api/v1/holds")
@role("analyst")
async def create(request: web.Request) -> web.Response:
    body = await read_json(request, "HoldRequest")
    spec = spec_from_body(body, request.app[CONFIG])
    ts = tenant_store(request)
    slots = request.app[QUERIES].slots
    slots.acquire(ts.tenant)
    try:
        view = await asyncio.to_thread(_in_store, ts.root, None, _create, spec,
                                       body["reason"], actor(request))
    finally:
        slots.release(ts.tenant)
    return web.json_response(view, status=201)


@routes.get("/api/v1/holds")
@role("viewer")
async def list_(request: web.Request) -> web.Response:
    state = request.query.get("state")
    if state is not None and state not in STATES:
        raise ApiError(400, "invalid_parameter", f"state must be one of {', '.join(STATES)}",
                       {"parameter": "state"})
    ts = tenant_store(request)
    return web.json_response(await asyncio.to_thread(
        _in_store, ts.root, None, _list, request.query.get("case"),
        [state] if state else None))


@routes.get("/api/v1/holds/{hold_id}")
@role("viewer")
async def show(request: web.Request) -> web.Response:
    hold_id = _int(request, "hold_id")
    ts = tenant_store(request)
    return web.json_response(await asyncio.to_thread(_in_store, ts.root, hold_id, _show,
                                                     hold_id))


@routes.post("/api/v1/holds/{hold_id}/release")
@role("admin")
async def release(request: web.Request) -> web.Response:
    hold_id = _int(request, "hold_id")
    body = await read_json(request, "HoldRelease")
    ts = tenant_store(request)
    return web.json_response(await asyncio.to_thread(
        _in_store, ts.root, hold_id, _release, hold_id, body["reason"], actor(request)))


@routes.get("/api/v1/holds/{hold_id}/parts/{n}")
@role("viewer")
async def part(request: web.Request) -> web.FileResponse:
    hold_id, n = _int(request, "hold_id"), _int(request, "n")
    ts = tenant_store(request)
    try:
        hold = await asyncio.to_thread(get_hold, ts.root, hold_id)
    except NoSuchHold:
        raise not_found("hold", str(hold_id)) from None
    found = [p for p in hold.parts if p.n == n]
    path = ts.root / found[0].path if found else None
    if path is None or not path.is_file():
        raise not_found("part", f"{hold_id}/{n}")
    # evidence handed out: an export in the case's custody log (the part's recorded hash;
    # custody verify re-hashes the part itself against its hold entry)
    await asyncio.to_thread(custody.append, ts.root, hold.case, "export", actor(request),
                            [{"kind": "export", "path": found[0].path,
                              "sha256": found[0].sha256, "size": found[0].size}],
                            {"hold": hold_id, "part": n})
    return web.FileResponse(path, headers=download_headers(
        f"hold-{hold_id}-part-{n:04d}.pcap", PCAP_TYPE, "part.pcap"))
