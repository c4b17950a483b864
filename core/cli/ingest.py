"""``pcapwire ingest PATH…``: files, directories and .gz captures into the store.

Limits (:mod:`pcapwire.store.limits`) are off unless given: the operator ingests their own
files onto their own disk, and large archives must go through. ``pcapwire serve`` gives its
limits to the ``ingest`` job it runs for each upload (:mod:`pcapwire.jobs.handlers_ingest`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from pcapwire.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from pcapwire.store import Store
from pcapwire.store.limits import DECOMPRESSED, QUOTA, RATIO, IngestLimits
from pcapwire.store.maintenance import ingest_under_policy
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
    p.add_argument("--max-decompressed-mb", type=non_negative, default=0, metavar="MiB",
                   help="stop a .gz input that decompresses to more than this "
                        "(default 0: no limit)")
    p.add_argument("--max-ratio", type=non_negative, default=0, metavar="N",
                   help="stop a .gz input that decompresses to more than N times its "
                        "compressed bytes, counted after its first MiB (default 0: no limit)")
    p.add_argument("--quota-mb", type=non_negative, default=0, metavar="MiB",
                   help="stop before the data directory's files exceed this size (the inputs "
                        "being ingested not counted, nor the index of files --in-place; "
                        "default 0: no quota)")
    p.add_argument("--json", action="store_true", help="summary as JSON")
    p.set_defaults(func=run)


def non_negative(text: str) -> float:
    """argparse type of a limit: a number, 0 (off) or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or more, not {text}")
    return value


def _mib(value: float) -> int | None:
    return int(value * 2**20) or None


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


_REMEDY = {DECOMPRESSED: "raise --max-decompressed-mb (0: no limit)",
           RATIO: "raise --max-ratio (0: no limit)",
           QUOTA: "free space in the data directory or raise --quota-mb"}


def run(args: argparse.Namespace) -> int:
    mode = args.progress
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "none"
    bar = _Bar() if mode == "bar" else None

    limits = IngestLimits(max_decompressed_bytes=_mib(args.max_decompressed_mb),
                          max_decompression_ratio=args.max_ratio or None,
                          quota_bytes=_mib(args.quota_mb))
    def on_checkpoint(n: int) -> None:
        if mode == "lines":
            print(f"checkpoint: {n} segment(s) committed", file=sys.stderr, flush=True)

    with Store(args.data_dir) as store:  # the store's retention policy applies while it fills
        report, deleted = ingest_under_policy(
            store, args.paths, args.segment_size * 2**20, on_checkpoint,
            in_place=args.in_place, limits=limits, progress=bar)
    if bar is not None:
        sys.stderr.write("\n")
    summary = report.summary()
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"ingested {summary['packets']} packets ({summary['bytes']} bytes) from "
              f"{summary['files']} file(s) in {summary['seconds']} s ({summary['mb_per_s']} MB/s)"
              f"; {summary['segments']} segment(s); {summary['flows_new']} new flow(s), "
              f"{summary['flows_total']} in store")
        if summary["already_ingested"]:
            print(f"{summary['already_ingested']} file(s) were already ingested (skipped)")
        if deleted:
            print(f"retention deleted {deleted} old segment(s) by the store's policy "
                  "(`pcapwire retention status`)", file=sys.stderr)
        for w in summary["warnings"]:
            print(f"warning: {w}", file=sys.stderr)
        for e in summary["errors"]:
            print(f"error: {e}", file=sys.stderr)
        for stop in report.stopped:
            print(f"error: {stop.path}: {_REMEDY[stop.limit_name]}; ingesting it again then "
                  "resumes after the packets already stored", file=sys.stderr)
    if report.unusable:
        return EXIT_USAGE  # an input that is not a capture is an input error (the rest kept)
    return EXIT_PARTIAL if report.errors else EXIT_OK
