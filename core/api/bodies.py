"""Reading request bodies and query-string parameters, with clear 4xx errors."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web
from pcapwire.api.errors import ApiError
from pcapwire.api.limits import DEFAULT_PAGE_SIZE, MAX_JSON_DEPTH, MAX_PAGE_SIZE
from pcapwire.api.schemas import validate

#: Bytes read from a request body at a time while an upload streams to disk.
UPLOAD_BLOCK = 1 * 2**20


async def receive_upload(request: web.Request, directory: Path, limit: int, *, what: str,
                         limit_name: str, instead: str, suffix: str) -> Path:
    """Stream the body into a new file in ``directory``; more than ``limit`` bytes is a 413
    (``upload_too_large``, naming ``what`` and what to do ``instead``), an empty body a 400.
    The file is removed when anything fails."""
    too_big = ApiError(413, "upload_too_large", f"the {what} is larger than the upload limit "
                       f"of {limit} bytes; {instead}", {"limit": limit, "limit_name": limit_name})
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    fd, name = tempfile.mkstemp(suffix=suffix, dir=directory)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while block := await request.content.read(UPLOAD_BLOCK):
                size += len(block)
                if size > limit:
                    raise too_big
                out.write(block)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    if size == 0:
        Path(name).unlink(missing_ok=True)
        raise ApiError(400, "empty_upload", f"the request body is empty; send the {what}")
    return Path(name)


async def read_json(request: web.Request, schema: str | None = None) -> Any:
    """The JSON body (at most the server's body limit; 413 above it), checked against a
    schema from :mod:`.schemas` when given."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as application/json (got {request.content_type!r})")
    raw = await request.read()
    too_deep = ApiError(400, "json_too_deep", "the JSON body nests arrays and objects more "
                        f"than {MAX_JSON_DEPTH} levels deep (the limit max_json_depth); send "
                        "a flatter document", {"limit": MAX_JSON_DEPTH,
                                               "limit_name": "max_json_depth"})
    try:
        body = json.loads(raw)
    except RecursionError:  # deeper than Python's parser goes: far beyond the limit
        raise too_deep from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if json_depth(body, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise too_deep
    return validate(body, schema) if schema is not None else body


def json_depth(value: Any, stop: int) -> int:
    """How deep arrays and objects nest in ``value`` (``[]`` is 1, ``[[1]]`` 2), counted
    without recursion; counting stops past ``stop``."""
    depth, level = 0, [value]
    while depth <= stop:
        level = [v for v in level if isinstance(v, dict | list)]
        if not level:
            break
        depth += 1
        level = [c for v in level for c in (v.values() if isinstance(v, dict) else v)]
    return depth


def id_param(request: web.Request, name: str, hi: int) -> int:
    """A path segment that is an object's id: an integer within 1..hi, else a 400."""
    raw = request.match_info[name]
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= hi:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer within "
                       f"1..{hi}", {"parameter": name})
    return int(raw)


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
