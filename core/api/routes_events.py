"""Event-to-PCAP: a SIEM posts the event it has (Suricata EVE, Zeek conn.log JSON, or a
5-tuple and a time) and gets a query back (``/events``), or the PCAP itself in the same
call (``/events/pcap``)."""

from __future__ import annotations

from aiohttp import web
from pcapwire.api.auth import actor, principal, role
from pcapwire.api.bodies import float_param, list_param, read_json
from pcapwire.api.errors import ApiError
from pcapwire.api.events import event_spec
from pcapwire.api.keys import CONFIG, QUERIES
from pcapwire.api.limits import MAX_EVENT_MARGIN_S
from pcapwire.api.routes_queries import submit, tenant_store
from pcapwire.api.routes_results import follow
from pcapwire.query import QuerySpec

routes = web.RouteTableDef()


async def _spec(request: web.Request) -> tuple[QuerySpec, str]:
    body = await read_json(request, "Event")
    config = request.app[CONFIG]
    margin = float_param(request, "margin", config.event_margin_s, 0.0, MAX_EVENT_MARGIN_S)
    case = request.query.get("case", "default")
    if not 1 <= len(case) <= 200 or len(request.query.get("event", "")) > 200:
        raise ApiError(400, "invalid_parameter", "case must be 1-200 characters, event at most "
                       "200", {"parameter": "case"})
    spec, parsed = event_spec(body, margin, case, request.query.get("event"),
                              config.max_query_result_bytes)
    return spec, parsed.format


def _workflows(request: web.Request) -> list[str] | None:
    """``?workflows=a,b`` runs those (``?workflows=`` none); absent: the triggered ones."""
    return list_param(request, "workflows") if "workflows" in request.query else None


@routes.post("/api/v1/events")
@role("analyst")
async def event_query(request: web.Request) -> web.Response:
    spec, fmt = await _spec(request)
    return await submit(request, spec, _workflows(request), {"event_format": fmt})


@routes.post("/api/v1/events/pcap")
@role("analyst")
async def event_pcap(request: web.Request) -> web.StreamResponse:
    spec, _fmt = await _spec(request)
    job = await request.app[QUERIES].submit(tenant_store(request), spec, _workflows(request),
                                            actor(request), principal(request).role)
    return await follow(request, job)
