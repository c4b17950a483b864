"""Ingest through the API (an uploaded capture, or a server-side path for admins) into the
caller's tenant store, and the sensors that feed a tenant."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from pcapwire.api.auth import principal, role
from pcapwire.api.bodies import read_json
from pcapwire.api.errors import ApiError, not_found
from pcapwire.api.ingest_limits import receive_capture, refuse_if_stopped
from pcapwire.api.keys import AUTH, CONFIG
from pcapwire.api.routes_queries import tenant_store

routes = web.RouteTableDef()
UPLOAD_TYPES = ("application/vnd.tcpdump.pcap", "application/octet-stream", "application/gzip",
                "application/x-pcapng")


def _sensor(request: web.Request) -> str | None:
    name = request.query.get("sensor")
    if name is None:
        return None
    if not request.app[AUTH].has_sensor(name, principal(request).tenant):
        raise not_found("sensor", name)
    return name


def _allowed_path(request: web.Request, raw: str) -> Path:
    roots = request.app[CONFIG].ingest_paths
    try:
        path = Path(raw).resolve()
    except (ValueError, OSError) as exc:  # NUL bytes, loops, names too long
        raise ApiError(400, "invalid_path", f"unusable path: {exc}") from None
    if not any(path == r or path.is_relative_to(r) for r in roots):
        raise ApiError(403, "path_not_allowed", "ingesting from this server path is not "
                       "allowed; the server allows: " + (", ".join(map(str, roots)) or "none"),
                       {"allowed": [str(r) for r in roots]})
    return path


@routes.post("/api/v1/ingest")
@role("analyst")
async def ingest(request: web.Request) -> web.Response:
    sensor = _sensor(request)
    ts = tenant_store(request)
    config = request.app[CONFIG]
    if request.content_type == "application/json":
        if not principal(request).has("admin"):
            raise ApiError(403, "forbidden", "ingesting a server-side path needs the 'admin' "
                           "role", {"required_role": "admin"})
        path = _allowed_path(request, (await read_json(request, "IngestPath"))["path"])
        summary = await ts.ingest([path], config.ingest_limits)
        refuse_if_stopped(summary, str)
        summary.pop("unusable", None)  # a directory may hold other files: reported in errors
        return web.json_response({**summary, "sensor": sensor})
    if request.content_type not in UPLOAD_TYPES:
        raise ApiError(415, "unsupported_media_type", "upload the capture as "
                       "application/vnd.tcpdump.pcap (pcap, pcapng or gzip'd either)")
    upload = await receive_capture(request, ts.tenant, ts.root, ts.uploads, config)
    shown = request.query.get("filename", "upload")[:200]
    try:
        summary = await ts.ingest([upload], config.ingest_limits)
    finally:
        upload.unlink(missing_ok=True)
    summary["errors"] = [e.replace(str(upload), shown) for e in summary["errors"]]
    summary["warnings"] = [w.replace(str(upload), shown) for w in summary["warnings"]]
    refuse_if_stopped(summary, lambda p: p.replace(str(upload), shown))
    if summary.pop("unusable", None):
        raise ApiError(400, "not_a_capture", f"{summary['errors'][0]}; upload a pcap or "
                       "pcapng file (gzip'd or not)", {"errors": summary["errors"]})
    return web.json_response({**summary, "sensor": sensor})


@routes.get("/api/v1/sensors")
@role("admin")
async def list_sensors(request: web.Request) -> web.Response:
    return web.json_response({"sensors": request.app[AUTH].sensors(principal(request).tenant)})


@routes.post("/api/v1/sensors")
@role("admin")
async def add_sensor(request: web.Request) -> web.Response:
    body = await read_json(request, "SensorRequest")
    db = request.app[AUTH]
    if db.has_sensor(body["name"], principal(request).tenant):  # names are per tenant
        raise ApiError(409, "sensor_exists", f"sensor {body['name']!r} already exists in "
                       "your tenant")
    db.add_sensor(body["name"], principal(request).tenant)
    created = next(s for s in db.sensors(principal(request).tenant) if s["name"] == body["name"])
    return web.json_response(created, status=201)


@routes.delete("/api/v1/sensors/{name}")
@role("admin")
async def remove_sensor(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if not request.app[AUTH].remove_sensor(name, principal(request).tenant):
        raise not_found("sensor", name)
    return web.Response(status=204)


