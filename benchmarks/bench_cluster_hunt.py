"""Cluster hunt benchmark: the same trigger hunt over the same generated traffic, held by one
sensor or split over three, each hunt a ``hunt`` job (:mod:`pcapwire.jobs.handlers_hunt`)
through NATS JetStream (a real ``nats-server`` on 127.0.0.1) to ``pcapwire worker --nats``
processes: one worker for the single sensor, one per sensor for the three.

    python benchmarks/bench_cluster_hunt.py [--size-mib 256] [--rounds 3] [--rules suricata|bpf]

The stores (kept under benchmarks/data/store-cluster-hunt-<size>m/ for later runs): the
generated capture (benchdata.synth_capture) ingested whole into sensor ``one``, and split by
host pair (:func:`pcapwire.testing.cluster.split_capture`: each flow on one sensor) into
sensors ``a``, ``b``, ``c``; segments of :data:`SEGMENT_BYTES`. Each round creates a new
trigger (:data:`DEFINITIONS`: ``suricata``, the default, the four local rules of
benchmarks/bench_suricata.py run by the hunt's engines, the CPU-heavy case; or ``bpf``, a
BPF scan of every packet) on every store, submits its hunt to the sensors of one side at
once and waits for every result, the sides alternating
(benchdata.alternate). Measured per side and round: wall seconds (first submit to last
result) and the CPU seconds of the side's worker processes and everything under them (the
hunt's unit processes, reaped by their forkserver: read from /proc before and after), as
CPU-seconds per GiB of capture. Each side must find the same every round; with ``bpf``
the three sensors' hits and matches must add up to the single sensor's exactly (a flow is
on one sensor only). Suricata's differ a little between the sides (0.4 % measured), most
likely (not verified) because a hunt unit is a segment, Suricata sees a flow that spans two
segments as two flows, and the split stores' segments end elsewhere than the single one's.

All of it runs on this machine's cores (2 here): three workers of two unit processes
each share them, so the three-sensor wall time shows contention, not scale-out; the
CPU per GiB is what each sensor would spend on its own cores (notes/cluster-hunt.md has
the extrapolation). Results: benchmarks/results/cluster_hunt.json (``--rules bpf``:
cluster_hunt_bpf.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import count
from pathlib import Path
from typing import Any

from bench_suricata import HEAVY_RULES, LOCAL_RULES
from benchdata import DATA, RESULTS, alternate, synth_capture

TENANT = "bench"
SINGLE = ("one",)
SPLIT = ("a", "b", "c")
#: a hunt unit is a segment: 32 MiB gives the single store 8 units, each third 2-3
SEGMENT_BYTES = 32 * 2**20
DEFINITIONS: dict[str, dict[str, Any]] = {
    "suricata": {"suricata_rules": LOCAL_RULES + HEAVY_RULES},
    "bpf": {"bpf": "udp port 53"}}
WAIT_S = 3600.0
_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds of process ``pid`` and its descendants, those that ended and were reaped
    included (utime + stime + cutime + cstime of each live one)."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        parent[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = sum(int(f) for f in fields[11:15])
    tree, todo = set(), [pid]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo += [c for c, pp in parent.items() if pp == p and c not in tree]
    return sum(ticks.get(p, 0) for p in tree) / _TICK


def build_stores(capture: Path, root: Path) -> None:
    """Sensor ``one`` with the whole capture, ``a``/``b``/``c`` with a third each."""
    from pcapwire.jobs.runner import tenant_root
    from pcapwire.store import Store
    from pcapwire.testing.cluster import split_capture

    if (root / "done").exists():
        return
    with tempfile.TemporaryDirectory(prefix="bench-cluster-hunt-") as tmp:
        parts = split_capture(capture, Path(tmp), SPLIT,
                              lambda ts, frame: sum(frame[26:34]) % 3)  # by host pair
        for sensor, part in ((SINGLE[0], capture), *zip(SPLIT, parts, strict=True)):
            print(f"ingesting {part} into sensor {sensor} ...", file=sys.stderr)
            with Store(tenant_root(root / sensor, TENANT)) as store:
                store.ingest([part], segment_max_bytes=SEGMENT_BYTES)
    (root / "done").write_text("")


def summary(values: list[float], digits: int = 2) -> dict[str, float]:
    return {"median": round(statistics.median(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits)}


def fmt(s: dict[str, float]) -> str:
    return f"{s['median']} [{s['min']}-{s['max']}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rules", choices=tuple(DEFINITIONS), default="suricata",
                    help="the trigger's definition")
    args = ap.parse_args()

    from pcapwire.jobs import Job
    from pcapwire.jobs.nats import NatsJobs
    from pcapwire.jobs.runner import tenant_root
    from pcapwire.testing.natsserver import NatsServer
    from pcapwire.triggers import TriggerDB, from_dict

    capture = synth_capture(args.size_mib)
    gib = capture.stat().st_size / 2**30
    stores = DATA / f"store-cluster-hunt-{args.size_mib}m"
    build_stores(capture, stores)
    names, stamp = count(), time.strftime("%Y%m%dT%H%M%S")
    loop = asyncio.new_event_loop()
    sides: dict[str, dict[str, list[float]]] = {
        label: {"wall_s": [], "cpu_s": []} for label in ("single", "split")}
    found: dict[str, list[tuple[int, int]]] = {"single": [], "split": []}

    with tempfile.TemporaryDirectory(prefix="bench-cluster-hunt-") as tmp, \
            NatsServer(Path(tmp) / "nats") as server:
        workers = {s: subprocess.Popen(
            [sys.executable, "-m", "pcapwire.cli", "--data-dir", str(stores / s), "worker",
             "--nats", server.url, "--sensor", s], stderr=subprocess.DEVNULL)
            for s in (*SINGLE, *SPLIT)}
        jobs = loop.run_until_complete(NatsJobs.connect(server.url))
        try:
            def hunt(label: str, sensors: tuple[str, ...]) -> float:
                trigger = f"bench-{stamp}-{next(names)}"  # stores are kept: new names
                for s in sensors:
                    with TriggerDB(tenant_root(stores / s, TENANT)) as tdb:
                        tdb.create(from_dict({"name": trigger, **DEFINITIONS[args.rules]}),
                                   "bench")
                units = [Job("hunt", f"hunt:{TENANT}:{s}:{trigger}:v1", TENANT,
                             {"trigger": trigger, "version": 1}, s) for s in sensors]

                async def run() -> list[dict[str, Any]]:
                    await asyncio.gather(*map(jobs.submit, units))
                    results = [await jobs.result(u.unit_id, WAIT_S) for u in units]
                    assert all(r.ok for r in results), results
                    return [r.data for r in results]

                cpu0 = sum(tree_cpu(workers[s].pid) for s in sensors)
                t0 = time.perf_counter()
                data = loop.run_until_complete(run())
                wall = time.perf_counter() - t0
                sides[label]["cpu_s"].append(sum(tree_cpu(workers[s].pid) for s in sensors)
                                             - cpu0)
                matched = 0
                for s in sensors:
                    with TriggerDB(tenant_root(stores / s, TENANT)) as tdb:
                        matched += tdb.match_count(tdb.by_name(trigger).id)
                found[label].append((sum(d["hits"] for d in data), matched))
                sides[label]["wall_s"].append(wall)
                return wall

            hunt("single", SINGLE)  # warm-up: the workers' imports, the page cache
            hunt("split", SPLIT)
            for label in sides:
                sides[label] = {"wall_s": [], "cpu_s": []}
                found[label] = []
            alternate(args.rounds, lambda: hunt("single", SINGLE),
                      lambda: hunt("split", SPLIT))
        finally:
            loop.run_until_complete(jobs.close())
            for w in workers.values():
                w.terminate()
            for w in workers.values():
                w.wait(60)
            loop.close()

    for label in found:  # each side finds the same every round
        assert len(set(found[label])) == 1, found
    if args.rules == "bpf":  # packet by packet: where segments end changes nothing
        assert found["single"][0] == found["split"][0], found
    results: dict[str, Any] = {"size_mib": args.size_mib, "capture_bytes": capture.stat().st_size,
                               "segment_bytes": SEGMENT_BYTES, "rules": args.rules,
                               "rounds": args.rounds, "cores": os.cpu_count()}
    for label, side in sides.items():
        results[label] = {"wall_s": summary(side["wall_s"]), "cpu_s": summary(side["cpu_s"]),
                          "cpu_s_per_gib": summary([c / gib for c in side["cpu_s"]]),
                          "hits": found[label][0][0], "matches": found[label][0][1]}
    RESULTS.mkdir(exist_ok=True)
    name = "cluster_hunt" + ("" if args.rules == "suricata" else f"_{args.rules}")
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"{args.rules} hunt over {args.size_mib} MiB, {args.rounds} rounds alternating; "
          f"median [range]; {os.cpu_count()} cores")
    print("| side | wall (s) | workers' CPU (s) | CPU-s per GiB | hits | matches |")
    print("|---|---|---|---|---|---|")
    for label, title in (("single", "1 sensor, 1 worker"), ("split", "3 sensors, 3 workers")):
        r = results[label]
        print(f"| {title} | {fmt(r['wall_s'])} | {fmt(r['cpu_s'])} | "
              f"{fmt(r['cpu_s_per_gib'])} | {r['hits']} | {r['matches']} |")


if __name__ == "__main__":
    main()
