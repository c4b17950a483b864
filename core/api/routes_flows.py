"""The tenant's flow index, filtered like ``pcapwire flows``."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pcapwire.api.auth import role
from pcapwire.api.bodies import int_param, list_param
from pcapwire.api.errors import ApiError
from pcapwire.api.limits import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from pcapwire.api.routes_queries import tenant_store, time_ns
from pcapwire.api.tenants import TenantStore
from pcapwire.query import QuerySpec, parse_proto
from pcapwire.query.flows import find_flows

routes = web.RouteTableDef()


def flows_for(ts: TenantStore, spec: QuerySpec, limit: int) -> list[dict[str, Any]]:
    """Flows of the index that the spec selects (for a BPF expression: the flows that may
    hold a match, as the planner narrows them), newest last."""
    return find_flows(ts.catalog, spec, limit)


@routes.get("/api/v1/flows")
@role("viewer")
async def list_flows(request: web.Request) -> web.Response:
    q = request.query
    try:
        ports = [int(p) for p in list_param(request, "port")]
    except ValueError:
        raise ApiError(400, "invalid_parameter", "port must be an integer",
                       {"parameter": "port"}) from None
    spec = QuerySpec(hosts=list_param(request, "host"), nets=list_param(request, "net"),
                     ports=ports, protos=[parse_proto(p) for p in list_param(request, "proto")],
                     start_ns=time_ns(q["start"]) if "start" in q else None,
                     end_ns=time_ns(q["end"]) if "end" in q else None)
    limit = int_param(request, "limit", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    return web.json_response({"flows": flows_for(tenant_store(request), spec, limit)})
