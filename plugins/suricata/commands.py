"""``pcapwire rules update|check``: Suricata rule sets for workflows, a command this plugin
adds through the ``pcapwire_register_commands`` hook (see :mod:`pcapwire.plugins.suricata`).

``update`` wraps ``suricata-update``: local rule files and directories (works offline),
remote sources (``--url``, ``--etopen``) when the network allows; the merged rule set goes
to ``<data-dir>/rules/suricata.rules`` (the path a workflow's suricata step names).
Local sources are first loaded by the real Suricata, so a broken rule is reported as
``FILE:LINE: message`` of the file you edit, not of the merged output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2
NAME = "rules"
HELP = "Suricata rule sets: update (suricata-update), check"


def setup(p: argparse.ArgumentParser) -> None:
    """The ``pcapwire rules`` parser (called by the CLI only when it is needed)."""
    rsub = p.add_subparsers(dest="rules_command", required=True, metavar="ACTION")

    up = rsub.add_parser("update", help="build <data-dir>/rules/suricata.rules with "
                         "suricata-update")
    up.add_argument("--local", action="append", default=[], metavar="PATH",
                    help="a .rules file or a directory of them (repeatable; works offline)")
    up.add_argument("--url", action="append", default=[], metavar="URL",
                    help="a remote rule source (repeatable; needs the network)")
    up.add_argument("--etopen", action="store_true",
                    help="add Emerging Threats Open (needs the network)")
    up.add_argument("--offline", action="store_true",
                    help="use the cached copies of remote sources, do not download")
    up.add_argument("--output", type=Path, default=None,
                    help="output directory (default <data-dir>/rules)")
    up.add_argument("--suricata-conf", default="/etc/suricata/suricata.yaml")
    up.add_argument("--no-test", action="store_true",
                    help="skip suricata-update's own 'suricata -T' of the merged rules")
    up.add_argument("--keep-going", action="store_true",
                    help="build the rule set even when a local rule fails to load "
                         "(exit status 1)")
    up.set_defaults(func=run_update)

    chk = rsub.add_parser("check", help="load rule files with Suricata; errors as FILE:LINE")
    chk.add_argument("paths", nargs="+", metavar="PATH")
    chk.set_defaults(func=run_check)


def _report(errors: list[Any]) -> None:
    for err in errors:
        print(f"{err.file}:{err.line}: {err.message}", file=sys.stderr)


def run_check(args: argparse.Namespace) -> int:
    from pcapwire.plugins.suricata.update import check_rules

    result = check_rules(list(args.paths))
    _report(result.errors)
    for path in result.missing_files:
        print(f"{path}: no rule file matches", file=sys.stderr)
    if result.errors or result.missing_files:
        return EXIT_USAGE
    print(f"ok: {result.loaded if result.loaded is not None else 0} rules loaded")
    return EXIT_OK


def run_update(args: argparse.Namespace) -> int:
    from pcapwire.plugins.suricata.update import check_rules, update_rules

    status = EXIT_OK
    if args.local:
        checked = check_rules(list(args.local))
        if checked.errors:
            _report(checked.errors)
            if not args.keep_going:
                print(f"pcapwire: {len(checked.errors)} rule(s) failed to load; fix them or "
                      "pass --keep-going", file=sys.stderr)
                return EXIT_USAGE
            status = EXIT_PARTIAL
    data_dir = Path(args.data_dir)
    output = args.output or data_dir / "rules"
    result = update_rules(output, data_dir / "suricata-update", local=list(args.local),
                          urls=list(args.url), etopen=args.etopen,
                          suricata_conf=args.suricata_conf, test=not args.no_test,
                          offline=args.offline)
    for msg in result.errors:
        print(f"suricata-update: {msg}", file=sys.stderr)
    if result.returncode != 0 or result.total == 0 and result.errors:
        print(f"pcapwire: suricata-update failed (exit status {result.returncode})",
              file=sys.stderr)
        return EXIT_USAGE
    if result.errors:
        status = EXIT_PARTIAL
    print(f"{result.rules_file}: {result.total} rules, {result.enabled} enabled")
    return status
