"""Reading request bodies and query-string parameters, with clear 4xx errors."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pcapwire.api.errors import ApiError
from pcapwire.api.limits import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from pcapwire.api.schemas import validate


async def read_json(request: web.Request, schema: str | None = None) -> Any:
    """The JSON body (at most the server's body limit; 413 above it), checked against a
    schema from :mod:`.schemas` when given."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as application/json (got {request.content_type!r})")
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    return validate(body, schema) if schema is not None else body


def int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer",
                       {"parameter": name}) from None
    if not lo <= value <= hi:
        raise ApiError(400, "invalid_parameter", f"{name} must be within {lo}..{hi}",
                       {"parameter": name})
    return value


def float_param(request: web.Request, name: str, default: float, lo: float, hi: float
                ) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be a number",
                       {"parameter": name}) from None
    if not lo <= value <= hi:  # also rejects nan
        raise ApiError(400, "invalid_parameter", f"{name} must be within {lo}..{hi}",
                       {"parameter": name})
    return value


def page(request: web.Request) -> tuple[int, int]:
    """(limit, offset) from ``?limit=&offset=``."""
    return (int_param(request, "limit", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE),
            int_param(request, "offset", 0, 0, 2**31))


def list_param(request: web.Request, name: str) -> list[str]:
    """Repeated or comma-separated: ``?x=a&x=b`` or ``?x=a,b``."""
    return [v.strip() for raw in request.query.getall(name, []) for v in raw.split(",")
            if v.strip()]
