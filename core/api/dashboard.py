"""The responder's dashboard: static pages under ``/ui`` that talk to the API with the
session cookie. Login exchanges an API token for a session (HttpOnly, SameSite=Strict
cookie); forms and state-changing calls carry the session's CSRF token. The login form
itself is protected by a double-submit cookie."""

from __future__ import annotations

import hmac
import html
import secrets
from pathlib import Path

from aiohttp import web
from pcapwire.api.auth import PUBLIC, SESSION_COOKIE, principal, role
from pcapwire.api.keys import AUTH, CONFIG

routes = web.RouteTableDef()
STATIC = Path(__file__).parent / "static"
LOGIN_CSRF_COOKIE = "pcapwire_login_csrf"
PAGES = {"query": "query.html", "live": "live.html", "cases": "cases.html", "case": "case.html"}


def _page(name: str) -> web.FileResponse:
    return web.FileResponse(STATIC / PAGES[name], headers={"Cache-Control": "no-store"})


def _login_page(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    token = secrets.token_urlsafe(24)
    body = (STATIC / "login.html").read_text().replace("{{csrf}}", token).replace(
        "{{error}}", html.escape(error))
    resp = web.Response(text=body, content_type="text/html", status=status,
                        headers={"Cache-Control": "no-store"})
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict", path="/ui/login",
                    secure=request.app[CONFIG].secure_cookies)
    return resp


@routes.get("/")
@role(PUBLIC)
async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


@routes.get("/ui/login")
@role(PUBLIC)
async def login_form(request: web.Request) -> web.Response:
    return _login_page(request)


@routes.post("/ui/login")
@role(PUBLIC)
async def login(request: web.Request) -> web.Response:
    form = await request.post()
    sent, cookie = str(form.get("csrf", "")), request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not sent or not hmac.compare_digest(sent, cookie):
        return _login_page(request, "The form expired; please try again.", 403)
    who = request.app[AUTH].authenticate(str(form.get("token", "")))
    if who is None:
        return _login_page(request, "Unknown or revoked token.", 401)
    config = request.app[CONFIG]
    sid, _csrf = request.app[AUTH].create_session(who.token_id, config.session_ttl_s)
    resp = web.HTTPSeeOther("/ui/")
    resp.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="Strict", path="/",
                    max_age=config.session_ttl_s, secure=config.secure_cookies)
    resp.del_cookie(LOGIN_CSRF_COOKIE, path="/ui/login")
    raise resp


@routes.post("/ui/logout")
@role("viewer")
async def logout(request: web.Request) -> web.Response:
    principal(request)  # authenticated and CSRF-checked by the middleware
    request.app[AUTH].end_session(request.cookies.get(SESSION_COOKIE, ""))
    resp = web.HTTPSeeOther("/ui/login")
    resp.del_cookie(SESSION_COOKIE, path="/")
    raise resp


@routes.get("/ui/")
@role("viewer")
async def query_page(request: web.Request) -> web.FileResponse:
    return _page("query")


@routes.get("/ui/queries/{id}")
@role("viewer")
async def live_page(request: web.Request) -> web.FileResponse:
    return _page("live")


@routes.get("/ui/cases")
@role("viewer")
async def cases_page(request: web.Request) -> web.FileResponse:
    return _page("cases")


@routes.get("/ui/cases/{case}")
@role("viewer")
async def case_page(request: web.Request) -> web.FileResponse:
    return _page("case")


@routes.get("/ui/static/{name}")
@role(PUBLIC)
async def static(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    allowed = {p.name for p in STATIC.iterdir() if p.suffix in (".js", ".css", ".svg")}
    if name not in allowed:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})


