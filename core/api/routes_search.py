"""Metadata search over the tenant's index (``<tenant>/search.sqlite``,
:mod:`pcapwire.search`): ``GET /api/v1/search?q=&limit=&case=``. The search runs in a
worker thread; a query that does not parse is a 400 whose details name the column."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web
from pcapwire.api.auth import role
from pcapwire.api.bodies import int_param
from pcapwire.api.errors import ApiError
from pcapwire.api.routes_queries import tenant_store
from pcapwire.search.index import SEARCH_FILE, SearchIndex
from pcapwire.search.indexer import catch_up
from pcapwire.search.lang import MAX_QUERY_CHARS, SearchSyntaxError
from pcapwire.search.query import DEFAULT_LIMIT, MAX_LIMIT, search

routes = web.RouteTableDef()
#: Longest case name accepted as a filter.
MAX_CASE_CHARS = 200


def _search(root: Path, text: str, case: str | None, limit: int) -> dict[str, Any]:
    catch_up(root)  # flows an upload added since the index last looked
    if not (root / SEARCH_FILE).exists():
        return {"hits": [], "total": 0, "total_exact": True}
    with SearchIndex.of(root) as index:
        return search(index, text, case=case, limit=limit).to_dict()


@routes.get("/api/v1/search")
@role("viewer")
async def search_metadata(request: web.Request) -> web.Response:
    text = request.query.get("q")
    if text is None or not text.strip():
        raise ApiError(400, "invalid_parameter", "q (the search) is required, e.g. "
                       "q=url.domain:example.com", {"parameter": "q"})
    if len(text) > MAX_QUERY_CHARS:
        raise ApiError(400, "invalid_parameter", f"q is longer than {MAX_QUERY_CHARS} "
                       "characters", {"parameter": "q"})
    case = request.query.get("case")
    if case is not None and not 1 <= len(case) <= MAX_CASE_CHARS:
        raise ApiError(400, "invalid_parameter", f"case must have 1..{MAX_CASE_CHARS} "
                       "characters", {"parameter": "case"})
    limit = int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    root = tenant_store(request).root
    try:
        body = await asyncio.to_thread(_search, root, text, case, limit)
    except SearchSyntaxError as exc:
        raise ApiError(400, "invalid_query", str(exc), {
            "column": exc.column, "reason": exc.reason}) from None
    return web.json_response(body)
