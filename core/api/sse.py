"""Server-Sent Events: ``text/event-stream`` framing for live verdict and status streams."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


async def open_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    return resp


def frame(event: str, data: Any, event_id: int | None = None) -> bytes:
    """One event; ``data`` is JSON (one line, so no ``data:`` continuation is needed)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, sort_keys=True)}\n\n".encode()


async def send(resp: web.StreamResponse, event: str, data: Any,
               event_id: int | None = None) -> None:
    await resp.write(frame(event, data, event_id))


async def heartbeat(resp: web.StreamResponse) -> None:
    await resp.write(b": keep-alive\n\n")
