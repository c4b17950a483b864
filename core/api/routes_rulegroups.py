"""Suricata rule groups of the caller's tenant (``DATA_DIR/tenants/<tenant>/rules``, the
rule set ``pcapwire rules update`` builds there; :mod:`pcapwire.plugins.suricata.groups`):
``GET /api/v1/rules/groups`` (viewer: groups by classtype, rule set or a metadata key, with
rule, enabled-rule and alert counts) and ``PUT /api/v1/rules/groups/{group}`` (admin:
enable, disable, reset or threshold one group; suricata-update is run again when its state
changes).

Plugins add no routes, so this core module imports the Suricata plugin when a request
comes. The tenant is the token's; every call runs in a worker thread (rule files are
parsed, suricata-update and ``suricata -T`` run). Messages name rule files by their base
name, never by a server path. A change is an entry in the store's custody log.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from aiohttp import web
from pcapwire import custody
from pcapwire.api.auth import actor, role
from pcapwire.api.bodies import read_json
from pcapwire.api.errors import ApiError
from pcapwire.api.routes_queries import tenant_store
from pcapwire.errors import ConfigError

routes = web.RouteTableDef()
#: Rule-file problems listed in a response (all are counted).
MAX_LISTED_PROBLEMS = 100


def _clean(root: Path, text: str) -> str:
    return text.replace(str(root) + os.sep, "").replace(str(root), ".")


def _listing(root: Path, cases: Any, by: str, case: str | None) -> dict[str, Any]:
    from pcapwire.plugins.suricata import groups

    try:
        loaded = groups.load(root)
        rows, unmatched = groups.group_rows(
            loaded, by, groups.GroupSettings.load(root),
            groups.alert_counts(cases, case))
    except ConfigError as exc:
        raise ApiError(400 if "--by" in str(exc) else 409, "rules_invalid",
                       _clean(root, str(exc))) from None
    rs = loaded.rules
    return {"by": by, "managed": loaded.managed, "rules": len(rs.rules), "files": rs.files,
            "parse_seconds": round(rs.seconds, 3),
            "problems": len(rs.problems) + rs.dropped_problems,
            "problem_samples": [{"file": os.path.basename(p.file), "line": p.line,
                                 "message": p.message}
                                for p in rs.problems[:MAX_LISTED_PROBLEMS]],
            "alerts_unmatched": unmatched, "groups": [r.to_dict() for r in rows]}


@routes.get("/api/v1/rules/groups")
@role("viewer")
async def get_groups(request: web.Request) -> web.Response:
    tenant = tenant_store(request)
    by = request.query.get("by", "classtype")
    case = request.query.get("case") or None
    cases = tenant.cases  # opened here, on the loop, like every other user of it
    return web.json_response(await asyncio.to_thread(_listing, tenant.root, cases, by, case))


@routes.put("/api/v1/rules/groups/{group}")
@role("admin")
async def put_group(request: web.Request) -> web.Response:
    from pcapwire.plugins.suricata import groups

    body = await read_json(request, "RuleGroupChange")
    name = request.match_info["group"]
    root = tenant_store(request).root
    who = actor(request)
    try:
        threshold = groups.Threshold.from_dict(body["threshold"]) \
            if body.get("threshold") else None
    except ConfigError as exc:
        raise ApiError(400, "invalid_threshold", str(exc)) from None

    def apply() -> dict[str, Any]:
        try:
            done = groups.set_group(root, name, state=body.get("state"), threshold=threshold,
                                    clear_threshold="threshold" in body)
        except groups.UnknownGroup as exc:
            raise ApiError(404, "not_found", _clean(root, str(exc))) from None
        except groups.NotManaged as exc:
            raise ApiError(409, "rules_not_managed", str(exc)) from None
        except ConfigError as exc:
            raise ApiError(409, "rules_conflict", _clean(root, str(exc))) from None
        custody.append(root, None, "rules.group", who, details={"group": name, **body})
        out = done.to_dict()
        if out["threshold_file"]:
            out["threshold_file"] = os.path.basename(out["threshold_file"])
        return out

    return web.json_response(await asyncio.to_thread(apply))
