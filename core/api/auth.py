"""Authentication (bearer token or dashboard session cookie), CSRF, and role checks.

Every route declares the least role it needs with :func:`role`; the middleware refuses
anything below it (403) before the handler runs, and a route without a declaration is
refused outright, so forgetting one fails closed. Cookie-authenticated requests that change
state must carry the session's CSRF token (``X-CSRF-Token`` header or ``csrf`` form field).

On a cluster sensor (``--client-ca``: only the central's certificate gets through TLS) a
request may name who asked at the central (``X-Pcapwire-On-Behalf-Of``, then named in
custody) and that user's role (``X-Pcapwire-Role``), which can only lower the token's role:
the request runs with the lesser of the two. Elsewhere these headers are refused (400), so
a token holder cannot put someone else's name in the custody log.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from pcapwire.api.authdb import ROLES, Principal
from pcapwire.api.errors import ApiError, Handler
from pcapwire.api.keys import AUTH, CONFIG, PRINCIPAL
from pcapwire.cluster.tls import ON_BEHALF_OF_HEADER, ROLE_HEADER, check_actor
from pcapwire.custody import actor_token

SESSION_COOKIE = "pcapwire_session"
PUBLIC = "public"  # role name for routes anyone may call (health, OpenAPI, login)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
F = TypeVar("F", bound=Callable[..., Any])
ON_BEHALF_OF = web.RequestKey("on_behalf_of", str)  # the central's user, on a sensor


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
    secret), tenant and role, and on a cluster sensor the central's user it acts for."""
    who = principal(request)
    token = actor_token(who.token_id, who.tenant, who.role)
    on_behalf = request.get(ON_BEHALF_OF)
    return f"{token} on behalf of {on_behalf}" if on_behalf else token


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


def on_behalf(request: web.Request, who: Principal) -> Principal:
    """Apply the on-behalf-of headers (see the module docstring): the principal with the
    lowered role; the actor goes to ``request[ON_BEHALF_OF]``."""
    name, role = request.headers.get(ON_BEHALF_OF_HEADER), request.headers.get(ROLE_HEADER)
    if name is None and role is None:
        return who
    if request.app[CONFIG].client_ca is None:
        raise ApiError(400, "on_behalf_of_needs_mtls", f"{ON_BEHALF_OF_HEADER} and "
                       f"{ROLE_HEADER} are honoured only by a sensor serving mutual TLS "
                       "(pcapwire serve --client-ca); send the request without them")
    if name is None:
        raise ApiError(400, "bad_on_behalf_of", f"{ROLE_HEADER} needs {ON_BEHALF_OF_HEADER} "
                       "naming who asked")
    try:
        request[ON_BEHALF_OF] = check_actor(name)
    except ValueError as exc:
        raise ApiError(400, "bad_on_behalf_of", str(exc)) from None
    if role is None:
        return who
    if role not in ROLES:
        raise ApiError(400, "bad_on_behalf_of", f"unknown {ROLE_HEADER} {role!r}; use one of "
                       f"{', '.join(ROLES)}")
    return dataclasses.replace(who, role=min(who.role, role, key=ROLES.index))


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
    token_role = who.role
    who = on_behalf(request, who)
    if not who.has(needed):
        has = (f"your token has {who.role!r}" if who.role == token_role else
               f"the central's user you ask for ({request[ON_BEHALF_OF]}) has {who.role!r} "
               f"({ROLE_HEADER}; your token has {token_role!r})")
        raise ApiError(403, "forbidden", f"this needs the {needed!r} role; {has}",
                       {"required_role": needed, "role": who.role})
    request[PRINCIPAL] = who
    return await handler(request)
