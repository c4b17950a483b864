"""``pcapwire search QUERY [--case C] [--limit N] [--json]`` and ``pcapwire search
rebuild``: the metadata index (:mod:`pcapwire.search`; the language: docs/search.md).

A table by default (time, dataset, 5-tuple, what the record says, case, flow); ``--json``
prints one hit per line with its document and pivots. A query that does not parse exits
2 with the column and a caret under it. To search the word "rebuild", quote it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pcapwire.cli import EXIT_OK

#: What the table shows of a document, first present wins.
SUMMARY_FIELDS = ("rule.name", "url.domain", "dns.question.name", "tls.client.server_name",
                  "email.subject", "file.name", "file.hash.sha256", "event.reason",
                  "network.protocol")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    from pcapwire.search.query import DEFAULT_LIMIT, MAX_LIMIT

    p = sub.add_parser("search", help="search the metadata index (or: search rebuild)",
                       description="Search flows, analyzer records, carved files, emails and "
                       "verdicts by ECS field, e.g. 'url.domain:*.example AND "
                       "http.request.method:POST'; 'pcapwire search rebuild' rebuilds the "
                       "index from the stored outputs. The language: docs/search.md.")
    p.add_argument("query", nargs="+", help="the search (words are joined by spaces)")
    p.add_argument("--case", help="only records of this case")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                   help=f"hits shown, 1..{MAX_LIMIT} (default {DEFAULT_LIMIT})")
    p.add_argument("--json", action="store_true", help="one hit per line, as JSON")
    p.set_defaults(func=run)


def _get(doc: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)  # type: ignore[assignment]
    return doc


def row(hit: dict[str, Any]) -> str:
    doc = hit["doc"]
    src, dst = doc.get("source") or {}, doc.get("destination") or {}
    tuple5 = (f"{(doc.get('network') or {}).get('transport', '')} {src.get('ip', '')}:"
              f"{src.get('port', '')} -> {dst.get('ip', '')}:{dst.get('port', '')}"
              if src else "-")
    what = next((v for f in SUMMARY_FIELDS if (v := _get(doc, f))), "")
    if isinstance(what, list):
        what = ", ".join(map(str, what))
    pivots = hit["pivots"]
    return "  ".join((str(hit["@timestamp"]), hit["dataset"], tuple5, str(what)[:60],
                      f"case={pivots['case'] or '-'}", f"flow={pivots['flow_id'] or '-'}"))


def run(args: argparse.Namespace) -> int:
    from pcapwire.search.index import SEARCH_FILE, SearchIndex

    root = Path(args.data_dir)
    text = " ".join(args.query)
    if text == "rebuild":
        from pcapwire.search.indexer import rebuild

        counts = rebuild(root)
        print(json.dumps(counts) if args.json else
              f"rebuilt the index: {counts['documents']} documents ({counts['flows']} flows, "
              f"{counts['runs']} runs, {counts['carved']} carved results)")
        return EXIT_OK
    from pcapwire.search.indexer import catch_up
    from pcapwire.search.query import search

    catch_up(root)  # flows an ingest added since the index last looked
    if not (root / SEARCH_FILE).exists():
        print(f"no index in {root} yet: ingest, run a workflow, or 'pcapwire search rebuild'")
        return EXIT_OK
    with SearchIndex.of(root) as index:
        result = search(index, text, case=args.case, limit=args.limit)
    if args.json:
        for h in result.hits:
            print(json.dumps(h, sort_keys=True, default=str))
        return EXIT_OK
    for h in result.hits:
        print(row(h))
    more = "" if result.total_exact else " or more"
    print(f"{len(result.hits)} of {result.total}{more} hit(s)")
    return EXIT_OK
