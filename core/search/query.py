"""Searching the index: query text in, hits (ECS documents with their pivots) out,
newest indexed first.

The hits of a large search are walked newest first and the walk stops at the limit
(:func:`.newest.top`); its total is counted to :data:`COUNT_CAP` from at most
``COUNT_CAP + 1`` rows of each set the search starts from (fewer,
:data:`.sqlplan.PROBED_COUNT_CAP` or :data:`.sqlplan.CHECKED_COUNT_CAP`, when the documents
of a large set are probed for the other terms of an AND): when a set has more, ``total``
is a lower bound and ``total_exact`` false."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pcapwire.errors import QueryError
from pcapwire.search.index import SearchIndex
from pcapwire.search.lang import And, Node, Term, parse
from pcapwire.search.newest import count, top
from pcapwire.search.sqlplan import Planner, Sql

#: Hits one search returns at most.
MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
#: Matches counted at most, and rows read at most of each set the count starts from
#: (beyond either, ``total`` is a lower bound and ``total_exact`` false).
COUNT_CAP = 10_000


@dataclass
class SearchResult:
    hits: list[dict[str, Any]]
    total: int
    total_exact: bool

    def to_dict(self) -> dict[str, Any]:
        return {"hits": self.hits, "total": self.total, "total_exact": self.total_exact}


def hit(doc_id: int, key: str, body: dict[str, Any]) -> dict[str, Any]:
    """One hit: the document, and its pivots lifted to the top."""
    pw = body.get("pcapwire") or {}
    pivot = pw.get("pivot") or {}
    return {"id": doc_id, "key": key, "@timestamp": body.get("@timestamp"),
            "dataset": (body.get("event") or {}).get("dataset", ""),
            "pivots": {"pcap": pivot.get("query"), "flow_id": pivot.get("flow_id"),
                       "case": pivot.get("case"), "run_id": pivot.get("run_id"),
                       "query_id": pivot.get("query_id")},
            "doc": body}


def search(index: SearchIndex, text: str, *, case: str | None = None,
           limit: int = DEFAULT_LIMIT, now_us: int | None = None) -> SearchResult:
    """The documents matching ``text`` (the language of :mod:`.lang`), of ``case`` only
    when given. Raises :class:`~pcapwire.search.lang.SearchSyntaxError` (a QueryError)
    for a query that does not parse or names values its fields cannot hold."""
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit {limit} is outside 1..{MAX_LIMIT} (MAX_LIMIT)")
    tree = parse(text)
    if case is not None:
        tree = And((tree, Term("pcapwire.case", "exact", case)))
    with index.lock:
        planner = Planner(index, text, now_us)
        ids, known = top(planner, tree, limit)
        rows = {r[0]: r for r in index.db.execute(
            f"SELECT id, key, body FROM docs WHERE id IN ({','.join('?' * len(ids))})", ids)}
        total, exact = len(ids), True
        if known is not None:
            total, exact = min(known, COUNT_CAP), known <= COUNT_CAP
        elif len(ids) == limit:
            counted, exact = count(planner, tree, COUNT_CAP)
            total = max(counted, limit)  # the hits are matches: a lower bound at least
    return SearchResult([hit(i, rows[i][1], json.loads(rows[i][2])) for i in ids if i in rows],
                        total, exact)


def iter_docs(index: SearchIndex, text: str | None = None, *, case: str | None = None,
              batch: int = 1000) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, document) of every match (every document without ``text``), oldest indexed
    first, read ``batch`` at a time."""
    tree: Node | None = parse(text) if text else None
    if case is not None:
        term = Term("pcapwire.case", "exact", case)
        tree = term if tree is None else And((tree, term))
    with index.lock:
        if tree is None:
            matched = Sql("SELECT id FROM docs")
        else:
            matched = Planner(index, text or "").set(tree)
        ids = [r[0] for r in index.db.execute(
            f"SELECT DISTINCT id FROM ({matched.sql}) ORDER BY id", matched.args)]
    for i in range(0, len(ids), batch):
        part = ids[i:i + batch]
        with index.lock:
            rows = index.db.execute(f"SELECT key, body FROM docs WHERE id IN "
                                    f"({','.join('?' * len(part))}) ORDER BY id", part)
            out = [(r[0], json.loads(r[1])) for r in rows]
        yield from out
