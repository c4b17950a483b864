"""``pcapwire extract (--pcap FILE | query filters) --out DIR``: carve files and emails,
from a capture file or from the store's packets that match the filters (the query is kept
in the store's history with its case and event, like ``pcapwire query``).

Writes DIR in the layout of :mod:`pcapwire.extract.layout` (``artifacts/``, ``files.jsonl``,
``emails.jsonl``, ``http.jsonl``, ``ftp.jsonl``, ``summary.json``; ``named/`` with
``--by-name``).

Exit status: 0 everything carved; 1 partial (an incomplete file, a limit reached, damaged
input -- all reported); 2 usage or input error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcapwire.cli.filters import add_filter_args
from pcapwire.errors import ConfigError
from pcapwire.extract import PROTOCOLS

if TYPE_CHECKING:  # the carving modules load only when the command runs (fast --help)
    from pcapwire.extract.carve import CarveResult
    from pcapwire.records import PcapChunk


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="carve files and emails (HTTP, SMTP, POP3, IMAP, FTP)")
    p.add_argument("--pcap", metavar="FILE", help="capture to carve (pcap, pcapng, .gz); "
                   "without it, the store's packets that match the filters")
    add_filter_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--protocols", default=",".join(PROTOCOLS),
                   help=f"comma-separated subset of {','.join(PROTOCOLS)}")
    p.add_argument("--by-name", action="store_true",
                   help="also link every file under DIR/named/ by its sanitised name")
    p.add_argument("--json", action="store_true",
                   help="print every record as a JSON line on stdout")
    p.set_defaults(func=run)


def _protocols(text: str) -> tuple[str, ...]:
    chosen = tuple(p.strip().lower() for p in text.split(",") if p.strip())
    unknown = [p for p in chosen if p not in PROTOCOLS]
    if unknown or not chosen:
        raise ConfigError(f"--protocols: unknown {', '.join(unknown) or '(empty)'}; "
                          f"choose from {', '.join(PROTOCOLS)}")
    return chosen


def run(args: argparse.Namespace, chunks: Iterable[PcapChunk] | None = None) -> int:
    """``chunks`` lets a caller inject the packets (e.g. a query's chunk stream) instead
    of ``--pcap``."""
    from pcapwire.extract.layout import artifact_store, write_carve
    from pcapwire.extract.source import carve_chunks, carve_pcap

    protocols = _protocols(args.protocols)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create --out directory {out}: {exc}") from exc
    store = artifact_store(out)
    query_id: str | None = None  # the store query carved, kept in its case's custody log
    if chunks is None and args.pcap:
        if _has_filters(args):
            raise ConfigError("extract takes --pcap FILE or query filters, not both")
        result, damage = carve_pcap(args.pcap, store, protocols=protocols)
    elif chunks is None:
        if not _has_filters(args):
            raise ConfigError("extract needs --pcap FILE or query filters (--host, --port, "
                              "--bpf, --start/--end ...); to carve the whole store, say "
                              "so with --start 0")
        result, damage, query_id = _carve_query(args, store, protocols)
    else:
        result, damage = carve_chunks(chunks, store, protocols=protocols)
    write_carve(out, result, damage, by_name=args.by_name)
    if query_id is not None:
        _custody(args, out, query_id)
    if args.json:
        for rec in [*result.files, *result.emails]:
            sys.stdout.write(json.dumps(rec.to_dict(), sort_keys=True) + "\n")
    incomplete = sum(f.incomplete for f in result.files) + sum(e.incomplete
                                                               for e in result.emails)
    limits = [n for n in result.notes if "MAX_" in n]
    print(f"{len(result.files)} files, {len(result.emails)} emails "
          f"({incomplete} incomplete) from {sum(result.connections.values())} connections; "
          f"written to {out}", file=sys.stderr)
    for msg in damage + limits:
        print(f"pcapwire extract: {msg}", file=sys.stderr)
    return 1 if incomplete or limits or damage else 0


_FILTERS = ("bpf", "host", "net", "port", "proto", "flow", "five_tuple", "start", "end")


def _has_filters(args: argparse.Namespace) -> bool:
    return any(getattr(args, name, None) for name in _FILTERS)


def _custody(args: argparse.Namespace, out: Path, query_id: str) -> None:
    """The carved files and emails, in the custody log of the query's case."""
    from pcapwire import custody
    from pcapwire.cli.filters import spec_from_args
    from pcapwire.custody.events import carve_objects, record

    record(args.data_dir, spec_from_args(args).case, "extract", custody.actor_cli(),
           carve_objects(out.resolve()), {"query_id": query_id, "out": str(out.resolve())})


def _carve_query(args: argparse.Namespace, artifacts: Any, protocols: tuple[str, ...]
                 ) -> tuple[CarveResult, list[str], str]:
    """Carve the packets of a store query (kept in the query history); returns the
    carve, the damage and the query's id."""
    import uuid

    from pcapwire.cli.filters import spec_from_args
    from pcapwire.extract.source import carve_chunks
    from pcapwire.query.engine import QueryStats
    from pcapwire.store import Store

    spec, stats, query_id = spec_from_args(args), QueryStats(), uuid.uuid4().hex
    with Store.existing(args.data_dir) as store:
        chunks = store.query_engine().recorded_chunks(spec, query_id, stats=stats)
        try:
            out = carve_chunks(chunks, artifacts, protocols=protocols)
        finally:
            chunks.close()
    print(f"query: {stats.packets} packets", file=sys.stderr)
    return (*out, query_id)
