"""A query's results: one continuous PCAP (streamed while the query runs) and its
verdicts (a list, or a live Server-Sent Events stream); and a query submitted and streamed
in one request (``POST /api/v1/queries/pcap``: what a central asks its sensors)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from aiohttp import web
from pcapwire.api import sse
from pcapwire.api.auth import actor, principal, role
from pcapwire.api.bodies import read_json
from pcapwire.api.downloads import download_headers
from pcapwire.api.errors import ApiError
from pcapwire.api.history import read_verdicts
from pcapwire.api.jobs import QueryJob
from pcapwire.api.keys import CONFIG, QUERIES
from pcapwire.api.limits import SSE_HEARTBEAT_S
from pcapwire.api.routes_queries import lookup, spec_from_body, tenant_store, view
from pcapwire.api.tenants import TenantStore
from pcapwire.api.verdicts import render_verdict, render_verdicts, verdict_format
from pcapwire.custody import append

routes = web.RouteTableDef()
PCAP_TYPE = "application/vnd.tcpdump.pcap"
READ_SLICE = 256 * 1024
QUERY_ID_HEADER = "X-Pcapwire-Query-Id"  # names the query whose PCAP a response streams
QUERY_PCAP_PATH = "/api/v1/queries/pcap"  # a query submitted and streamed in one request
#: what the store kept when a streamed query started, ``OLDEST_NS NEWEST_NS`` (empty for
#: an empty store): a central keeps its sensors' ranges fresh with it
KEPT_RANGE_HEADER = "X-Pcapwire-Kept-Range"
FOLLOW_READER_CHECK_S = 1.0  # how soon a follow notices its last reader left while idle


def pcap_headers(name: str) -> dict[str, str]:
    return download_headers(name, PCAP_TYPE, "result.pcap")


async def follow(request: web.Request, job: QueryJob, headers: dict[str, str] | None = None
                 ) -> web.StreamResponse:
    """Send the spool file as it grows (with ``headers`` too); end when the job ends. If
    the query fails, the connection is aborted (no final chunk) so no client mistakes a cut
    result for a whole. A follow query (``follow: true``) is stopped when its last reader
    leaves."""
    resp = web.StreamResponse(headers={**pcap_headers(f"{job.id}.pcap"),
                                       QUERY_ID_HEADER: job.id, **(headers or {})})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    pos = 0
    # The SHA-256 of what was sent (the custody log's export entry): the whole spool file
    # is sent, so it is the hash the spool took of the same bytes as it wrote them; only a
    # rerun's file (its original's, not spooled here) is hashed as it is sent.
    sha = hashlib.sha256() if job.rerun_of else None
    wait_s = FOLLOW_READER_CHECK_S if job.follow is not None else SSE_HEARTBEAT_S
    job.readers += 1
    try:
        with open(job.pcap_path, "rb") as f:
            while True:
                final = job.final  # read before the size: no byte written before the end is missed
                if pos < job.written:
                    f.seek(pos)
                    data = f.read(min(READ_SLICE, job.written - pos))
                    pos += len(data)
                    if sha is not None:
                        sha.update(data)
                    await resp.write(data)
                    if job.pace is not None:
                        job.pace.advance(pos)
                    continue
                if final:
                    break
                if request.transport is None or request.transport.is_closing():
                    return resp  # the client left
                await job.wait_change(wait_s)
    finally:
        job.readers -= 1
        if job.follow is not None and job.readers == 0 and not job.final:
            job.follow.stop()
    if job.status != "done":
        if request.transport is not None:
            request.transport.abort()
        return resp
    await resp.write_eof()
    await exported(request, job.spec.case, job.id, job.spooled if sha is None else sha, pos)
    return resp


async def exported(request: web.Request, case: str, query_id: str, sha: Any, size: int
                   ) -> None:
    """A query's PCAP sent whole: an ``export`` entry in its case's custody log with the
    SHA-256 of the bytes sent (appended off the loop: it waits for an fsync)."""
    await asyncio.to_thread(append, tenant_store(request).root, case, "export",
                            actor(request), [{"kind": "export", "path": f"{query_id}.pcap",
                                              "sha256": sha.hexdigest(), "size": size}],
                            {"query_id": query_id, "to": "http"})


async def send_stored(request: web.Request, path: Path, case: str, query_id: str
                      ) -> web.StreamResponse:
    """Send a stored result, hashing what is sent (for its ``export`` entry)."""
    resp = web.StreamResponse(headers=pcap_headers(path.name))
    with open(path, "rb") as f:
        resp.content_length = size = f.seek(0, 2)
        f.seek(0)
        await resp.prepare(request)
        sha = hashlib.sha256()
        while data := f.read(READ_SLICE):
            sha.update(data)
            await resp.write(data)
    await resp.write_eof()
    await exported(request, case, query_id, sha, size)
    return resp


def refuse_failed(ts: TenantStore, row: dict[str, Any] | None, job: QueryJob | None,
                  status: str | None) -> None:
    """A query that ended with an error or was cancelled has no PCAP: 422 or 409."""
    if status in ("error", "cancelled"):
        q = view(ts, row, job)
        raise ApiError(409 if status == "cancelled" else 422, q["error_code"] or
                       f"query_{status}", f"query {q['id']} ended with {status}: "
                       f"{q['error'] or 'cancelled'}; no complete PCAP exists",
                       {"status": status})


@routes.post(QUERY_PCAP_PATH)
@role("analyst")
async def query_pcap(request: web.Request) -> web.StreamResponse:
    """Submit a query and stream its PCAP in this response: one request where ``POST
    /api/v1/queries`` then ``GET …/pcap`` take two (a central asks its sensors so). The
    answer starts with the query's first bytes (:data:`QUERY_ID_HEADER` names the query,
    :data:`KEPT_RANGE_HEADER` says what the store keeps);
    a query that fails before them is refused as ``GET …/pcap`` refuses it. The query
    spools only a little ahead of what this response has sent
    (:class:`~pcapwire.api.jobs.Pace`). A caller that leaves before the end cancels the
    query. A follow never ends: it is refused here."""
    body = await read_json(request, "QueryRequest")
    if body.get("follow"):
        raise ApiError(400, "follow_not_streamed", "a follow query is streamed with GET "
                       "/api/v1/queries/{id}/pcap after POST /api/v1/queries")
    ts = tenant_store(request)
    queries = request.app[QUERIES]
    job = await queries.submit(ts, spec_from_body(body, request.app[CONFIG]),
                               list(body["workflows"]) if "workflows" in body else None,
                               actor(request), principal(request).role, streamed=True)
    kept = asyncio.ensure_future(asyncio.to_thread(ts.catalog.kept_range))  # off the loop,
    try:  # alongside the scan's first chunk
        while not (job.written or job.final or request.transport is None
                   or request.transport.is_closing()):
            await job.wait_change(SSE_HEARTBEAT_S)
        refuse_failed(ts, None, job, job.status)
        ends = " ".join(str(ns) for ns in await kept if ns is not None)
        return await follow(request, job, {KEPT_RANGE_HEADER: ends})
    finally:
        kept.cancel()  # not awaited after a refusal
        if not job.final:  # the caller left
            queries.cancel(job)


@routes.get("/api/v1/queries/{id}/pcap")
@role("viewer")
async def get_pcap(request: web.Request) -> web.StreamResponse:
    ts, row, job = lookup(request)
    status = job.status if job is not None else (row or {}).get("status")
    refuse_failed(ts, row, job, status)
    if job is not None:
        return await follow(request, job)
    path = ts.results / f"{request.match_info['id']}.pcap"
    if status != "done" or not path.exists():
        raise ApiError(404, "no_result", "no stored result for this query (it ran outside the "
                       "server or is still running elsewhere); submit it again")
    return await send_stored(request, path, (row or {})["case"], request.match_info["id"])


@routes.get("/api/v1/queries/{id}/verdicts")
@role("viewer")
async def get_verdicts(request: web.Request) -> web.Response:
    """ECS documents (as ``pcapwire run --json`` prints them), or ``?format=native``."""
    fmt = verdict_format(request)
    ts, row, job = lookup(request)
    case = job.spec.case if job is not None else (row or {})["case"]
    return web.json_response({"verdicts": render_verdicts(
        read_verdicts(ts, request.match_info["id"], case, job), fmt)})


@routes.get("/api/v1/queries/{id}/verdicts/stream")
@role("viewer")
async def stream_verdicts(request: web.Request) -> web.StreamResponse:
    """``event: verdict`` per verdict (``id`` = its index, so ``Last-Event-ID`` resumes;
    ECS, or ``?format=native``), ``event: status`` when progress changes, ``event: end``
    with the final status."""
    fmt = verdict_format(request)
    ts, row, job = lookup(request)
    try:
        sent = int(request.headers.get("Last-Event-ID", "-1")) + 1
    except ValueError:
        sent = 0
    resp = await sse.open_stream(request)
    if job is None:
        stored = read_verdicts(ts, request.match_info["id"], (row or {})["case"])
        for i, v in enumerate(stored[sent:], sent):
            await sse.send(resp, "verdict", render_verdict(v, fmt), i)
        await sse.send(resp, "end", view(ts, row, None))
        return resp
    last_status = None
    while True:
        final = job.final
        for i in range(sent, len(job.verdicts)):
            await sse.send(resp, "verdict", render_verdict(job.verdicts[i], fmt), i)
        sent = len(job.verdicts)
        status = (job.status, job.stats.packets, round(job.progress(), 3))
        if status != last_status:
            await sse.send(resp, "status", view(ts, None, job))
            last_status = status
        if final:
            await sse.send(resp, "end", view(ts, None, job))
            return resp
        before = asyncio.get_running_loop().time()
        await job.wait_change(SSE_HEARTBEAT_S)
        if asyncio.get_running_loop().time() - before >= SSE_HEARTBEAT_S:
            await sse.heartbeat(resp)
