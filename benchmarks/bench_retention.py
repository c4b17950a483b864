"""Retention: the cost of deleting one segment, and capture drops while retention deletes.

    python benchmarks/bench_retention.py [--segments 48] [--rounds 3] [--rate 100000]
        [--packets 300000] [--no-capture]

1. Cost per deleted segment: a store on /dev/shm with ``--segments`` segments of 1 MiB
   (a generated capture, ``benchdata.synth_capture``), then ``retention.enforce`` with a
   byte budget that makes it delete two thirds of them, one at a time; per segment the
   whole deletion (catalog transaction, unlink, ``removed`` mark, custody entry with its
   fsync) and per run the wall time over the segments deleted (adds the survey and a
   usage measurement after each). Median and range over ``--rounds`` rounds.
2. Capture drops during retention (root: a network namespace, as bench_capture): ``pcapwire
   capture -i v0`` records 4 MiB segments into a store whose budget is 64 MiB (low mark
   48 MiB, interval 0.5 s) while tcpreplay sends ``--packets`` packets at ``--rate`` pps
   (the capture benchmark's rate); the recorder's drops by cause (must be 0) and the
   segments retention deleted meanwhile.

Results: printed, and benchmarks/results/retention.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchdata import DATA, RESULTS, synth_capture

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from pcapwire.retention import enforce  # noqa: E402
from pcapwire.store import Store  # noqa: E402
from pcapwire.store.config import from_dict, save  # noqa: E402


def med_range(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3),
            "max": round(max(xs), 3), "n": len(xs)}


def deletion_cost(work: Path, segments: int, rounds: int) -> dict[str, Any]:
    capture = synth_capture(segments)
    per_segment: list[float] = []
    per_run: list[float] = []
    for rnd in range(rounds):
        root = work / f"store-{rnd}"
        shutil.rmtree(root, ignore_errors=True)
        with Store(root) as store:
            store.ingest([capture], segment_max_bytes=2**20)
            total = sum(os.stat(root / s.path).st_size for s in store.catalog.segments())
            budget = total // 3
            policy = from_dict({"retention": {"high_watermark": f"{budget} B",
                                              "low_watermark": f"{budget} B"}}, "bench").retention
            started = time.perf_counter()
            report = enforce(store, policy)
            wall = time.perf_counter() - started
        n = len(report.deleted)
        per_segment += [d.seconds * 1e3 for d in report.deleted]
        per_run.append(wall * 1e3 / n)
        print(f"round {rnd}: {n} segments deleted of {store_segments(root) + n}, "
              f"{wall * 1e3:.1f} ms ({wall * 1e3 / n:.2f} ms per segment with survey and "
              "re-measure)")
        shutil.rmtree(root, ignore_errors=True)
    return {"deletion_ms": med_range(per_segment), "run_ms_per_segment": med_range(per_run)}


def store_segments(root: Path) -> int:
    with Store(root) as store:
        return int(store.catalog.stats()["segments"])


def capture_drops(work: Path, rate: int, packets: int) -> dict[str, Any]:
    import netns as NS
    from bench_capture import PCAPWIRE, finish

    why = NS.available()
    if why:
        return {"skipped": why}
    ns = NS.create()
    try:
        traffic = DATA / "capture-1000k.pcap"
        if not traffic.exists():
            tmp = traffic.with_suffix(".tmp")
            NS.write_traffic(tmp, ns, 1_000_000, seed=11)
            tmp.rename(traffic)
        store = work / "capture-store"
        shutil.rmtree(store, ignore_errors=True)
        Store(store).close()
        save(store, {"retention": {"high_watermark": "64 MiB", "low_watermark": "48 MiB",
                                   "interval": "0.5s"}})
        logs = work / "logs"
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir()
        so, se = open(logs / "stdout", "wb"), open(logs / "stderr", "wb")  # noqa: SIM115
        p = ns.popen(str(PCAPWIRE), "--data-dir", str(store), "capture", "-i", "v0",
                     "--segment-size", "4", stdout=so, stderr=se)
        so.close()
        se.close()
        status = store / "capture" / "status.json"
        deadline = time.monotonic() + 60
        while not status.exists():  # the recorder writes it once it captures
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"recorder did not start: {(logs / 'stderr').read_text()}")
            time.sleep(0.05)
        started = time.monotonic()
        r = ns.run("tcpreplay", "-i", "v1", f"--pps={rate}", "--limit", str(packets),
                   str(traffic), timeout=900)
        replay_s = time.monotonic() - started
        time.sleep(2.0)  # drain, as bench_capture does
        got = finish(ns, "pcapwire", p, logs)
        sent = NS.parse_tcpreplay(r.stdout + r.stderr).sent
        with Store(store) as st:
            deleted, nbytes = st.catalog.db.execute(
                "SELECT count(*), coalesce(sum(stored_size), 0) FROM expired_segments"
            ).fetchone()
            kept = st.catalog.stats()
    finally:
        ns.destroy()
    return {"rate_pps": rate, "sent": sent, "recorded": got["recorded"],
            "drops": got["drops"], "replay_s": round(replay_s, 2),
            "segments_deleted": deleted, "bytes_deleted": nbytes,
            "segments_kept": kept["segments"], "bytes_kept": kept["bytes"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=int, default=100_000)
    ap.add_argument("--packets", type=int, default=300_000)
    ap.add_argument("--no-capture", action="store_true")
    args = ap.parse_args()
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else DATA
    work = shm / f"pcapwire-bench-retention-{os.getpid()}"
    work.mkdir(parents=True)
    try:
        out: dict[str, Any] = {"cost": deletion_cost(work, args.segments, args.rounds)}
        cost = out["cost"]["deletion_ms"]
        print(f"deletion per segment: median {cost['median']} ms (range {cost['min']}-"
              f"{cost['max']}, {cost['n']} segments)")
        if not args.no_capture:
            out["capture"] = cap = capture_drops(work, args.rate, args.packets)
            print("capture during retention: " + json.dumps(cap))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "retention.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
