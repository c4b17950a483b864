"""Triggers of the caller's tenant (:mod:`pcapwire.triggers`, its store's
``triggers.sqlite``): create (the hunt over history is queued), list, show (hunts with
progress and ETA), edit (a new version and hunt when what decides the results changes),
pause/resume/abort, delete, the result set with its pivots, the difference between two
versions' results (``…/diff``), and a live stream (SSE) of matches as they arrive and of
the hunt's progress.

A body is the trigger's JSON definition (:func:`pcapwire.triggers.model.from_dict`: rules
are *text*, never file names) plus optional ``indicator_files`` (STIX 2.1, MISP or text
content, :mod:`pcapwire.triggers.indicators`), whose problems answer 400 with their file
and line or object. Webhook secrets are stored, never returned (``"(set)"``); a definition
sent back as shown keeps them. Every database call runs in a worker thread on a
connection of its own; another tenant's trigger is a 404.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from pcapwire.api.auth import actor, role
from pcapwire.api.bodies import id_param, int_param, read_json
from pcapwire.api.errors import ApiError, not_found
from pcapwire.api.keys import TRIGGERS
from pcapwire.api.routes_queries import tenant_store
from pcapwire.api.sse import heartbeat, open_stream, send
from pcapwire.errors import ConfigError
from pcapwire.triggers import views
from pcapwire.triggers.db import Trigger, TriggerDB
from pcapwire.triggers.indicators import IndicatorImportError, load_indicators, merge
from pcapwire.triggers.model import INDICATOR_KINDS, Indicators, from_dict
from pcapwire.triggers.offloop import SerialCalls

routes = web.RouteTableDef()
MAX_ID = 2**62
#: Matches per page of GET …/matches (and per poll of the event stream), and per list
#: (new, gone) of GET …/diff.
MAX_MATCHES_PAGE = 1000
#: The event stream looks for new matches and hunt progress this often …
EVENTS_POLL_S = 0.5
#: … sends a comment line this often when nothing happens (proxies keep it open) …
EVENTS_HEARTBEAT_S = 15.0
#: … and ends after this long (an EventSource reconnects, with Last-Event-ID).
EVENTS_MAX_S = 600.0
_FIELD = re.compile(r"^body: ([a-z_]+(?:\.[a-z_0-9]+|\[\d+\])*): ")


def _int(request: web.Request, name: str) -> int:
    return id_param(request, name, MAX_ID)


@contextmanager
def api_errors() -> Iterator[None]:
    """A trigger's domain errors (a conflict, bad indicator files, a bad definition) as
    API errors."""
    try:
        yield
    except views.TriggerConflict as exc:
        raise ApiError(409, "trigger_conflict", str(exc)) from None
    except IndicatorImportError as exc:
        raise ApiError(400, "invalid_indicators", str(exc), {
            "problems": [p.to_dict() for p in exc.problems],
            "more_problems": exc.result.more_problems}) from None
    except ConfigError as exc:
        m = _FIELD.match(str(exc))
        raise ApiError(400, "invalid_trigger", str(exc),
                       {"field": m.group(1)} if m else {}) from None


def _with_db(root: Path, fn: Any, *args: Any) -> Any:
    """``fn(db, *args)`` on a connection of its own (call in a worker thread); domain
    errors become API errors."""
    with api_errors(), TriggerDB(root) as db:
        return fn(db, *args)


def _wake(request: web.Request, root: Path) -> None:
    """The tenant's trigger service looks at its triggers now, not at its next poll."""
    services = request.app.get(TRIGGERS)
    if services is not None:
        services.wake(root)


def _trigger(db: TriggerDB, trigger_id: int) -> Trigger:
    try:
        trig = db.get(trigger_id)
    except KeyError:
        trig = None
    if trig is None or trig.state == "deleted":
        raise not_found("trigger", str(trigger_id))
    return trig


def definition(body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The definition of a request body, its indicator files imported into it (call in a
    worker thread, inside :func:`api_errors`), and the files' import summaries."""
    raw = {k: v for k, v in body.items() if k != "indicator_files"}
    results = []
    for i, f in enumerate(body.get("indicator_files", [])):
        results.append(load_indicators(f["content"], f.get("format", "auto"),
                                       f.get("name") or f"indicator_files[{i}]",
                                       f.get("skip_bad", False)))
    if results:
        given = raw.get("indicators", {})
        merged = merge(Indicators(**{k: given.get(k, []) for k in INDICATOR_KINDS}),
                       *(r.indicators for r in results))
        raw["indicators"] = vars(merged)
    return raw, [r.summary() for r in results]


def _create(db: TriggerDB, body: dict[str, Any], who: str) -> dict[str, Any]:
    raw, imports = definition(body)
    trig, _hunt = views.create(db, from_dict(raw, "body"), who)
    return {"trigger": views.trigger_view(db, trig, detail=True), "imports": imports}


def _edit(db: TriggerDB, trigger_id: int, body: dict[str, Any], who: str) -> dict[str, Any]:
    trig = _trigger(db, trigger_id)
    raw, imports = definition(body)
    trig, _hunt = views.edit(db, trig, from_dict(views.keep_secrets(raw, trig.definition),
                                                 "body"), who)
    return {"trigger": views.trigger_view(db, trig, detail=True), "imports": imports}


def _list(db: TriggerDB) -> dict[str, Any]:
    return {"triggers": [views.trigger_view(db, t) for t in db.triggers()]}


def _show(db: TriggerDB, trigger_id: int) -> dict[str, Any]:
    return views.trigger_view(db, _trigger(db, trigger_id), detail=True)


def _control(db: TriggerDB, trigger_id: int, action: str) -> dict[str, Any]:
    trig = _trigger(db, trigger_id)
    if action == "pause":
        views.pause(db, trig)
    elif action == "resume":
        views.resume(db, trig)
    elif action == "abort":
        views.abort(db, trig)
    else:
        db.set_state(trig.id, "deleted")
        return {}
    return views.trigger_view(db, db.get(trigger_id), detail=True)


def _matches(db: TriggerDB, trigger_id: int, version: int | None, after: int, limit: int
             ) -> dict[str, Any]:
    trig = _trigger(db, trigger_id)
    rows = [views.match_view(m, trig) for m in db.matches(trigger_id, version, after, limit)]
    return {"matches": rows, "next_after": rows[-1]["id"] if rows else after}


@routes.post("/api/v1/triggers")
@role("analyst")
async def create(request: web.Request) -> web.Response:
    body = await read_json(request, "TriggerRequest")
    root = tenant_store(request).root
    out = await asyncio.to_thread(_with_db, root, _create, body, actor(request))
    _wake(request, root)
    return web.json_response(out, status=201)


@routes.get("/api/v1/triggers")
@role("viewer")
async def list_(request: web.Request) -> web.Response:
    root = tenant_store(request).root
    return web.json_response(await asyncio.to_thread(_with_db, root, _list))


@routes.get("/api/v1/triggers/{trigger_id}")
@role("viewer")
async def show(request: web.Request) -> web.Response:
    tid = _int(request, "trigger_id")
    root = tenant_store(request).root
    return web.json_response(await asyncio.to_thread(_with_db, root, _show, tid))


@routes.put("/api/v1/triggers/{trigger_id}")
@role("analyst")
async def edit(request: web.Request) -> web.Response:
    tid = _int(request, "trigger_id")
    body = await read_json(request, "TriggerRequest")
    root = tenant_store(request).root
    out = await asyncio.to_thread(_with_db, root, _edit, tid, body, actor(request))
    _wake(request, root)
    return web.json_response(out)


async def _act(request: web.Request, action: str) -> web.Response:
    tid = _int(request, "trigger_id")
    root = tenant_store(request).root
    out = await asyncio.to_thread(_with_db, root, _control, tid, action)
    _wake(request, root)
    return web.json_response(out)


@routes.post("/api/v1/triggers/{trigger_id}/pause")
@role("analyst")
async def pause(request: web.Request) -> web.Response:
    return await _act(request, "pause")


@routes.post("/api/v1/triggers/{trigger_id}/resume")
@role("analyst")
async def resume(request: web.Request) -> web.Response:
    return await _act(request, "resume")


@routes.post("/api/v1/triggers/{trigger_id}/abort")
@role("analyst")
async def abort(request: web.Request) -> web.Response:
    return await _act(request, "abort")


@routes.delete("/api/v1/triggers/{trigger_id}")
@role("admin")
async def delete(request: web.Request) -> web.Response:
    tid = _int(request, "trigger_id")
    root = tenant_store(request).root
    await asyncio.to_thread(_with_db, root, _control, tid, "delete")
    _wake(request, root)
    return web.Response(status=204)


@routes.get("/api/v1/triggers/{trigger_id}/matches")
@role("viewer")
async def matches(request: web.Request) -> web.Response:
    tid = _int(request, "trigger_id")
    version = request.query.get("version")
    if version is not None:
        version = int_param(request, "version", 0, 1, MAX_ID)
    after = int_param(request, "after", 0, 0, MAX_ID)
    limit = int_param(request, "limit", MAX_MATCHES_PAGE, 1, MAX_MATCHES_PAGE)
    root = tenant_store(request).root
    return web.json_response(await asyncio.to_thread(_with_db, root, _matches, tid, version,
                                                     after, limit))


def _diff(db: TriggerDB, trigger_id: int, to: int | None, base: int | None, limit: int
          ) -> dict[str, Any]:
    trig = _trigger(db, trigger_id)
    to = trig.version if to is None else to
    base = to - 1 if base is None else base
    for name, value, lo in (("to", to, 1), ("from", base, 0)):
        if not lo <= value <= trig.version:
            raise ApiError(400, "invalid_parameter", f"{name}: trigger {trig.name!r} has "
                           f"versions 1..{trig.version}" + (" (0: before the first)"
                                                            if lo == 0 else ""),
                           {"parameter": name})
    return views.version_diff(db, trig, to, base, limit)


@routes.get("/api/v1/triggers/{trigger_id}/diff")
@role("viewer")
async def diff(request: web.Request) -> web.Response:
    """What version ``to`` (default: the current one) found that version ``from``
    (default: ``to - 1``; 0: none) did not (``new``), and what ``from`` found that ``to``
    does not (``gone``): the first ``limit`` of each, with their totals (as ``pcapwire
    trigger matches --diff``)."""
    tid = _int(request, "trigger_id")
    to = base = None
    if "to" in request.query:
        to = int_param(request, "to", 0, 1, MAX_ID)
    if "from" in request.query:
        base = int_param(request, "from", 0, 0, MAX_ID)
    limit = int_param(request, "limit", MAX_MATCHES_PAGE, 1, MAX_MATCHES_PAGE)
    root = tenant_store(request).root
    return web.json_response(await asyncio.to_thread(_with_db, root, _diff, tid, to, base,
                                                     limit))


def _poll(db: TriggerDB, trigger_id: int, after: int) -> tuple[dict[str, Any] | None,
                                                                list[dict[str, Any]]]:
    """The trigger's state and hunt (None once deleted) and the matches after ``after``."""
    try:
        trig = db.get(trigger_id)
    except KeyError:  # deleted, and its name reused since
        return None, []
    if trig.state == "deleted":
        return None, []
    hunt = views.current_hunt(db, trig)
    state = {"trigger_id": trig.id, "name": trig.name, "state": trig.state,
             "version": trig.version, "matches": db.match_count(trig.id),
             "hunt": views.hunt_view(db, hunt) if hunt is not None else None}
    rows = [views.match_view(m, trig) for m in db.matches(trigger_id, None, after,
                                                            MAX_MATCHES_PAGE)]
    return state, rows


def _changed(state: dict[str, Any], shown: dict[str, Any] | None) -> bool:
    """Whether ``state`` differs from the one last sent, but for the rate and ETA (which
    move with the clock alone)."""
    def key(s: dict[str, Any]) -> dict[str, Any]:
        return {**s, "hunt": {**s["hunt"], "eta_s": None, "rate_bytes_s": None}
                if s["hunt"] else None}
    return shown is None or key(state) != key(shown)


@routes.get("/api/v1/triggers/{trigger_id}/events")
@role("viewer")
async def events(request: web.Request) -> web.StreamResponse:
    """SSE: ``hunt`` (the trigger's state and its hunt's progress; first, then on every
    change), ``match`` (each match after ``after`` or Last-Event-ID, its id the event id),
    ``end`` (the trigger was deleted, or the stream's time is up: reconnect)."""
    tid = _int(request, "trigger_id")
    after = int_param(request, "after", 0, 0, MAX_ID)
    last = request.headers.get("Last-Event-ID", "")
    if last.isascii() and last.isdigit():
        after = max(after, min(int(last), MAX_ID))
    root = tenant_store(request).root
    db = await asyncio.to_thread(TriggerDB, root)
    # A client that goes away cancels this handler while a poll may still run in its
    # worker thread: the connection is closed only once no call uses it.
    calls = SerialCalls()
    try:
        await calls.call(_trigger, db, tid)
        resp = await open_stream(request)
        shown: dict[str, Any] | None = None
        started = beat = time.monotonic()
        while True:
            state, rows = await calls.call(_poll, db, tid, after)
            if state is None:
                await send(resp, "end", {"reason": "deleted"})
                break
            for m in rows:
                await send(resp, "match", m, m["id"])
                after = m["id"]
            if _changed(state, shown):
                await send(resp, "hunt", state)
                shown, beat = state, time.monotonic()
            now = time.monotonic()
            if now - started >= EVENTS_MAX_S:
                await send(resp, "end", {"reason": "reconnect"})
                break
            if rows:
                beat = now
                continue  # a full page: read on at once
            if now - beat >= EVENTS_HEARTBEAT_S:
                await heartbeat(resp)
                beat = now
            await asyncio.sleep(EVENTS_POLL_S)
        return resp
    finally:
        await calls.close(db.close)
