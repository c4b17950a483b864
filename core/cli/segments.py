"""``pcapwire segments list|export|compress``: the store's segments as stored.

* ``list [--json]``: every segment with its state, plain and stored size, codec, frames;
* ``export ID -w FILE|-``: a segment as the plain pcap it was (compressed or not);
* ``compress (--all | ID…) [--level N] [--frame-bytes SIZE]``: compress sealed segments
  now, whatever the store's policy (:mod:`pcapwire.store.compression`).

Without pcapwire, a compressed segment is a standard zstd file:
``zstd -d segments/…/x.pcap.zst -o x.pcap`` (or ``zstdcat … | tcpdump -r -``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pcapwire import custody
from pcapwire.cli import EXIT_OK, EXIT_PARTIAL
from pcapwire.cli.query import check_output_path
from pcapwire.errors import ConfigError
from pcapwire.store import Store
from pcapwire.store import config as store_config
from pcapwire.store.compression import (
    compress_segment,
    eligible,
    open_db,
    recover,
    refusal,
    storage_rows,
    store_lock,
)
from pcapwire.store.config import MAX_FRAME_BYTES, MIN_FRAME_BYTES, parse_bytes
from pcapwire.store.reader import export_plain
from pcapwire.store.zstdseek import StoredSegmentError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segments", help="list, export or compress the store's segments")
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = acts.add_parser("list", help="every segment: state, plain and stored size")
    ls.add_argument("--json", action="store_true", help="JSON lines")
    ls.set_defaults(func=run_list)
    ex = acts.add_parser("export", help="a segment as plain pcap (compressed or not)")
    ex.add_argument("id", type=int, help="segment id (see `segments list`)")
    ex.add_argument("-w", "--write", required=True, metavar="FILE",
                    help="output file, or - for stdout")
    ex.set_defaults(func=run_export)
    co = acts.add_parser("compress", help="compress sealed segments now")
    co.add_argument("ids", nargs="*", type=int, metavar="ID")
    co.add_argument("--all", action="store_true",
                    help="every sealed segment not compressed yet")
    co.add_argument("--level", type=int, default=None,
                    help="zstd level 1-19 (default: the store's, store.toml)")
    co.add_argument("--frame-bytes", default=None, metavar="SIZE",
                    help="plain bytes per frame, e.g. '1 MiB' (default: the store's)")
    co.set_defaults(func=run_compress)


def _segments(store: Store) -> list[dict[str, Any]]:
    rows = storage_rows(store.catalog.db)
    states = dict(store.catalog.db.execute("SELECT segment_id, state FROM capture_segments"))
    out = []
    for seg in store.catalog.segments():
        st = rows.get(seg.id)
        in_place = Path(seg.path).is_absolute()
        out.append({"id": seg.id, "path": seg.path, "packets": seg.packets,
                    "first_ns": seg.first_ns, "last_ns": seg.last_ns,
                    "state": "in place" if in_place else states.get(seg.id, "sealed"),
                    "plain_size": seg.size,
                    "stored_size": 0 if in_place else st["stored_size"] if st else seg.size,
                    "codec": st["codec"] if st else "pcap",
                    "frames": st["frames"] if st else None,
                    "sha256": st["sha256_plain"] if st else None})
    return out


def run_list(args: argparse.Namespace) -> int:
    with Store.existing(args.data_dir) as store:
        segs = _segments(store)
    if args.json:
        for s in segs:
            print(json.dumps(s))
        return EXIT_OK
    print(f"{'id':>6} {'state':<9} {'codec':<13} {'packets':>9} {'plain':>12} {'stored':>12} "
          f"{'ratio':>6}  path")
    for s in segs:
        ratio = f"{s['plain_size'] / s['stored_size']:.2f}" if s["stored_size"] else "-"
        print(f"{s['id']:>6} {s['state']:<9} {s['codec']:<13} {s['packets']:>9} "
              f"{s['plain_size']:>12} {s['stored_size']:>12} {ratio:>6}  {s['path']}")
    plain = sum(s["plain_size"] for s in segs)
    stored = sum(s["stored_size"] for s in segs)
    print(f"{len(segs)} segments, {plain} bytes plain, {stored} bytes stored"
          + (f" ({plain / stored:.2f}x)" if stored else ""))
    return EXIT_OK


def run_export(args: argparse.Namespace) -> int:
    if args.write != "-":
        check_output_path(args.write)
    damage: list[str] = []
    with Store.existing(args.data_dir) as store:
        found = store.catalog.segments(ids=[args.id])
        if not found:
            raise ConfigError(f"segment {args.id} does not exist (see `pcapwire segments "
                              "list`)")
        seg = found[0]
        row = storage_rows(store.catalog.db).get(seg.id)

        def lost(exc: StoredSegmentError) -> None:
            print(f"pcapwire: warning: {exc}", file=sys.stderr)
            damage.append(str(exc))

        if args.write == "-":
            size, sha = export_plain(store.root, seg, sys.stdout.buffer, lost)
            sys.stdout.buffer.flush()
        else:
            tmp = args.write + ".part"
            try:
                with open(tmp, "wb") as out:
                    size, sha = export_plain(store.root, seg, out, lost)
                os.replace(tmp, args.write)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        if row is not None and not damage and sha != row["sha256_plain"]:
            print(f"pcapwire: warning: segment {seg.id} exported as {sha}, but it was "
                  f"{row['sha256_plain']} when compressed", file=sys.stderr)
            damage.append("checksum")
        where = "-" if args.write == "-" else os.path.abspath(args.write)
        custody.append(store.root, None, "segment.export", custody.actor_cli(), objects=[
            {"kind": "export", "path": where, "sha256": sha, "size": size}],
            details={"segment_id": seg.id, "segment": seg.path, "complete": not damage})
    return EXIT_PARTIAL if damage else EXIT_OK


def run_compress(args: argparse.Namespace) -> int:
    if bool(args.all) == bool(args.ids):
        raise ConfigError("segments compress: name segment ids or --all (not both)")
    with Store.existing(args.data_dir) as store:
        root = store.root
        policy = store_config.load(root).compression
    level = policy.level if args.level is None else args.level
    if not 1 <= level <= 19:
        raise ConfigError(f"--level {level}: an integer from 1 to 19")
    frame_bytes = policy.frame_bytes if args.frame_bytes is None else parse_bytes(
        args.frame_bytes, "--frame-bytes")
    if not MIN_FRAME_BYTES <= frame_bytes <= MAX_FRAME_BYTES:
        raise ConfigError(f"--frame-bytes {args.frame_bytes}: between "
                          f"{MIN_FRAME_BYTES // 2**10} KiB and {MAX_FRAME_BYTES // 2**20} MiB")
    failed = 0
    with store_lock(root):
        for line in recover(root):
            print(f"recovered: {line}", file=sys.stderr)
        with open_db(root) as db:
            ids = [s.id for s in eligible(db)] if args.all else args.ids
            why = {i: refusal(root, db, i) for i in ids}
        if not ids:
            print("no sealed segment left to compress", file=sys.stderr)
        for seg_id in ids:
            if why[seg_id]:
                print(f"pcapwire: {why[seg_id]}", file=sys.stderr)
                failed += 1
                continue
            try:
                done = compress_segment(root, seg_id, level=level, frame_bytes=frame_bytes,
                                        actor=custody.actor_cli())
            except (StoredSegmentError, OSError, ValueError) as exc:
                print(f"pcapwire: segment {seg_id} not compressed: {exc}", file=sys.stderr)
                failed += 1
                continue
            if done is None:
                print(f"segment {seg_id}: deleted meanwhile", file=sys.stderr)
                continue
            print(f"segment {seg_id}: {done.plain_size} -> {done.stored_size} bytes "
                  f"({done.plain_size / done.stored_size:.2f}x, {done.frames} frames)")
    return EXIT_PARTIAL if failed else EXIT_OK
