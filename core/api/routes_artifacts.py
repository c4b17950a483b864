"""Files and emails carved from a query's result: lists with hashes and triage, metadata,
downloads that a browser saves and never renders."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web
from pcapwire.api import artifacts, emailview
from pcapwire.api.auth import actor, role
from pcapwire.api.downloads import download_headers
from pcapwire.api.errors import ApiError, not_found
from pcapwire.api.history import read_verdicts
from pcapwire.api.keys import CARVES
from pcapwire.api.routes_queries import lookup
from pcapwire.api.tenants import TenantStore
from pcapwire.custody import events

routes = web.RouteTableDef()


async def ensure_carved(request: web.Request, ts: TenantStore, query_id: str,
                        status: str, case: str) -> None:
    """Carve a finished query's result once; the carve's files and emails go into its
    case's custody log (an ``extract`` entry, by whoever made it happen)."""
    if status == "running":
        raise ApiError(409, "query_running", "files and emails are carved once the query has "
                       "finished")
    if status != "done":
        raise ApiError(409, "no_result", f"the query ended with {status}: no complete result "
                       "to carve")
    if await artifacts.carve(ts, query_id, request.app[CARVES]):
        objects = await asyncio.to_thread(events.carve_objects,
                                          artifacts.carve_dir(ts, query_id), ts.root)
        await asyncio.to_thread(events.record, ts.root, case, "extract", actor(request),
                                objects, {"query_id": query_id})


async def carve_all(request: web.Request, ts: TenantStore, rows: list[dict[str, Any]]) -> None:
    """Carve every finished query of a list (a case) that is not carved yet."""
    await asyncio.gather(*(ensure_carved(request, ts, r["id"], r["status"], r["case"])
                           for r in rows
                           if r["status"] == "done" and not artifacts.carved(ts, r["id"])))


async def _carved(request: web.Request) -> tuple[TenantStore, str, list[dict[str, Any]]]:
    ts, row, job = lookup(request)
    qid = request.match_info["id"]
    status = job.status if job is not None else (row or {}).get("status", "")
    case = job.spec.case if job is not None else (row or {}).get("case", "")
    await ensure_carved(request, ts, qid, status, case)
    return ts, qid, read_verdicts(ts, qid, case, job)


@routes.get("/api/v1/queries/{id}/files")
@role("viewer")
async def list_files(request: web.Request) -> web.Response:
    ts, qid, verdicts = await _carved(request)
    return web.json_response({"files": artifacts.files(ts, qid, verdicts),
                              "summary": artifacts.summary(ts, qid)})


@routes.get("/api/v1/queries/{id}/emails")
@role("viewer")
async def list_emails(request: web.Request) -> web.Response:
    ts, qid, _ = await _carved(request)
    return web.json_response({"emails": artifacts.emails(ts, qid)})


@routes.get("/api/v1/queries/{id}/files/{sha256}")
@role("viewer")
async def file_meta(request: web.Request) -> web.Response:
    ts, qid, verdicts = await _carved(request)
    sha = request.match_info["sha256"]
    records = [f for f in artifacts.files(ts, qid, verdicts) if f["sha256"] == sha]
    if not records:
        raise not_found("file", sha)
    return web.json_response({"sha256": sha, "records": records})


@routes.get("/api/v1/queries/{id}/files/{sha256}/content")
@role("viewer")
async def file_content(request: web.Request) -> web.FileResponse:
    ts, qid, _ = await _carved(request)
    sha = request.match_info["sha256"]
    records = [f for f in artifacts.files(ts, qid) if f["sha256"] == sha]
    path = artifacts.content_path(ts, qid, sha)
    if not records or path is None:
        raise not_found("file", sha)
    name = next((r["filename"] for r in records if r.get("filename")), sha)
    return web.FileResponse(path, headers=download_headers(name, default=f"{sha}.bin"))


async def _email(request: web.Request) -> tuple[dict[str, Any], Path]:
    """The email record ``{email_id}`` of query ``{id}`` and its carved ``.eml``."""
    ts, qid, _ = await _carved(request)
    eid = request.match_info["email_id"]
    rec = next((e for e in artifacts.emails(ts, qid) if e["id"] == eid), None)
    path = artifacts.content_path(ts, qid, rec.get("sha256", ""), ".eml") if rec else None
    if rec is None or path is None:
        raise not_found("email", eid)
    return rec, path


@routes.get("/api/v1/queries/{id}/emails/{email_id}")
@role("viewer")
async def email_view(request: web.Request) -> web.Response:
    """The email reconstructed: headers, text, attachments (with download links)."""
    rec, path = await _email(request)
    return web.json_response(await asyncio.to_thread(emailview.view, rec, path))


@routes.get("/api/v1/queries/{id}/emails/{email_id}/html")
@role("viewer")
async def email_html(request: web.Request) -> web.Response:
    """The HTML part, under a CSP that runs no script and loads nothing
    (:mod:`.emailview`); 404 when the message has none."""
    rec, _ = await _email(request)
    if not rec.get("html_body"):
        raise not_found("HTML part of email", rec["id"])
    return web.Response(text=rec["html_body"], content_type="text/html", charset="utf-8",
                        headers=emailview.HTML_HEADERS)


@routes.get("/api/v1/queries/{id}/emails/{email_id}/eml")
@role("viewer")
async def email_eml(request: web.Request) -> web.FileResponse:
    rec, path = await _email(request)
    return web.FileResponse(path, headers=download_headers(f"{rec['id']}.eml",
                                                           "message/rfc822"))
