"""Queries: submit, status, list, BPF check, cancel. (PCAP and verdict streams: see
:mod:`.routes_results`.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from pcapwire.api.auth import actor, principal, role
from pcapwire.api.bodies import page, read_json
from pcapwire.api.config import ApiConfig
from pcapwire.api.errors import ApiError, not_found
from pcapwire.api.history import get_query, query_view, runs_of, search_queries
from pcapwire.api.jobs import QueryJob, compile_off_loop
from pcapwire.api.keys import CONFIG, QUERIES, TENANTS
from pcapwire.api.tenants import TenantStore
from pcapwire.errors import QueryError
from pcapwire.query import QuerySpec, parse_proto, parse_time_ns
from pcapwire.query.loss import loss_in_window
from pcapwire.records import FlowKey

routes = web.RouteTableDef()
MAX_TIME_NS = 2**63 - 1


def spec_from_body(body: dict[str, Any], config: ApiConfig) -> QuerySpec:
    """A QuerySpec from a (schema-checked) QueryRequest; the server's result cap applies."""
    ft = body.get("five_tuple")
    cap = config.max_query_result_bytes
    kwargs: dict[str, Any] = {}
    if "chunk_bytes" in body:
        kwargs["chunk_bytes"] = body["chunk_bytes"]
    return QuerySpec(
        bpf=body.get("bpf", ""), hosts=list(body.get("hosts", [])),
        nets=list(body.get("nets", [])), ports=list(body.get("ports", [])),
        protos=[parse_proto(p) for p in body.get("protos", [])],
        five_tuple=FlowKey(parse_proto(ft["proto"]), ft["src_ip"], ft["src_port"],
                           ft["dest_ip"], ft["dest_port"]) if ft else None,
        flow_ids=list(body.get("flow_ids", [])),
        start_ns=time_ns(body["start"]) if "start" in body else None,
        end_ns=time_ns(body["end"]) if "end" in body else None,
        case=body.get("case", "default"), event=body.get("event", ""),
        max_bytes=min(body.get("max_bytes", cap), cap), follow=body.get("follow", False),
        **kwargs)


def time_ns(value: str | float) -> int:
    """A time as ns since the epoch, within what pcap timestamps and SQLite can hold."""
    try:
        ns = parse_time_ns(value)
    except (OverflowError, ValueError):
        ns = -1
    if not 0 <= ns < MAX_TIME_NS:
        raise QueryError(f"time {value!r} is outside 1970-01-01..2262-04-11")
    return ns


def tenant_store(request: web.Request) -> TenantStore:
    return request.app[TENANTS].get(principal(request).tenant)


def lookup(request: web.Request) -> tuple[TenantStore, dict[str, Any] | None, QueryJob | None]:
    """The caller's query ``{id}``: 404 when it does not exist *in the caller's tenant*."""
    ts = tenant_store(request)
    qid = request.match_info["id"]
    job = request.app[QUERIES].get(ts.tenant, qid)
    row = None if job is not None else get_query(ts, qid)
    if job is None and row is None:
        raise not_found("query", qid)
    return ts, row, job


def view(ts: TenantStore, row: dict[str, Any] | None, job: QueryJob | None) -> dict[str, Any]:
    if job is not None or row is None:
        return with_loss(ts, query_view(row, job))
    runs = runs_of(ts, row["id"], row["case"])
    count = sum(len(ts.cases.verdicts(row["case"], run_id=r.run_id)) for r in runs)
    return with_loss(ts, query_view(row, None, count, [
        {**r.summary, "run_id": r.run_id, "workflow": r.workflow, "status": r.status}
        for r in runs]))


def with_loss(ts: TenantStore, q: dict[str, Any]) -> dict[str, Any]:
    """The query's view with what its time window lost while recorded (``loss``: by
    cause and interface, :mod:`pcapwire.query.loss`); an open window ends when the query
    ended, or now."""
    spec = q["spec"]
    end = spec.get("end_ns")
    if end is None:
        end = int((q["finished"] or time.time()) * 1e9)
    q["loss"] = loss_in_window(ts.catalog, spec.get("start_ns"), end).to_dict()
    return q


async def submit(request: web.Request, spec: QuerySpec, workflows: list[str] | None,
                 extra: dict[str, Any] | None = None) -> web.Response:
    ts = tenant_store(request)
    job = await request.app[QUERIES].submit(ts, spec, workflows, actor(request),
                                            principal(request).role)
    body = {**view(ts, None, job), **(extra or {})}
    return web.json_response(body, status=202, headers={"Location": body["links"]["self"]})


@routes.post("/api/v1/queries")
@role("analyst")
async def create_query(request: web.Request) -> web.Response:
    body = await read_json(request, "QueryRequest")
    workflows = list(body["workflows"]) if "workflows" in body else None
    return await submit(request, spec_from_body(body, request.app[CONFIG]), workflows)


@routes.get("/api/v1/queries")
@role("viewer")
async def list_queries(request: web.Request) -> web.Response:
    ts = tenant_store(request)
    limit, offset = page(request)
    status = request.query.get("status")
    if status is not None and status not in ("running", "done", "error", "cancelled"):
        raise ApiError(400, "invalid_parameter", "status must be running, done, error or "
                       "cancelled", {"parameter": "status"})
    rows = search_queries(ts, case=request.query.get("case"), text=request.query.get("q"),
                          status=status)
    jobs = request.app[QUERIES]
    out = [view(ts, r, jobs.get(ts.tenant, r["id"])) for r in rows[offset:offset + limit]]
    return web.json_response({"queries": out, "total": len(rows)})


@routes.post("/api/v1/queries/check")
@role("viewer")
async def check_bpf(request: web.Request) -> web.Response:
    """Syntax check of a BPF expression by libpcap (the dashboard calls it as you type)."""
    body = await read_json(request, "BpfCheck")
    try:
        spec = QuerySpec(bpf=body["bpf"], start_ns=0, end_ns=1)
        engine = tenant_store(request).engine()
        await compile_off_loop(engine, spec)
        engine.plan(spec)
    except QueryError as exc:
        return web.json_response({"valid": False, "error": str(exc)})
    return web.json_response({"valid": True, "error": None})


@routes.get("/api/v1/queries/{id}")
@role("viewer")
async def get_one(request: web.Request) -> web.Response:
    return web.json_response(view(*lookup(request)))


@routes.post("/api/v1/queries/{id}/cancel")
@role("analyst")
async def cancel(request: web.Request) -> web.Response:
    ts, row, job = lookup(request)
    if job is None:
        raise ApiError(409, "query_finished", "this query is not running")
    request.app[QUERIES].cancel(job)
    if job.task is not None:
        await asyncio.wait({job.task})
    return web.json_response(view(ts, row, job))
