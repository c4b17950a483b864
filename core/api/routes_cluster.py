"""A central's view of its sensors (``pcapwire serve --cluster FILE``): their health and
ranges, and the cases, verdicts and triggers (with their hunts) of every sensor of the
caller's tenant, each item tagged with its ``sensor``. A sensor that does not answer is
listed in ``missing`` with the reason; the others still answer.

The caller's tenant and role are checked here, and again by each sensor: the central asks
with the sensor's token for this tenant only, on behalf of the caller with the caller's
role. Without a cluster the routes answer 404 ``not_a_central``.

Triggers (:mod:`pcapwire.cluster.triggers`): ``POST /api/v1/cluster/triggers`` creates one
on every sensor of the caller's tenant that its ``scope.sensor`` covers (checked here first:
one 400 for a bad definition, not one per sensor); ``PUT``, ``DELETE`` and ``POST …/pause``,
``…/resume``, ``…/abort`` of ``/api/v1/cluster/triggers/{name}`` act on the trigger of that
name on every sensor that has it. Each answer lists every sensor with what happened there;
201 (or 200) when all did it, 207 when some did not, 404 when none has the trigger. The
central records each change first (:mod:`pcapwire.cluster.trigger_sync`): a sensor that did
not answer gets it once it answers again; ``GET /api/v1/cluster/triggers/{name}`` shows the
trigger on every sensor (``pending`` until then) beside the central's record.

Jobs (the cluster file's ``[nats] url``, :meth:`~pcapwire.cluster.central.Central.submit_job`):
``POST /api/v1/cluster/jobs`` queues a ``hunt`` or ``extract`` on one sensor of the caller's
tenant, ``GET /api/v1/cluster/jobs/{unit_id}`` shows its state and result; another tenant's
job is 404. Without ``[nats]``: 409 ``no_job_queue``.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web
from pcapwire.api.auth import actor, principal, role
from pcapwire.api.bodies import read_json
from pcapwire.api.errors import ApiError, not_found

if TYPE_CHECKING:  # the cluster's modules load only on a central (and import the API's)
    from pcapwire.cluster.sensors import Caller, Sensors

routes = web.RouteTableDef()
CASES_PARAMS = ("q", "since", "until", "ip", "hash", "severity", "limit", "offset")


def _central(request: web.Request) -> tuple[Any, Caller]:
    from pcapwire.cluster.central import CENTRAL
    from pcapwire.cluster.sensors import Caller

    central = request.app.get(CENTRAL)
    if central is None:
        raise ApiError(404, "not_a_central", "this server has no sensors; start it with "
                       "`pcapwire serve --cluster FILE`")
    return central, Caller(principal(request).tenant, actor(request), principal(request).role)


async def _gather(request: web.Request, path: str, key: str, params: tuple[str, ...]
                  ) -> tuple[list[dict[str, Any]], list[dict[str, str]], list[str]]:
    """The ``key`` items of every sensor's ``GET path`` (query parameters ``params``
    passed on), tagged with their sensor; those missing; the sensors that had ``path``."""
    central, caller = _central(request)
    sensors: Sensors = central.sensors
    passed = {k: v for k, v in request.query.items() if k in params}
    answers, missing = await sensors.each(caller, path, passed)
    items = [{**item, "sensor": name} for name, status, body in answers if status == 200
             for item in body.get(key, [])]
    return items, missing, [name for name, status, _ in answers if status == 200]


@routes.get("/api/v1/cluster/sensors")
@role("viewer")
async def list_sensors(request: web.Request) -> web.Response:
    central, caller = _central(request)
    return web.json_response({"sensors": await central.health(caller)})


@routes.get("/api/v1/cluster/cases")
@role("viewer")
async def list_cases(request: web.Request) -> web.Response:
    """Every sensor's ``GET /api/v1/cases`` (same parameters)."""
    cases, missing, _ = await _gather(request, "/api/v1/cases", "cases", CASES_PARAMS)
    return web.json_response({"cases": cases, "missing": missing})


@routes.get("/api/v1/cluster/cases/{case}/verdicts")
@role("viewer")
async def case_verdicts(request: web.Request) -> web.Response:
    """The case's verdicts on every sensor that has it (``format`` passed on); 404 when
    none has it."""
    case = request.match_info["case"]
    verdicts, missing, found = await _gather(request, f"/api/v1/cases/{quote(case, safe='')}",
                                             "verdicts", ("format",))
    if not found:
        raise not_found("case", case)
    return web.json_response({"verdicts": verdicts, "sensors": found, "missing": missing})


@routes.get("/api/v1/cluster/triggers")
@role("viewer")
async def list_triggers(request: web.Request) -> web.Response:
    """Every sensor's triggers with their hunts' progress, and the central's changes that
    have not reached a sensor yet (``pending``: :mod:`pcapwire.cluster.trigger_sync`)."""
    from pcapwire.cluster.trigger_sync import TRIGGER_SYNC

    _, caller = _central(request)
    triggers, missing, _ = await _gather(request, "/api/v1/triggers", "triggers", ())
    pending = await asyncio.to_thread(request.app[TRIGGER_SYNC].state.pending_of,
                                      caller.tenant)
    return web.json_response({"triggers": triggers, "missing": missing, "pending": pending})


@routes.post("/api/v1/cluster/jobs")
@role("analyst")
async def submit_job(request: web.Request) -> web.Response:
    from pcapwire.cluster.central import JobRefused

    central, caller = _central(request)
    body = await read_json(request, "ClusterJobRequest")
    try:
        job = await central.submit_job(caller, body["sensor"], body["kind"], body["params"])
    except JobRefused as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    return web.json_response(job, status=202)


@routes.get("/api/v1/cluster/jobs/{unit_id}")
@role("viewer")
async def job_state(request: web.Request) -> web.Response:
    from pcapwire.cluster.central import JobRefused

    central, caller = _central(request)
    try:
        job = await central.job(caller, request.match_info["unit_id"])
    except JobRefused as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    return web.json_response(job)


def _checked(body: dict[str, Any]
             ) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    """Check a TriggerRequest as a sensor will (its indicator files imported; call in a
    worker thread): its normalised ``scope.sensor``, the files' import summaries and the
    public definition a sensor will show."""
    from pcapwire.api.routes_triggers import api_errors, definition
    from pcapwire.triggers.model import from_dict

    with api_errors():
        raw, imports = definition(body)
        defn = from_dict(raw, "body")
        return defn.scope.sensor, imports, json.loads(json.dumps(defn.public()))


def _name(request: web.Request) -> str:
    """The trigger name in the path (404 for what cannot be a trigger's name)."""
    from pcapwire.triggers.model import MAX_NAME_CHARS, NAME_RE

    name = request.match_info["name"]
    if len(name) > MAX_NAME_CHARS or not NAME_RE.fullmatch(name):
        raise not_found("trigger", name[:MAX_NAME_CHARS])
    return name


async def _fanned(request: web.Request, action: str, ok: int) -> web.Response:
    """``action`` (create, edit, or one of CONTROLS) through every sensor concerned,
    recorded first by the central (:mod:`pcapwire.cluster.trigger_sync`: a sensor that
    does not answer gets it when it answers again)."""
    from pcapwire.cluster.trigger_sync import TRIGGER_SYNC
    from pcapwire.cluster.triggers import TriggerRefused, answer

    _, caller = _central(request)
    sync = request.app[TRIGGER_SYNC]
    triggers = sync.triggers
    imports: list[dict[str, Any]] = []
    try:
        if action in ("create", "edit"):
            body = await read_json(request, "TriggerRequest")
            scope_sensor, imports, public = await asyncio.to_thread(_checked, body)
            covered = [s.name for s in triggers.targets(caller.tenant, scope_sensor)]
            name = body["name"] if action == "create" else _name(request)
            if body["name"] != name:
                raise TriggerRefused(400, "invalid_trigger", f"body: name: {body['name']!r} "
                                     f"is not {name!r}: a cluster trigger keeps its name "
                                     "(create one of the new name and delete this one)",
                                     {"field": "name"})
            async with sync.lock(caller.tenant, name):
                change = await sync.record(caller, name, action.removesuffix("e") + "ed",
                                           body, public, covered)
                if action == "create":
                    outcomes = await triggers.create(caller, body, scope_sensor)
                else:
                    outcomes = await triggers.edit(caller, name, body, scope_sensor)
                await sync.settle(change, outcomes)
        else:
            name = _name(request)
            async with sync.lock(caller.tenant, name):
                change = await sync.record(caller, name, action)
                outcomes = await triggers.control(caller, name, action)
                await sync.settle(change, outcomes)
    except TriggerRefused as exc:
        raise ApiError(exc.status, exc.code, str(exc), exc.details) from None
    status, out = answer(name, outcomes, ok)
    if status == 404:
        raise ApiError(404, out["code"], out["message"], out["details"])
    return web.json_response({**out, "imports": imports}, status=status)


@routes.post("/api/v1/cluster/triggers")
@role("analyst")
async def create_trigger(request: web.Request) -> web.Response:
    return await _fanned(request, "create", 201)


@routes.get("/api/v1/cluster/triggers/{name}")
@role("viewer")
async def show_trigger(request: web.Request) -> web.Response:
    """The trigger on each sensor of the caller's tenant (as the sensor's own
    ``GET /api/v1/triggers/{id}`` shows it; ``pending`` where the central's last change
    has not reached it yet) and the central's record of what it asked for; 207 when some
    sensors did not answer or are pending, 404 when no sensor has it and the central never
    created it."""
    from pcapwire.cluster.trigger_sync import TRIGGER_SYNC

    _, caller = _central(request)
    status, out = await request.app[TRIGGER_SYNC].view(caller, _name(request))
    if status == 404:
        raise ApiError(404, out["code"], out["message"], out["details"])
    return web.json_response(out, status=status)


@routes.put("/api/v1/cluster/triggers/{name}")
@role("analyst")
async def edit_trigger(request: web.Request) -> web.Response:
    return await _fanned(request, "edit", 200)


@routes.post("/api/v1/cluster/triggers/{name}/pause")
@role("analyst")
async def pause_trigger(request: web.Request) -> web.Response:
    return await _fanned(request, "pause", 200)


@routes.post("/api/v1/cluster/triggers/{name}/resume")
@role("analyst")
async def resume_trigger(request: web.Request) -> web.Response:
    return await _fanned(request, "resume", 200)


@routes.post("/api/v1/cluster/triggers/{name}/abort")
@role("analyst")
async def abort_trigger(request: web.Request) -> web.Response:
    return await _fanned(request, "abort", 200)


@routes.delete("/api/v1/cluster/triggers/{name}")
@role("admin")
async def delete_trigger(request: web.Request) -> web.Response:
    return await _fanned(request, "delete", 200)
