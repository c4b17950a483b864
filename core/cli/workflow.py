"""``pcapwire workflow validate FILE…``, ``pcapwire workflow test FILE --pcap X
--expect Y`` and ``pcapwire workflow schema`` (the JSON Schema, for an editor).

``validate`` prints every problem as ``FILE:LINE:COL: key: message`` (warnings too) and
exits 2 when any file has an error. ``test`` runs the workflow on a capture (not
recorded in the case store) and compares its verdicts with an expectation file
(:mod:`pcapwire.workflow.expect`): exit 0 when they match, 1 when they differ, 2 when the
run could not compare anything (a capture it cannot read, a failed run): never a pass."""

from __future__ import annotations

import argparse
import sys

from pcapwire.cli import EXIT_USAGE
from pcapwire.cli.workflow_common import execute, load, print_summary
from pcapwire.workflow.expect import compare, describe, load_expectation


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("workflow", help="validate and test workflow files")
    wsub = p.add_subparsers(dest="workflow_command", required=True, metavar="ACTION")
    v = wsub.add_parser("validate", help="check workflow files (FILE:LINE:COL errors)")
    v.add_argument("files", nargs="+", metavar="FILE")
    v.add_argument("--set", action="append", default=[], metavar="STEP.KEY=VALUE")
    v.set_defaults(func=validate)
    t = wsub.add_parser("test", help="run a workflow on a capture, compare the verdicts")
    t.add_argument("file", metavar="FILE")
    t.add_argument("--pcap", required=True, metavar="X")
    t.add_argument("--expect", required=True, metavar="Y", help="expected verdicts (YAML)")
    t.add_argument("--set", action="append", default=[], metavar="STEP.KEY=VALUE")
    t.add_argument("--case", default="workflow-test")
    t.add_argument("--event", default="")
    t.set_defaults(func=test, chunk_source=None)
    s = wsub.add_parser("schema", help="print the workflow JSON Schema (for editors)")
    s.set_defaults(func=print_schema)


def print_schema(args: argparse.Namespace) -> int:
    import json

    from pcapwire.workflow.document import schema

    print(json.dumps(schema(), indent=2))
    return 0


def validate(args: argparse.Namespace) -> int:
    from pcapwire.hooks.host import build_host
    from pcapwire.workflow.document import check_workflow, parse_overrides

    host = build_host()
    overrides = parse_overrides(args.set)
    failed = 0
    for path in args.files:
        wf, problems = check_workflow(path, host, overrides=overrides)
        for p in sorted(problems, key=lambda p: (p.file, p.line, p.column)):
            print(p)
        if wf is None:
            failed += 1
        else:
            print(f"{path}: ok (workflow {wf.name!r}, {len(wf.steps)} step(s))")
    return 2 if failed else 0


def test(args: argparse.Namespace) -> int:
    expectation = load_expectation(args.expect)
    host, wf = load(args, args.file, args.set)
    summary, verdicts = execute(args, host, wf, None, store=False)
    if summary.status in ("failed", "cancelled", "interrupted"):
        print(f"ERROR {args.file} on {args.pcap}: the run {summary.status}"
              + (f": {summary.error}" if summary.error else ""), file=sys.stderr)
        print_summary(summary)
        return EXIT_USAGE
    diffs = compare(expectation, verdicts, summary)
    if diffs:
        print(f"FAIL {args.file} on {args.pcap}:")
        for d in diffs:
            print(f"  {d}")
        print("verdicts of the run:")
        for v in verdicts:
            print(f"  {describe(v)}")
        print_summary(summary, sys.stdout)
        return 1
    print(f"PASS {args.file} on {args.pcap}: {len(verdicts)} verdict(s) as expected")
    return 0
