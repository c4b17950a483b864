"""Chain of custody: a case's log, its verification, the installation's public key.

The logs are the tenant's (``tenants/<t>/custody/``); the key is the installation's (the
API's data directory), the one that signs every tenant's bundles. Reading a log and
verifying (which hashes every file the log names) run in worker threads.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from pcapwire.api.auth import role
from pcapwire.api.bodies import page
from pcapwire.api.errors import not_found
from pcapwire.api.keys import CONFIG
from pcapwire.api.routes_queries import tenant_store
from pcapwire.custody import read, signing
from pcapwire.custody.verify import entry_hash, verify

routes = web.RouteTableDef()


def _entries(lines: list[bytes]) -> list[dict[str, Any]]:
    """The entries as kept; a line that is no JSON object (the log was tampered with)
    shows as ``{"line": n, "invalid": text}``."""
    out: list[dict[str, Any]] = []
    for n, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        out.append(entry if isinstance(entry, dict)
                   else {"line": n, "invalid": line.decode("utf-8", "replace")})
    return out


@routes.get("/api/v1/cases/{case}/custody")
@role("viewer")
async def case_log(request: web.Request) -> web.Response:
    """The case's custody log (oldest first; ``limit``/``offset``) and its head (the
    hash of its last line)."""
    ts = tenant_store(request)
    case = request.match_info["case"]
    lines = await asyncio.to_thread(read, ts.root, case)
    if not lines:
        raise not_found("case", case)
    limit, offset = page(request)
    return web.json_response({"case": case, "total": len(lines),
                              "head": entry_hash(lines[-1]),
                              "entries": _entries(lines[offset:offset + limit])})


@routes.post("/api/v1/cases/{case}/custody/verify")
@role("analyst")
async def verify_case(request: web.Request) -> web.Response:
    """Recompute the case's chain (and the store log's) and hash every file they name
    that the tenant's store still keeps; ``verified`` false names the first mismatch."""
    ts = tenant_store(request)
    case = request.match_info["case"]
    if not await asyncio.to_thread(read, ts.root, case):
        raise not_found("case", case)
    result = await asyncio.to_thread(verify, ts.root, case)
    return web.json_response(result.as_dict())


@routes.get("/api/v1/custody/public-key")
@role("viewer")
async def public_key(request: web.Request) -> web.Response:
    """The installation's Ed25519 public key: it verifies every bundle's signature."""
    pem = await asyncio.to_thread(signing.public_pem, request.app[CONFIG].data_dir)
    return web.json_response({"algorithm": "Ed25519", "public_key_pem": pem.decode(),
                              "fingerprint_sha256": signing.fingerprint(pem)})
