"""The limits of an ingest through the API (:mod:`pcapwire.store.limits`, set by ``pcapwire
serve`` flags): the tenant's quota while an upload streams in (507, nothing stored), and the
answer when a limit stopped the ingest child midway (413 or 507, naming the limit, the file
and the byte of its decompressed stream where it stopped, and what of it was stored).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from pcapwire.api.bodies import receive_upload
from pcapwire.api.config import ApiConfig
from pcapwire.api.errors import ApiError
from pcapwire.store.limits import DECOMPRESSED, QUOTA, RATIO, LimitStop, tree_bytes

QUOTA_NAME = "tenant_quota_bytes"  # the quota's name in API errors (ApiConfig's field)

#: Per store limit: status, error code, its name in API errors, and what to do.
REFUSALS: dict[str, tuple[int, str, str, str]] = {
    DECOMPRESSED: (413, "decompressed_too_large", DECOMPRESSED,
                   "Split the capture into smaller files before compressing it, or ask the "
                   "operator to raise `pcapwire serve --max-decompressed-mb`"),
    RATIO: (413, "compression_ratio_too_high", RATIO,
            "Upload it uncompressed, or ask the operator to raise `pcapwire serve "
            "--max-decompression-ratio`"),
    QUOTA: (507, "tenant_quota_exceeded", QUOTA_NAME,
            "Ask the operator to raise `pcapwire serve --tenant-quota-gb` or to free space "
            "in your tenant's store"),
}


def _quota_full(config: ApiConfig, tenant: str, used: int) -> ApiError:
    quota = config.tenant_quota_bytes
    return ApiError(507, "tenant_quota_exceeded",
                    f"tenant {tenant!r} stores {used} bytes of its quota of {quota} bytes "
                    f"({QUOTA_NAME}) and this capture would exceed it; nothing was stored. "
                    f"{REFUSALS[QUOTA][3]}",
                    {"limit": quota, "limit_name": QUOTA_NAME, "used": used})


async def receive_capture(request: web.Request, tenant: str, root: Path, directory: Path,
                          config: ApiConfig) -> Path:
    """Stream an uploaded capture into ``directory``: over the upload limit a 413; beyond
    what the tenant's quota has room for (all files under ``root``), a 507 before or while
    it streams in, the partial upload removed."""
    limit, name, used = config.max_upload_bytes, "max_upload_bytes", 0
    if config.tenant_quota_bytes:
        used = await asyncio.to_thread(tree_bytes, root)
        if config.tenant_quota_bytes - used < limit:
            limit, name = max(0, config.tenant_quota_bytes - used), QUOTA_NAME
    try:
        return await receive_upload(request, directory, limit, what="capture",
                                    limit_name=name, suffix=".upload",
                                    instead="ingest it from a server-side path or split it")
    except ApiError as exc:
        if exc.details.get("limit_name") == QUOTA_NAME:
            raise _quota_full(config, tenant, used) from None
        raise


def refuse_if_stopped(summary: dict[str, Any], shown: Callable[[str], str]) -> None:
    """Raise the 413/507 for an ingest a limit stopped (the CLI summary's ``stopped``,
    removed from ``summary``); ``shown`` maps a server path to the name the client knows."""
    stops = [LimitStop(**s) for s in summary.pop("stopped", None) or ()]
    if not stops:
        return
    stop = next((s for s in stops if s.limit_name == QUOTA), stops[0])
    status, code, name, remedy = REFUSALS[stop.limit_name]
    stop.path = shown(stop.path)
    message = (f"{stop.path}: {stop.where(name)}. {remedy}; sending the same capture again "
               "then resumes after the packets already stored")
    details = {"limit": stop.limit, "limit_name": name, "file": stop.path,
               "offset": stop.offset, "decompressed": stop.decompressed,
               "compressed_offset": stop.compressed_offset,
               "kept": {"packets": stop.packets_kept, "bytes": stop.bytes_kept,
                        "segments": stop.segments_kept, "before_offset": stop.offset,
                        "stored_earlier": stop.packets_before},
               "summary": summary}
    raise ApiError(status, code, message, details)
