"""``pcapwire hashlist import|list|lookup|remove``: allow and deny lists of file hashes in
``DATA_DIR/hashlists.sqlite`` (see :mod:`pcapwire.hashlist`).

A server's tenants have their own stores (``--data-dir DATA/tenants/<tenant>``); the
lists in ``--data-dir DATA`` itself are global: every tenant's lookups and workflows
consult them, and only this command changes them.

Exit codes: 0 success; 1 partial (``import`` skipped bad lines, listed on stderr); 2 usage
or input error (nothing imported, unknown list, invalid hash, an import over its limits
``--max-rows``/``--max-seconds``/``--max-steps`` or stopped by SIGTERM: it then keeps
nothing).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pcapwire.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from pcapwire.cli.signals import stopped_by_signals

#: Bad lines printed on stderr by ``import`` (all are counted; ``--json`` lists up to the
#: report's limit).
SHOWN_ERRORS = 20


def register(sub: argparse._SubParsersAction) -> None:
    from pcapwire.hashlist import ALGORITHMS, FORMATS, KINDS
    from pcapwire.hashlist import limits as lim
    from pcapwire.records import SEVERITIES

    p = sub.add_parser("hashlist", help="manage allow/deny lists of file hashes; look up hashes")
    hsub = p.add_subparsers(dest="hashlist_command", required=True, metavar="ACTION")
    i = hsub.add_parser("import", help="load files of hashes into a list (text, CSV, NSRL RDS)")
    i.add_argument("files", nargs="+", metavar="FILE", help="hash-list files (text may be .gz)")
    i.add_argument("--name", required=True, help="list name (a-z 0-9 _ -)")
    i.add_argument("--kind", required=True, choices=KINDS)
    i.add_argument("--severity", choices=SEVERITIES,
                   help="severity of a match (default: deny critical, allow info)")
    i.add_argument("--format", default="auto", choices=FORMATS)
    i.add_argument("--column", action="append", default=[], metavar="NAME",
                   help="CSV hash column (repeat, or comma-separate; 1-based numbers for a "
                   "file without header); default: every column named like a hash")
    i.add_argument("--label-column", metavar="NAME", help="CSV column with the entry's label "
                   "(rds3: any value stores FILE.file_name)")
    i.add_argument("--algorithms", default=",".join(ALGORITHMS),
                   help="digests to load (comma-separated; default all)")
    i.add_argument("--description", default=None)
    mode = i.add_mutually_exclusive_group()
    mode.add_argument("--replace", action="store_true",
                      help="replace the list's entries (in one commit, when this import is done)")
    mode.add_argument("--append", action="store_true", help="add to an existing list")
    i.add_argument("--display-name", metavar="NAME",
                   help="name errors show for the file (one FILE only)")
    i.add_argument("--wait", action="store_true", help="wait for another import to finish")
    i.add_argument("--max-rows", type=_positive(int), default=lim.RDS3_MAX_ROWS, metavar="N",
                   help="refuse an RDSv3 file whose FILE has more rows (default %(default)s)")
    i.add_argument("--max-seconds", type=_positive(float), default=lim.IMPORT_MAX_SECONDS,
                   metavar="S", help="stop an import running longer (default %(default)s)")
    i.add_argument("--max-steps", type=_positive(int), default=lim.RDS3_MAX_STEPS,
                   metavar="N", help="stop reading an RDSv3 file after this many SQLite "
                   "instructions (default %(default)s)")
    i.add_argument("--json", action="store_true", help="the import report as JSON on stdout")
    i.set_defaults(func=import_lists)
    ls = hsub.add_parser("list", help="lists with their kind, severity and counts")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=list_lists)
    lk = hsub.add_parser("lookup", help="known-good / known-bad / unknown for hashes")
    lk.add_argument("hashes", nargs="*", metavar="HASH")
    lk.add_argument("-f", "--file", metavar="FILE", help="hashes, one per line ('-': stdin)")
    lk.add_argument("--json", action="store_true", help="one JSON object per hash")
    lk.set_defaults(func=lookup)
    rm = hsub.add_parser("remove", help="remove lists")
    rm.add_argument("names", nargs="+", metavar="NAME")
    rm.set_defaults(func=remove)


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return value

    return parse


@contextmanager
def _cancel_on_sigterm() -> Iterator[threading.Event]:
    """An event set on SIGTERM (how the API stops an import): the import sees it at its
    next check (within milliseconds), stops and removes what it wrote."""
    cancel = threading.Event()
    with stopped_by_signals(cancel.set, (signal.SIGTERM,)):
        yield cancel


def _path(args: argparse.Namespace) -> Path:
    from pcapwire.hashlist import DB_NAME

    return Path(args.data_dir) / DB_NAME


def import_lists(args: argparse.Namespace) -> int:
    from pcapwire.hashlist import HashListError, HashListStore, ImportFailed, Source
    from pcapwire.hashlist.limits import ImportLimits, LimitExceeded

    if args.display_name and len(args.files) != 1:
        raise HashListError("--display-name names one FILE; several were given")
    columns = tuple(c.strip() for raw in args.column for c in raw.split(",") if c.strip())
    algorithms = frozenset(a.strip() for a in args.algorithms.split(",") if a.strip())
    sources = [Source(Path(f), shown=args.display_name or f, format=args.format,
                      columns=columns, label_column=args.label_column, algorithms=algorithms)
               for f in args.files]
    mode = "replace" if args.replace else "append" if args.append else "create"
    limits = ImportLimits(max_rows=args.max_rows, max_seconds=args.max_seconds,
                          max_steps=args.max_steps)
    with HashListStore(_path(args)) as store, _cancel_on_sigterm() as cancel:
        try:
            report = store.import_sources(sources, name=args.name, kind=args.kind,
                                          severity=args.severity, description=args.description,
                                          mode=mode, wait=args.wait, limits=limits,
                                          cancel=cancel)
        except HashListError as exc:
            report = exc.report if isinstance(exc, ImportFailed) else None
            if args.json:
                limit = ({"what": exc.what, "limit_name": exc.limit_name, "limit": exc.limit}
                         if isinstance(exc, LimitExceeded) else None)
                print(json.dumps({"error": str(exc), "code": exc.code, "limit": limit,
                                  "report": report.to_dict() if report else None}))
            if report is not None:
                _print_errors(report)
            raise
    if args.json:
        print(json.dumps(report.to_dict()))
    print(report.summary(), file=sys.stderr)
    _print_errors(report)
    return EXIT_PARTIAL if report.bad else EXIT_OK


def _print_errors(report: object) -> None:
    errors = getattr(report, "errors", [])
    for e in errors[:SHOWN_ERRORS]:
        print(f"  {e}", file=sys.stderr)
    more = getattr(report, "bad", 0) - min(len(errors), SHOWN_ERRORS)
    if more > 0:
        print(f"  ... and {more} more bad line(s)", file=sys.stderr)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def list_lists(args: argparse.Namespace) -> int:
    from pcapwire.hashlist import HashListSet

    hs = HashListSet.for_data_dir(args.data_dir)
    try:
        lists = hs.lists()
    finally:
        hs.close()
    if args.json:
        for hl in lists:
            print(json.dumps(hl.to_dict()))
        return EXIT_OK
    print(f"{'name':<24} {'kind':<6} {'severity':<9} {'scope':<7} {'md5':>10} {'sha1':>10} "
          f"{'sha256':>10} {'updated':<20} description")
    for hl in lists:
        c = hl.counts
        print(f"{hl.name:<24} {hl.kind:<6} {hl.severity:<9} {hl.scope:<7} {c['md5']:>10} "
              f"{c['sha1']:>10} {c['sha256']:>10} {_iso(hl.updated):<20} {hl.description}")
    return EXIT_OK


def lookup(args: argparse.Namespace) -> int:
    from pcapwire.hashlist import HashListError, HashListSet

    hashes = list(args.hashes)
    if args.file:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        hashes += [s.split()[0] for s in text.splitlines() if s.strip()
                   and not s.lstrip().startswith("#")]
    if not hashes:
        raise HashListError("no hashes: give them as arguments or with -f FILE")
    hs = HashListSet.for_data_dir(args.data_dir)
    try:
        results = hs.triage_hex(hashes)
    except ValueError as exc:
        raise HashListError(str(exc)) from None
    finally:
        hs.close()
    for r in results:
        if args.json:
            print(json.dumps(r))
            continue
        where = ", ".join(f"{m['list']} ({m['kind']}, {m['scope']})"
                          + (f" {m['label']!r}" if m["label"] else "") for m in r["matches"])
        print(f"{r['hash']}  {r['verdict']:<10} {r['severity']:<8} {where}")
    return EXIT_OK


def remove(args: argparse.Namespace) -> int:
    from pcapwire.hashlist import HashListStore

    missing = []
    with HashListStore(_path(args)) as store:
        for name in args.names:
            if store.remove(name):
                print(f"removed {name}", file=sys.stderr)
            else:
                missing.append(name)
    for name in missing:
        print(f"pcapwire: error: no list {name!r} in {_path(args)}", file=sys.stderr)
    return EXIT_USAGE if missing else EXIT_OK
