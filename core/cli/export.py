"""``pcapwire export [QUERY] [--case C] [-o FILE] [--base-url URL]``: the metadata index
(flows, analyzer records, carved files and emails, verdicts) as ECS JSON lines that
Filebeat, Elastic and OpenSearch take as they are, with ``--template`` the index template
that maps them (:mod:`pcapwire.search.template`). Each line's ``event.id`` is its key in
the index; with ``--base-url`` its ``event.url`` is the API search that returns it with
its pivots (the way back from the SIEM into pcapwire). Verdicts alone, in the case
store's own export: ``GET /api/v1/cases/{case}`` or ``pcapwire run --json``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from pcapwire.cli import EXIT_OK
from pcapwire.errors import ConfigError


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("export", help="the metadata index as ECS JSON lines (for a SIEM)")
    p.add_argument("query", nargs="*", help="only documents matching this search "
                   "(docs/search.md); default: all")
    p.add_argument("--case", help="only records of this case")
    p.add_argument("-o", "--output", default="-", metavar="FILE", help="default: stdout")
    p.add_argument("--base-url", default="", metavar="URL", help="this server's address "
                   "(https://pcapwire.example:8443): each line gets event.url, the search "
                   "that finds it again with its pivots")
    p.add_argument("--template", action="store_true", help="print the Elasticsearch/"
                   "OpenSearch index template instead (PUT _index_template/pcapwire)")
    p.set_defaults(func=run)


def export_lines(root: Path, out: IO[str], text: str | None, case: str | None,
                 base_url: str) -> int:
    from pcapwire.search.index import SearchIndex
    from pcapwire.search.query import iter_docs

    n = 0
    with SearchIndex.of(root) as index:
        for key, doc in iter_docs(index, text, case=case):
            event = doc.setdefault("event", {})
            event["id"] = key
            if base_url:
                event["url"] = (f"{base_url.rstrip('/')}/api/v1/search?q="
                                + quote(f'event.id:"{key}"', safe=""))
            out.write(json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
                      + "\n")
            n += 1
    return n


def run(args: argparse.Namespace) -> int:
    if args.template:
        from pcapwire.search.template import template_json

        sys.stdout.write(template_json())
        return EXIT_OK
    from pcapwire.search.index import SEARCH_FILE

    root = Path(args.data_dir)
    if not (root / SEARCH_FILE).exists():
        raise ConfigError(f"no metadata index in {root}: run 'pcapwire search rebuild' "
                          "(or ingest, run workflows) first")
    text = " ".join(args.query) or None
    if args.output == "-":
        n = export_lines(root, sys.stdout, text, args.case, args.base_url)
    else:
        with open(args.output, "w", encoding="utf-8") as f:
            n = export_lines(root, f, text, args.case, args.base_url)
    print(f"exported {n} document(s)", file=sys.stderr)
    return EXIT_OK
