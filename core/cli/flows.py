"""``pcapwire flows [filters] [--json]``: the flow index as a table or JSON lines."""

from __future__ import annotations

import argparse
import json

from pcapwire.cli.filters import add_filter_args, spec_from_args
from pcapwire.errors import QueryError
from pcapwire.query.flows import find_flows
from pcapwire.store import Store

MAX_LIMIT = 2**63 - 1  # --limit: SQLite's largest integer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flows", help="list flows from the index")
    add_filter_args(p, bpf=False)
    p.add_argument("--json", action="store_true", help="JSON lines")
    p.add_argument("--limit", type=int, default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    if args.limit is not None and not 0 <= args.limit <= MAX_LIMIT:
        raise QueryError(f"--limit {args.limit} is outside 0..{MAX_LIMIT}")
    with Store.existing(args.data_dir) as store:
        rows = find_flows(store.catalog, spec, args.limit)
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    print(f"{'id':>6} {'proto':<6} {'source':<42} {'destination':<42} {'pkts':>8} {'bytes':>10}"
          f"  start")
    for r in rows:
        src = f"{r['src_ip']}:{r['src_port']}" if r["src_ip"] else "-"
        dst = f"{r['dest_ip']}:{r['dest_port']}" if r["dest_ip"] else "-"
        print(f"{r['flow_id']:>6} {r['proto']:<6} {src:<42} {dst:<42} "
              f"{r['pkts_toserver'] + r['pkts_toclient']:>8} "
              f"{r['bytes_toserver'] + r['bytes_toclient']:>10}  {r['start']}{_expired(r)}")
    return 0


def _expired(row: dict) -> str:
    """The mark of a flow whose packets retention deleted (all, or some of them)."""
    gone = row.get("packets_expired")
    if not gone:
        return ""
    total = row["pkts_toserver"] + row["pkts_toclient"]
    return "  packets expired" if gone >= total else f"  {gone} of {total} packets expired"
