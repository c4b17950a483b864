"""The retention policy of the caller's tenant store (``DATA_DIR/tenants/<tenant>/store.toml``,
:mod:`pcapwire.retention`): ``GET /api/v1/retention`` (viewer: policy, usage, what is kept,
deletable, protected and expired, the alarm), ``PUT /api/v1/retention`` (admin: replace the
policy; the store's other settings stay) and ``POST /api/v1/retention/run`` (admin: run it
now, ``?dry_run=true`` to only see what would go).

The tenant is the caller's token's, never a parameter: nothing is read or written outside
its store. Every call runs in a worker thread on a store connection of its own (a run
deletes files and waits for another process's run). A policy change and each deleted
segment are entries in the store's custody log.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web
from pcapwire import custody
from pcapwire.api.auth import actor, role
from pcapwire.api.bodies import read_json
from pcapwire.api.errors import ApiError
from pcapwire.api.routes_queries import tenant_store
from pcapwire.errors import ConfigError
from pcapwire.retention import enforce, status
from pcapwire.store import Store
from pcapwire.store import config as store_config

routes = web.RouteTableDef()


def _status(root: Path) -> dict[str, Any]:
    with Store(root) as store:
        return status(store, store_config.load(root))


def _message(root: Path, exc: ConfigError) -> str:
    """The error without the server's paths."""
    return str(exc).replace(str(store_config.config_path(root)), store_config.CONFIG_FILE)


def _checked_config(root: Path) -> store_config.StoreConfig:
    try:
        return store_config.load(root)
    except ConfigError as exc:  # written by hand on the server: the admin must fix it
        raise ApiError(409, "store_config_invalid", _message(root, exc)) from None


@routes.get("/api/v1/retention")
@role("viewer")
async def get_retention(request: web.Request) -> web.Response:
    root = tenant_store(request).root
    await asyncio.to_thread(_checked_config, root)
    return web.json_response(await asyncio.to_thread(_status, root))


@routes.put("/api/v1/retention")
@role("admin")
async def put_retention(request: web.Request) -> web.Response:
    body = await read_json(request, "RetentionPolicy")
    root = tenant_store(request).root
    who = actor(request)

    def save() -> dict[str, Any]:
        raw = _checked_config(root).raw
        try:
            store_config.save(root, {**raw, "retention": dict(body)})
        except ConfigError as exc:
            raise ApiError(400, "invalid_policy", _message(root, exc)) from None
        custody.append(root, None, "retention.policy", who, details={"retention": body})
        return _status(root)

    return web.json_response(await asyncio.to_thread(save))


@routes.post("/api/v1/retention/run")
@role("admin")
async def run_retention(request: web.Request) -> web.Response:
    dry = request.query.get("dry_run", "false")
    if dry not in ("true", "false"):
        raise ApiError(400, "invalid_parameter", "dry_run must be true or false",
                       {"parameter": "dry_run"})
    root = tenant_store(request).root
    who = actor(request)

    def run() -> dict[str, Any]:
        config = _checked_config(root)
        with Store(root) as store:
            return enforce(store, config.retention, dry=dry == "true", wait=True,
                           actor=who).to_dict()

    return web.json_response(await asyncio.to_thread(run))
