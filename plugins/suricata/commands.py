"""``pcapwire rules update|check|groups|group``: Suricata rule sets for workflows, a command
this plugin adds through the ``pcapwire_register_commands`` hook (see
:mod:`pcapwire.plugins.suricata`).

``update`` wraps ``suricata-update``: local rule files and directories (works offline),
remote sources (``--url``, ``--etopen``) when the network allows; the merged rule set goes
to ``<data-dir>/rules/suricata.rules`` (the path a workflow's suricata step names).
Local sources are first loaded by the real Suricata, so a broken rule is reported as
``FILE:LINE: message`` of the file you edit, not of the merged output.

``groups`` lists the rule set's groups (:mod:`.groups`) with rule and alert counts;
``group enable|disable|reset|threshold`` changes one and applies it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2
NAME = "rules"
HELP = "Suricata rule sets: update (suricata-update), check, groups"


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
    _setup_groups(rsub)


def _setup_groups(rsub: Any) -> None:
    from pcapwire.plugins.suricata.groups import STATES, THRESHOLD_TRACKS, THRESHOLD_TYPES

    ls = rsub.add_parser("groups", help="the rule set's groups with rule and alert counts")
    ls.add_argument("--by", default="classtype", metavar="classtype|ruleset|metadata:KEY")
    ls.add_argument("--case", default=None, help="count only this case's alerts")
    ls.add_argument("--json", action="store_true", help="one JSON document")
    ls.set_defaults(func=run_groups)

    grp = rsub.add_parser("group", help="enable, disable, reset or threshold one group")
    gsub = grp.add_subparsers(dest="group_action", required=True, metavar="ACTION")
    for state, verb in (("enabled", "enable"), ("disabled", "disable"), ("default", "reset")):
        assert state in STATES
        sp = gsub.add_parser(verb, help=f"{verb} a group (suricata-update "
                             f"{'enable.conf' if verb == 'enable' else 'disable.conf'}"
                             f"{', back to the files own state' if verb == 'reset' else ''})")
        sp.add_argument("group", metavar="GROUP",
                        help="classtype:NAME, ruleset:FILE.rules or metadata:KEY=VALUE")
        sp.add_argument("--no-test", action="store_true",
                        help="skip suricata-update's 'suricata -T' of the new rule set")
        sp.set_defaults(func=run_group, state=state)
    th = gsub.add_parser("threshold", help="threshold a group's alerts (rules/threshold.config)")
    th.add_argument("group", metavar="GROUP")
    th.add_argument("--type", choices=THRESHOLD_TYPES)
    th.add_argument("--track", choices=THRESHOLD_TRACKS)
    th.add_argument("--count", type=int)
    th.add_argument("--seconds", type=int)
    th.add_argument("--clear", action="store_true", help="remove the group's threshold")
    th.set_defaults(func=run_group, state=None, no_test=False)


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
    from pcapwire.plugins.suricata import groups, rulesources
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
    confs = groups.GroupSettings.load(data_dir).write_confs(data_dir)
    result = update_rules(output, rulesources.state_dir(data_dir), local=list(args.local),
                          urls=list(args.url), etopen=args.etopen,
                          suricata_conf=args.suricata_conf, test=not args.no_test,
                          offline=args.offline, confs=confs)
    for msg in result.errors:
        print(f"suricata-update: {msg}", file=sys.stderr)
    if result.returncode != 0 or result.total == 0 and result.errors:
        print(f"pcapwire: suricata-update failed (exit status {result.returncode})",
              file=sys.stderr)
        return EXIT_USAGE
    if result.errors:
        status = EXIT_PARTIAL
    if output.resolve() == (data_dir / "rules").resolve() and result.sources is not None:
        rulesources.record(data_dir, result.sources)
        groups.refresh_thresholds(data_dir)
    print(f"{result.rules_file}: {result.total} rules, {result.enabled} enabled")
    _rehunt(data_dir, result.rules_file)
    return status


def _rehunt(data_dir: Path, rules_file: Path) -> None:
    """Triggers whose workflows use the rule set that changed hunt again (a new version)."""
    from pcapwire.custody import actor_cli
    from pcapwire.triggers.rulesets import rules_updated

    for name in rules_updated(data_dir, rules_file, actor_cli()):
        print(f"trigger {name}: new version (rules update: {rules_file} changed), hunt queued")


def run_groups(args: argparse.Namespace) -> int:
    import json

    from pcapwire.cases import CASES_FILE, CaseStore
    from pcapwire.plugins.suricata import groups

    data_dir = Path(args.data_dir)
    loaded = groups.load(data_dir)
    alerts: dict[int, int] = {}
    if (data_dir / CASES_FILE).exists():
        store = CaseStore(data_dir / CASES_FILE, interrupt_running=False)
        try:
            alerts = groups.alert_counts(store, args.case)
        finally:
            store.close()
    rows, unmatched = groups.group_rows(loaded, args.by, groups.GroupSettings.load(data_dir),
                                        alerts)
    rs = loaded.rules
    for problem in rs.problems:
        print(problem, file=sys.stderr)
    if rs.dropped_problems:
        print(f"... and {rs.dropped_problems} more problems", file=sys.stderr)
    if args.json:
        print(json.dumps({"by": args.by, "managed": loaded.managed, "rules": len(rs.rules),
                          "files": rs.files, "parse_seconds": round(rs.seconds, 3),
                          "problems": len(rs.problems) + rs.dropped_problems,
                          "alerts_unmatched": unmatched,
                          "groups": [r.to_dict() for r in rows]}))
    else:
        width = max([len(r.group) for r in rows] + [5])
        print(f"{'GROUP':<{width}}  {'RULES':>7}  {'ENABLED':>7}  {'ALERTS':>7}  STATE     "
              "THRESHOLD")
        for r in rows:
            thr = r.threshold
            text = (f"{thr['type']} {thr['track']} {thr['count']}/{thr['seconds']}s"
                    if thr else "-")
            print(f"{r.group:<{width}}  {r.rules:>7}  {r.enabled:>7}  {r.alerts:>7}  "
                  f"{r.state:<8}  {text}")
        print(f"{len(rs.rules)} rules in {rs.files} files, {len(rows)} groups, parsed in "
              f"{rs.seconds:.2f} s" + (f"; {unmatched} alerts of rules not in the set"
                                       if unmatched else ""))
    return EXIT_PARTIAL if rs.problems or rs.dropped_problems else EXIT_OK


def run_group(args: argparse.Namespace) -> int:
    from pcapwire.plugins.suricata import groups

    threshold = None
    if args.group_action == "threshold":
        given = {k: getattr(args, k) for k in ("type", "track", "count", "seconds")}
        some = [v is not None for v in given.values()]
        if args.clear == any(some) or any(some) and not all(some):
            print("pcapwire: give --clear, or all of --type, --track, --count and --seconds",
                  file=sys.stderr)
            return EXIT_USAGE
        if not args.clear:
            threshold = groups.Threshold.from_dict(given)
    applied = groups.set_group(Path(args.data_dir), args.group, state=args.state,
                               threshold=threshold, clear_threshold=args.group_action ==
                               "threshold" and args.clear, test=not args.no_test)
    row = applied.group
    print(f"{row.group}: {row.state}, {row.enabled} of {row.rules} rules enabled"
          + (f", threshold {row.threshold}" if row.threshold else ""))
    if applied.updated:
        print(f"{Path(args.data_dir) / 'rules' / 'suricata.rules'}: {applied.total} rules, "
              f"{applied.enabled} enabled")
    return EXIT_OK
