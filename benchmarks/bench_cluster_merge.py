"""Merge micro benchmark: the central's k-way merge of sensors' answers, in process.

    python benchmarks/bench_cluster_merge.py --merge-only [--size-mib 64] [--rounds 7]
        [--piece-kib 64] [--baseline REV]
    python benchmarks/bench_cluster_merge.py [--vs-mergecap] [--size-mib 64] [--rounds 7]

The generated capture ``benchmarks/data/synth-<size>m.pcap`` is split by host pair over
three parts as ``bench_cluster.py`` splits it over its sensors (each record to part
``sum(IPv4 addresses) % 3``), held in memory and fed to
:func:`pcapwire.cluster.merge.merge_streams` as three async streams of ``--piece-kib``
pieces (what ``aiohttp``'s ``iter_any()`` hands the central), with the default output
piece size; the output is consumed and dropped. Rounds alternate
(:func:`benchdata.alternate`); each figure is the median and range over the rounds of the
input bytes merged per second of wall time and per CPU second of this process.

- ``--merge-only``: the merge as it is now (the native record loop, ``core/native/merge.c``)
  vs the pure-Python merge of git revision ``--baseline`` (its ``core/cluster/merge.py``,
  loaded from git: the version before the native loop).
- ``--vs-mergecap`` (the default): the merge as it is now vs ``mergecap -F pcap -w
  /dev/null`` on the three parts as files (wall time; the process's CPU from ``os.wait4``).

Both sides' outputs are checked equal (and equal to mergecap's) once before timing.
Results go to benchmarks/results/cluster_merge_<mode>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from benchdata import RESULTS, alternate, synth_capture

REPO = Path(__file__).resolve().parents[1]
#: the last revision whose merge was pure Python
BASELINE_REV = "62d5e49"
PARTS = 3

Merge = Callable[..., AsyncIterator[bytes]]


def split(capture: Path, work: Path) -> list[Path]:
    from pcapwire.testing.cluster import split_capture

    return split_capture(capture, work, [f"part{i}" for i in range(PARTS)],
                         lambda _ts, frame: sum(frame[26:34]) % PARTS)


def python_merge(rev: str, work: Path) -> Merge:
    """``merge_streams`` of ``core/cluster/merge.py`` at git revision ``rev`` (copied into
    ``work`` and imported from there)."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:core/cluster/merge.py"],
                         capture_output=True, check=True).stdout
    path = work / f"merge_at_{rev}.py"
    path.write_bytes(src)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    merge: Merge = mod.merge_streams
    return merge


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def run_merge(merge: Merge, parts: list[bytes], piece: int) -> bytes:
    async def run() -> bytes:
        out = [p async for p in merge([pieces(d, piece) for d in parts],
                                      [f"part{i}" for i in range(len(parts))],
                                      on_failure=lambda *f: sys.exit(f"failed: {f}"))]
        return b"".join(out)

    return asyncio.run(run())


def timed_merge(merge: Merge, parts: list[bytes], piece: int, cpu: list[float]
                ) -> Callable[[], float]:
    async def run() -> None:
        async for _ in merge([pieces(d, piece) for d in parts],
                             [f"part{i}" for i in range(len(parts))],
                             on_failure=lambda *f: sys.exit(f"failed: {f}")):
            pass

    def one() -> float:
        c0, t0 = time.process_time(), time.perf_counter()
        asyncio.run(run())
        cpu.append(time.process_time() - c0)
        return time.perf_counter() - t0

    return one


def timed_mergecap(paths: list[Path], cpu: list[float]) -> Callable[[], float]:
    def one() -> float:
        t0 = time.perf_counter()
        proc = subprocess.Popen(["mergecap", "-F", "pcap", "-w", "/dev/null", *map(str, paths)])
        _pid, status, usage = os.wait4(proc.pid, 0)
        took = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            sys.exit(f"mergecap failed: {proc.returncode}")
        cpu.append(usage.ru_utime + usage.ru_stime)
        return took

    return one


def figures(total: int, secs: list[float]) -> dict[str, float | list[float]]:
    rates = [total / s / 1e6 for s in secs]
    return {"median_mb_s": round(statistics.median(rates), 1),
            "range_mb_s": [round(min(rates), 1), round(max(rates), 1)]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--merge-only", action="store_true",
                      help="in-process merge: native record loop vs the pure-Python one")
    mode.add_argument("--vs-mergecap", action="store_true",
                      help="in-process merge (native) vs a mergecap process (the default)")
    p.add_argument("--size-mib", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--piece-kib", type=int, default=64, help="input piece size")
    p.add_argument("--baseline", default=BASELINE_REV, help="git revision of the Python merge")
    args = p.parse_args()

    from pcapwire.cluster.merge import merge_streams

    work = Path(tempfile.mkdtemp(prefix="pcapwire-bench-merge-"))
    try:
        paths = split(synth_capture(args.size_mib), work)
        parts = [path.read_bytes() for path in paths]
        total = sum(len(d) for d in parts)
        piece = args.piece_kib * 1024
        expected = subprocess.run(["mergecap", "-F", "pcap", "-w", "-", *map(str, paths)],
                                  capture_output=True, check=True).stdout
        if run_merge(merge_streams, parts, piece) != expected:
            sys.exit("the merge differs from mergecap's")
        cpu_a: list[float] = []
        cpu_b: list[float] = []
        ours = timed_merge(merge_streams, parts, piece, cpu_a)
        if args.merge_only:
            baseline = python_merge(args.baseline, work)
            if run_merge(baseline, parts, piece) != expected:
                sys.exit(f"the merge of {args.baseline} differs from mergecap's")
            names = ("native", f"python ({args.baseline})")
            theirs = timed_merge(baseline, parts, piece, cpu_b)
        else:
            names = ("native", "mergecap")
            theirs = timed_mergecap(paths, cpu_b)
        wall_a, wall_b = alternate(args.rounds, ours, theirs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = {"mode": "merge-only" if args.merge_only else "vs-mergecap",
           "capture_mib": args.size_mib, "parts": PARTS, "input_bytes": total,
           "piece_kib": args.piece_kib, "rounds": args.rounds}
    for name, wall, cpu in ((names[0], wall_a, cpu_a), (names[1], wall_b, cpu_b)):
        out[name] = {"wall": figures(total, wall), "cpu": figures(total, cpu),
                     "cpu_s_median": round(statistics.median(cpu), 4)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"cluster_merge_{out['mode']}.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
