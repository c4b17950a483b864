"""Files and emails of a query: carved from its stored result on first request by an
``extract`` job in a worker child process (:func:`pcapwire.jobs.local.run`: CPU work never
competes with the event loop), into ``results/<id>.carve/`` (a carve directory,
:mod:`pcapwire.extract.layout`). Later requests read what was carved.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcapwire.api.errors import ApiError
from pcapwire.extract.layout import CarveDir
from pcapwire.jobs import Job, local
from pcapwire.records import SEVERITIES

if TYPE_CHECKING:
    from pcapwire.api.tenants import TenantStore

log = logging.getLogger(__name__)

MAX_CONCURRENT_CARVES = 2  # carving child processes of the whole server at once
MAX_MESSAGE_CHARS = 500  # of a failed carve's message, in the API's answer


def carve_dir(ts: TenantStore, query_id: str) -> Path:
    return ts.results / f"{query_id}.carve"


def _carved_dir(ts: TenantStore, query_id: str) -> CarveDir:
    return CarveDir(carve_dir(ts, query_id))


def carved(ts: TenantStore, query_id: str) -> bool:
    return _carved_dir(ts, query_id).complete


async def carve(ts: TenantStore, query_id: str, slots: asyncio.Semaphore) -> bool:
    """Carve the stored result of a finished query once (concurrent callers wait);
    True when this call carved it."""
    lock = ts.carve_locks.setdefault(query_id, asyncio.Lock())
    async with lock:
        if carved(ts, query_id):
            return False
        pcap = ts.results / f"{query_id}.pcap"
        if not pcap.exists():
            raise ApiError(409, "no_result", "this query has no stored result to carve")
        job = Job("extract", uuid.uuid4().hex, ts.tenant,
                  {"pcap": str(pcap), "out": str(carve_dir(ts, query_id))})
        async with slots:
            result = await local.run(job, ts.root)
    if not result.ok:  # a partial carve is a result: what it missed is in its summary
        log.error("carving query %s failed (%s): %s", query_id, result.code, result.message)
        raise ApiError(422, "carve_failed", "carving the result failed: "
                       f"{result.message[-MAX_MESSAGE_CHARS:]}")
    from pcapwire.search.indexer import index_carve, safely

    await asyncio.to_thread(safely, index_carve, ts.root, query_id)  # files, emails: searchable
    return True


def triage(record: dict[str, Any], verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    """What the workflows said about this file: verdicts whose subject is the file (by id)
    or that name its SHA-256 in their evidence."""
    mine = [v for v in verdicts if v.get("subject_kind") == "file" and (
        v.get("subject_id") == record["id"]
        or (v.get("evidence") or {}).get("sha256") == record["sha256"])]
    ranks = [SEVERITIES.index(v["severity"]) for v in mine if v.get("severity") in SEVERITIES]
    return {"verdicts": len(mine), "max_severity": SEVERITIES[max(ranks)] if ranks else None,
            "analyzers": sorted({v.get("analyzer", "") for v in mine})}


def files(ts: TenantStore, query_id: str, verdicts: list[dict[str, Any]] | None = None
          ) -> list[dict[str, Any]]:
    """The query's carved files (empty until carved), each with ``query_id`` and
    ``triage``; the server-side ``path`` is not shown."""
    out = []
    for rec in _carved_dir(ts, query_id).files():
        rec.pop("path", None)
        out.append({**rec, "query_id": query_id, "triage": triage(rec, verdicts or [])})
    return out


def emails(ts: TenantStore, query_id: str) -> list[dict[str, Any]]:
    out = []
    for rec in _carved_dir(ts, query_id).emails():
        rec.pop("path", None)
        out.append({**rec, "query_id": query_id})
    return out


def summary(ts: TenantStore, query_id: str) -> dict[str, Any] | None:
    return _carved_dir(ts, query_id).summary()


def content_path(ts: TenantStore, query_id: str, sha256: str, suffix: str = "") -> Path | None:
    """Where the carved bytes with this SHA-256 are, inside this query's carve directory
    (never a path taken from a record)."""
    return _carved_dir(ts, query_id).content(sha256, suffix)
