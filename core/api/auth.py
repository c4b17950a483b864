"""Authentication (bearer token or dashboard session cookie), CSRF, and role checks.

Every route declares the least role it needs with :func:`role`; the middleware refuses
anything below it (403) before the handler runs, and a route without a declaration is
refused outright, so forgetting one fails closed. Cookie-authenticated requests that change
state must carry the session's CSRF token (``X-CSRF-Token`` header or ``csrf`` form field).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from pcapwire.api.authdb import ROLES, Principal
from pcapwire.api.errors import ApiError, Handler
from pcapwire.api.keys import AUTH, PRINCIPAL
from pcapwire.custody import actor_token

SESSION_COOKIE = "pcapwire_session"
PUBLIC = "public"  # role name for routes anyone may call (health, OpenAPI, login)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
F = TypeVar("F", bound=Callable[..., Any])


def role(name: str) -> Callable[[F], F]:
    """Declare the least role a route needs: ``viewer``, ``analyst``, ``admin`` or PUBLIC."""
    if name not in (*ROLES, PUBLIC):
        raise ValueError(f"unknown role {name!r}")

    def mark(fn: F) -> F:
        fn.required_role = name  # type: ignore[attr-defined]
        return fn
    return mark


def required_role(handler: Any) -> str | None:
    return getattr(handler, "required_role", None)


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def actor(request: web.Request) -> str:
    """Who the custody log names for this request: the token's public id (never its
    secret), tenant and role."""
    who = principal(request)
    return actor_token(who.token_id, who.tenant, who.role)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(401, "unauthorized", "the Authorization header must be 'Bearer <token>'")
    return value.strip()


async def _check_csrf(request: web.Request, who: Principal) -> None:
    sent = request.headers.get("X-CSRF-Token")
    if sent is None and request.content_type == "application/x-www-form-urlencoded":
        sent = str((await request.post()).get("csrf", ""))
    if not sent or not who.csrf or not hmac.compare_digest(sent, who.csrf):
        raise ApiError(403, "csrf_failed", "missing or wrong CSRF token; reload the page")


def authenticate(request: web.Request) -> Principal | None:
    db = request.app[AUTH]
    token = _bearer(request)
    if token is not None:
        who = db.authenticate(token)
        if who is None:
            raise ApiError(401, "unauthorized", "unknown or revoked token")
        return who
    sid = request.cookies.get(SESSION_COOKIE)
    return db.session(sid) if sid else None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    needed = required_role(request.match_info.handler)
    if request.match_info.http_exception is not None:
        return await handler(request)  # 404/405: let the error middleware answer
    if needed is None:
        raise ApiError(403, "forbidden", "this route declares no role")
    if needed == PUBLIC:
        return await handler(request)
    who = authenticate(request)
    if who is None:
        if request.path.startswith("/ui/") and request.method in SAFE_METHODS:
            raise web.HTTPFound("/ui/login")
        raise ApiError(401, "unauthorized", "authenticate with 'Authorization: Bearer <token>' "
                       "(create one with `pcapwire token create`)")
    if who.csrf is not None and request.method not in SAFE_METHODS:
        await _check_csrf(request, who)
    if not who.has(needed):
        raise ApiError(403, "forbidden", f"this needs the {needed!r} role; your token has "
                       f"{who.role!r}", {"required_role": needed, "role": who.role})
    request[PRINCIPAL] = who
    return await handler(request)
