"""``pcapwire case bundle CASE -o FILE``: a case as one signed zip, as the API's ``GET
/api/v1/cases/{case}/bundle`` makes it (:mod:`pcapwire.api.bundle`), from the data
directory: the queries kept in its history with their stored results (those a server or
a workflow run kept under ``results/``) and what was carved of them, the verdicts, the
custody logs and the holds' evidence; signed with the key of this data directory (or of
env PCAPWIRE_CUSTODY_KEY). Nothing is carved here: carve through the API first, or with
``pcapwire extract``, whose output stays outside the bundle. The download is the case
log's next entry (``bundle``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pcapwire.cli.query import check_output_path
from pcapwire.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("case", help="case bundles")
    cmds = p.add_subparsers(dest="case_command", required=True, metavar="SUBCOMMAND")
    b = cmds.add_parser("bundle", help="write a case as a signed zip (MANIFEST.sha256, "
                        "its Ed25519 signature, the custody logs)")
    b.add_argument("case", metavar="CASE")
    b.add_argument("-o", "--output", required=True, metavar="FILE", help="the zip to write")
    b.set_defaults(func=bundle)


def bundle(args: argparse.Namespace) -> int:
    from pcapwire.api.bundle import write_bundle
    from pcapwire.api.routes_cases import case_content
    from pcapwire.api.tenants import TenantStore
    from pcapwire.custody import actor_cli, events, read

    root = Path(args.data_dir).resolve()
    if not (root / "catalog.sqlite").is_file():
        raise ConfigError(f"data directory {args.data_dir} is not a pcapwire store (no "
                          "catalog.sqlite); name it with --data-dir or PCAPWIRE_DATA_DIR")
    check_output_path(args.output)
    ts = TenantStore("cli", root)
    try:
        rows = ts.cases.search_queries(case=args.case)
        if not rows and not read(root, args.case):
            raise ConfigError(f"case {args.case!r} has neither queries nor a custody log in "
                              f"{args.data_dir}")
        queries, pcaps, lines, files, emails = case_content(ts, args.case, rows)
    finally:
        ts.close()
    tmp = Path(args.output + ".part")
    try:
        digest = write_bundle(tmp, args.case, queries, pcaps, lines, files, emails, root,
                              root)
        os.replace(tmp, args.output)
    finally:
        tmp.unlink(missing_ok=True)
    size = os.path.getsize(args.output)
    events.bundle(root, args.case, actor_cli(), digest, size)
    print(f"{args.output}: {size} bytes, {len(pcaps)} results, {len(files)} files, "
          f"{len(emails)} emails; MANIFEST.sha256 {digest}", file=sys.stderr)
    return 0
