"""``pcapwire flows [filters] [--json]``: the flow index as a table or JSON lines."""

from __future__ import annotations

import argparse
import ipaddress
import json
from datetime import UTC, datetime
from typing import Any

from pcapwire.cli.filters import add_filter_args, spec_from_args
from pcapwire.query.engine import flow_where
from pcapwire.records import IP_PROTO_NAMES
from pcapwire.store import FlowRow, Store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flows", help="list flows from the index")
    add_filter_args(p, bpf=False)
    p.add_argument("--json", action="store_true", help="JSON lines")
    p.add_argument("--limit", type=int, default=None)
    p.set_defaults(func=run)


def _addr(ipver: int, blob: bytes) -> str:
    if ipver == 4:
        return str(ipaddress.IPv4Address(blob[:4]))
    if ipver == 6:
        return str(ipaddress.IPv6Address(blob))
    return ""


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


def flow_dict(f: FlowRow) -> dict[str, Any]:
    """A flow oriented initiator -> responder, with EVE-like field names."""
    a = (_addr(f.ipver, f.addr_a), f.port_a)
    b = (_addr(f.ipver, f.addr_b), f.port_b)
    (src, sport), (dst, dport) = (a, b) if f.initiator_is_a else (b, a)
    to_srv = (f.pkts_a2b, f.bytes_a2b) if f.initiator_is_a else (f.pkts_b2a, f.bytes_b2a)
    to_cli = (f.pkts_b2a, f.bytes_b2a) if f.initiator_is_a else (f.pkts_a2b, f.bytes_a2b)
    proto = IP_PROTO_NAMES.get(f.proto, str(f.proto)) if f.ipver else f"ethertype:{f.port_a:#06x}"
    return {"flow_id": f.id, "proto": proto, "src_ip": src, "src_port": sport, "dest_ip": dst,
            "dest_port": dport, "start": _iso(f.first_ns), "end": _iso(f.last_ns),
            "pkts_toserver": to_srv[0], "bytes_toserver": to_srv[1],
            "pkts_toclient": to_cli[0], "bytes_toclient": to_cli[1]}


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    where = flow_where(spec)
    sql, params = (where.where, list(where.args)) if where else ("1=1", [])
    if spec.start_ns is not None:
        sql += " AND last_ns >= ?"
        params.append(spec.start_ns)
    if spec.end_ns is not None:
        sql += " AND first_ns < ?"
        params.append(spec.end_ns)
    with Store(args.data_dir) as store:
        rows = [flow_dict(f) for f in store.catalog.flows(sql, params, args.limit)]
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
              f"{r['bytes_toserver'] + r['bytes_toclient']:>10}  {r['start']}")
    return 0
