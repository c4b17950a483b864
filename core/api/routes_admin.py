"""Health, identity, and the tenant admin's tokens."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from aiohttp import web
from pcapwire.api.auth import PUBLIC, principal, role
from pcapwire.api.bodies import read_json
from pcapwire.api.errors import ApiError, not_found
from pcapwire.api.keys import AUTH

routes = web.RouteTableDef()


def _version() -> str:
    try:
        return version("pcapwire")
    except PackageNotFoundError:
        return "unknown"


@routes.get("/api/v1/health")
@role(PUBLIC)
async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": _version()})


@routes.get("/api/v1/whoami")
@role("viewer")
async def whoami(request: web.Request) -> web.Response:
    who = principal(request)
    return web.json_response({"token_id": who.token_id, "tenant": who.tenant, "role": who.role,
                              "csrf": who.csrf})


@routes.get("/api/v1/tokens")
@role("admin")
async def list_tokens(request: web.Request) -> web.Response:
    return web.json_response({"tokens": request.app[AUTH].tokens(principal(request).tenant)})


@routes.post("/api/v1/tokens")
@role("admin")
async def create_token(request: web.Request) -> web.Response:
    """A new token for the caller's tenant; the token string is in this response only."""
    body = await read_json(request, "TokenRequest")
    token, info = request.app[AUTH].create_token(principal(request).tenant, body["role"],
                                                 body.get("name", ""))
    return web.json_response({"token": token, "info": info}, status=201)


@routes.delete("/api/v1/tokens/{token_id}")
@role("admin")
async def revoke_token(request: web.Request) -> web.Response:
    token_id = request.match_info["token_id"]
    who = principal(request)
    db = request.app[AUTH]
    info = db.token_info(token_id)
    if info is None or info["tenant"] != who.tenant:  # before anything is touched
        raise not_found("token", token_id)
    if token_id == who.token_id:
        raise ApiError(409, "own_token", "a token cannot revoke itself through the API; use "
                       "another admin token or `pcapwire token revoke`")
    if not db.revoke(token_id, who.tenant):  # already revoked
        raise not_found("token", token_id)
    return web.Response(status=204)
