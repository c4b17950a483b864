"""``pcapwire query [filters] -w FILE|-``: matching packets as one pcap."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import uuid

from pcapwire import custody
from pcapwire.cli.filters import add_filter_args, spec_from_args
from pcapwire.cli.livequery import follow_to, report_loss
from pcapwire.custody.events import HashingWriter
from pcapwire.errors import ConfigError
from pcapwire.query import QueryStats
from pcapwire.store import Store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("query", help="write the packets that match as pcap")
    add_filter_args(p)
    p.add_argument("-w", "--write", required=True, metavar="FILE",
                   help="output file, or - for stdout")
    p.add_argument("--chunk-kib", type=int, default=256, help="chunk size (default 256 KiB)")
    p.add_argument("--stats", action="store_true", help="print counts on stderr")
    p.add_argument("--follow", action="store_true",
                   help="after the packets that exist, keep writing those recorded from now "
                   "on, until SIGINT/SIGTERM (or the reader of stdout leaves); the output "
                   "stays one valid capture (no --end)")
    p.set_defaults(func=run)


def check_output_path(path: str) -> None:
    """Refuse ``-w`` into a directory that does not exist (before any query work)."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError(f"-w {path}: directory {parent} does not exist; create it first")
    if os.path.isdir(path):
        raise ConfigError(f"-w {path}: is a directory; name a file in it")


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args, chunk_bytes=args.chunk_kib * 1024)
    if args.write != "-":
        check_output_path(args.write)
    if args.follow:
        stats = follow_to(args, dataclasses.replace(spec, follow=True))
        print_stats(args, stats)
        return report_damage(stats)
    with Store.existing(args.data_dir) as store:
        engine = store.query_engine()
        qid = uuid.uuid4().hex
        if args.write == "-":
            out = HashingWriter(sys.stdout.buffer)
            stats = engine.write(spec, out, qid)  # type: ignore[arg-type]
            sys.stdout.buffer.flush()
        else:
            tmp = args.write + ".part"
            try:
                with open(tmp, "wb") as fh:
                    out = HashingWriter(fh)
                    stats = engine.write(spec, out, qid)  # type: ignore[arg-type]
                os.replace(tmp, args.write)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        where = "-" if args.write == "-" else os.path.abspath(args.write)
        custody.append(store.root, spec.case, "export", custody.actor_cli(),
                       [out.object("export", where)], {"query_id": qid})
        report_loss(store, spec)
    print_stats(args, stats)
    return report_damage(stats)


def report_damage(stats: QueryStats) -> int:
    """Say on stderr what could not be read (a damaged frame of a compressed segment:
    the result lacks its packets); the exit code: 1 (partial) then, else 0."""
    for what in stats.damage:
        print(f"pcapwire: warning: {what}", file=sys.stderr)
    return 1 if stats.damage else 0


def print_stats(args: argparse.Namespace, stats: QueryStats) -> None:
    if args.stats:
        print(f"{stats.packets} packets, {stats.bytes + 24} bytes, {stats.chunks} chunks, "
              f"{stats.segments_scanned} segments scanned, {stats.records_examined} records "
              "examined", file=sys.stderr)
