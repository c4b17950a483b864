"""The responder's dashboard: static pages under ``/ui`` that talk to the API with the
session cookie. Login exchanges an API token for a session (HttpOnly, SameSite=Strict
cookie); forms and state-changing calls carry the session's CSRF token. The login form
itself is protected by a double-submit cookie."""

from __future__ import annotations

import functools
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
PAGES = {"query": "query.html", "live": "live.html", "cases": "cases.html", "case": "case.html",
         "search": "search.html", "session": "session.html", "email": "email.html",
         "capture": "capture.html", "holds": "holds.html", "custody": "custody.html",
         "triggers": "triggers.html", "rules": "rules.html"}
VENDOR = STATIC / "vendor"  # third-party libraries, as scripts/vendor-js.sh fetched them
SERVED_SUFFIXES = (".js", ".css", ".svg")


#: the pieces pages share, put in place of ``<!--#include NAME-->``: the header of every
#: page (brand, nav, who is logged in, log out) and the timeline and connections graph of
#: the case and live-query pages
INCLUDES = ("header.html", "pictures.html")


@functools.cache
def _assembled(name: str) -> str:
    """Page ``name`` with the shared pieces in place (read once: they are package files)."""
    page = (STATIC / PAGES[name]).read_text()
    for piece in INCLUDES:
        page = page.replace(f"<!--#include {piece}-->", (STATIC / piece).read_text())
    return page


def _page(name: str) -> web.Response:
    return web.Response(text=_assembled(name), content_type="text/html",
                        headers={"Cache-Control": "no-store"})


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


@routes.get("/favicon.ico")
@role(PUBLIC)
async def favicon(request: web.Request) -> web.Response:
    """No icon (browsers ask for one on every page: an answer, not a 404 in the console)."""
    return web.Response(status=204, headers={"Cache-Control": "public, max-age=86400"})


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
async def query_page(request: web.Request) -> web.Response:
    return _page("query")


@routes.get("/ui/queries/{id}")
@role("viewer")
async def live_page(request: web.Request) -> web.Response:
    return _page("live")


@routes.get("/ui/cases")
@role("viewer")
async def cases_page(request: web.Request) -> web.Response:
    return _page("cases")


@routes.get("/ui/cases/{case}")
@role("viewer")
async def case_page(request: web.Request) -> web.Response:
    return _page("case")


@routes.get("/ui/search")
@role("viewer")
async def search_page(request: web.Request) -> web.Response:
    return _page("search")


@routes.get("/ui/cases/{case}/sessions/{flow_id}")
@role("viewer")
async def session_page(request: web.Request) -> web.Response:
    return _page("session")


@routes.get("/ui/queries/{id}/emails/{email_id}")
@role("viewer")
async def email_page(request: web.Request) -> web.Response:
    return _page("email")


@routes.get("/ui/capture")
@role("viewer")
async def capture_page(request: web.Request) -> web.Response:
    return _page("capture")


@routes.get("/ui/holds")
@role("viewer")
async def holds_page(request: web.Request) -> web.Response:
    return _page("holds")


@routes.get("/ui/triggers")
@role("viewer")
async def triggers_page(request: web.Request) -> web.Response:
    return _page("triggers")


@routes.get("/ui/rules")
@role("viewer")
async def rules_page(request: web.Request) -> web.Response:
    return _page("rules")


@routes.get("/ui/cases/{case}/custody")
@role("viewer")
async def custody_page(request: web.Request) -> web.Response:
    return _page("custody")


def _served(folder: Path, name: str) -> Path:
    """``folder/name`` when it is a file the dashboard serves (listed, not built from the
    request: no path ever leaves ``folder``); 404 otherwise."""
    allowed = {p.name: p for p in folder.iterdir() if p.suffix in SERVED_SUFFIXES}
    if name not in allowed:
        raise web.HTTPNotFound()
    return allowed[name]


@routes.get("/ui/static/{name}")
@role(PUBLIC)
async def static(request: web.Request) -> web.FileResponse:
    return web.FileResponse(_served(STATIC, request.match_info["name"]),
                            headers={"Cache-Control": "no-cache"})


@routes.get("/ui/static/vendor/{lib}/{name}")
@role(PUBLIC)
async def vendored(request: web.Request) -> web.FileResponse:
    """A vendored library's file (the folder names its version: cached for a day)."""
    libs = {p.name: p for p in VENDOR.iterdir() if p.is_dir()}
    lib = libs.get(request.match_info["lib"])
    if lib is None:
        raise web.HTTPNotFound()
    return web.FileResponse(_served(lib, request.match_info["name"]),
                            headers={"Cache-Control": "public, max-age=86400"})


