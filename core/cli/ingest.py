"""``pcapwire ingest PATH…``: files, directories and .gz captures into the store."""

from __future__ import annotations

import argparse
import json
import sys
import time

from pcapwire.cli import EXIT_OK, EXIT_PARTIAL
from pcapwire.store import Store
from pcapwire.store.segments import SEGMENT_MAX_BYTES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="ingest pcap/pcapng files, directories, .gz")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--segment-size", type=int, default=SEGMENT_MAX_BYTES // 2**20, metavar="MiB",
                   help=f"close segments at this size (default {SEGMENT_MAX_BYTES // 2**20})")
    p.add_argument("--progress", choices=("auto", "bar", "lines", "none"), default="auto",
                   help="progress on stderr: a bar on a terminal, 'lines' for scripts")
    p.add_argument("--in-place", action="store_true",
                   help="index clean little-endian pcap files where they lie instead of "
                        "copying them into segments (they must then stay unchanged); other "
                        "inputs are copied as usual")
    p.add_argument("--json", action="store_true", help="summary as JSON")
    p.set_defaults(func=run)


class _Bar:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last = 0.0

    def __call__(self, path: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 and done < total:
            return
        self.last = now
        frac = done / total if total else 1.0
        rate = done / max(now - self.started, 1e-9) / 1e6
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r[{bar:<30}] {frac:6.1%} {rate:8.1f} MB/s {path[-40:]}")
        sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    mode = args.progress
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "none"
    bar = _Bar() if mode == "bar" else None

    def on_checkpoint(n: int) -> None:
        if mode == "lines":
            print(f"checkpoint: {n} segment(s) committed", file=sys.stderr, flush=True)

    with Store(args.data_dir) as store:
        report = store.ingest(args.paths, segment_max_bytes=args.segment_size * 2**20,
                              in_place=args.in_place,
                              progress=bar, on_checkpoint=on_checkpoint)
    if bar is not None:
        sys.stderr.write("\n")
    summary = {
        "files": len(report.files),
        "already_ingested": sum(f.skipped for f in report.files),
        "packets": report.packets, "bytes": report.bytes,
        "flows_new": report.flows_after - report.flows_before,
        "flows_total": report.flows_after, "segments": report.segments,
        "seconds": round(report.seconds, 3),
        "mb_per_s": round(report.bytes / max(report.seconds, 1e-9) / 1e6, 1),
        "errors": report.errors,
        "warnings": [f"{f.path}: byte {o}: {m}" for f in report.files for o, m in f.warnings],
    }
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"ingested {summary['packets']} packets ({summary['bytes']} bytes) from "
              f"{summary['files']} file(s) in {summary['seconds']} s ({summary['mb_per_s']} MB/s)"
              f"; {summary['segments']} segment(s); {summary['flows_new']} new flow(s), "
              f"{summary['flows_total']} in store")
        if summary["already_ingested"]:
            print(f"{summary['already_ingested']} file(s) were already ingested (skipped)")
        for w in summary["warnings"]:
            print(f"warning: {w}", file=sys.stderr)
        for e in summary["errors"]:
            print(f"error: {e}", file=sys.stderr)
    return EXIT_PARTIAL if report.errors else EXIT_OK
