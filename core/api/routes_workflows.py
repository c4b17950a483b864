"""Workflows and plugins: list them, validate a posted YAML document (problems with
line:column), run workflows on a stored query result."""

from __future__ import annotations

from aiohttp import web
from pcapwire.api.auth import actor, role
from pcapwire.api.bodies import read_json
from pcapwire.api.errors import ApiError
from pcapwire.api.history import get_query
from pcapwire.api.keys import QUERIES, WORKFLOWS
from pcapwire.api.routes_queries import lookup, tenant_store, view

routes = web.RouteTableDef()
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml",
              "text/plain")


@routes.get("/api/v1/workflows")
@role("viewer")
async def list_workflows(request: web.Request) -> web.Response:
    service = request.app[WORKFLOWS]
    return web.json_response({"workflows": service.workflows(), "invalid": service.broken,
                              "engine": service.engine_present})


@routes.get("/api/v1/plugins")
@role("viewer")
async def list_plugins(request: web.Request) -> web.Response:
    return web.json_response(request.app[WORKFLOWS].plugins())


@routes.post("/api/v1/workflows/validate")
@role("viewer")
async def validate(request: web.Request) -> web.Response:
    """Check a workflow document against the schema and this server's analyzers; every
    problem comes with its line and column (1-based) in the posted text."""
    if request.content_type not in YAML_TYPES:
        raise ApiError(415, "unsupported_media_type", "post the workflow as application/yaml")
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_encoding", f"the document is not UTF-8 (byte "
                       f"{exc.start})") from None
    name = request.query.get("name", "workflow.yaml")[:200]
    return web.json_response(await request.app[WORKFLOWS].validate(tenant_store(request),
                                                                   text, name))


@routes.post("/api/v1/queries/{id}/run")
@role("analyst")
async def run_on_result(request: web.Request) -> web.Response:
    """Run workflows on a finished query's stored result; answers with the new query (same
    case and result bytes, ``spec.rerun_of`` naming the original) at once."""
    body = await read_json(request, "RunRequest")
    ts, row, job = lookup(request)
    if job is not None:
        if not job.final:
            raise ApiError(409, "query_running", "the query is still running; run workflows "
                           "on it when it has finished")
        row = get_query(ts, job.id)
    assert row is not None
    new = await request.app[QUERIES].rerun(ts, row, list(body["workflows"]), actor(request))
    out = view(ts, None, new)
    return web.json_response(out, status=202, headers={"Location": out["links"]["self"]})
