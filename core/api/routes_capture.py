"""The recorder of the caller's tenant: ``GET /api/v1/capture/status``.

A recorder (``pcapwire capture --data-dir DATA_DIR/tenants/<tenant>``) rewrites
``capture/status.json`` in the tenant's store every second (:mod:`pcapwire.capture.status`).
The answer is that document with ``recording`` (true while it says ``running`` and is at
most :data:`STALE_S` old: a recorder killed with SIGKILL leaves a ``running`` document that
stops changing) and ``age_s``; and, from the catalog, what was lost per interface and in
the latest segments that lost packets (``loss``). Without any recorder: ``{"recording":
false, "loss": …}``, never a 404.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from aiohttp import web
from pcapwire.api.auth import role
from pcapwire.api.routes_queries import tenant_store
from pcapwire.capture.ledger import loss_by_interface, loss_by_segment
from pcapwire.capture.status import read_status
from pcapwire.store.catalog import Catalog

routes = web.RouteTableDef()
STALE_S = 5.0  # status.json is rewritten every second: older than this, no recorder runs
RECENT_SEGMENTS = 20  # segments (or periods without one) with losses, newest first


def status_path(store_root: Path) -> Path:
    return store_root / "capture" / "status.json"


def recorder_status(store_root: Path, now: float | None = None) -> dict[str, Any] | None:
    """The recorder's last document with ``recording`` and ``age_s``, or None (none ever
    wrote one here)."""
    doc = read_status(status_path(store_root))
    if doc is None:
        return None
    now = time.time() if now is None else now
    try:
        age = max(0.0, now - float(doc.get("updated", 0)))
    except (TypeError, ValueError):
        age = float("inf")
    running = doc.get("state", "running") == "running" and age <= STALE_S
    return {**doc, "recording": running, "age_s": round(age, 3) if age != float("inf")
            else None}


def capture_status(store_root: Path, catalog: Catalog) -> dict[str, Any]:
    status = recorder_status(store_root) or {"recording": False}
    status["loss"] = {"interfaces": loss_by_interface(catalog),
                      "segments": loss_by_segment(catalog, RECENT_SEGMENTS)}
    return status


@routes.get("/api/v1/capture/status")
@role("viewer")
async def get_status(request: web.Request) -> web.Response:
    ts = tenant_store(request)
    return web.json_response(capture_status(ts.root, ts.catalog))
