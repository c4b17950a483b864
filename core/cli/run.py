"""``pcapwire run WORKFLOW.yaml (--pcap FILE | query filters) [--json] [--set S.K=V]``.

Verdicts print as they arrive (``--json``: ECS JSON lines on stdout); the run summary
goes to stderr. The chunk source is injectable (``args.chunk_source``, see
:mod:`pcapwire.cli.workflow_common`). Exit 0 when every step ran, 1 when some step
failed or timed out (partial), 2 for an invalid workflow or input."""

from __future__ import annotations

import argparse
import uuid

from pcapwire.cases import ecs_line
from pcapwire.cli.filters import add_filter_args
from pcapwire.cli.workflow_common import execute, exit_code, load, print_summary
from pcapwire.records import Verdict
from pcapwire.workflow.expect import describe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a workflow on a capture file or a query's packets")
    p.add_argument("workflow", help="workflow YAML file")
    p.add_argument("--pcap", metavar="FILE", help="a pcap/pcapng file instead of a query")
    add_filter_args(p)
    p.add_argument("--set", action="append", default=[], metavar="STEP.KEY=VALUE",
                   help="override a step's config (value parsed as YAML; validated)")
    p.add_argument("--json", action="store_true", help="verdicts as ECS JSON lines")
    p.add_argument("--no-store", action="store_true",
                   help="do not record the run and its verdicts in the case store, and keep "
                        "no step logs with the case (hash lists, rules and the artifact store "
                        "of --data-dir are still used)")
    p.set_defaults(func=run, chunk_source=None)


def run(args: argparse.Namespace) -> int:
    host, wf = load(args, args.workflow, args.set)
    run_id = uuid.uuid4().hex

    def show(v: Verdict) -> None:
        print(ecs_line(v, run_id=run_id) if args.json else describe(v), flush=True)

    summary, _ = execute(args, host, wf, show, store=not args.no_store, run_id=run_id)
    print_summary(summary)
    return exit_code(summary)
