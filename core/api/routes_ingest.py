"""Ingest through the API (an uploaded capture, or a server-side path for admins) into the
caller's tenant store, and the sensors that feed a tenant."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from pcapwire.api.auth import principal, role
from pcapwire.api.bodies import read_json, receive_upload
from pcapwire.api.errors import ApiError, not_found
from pcapwire.api.keys import AUTH, CONFIG
from pcapwire.api.routes_queries import tenant_store

routes = web.RouteTableDef()
UPLOAD_TYPES = ("application/vnd.tcpdump.pcap", "application/octet-stream", "application/gzip",
                "application/x-pcapng")


def _sensor(request: web.Request) -> str | None:
    name = request.query.get("sensor")
    if name is None:
        return None
    if request.app[AUTH].sensor_tenant(name) != principal(request).tenant:
        raise not_found("sensor", name)
    return name


async def _receive(request: web.Request, directory: Path) -> Path:
    """Stream the body to a file, refusing more than the upload limit (413)."""
    return await receive_upload(request, directory, request.app[CONFIG].max_upload_bytes,
                                what="capture", limit_name="max_upload_bytes",
                                suffix=".upload",
                                instead="ingest it from a server-side path or split it")


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
    if request.content_type == "application/json":
        if not principal(request).has("admin"):
            raise ApiError(403, "forbidden", "ingesting a server-side path needs the 'admin' "
                           "role", {"required_role": "admin"})
        path = _allowed_path(request, (await read_json(request, "IngestPath"))["path"])
        return web.json_response({**await ts.ingest([path]), "sensor": sensor})
    if request.content_type not in UPLOAD_TYPES:
        raise ApiError(415, "unsupported_media_type", "upload the capture as "
                       "application/vnd.tcpdump.pcap (pcap, pcapng or gzip'd either)")
    upload = await _receive(request, ts.uploads)
    shown = request.query.get("filename", "upload")[:200]
    try:
        summary = await ts.ingest([upload])
    finally:
        upload.unlink(missing_ok=True)
    summary["errors"] = [e.replace(str(upload), shown) for e in summary["errors"]]
    summary["warnings"] = [w.replace(str(upload), shown) for w in summary["warnings"]]
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
    if db.sensor_tenant(body["name"]) is not None:
        raise ApiError(409, "sensor_exists", f"sensor {body['name']!r} already exists")
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


