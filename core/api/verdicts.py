"""Verdicts as the API returns them: ECS documents by default (the very form of
``pcapwire run --json`` and of a case bundle's ``verdicts.jsonl``, made by
:func:`pcapwire.cases.verdict_to_ecs`), or pcapwire's own record with ``?format=native``.

Inside the server a verdict travels as its native dict (``Verdict.to_dict()`` plus the
``run_id`` of the workflow run that produced it); it is turned into ECS only on the way
out, so every endpoint that returns verdicts returns the same shape. An ECS verdict posted
back to ``POST /api/v1/events`` queries its flow again.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pcapwire.api.errors import ApiError
from pcapwire.cases import verdict_to_ecs
from pcapwire.records import Verdict

VERDICT_FORMATS = ("ecs", "native")
DEFAULT_VERDICT_FORMAT = "ecs"


def native_verdict(v: Verdict, run_id: str) -> dict[str, Any]:
    """The server's internal (and ``?format=native``) form of a verdict."""
    return {**v.to_dict(), "run_id": run_id}


def verdict_format(request: web.Request) -> str:
    """``?format=ecs`` (the default) or ``?format=native``; 400 otherwise."""
    fmt = request.query.get("format", DEFAULT_VERDICT_FORMAT)
    if fmt not in VERDICT_FORMATS:
        raise ApiError(400, "invalid_parameter", f"format must be one of "
                       f"{', '.join(VERDICT_FORMATS)}", {"parameter": "format"})
    return fmt


def render_verdict(native: dict[str, Any], fmt: str) -> dict[str, Any]:
    """One verdict (its native dict) in the requested format."""
    if fmt == "native":
        return native
    return verdict_to_ecs(Verdict.from_dict(native), run_id=native.get("run_id", ""))


def render_verdicts(natives: list[dict[str, Any]], fmt: str) -> list[dict[str, Any]]:
    return [render_verdict(v, fmt) for v in natives]
