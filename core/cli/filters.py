"""Query filter options shared by every subcommand that selects packets."""

from __future__ import annotations

import argparse

from pcapwire.query.spec import (
    DEFAULT_CHUNK_BYTES,
    QuerySpec,
    parse_five_tuple,
    parse_proto,
    parse_time_ns,
)


def add_filter_args(p: argparse.ArgumentParser, bpf: bool = True) -> None:
    g = p.add_argument_group("filters (all combine with AND)")
    if bpf:
        g.add_argument("--bpf", default="", metavar="EXPR",
                       help="BPF expression (libpcap syntax, tcpdump semantics)")
    g.add_argument("--host", action="append", default=[], metavar="IP",
                   help="an endpoint of the flow (repeat: every one must be an endpoint)")
    g.add_argument("--net", action="append", default=[], metavar="CIDR")
    g.add_argument("--port", action="append", default=[], type=int, metavar="N",
                   help="a TCP, UDP or SCTP port of the flow (repeat: any of them)")
    g.add_argument("--proto", action="append", default=[], metavar="P",
                   help="tcp, udp, icmp, icmp6, sctp or a number (repeat: any of them)")
    g.add_argument("--flow", action="append", default=[], type=int, metavar="ID",
                   help="flow id from `pcapwire flows`")
    g.add_argument("--five-tuple", metavar="PROTO:SRC:SPORT:DST:DPORT",
                   help="one flow, either direction (IPv6 addresses in [brackets])")
    g.add_argument("--start", metavar="T",
                   help="ISO 8601, Unix seconds or now (inclusive)")
    g.add_argument("--end", metavar="T", help="ISO 8601 or Unix seconds (exclusive)")
    g.add_argument("--case", default="default", help="case name kept with the query history")
    g.add_argument("--event", default="", help="event name kept with the query history")


def spec_from_args(args: argparse.Namespace, chunk_bytes: int = DEFAULT_CHUNK_BYTES
                   ) -> QuerySpec:
    return QuerySpec(
        bpf=getattr(args, "bpf", "") or "",
        hosts=list(args.host), nets=list(args.net), ports=list(args.port),
        protos=[parse_proto(p) for p in args.proto],
        five_tuple=parse_five_tuple(args.five_tuple) if args.five_tuple else None,
        flow_ids=list(args.flow),
        start_ns=parse_time_ns(args.start) if args.start else None,
        end_ns=parse_time_ns(args.end) if args.end else None,
        case=args.case, event=args.event, chunk_bytes=chunk_bytes)
