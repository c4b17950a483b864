"""What the dashboard draws beyond the case routes: one query's timeline and flows (its
connections graph), and a flow's session view within a case (:mod:`.sessions`)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from pcapwire.api.auth import role
from pcapwire.api.bodies import int_param
from pcapwire.api.errors import ApiError, not_found
from pcapwire.api.jobs import spec_of
from pcapwire.api.limits import MAX_PAGE_SIZE
from pcapwire.api.routes_artifacts import carve_all
from pcapwire.api.routes_cases import (
    case_rows,
    case_verdicts,
    original_rows,
    timeline_view,
)
from pcapwire.api.routes_flows import flows_for
from pcapwire.api.routes_queries import lookup, tenant_store
from pcapwire.api.sessions import session
from pcapwire.query import QuerySpec

routes = web.RouteTableDef()
MAX_FLOW_ID = 2**63 - 1  # flow ids are SQLite integer keys


@routes.get("/api/v1/queries/{id}/timeline")
@role("viewer")
async def query_timeline(request: web.Request) -> web.Response:
    """Packets and bytes over time of the query's result (so far, while it runs), its
    verdicts as marks."""
    ts, row, job = lookup(request)
    qid = request.match_info["id"]
    case = job.spec.case if job is not None else (row or {})["case"]
    path = ts.results / f"{qid}.pcap"
    paths = [path] if path.exists() else []
    rows = [{"id": qid, "case": case, "spec": {}}]
    return web.json_response(await timeline_view(request, ts, paths, rows))


@routes.get("/api/v1/queries/{id}/flows")
@role("viewer")
async def query_flows(request: web.Request) -> web.Response:
    """Flows the query selects (through the index; for a BPF expression the flows that
    may hold a match), oldest first."""
    ts, row, job = lookup(request)
    spec = job.spec if job is not None else spec_of((row or {})["spec"])
    limit = int_param(request, "limit", MAX_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    flows = await asyncio.to_thread(flows_for, ts, spec, limit)
    return web.json_response({"flows": sorted(flows, key=lambda f: (f["start"],
                                                                      f["flow_id"]))})


@routes.get("/api/v1/cases/{case}/sessions/{flow_id}")
@role("viewer")
async def case_session(request: web.Request) -> web.Response:
    """One flow of the index as the case saw it: HTTP transactions, files (hashes,
    triage), emails carved from it; Suricata's http, dns, tls, fileinfo and smtp records
    and Zeek's conn, http, dns, ssl, files and smtp records about it, read where each step
    kept them (inside the tenant's directory only); the verdicts about it (native form)."""
    ts = tenant_store(request)
    case = request.match_info["case"]
    try:
        flow_id = int(request.match_info["flow_id"])
    except ValueError:
        raise ApiError(400, "invalid_parameter", "flow_id must be an integer (a flow of "
                       "GET /api/v1/flows)", {"parameter": "flow_id"}) from None
    if not 0 < flow_id <= MAX_FLOW_ID:
        raise not_found("flow", str(flow_id))
    rows = case_rows(request, ts, case)
    found = await asyncio.to_thread(flows_for, ts, QuerySpec(flow_ids=[flow_id]), 1)
    if not found:
        raise not_found("flow", str(flow_id))
    originals = original_rows(rows)
    await carve_all(request, ts, originals)
    carved = [r["id"] for r in originals if r["status"] == "done"]
    view = await asyncio.to_thread(session, ts, case, found[0], carved,
                                   [r["id"] for r in rows], case_verdicts(request, ts, rows))
    return web.json_response({"case": case, **view})
