"""Job dispatch benchmark: what handing one job unit to a worker and getting its result back
costs, through NATS JetStream (a real ``nats-server`` on 127.0.0.1 with its own storage,
one ``pcapwire worker --nats`` process) against calling the runner in-process, on ``ping``
jobs (they do nothing, so all that is timed is dispatch).

    python benchmarks/bench_jobs.py [--units 200] [--rounds 5] [--local-units 5]

Each round times ``--units`` jobs (fresh unit ids: results are idempotent by unit id) on
each side, the sides alternating (benchdata.alternate):

- in-process: :func:`pcapwire.jobs.runner.run_job` called for one job after another;
- NATS, one at a time: submit a job, wait for its result, then the next (a unit's
  round trip: submit, the worker's fetch, state writes, result write, ack, the KV read);
- NATS, all at once: submit every job, then collect the results (a hunt queueing its units).

Reported, median [min-max] over the rounds: the per-unit overhead,
(NATS round - in-process round) / units, in ms, and the rounds' wall seconds. For scale,
the single machine's path (:func:`pcapwire.jobs.local.run`: one ``pcapwire worker --job``
child process per job, what the API runs for an upload or a hash-list import) is timed for
``--local-units`` jobs per round. Target (issue 14): dispatch overhead <= 5 ms per job unit.
Written to benchmarks/results/jobs.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from itertools import count
from pathlib import Path
from typing import Any

from benchdata import RESULTS, alternate

SENSOR = "bench"
TENANT = "bench"


def _summary(values: list[float], scale: float = 1.0, digits: int = 3) -> dict[str, float]:
    return {"median": round(statistics.median(values) * scale, digits),
            "min": round(min(values) * scale, digits), "max": round(max(values) * scale, digits)}


def _fmt(s: dict[str, float]) -> str:
    return f"{s['median']} [{s['min']}-{s['max']}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--units", type=int, default=200, help="ping jobs per round and side")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--local-units", type=int, default=5,
                    help="jobs per round through local.run (a child process each)")
    args = ap.parse_args()

    from pcapwire.jobs import Job, local
    from pcapwire.jobs.nats import NatsJobs
    from pcapwire.jobs.runner import run_job, tenant_root
    from pcapwire.testing.natsserver import NatsServer

    RESULTS.mkdir(exist_ok=True)
    ids = count()
    loop = asyncio.new_event_loop()

    def jobs_of(n: int) -> list[Job]:
        return [Job("ping", f"bench-{next(ids)}", TENANT, sensor=SENSOR) for _ in range(n)]

    def timed(coro: Callable[[], Coroutine[Any, Any, None]]) -> float:
        t0 = time.perf_counter()
        loop.run_until_complete(coro())
        return time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp, \
            NatsServer(Path(tmp) / "nats") as server:
        data_dir = Path(tmp) / "data"
        root = tenant_root(data_dir, TENANT)
        root.mkdir(parents=True)
        worker = subprocess.Popen([sys.executable, "-m", "pcapwire.cli", "--data-dir",
                                   str(data_dir), "worker", "--nats", server.url,
                                   "--sensor", SENSOR])
        try:
            jobs = loop.run_until_complete(NatsJobs.connect(server.url))

            def in_process() -> float:
                batch = jobs_of(args.units)
                t0 = time.perf_counter()
                for job in batch:
                    assert run_job(job, root, SENSOR).ok
                return time.perf_counter() - t0

            def one_at_a_time() -> float:
                async def run() -> None:
                    for job in jobs_of(args.units):
                        await jobs.submit(job)
                        assert (await jobs.result(job.unit_id, 60)).ok
                return timed(run)

            def all_at_once() -> float:
                async def run() -> None:
                    batch = jobs_of(args.units)
                    for job in batch:
                        await jobs.submit(job)
                    for job in batch:
                        assert (await jobs.result(job.unit_id, 60)).ok
                return timed(run)

            def local_children() -> float:
                async def run() -> None:
                    for job in jobs_of(args.local_units):
                        assert (await local.run(job, root)).ok
                return timed(run)

            one_at_a_time()  # warm-up: the worker's imports, the consumer, the buckets
            results: dict[str, Any] = {"units": args.units, "rounds": args.rounds}
            for label, side in (("one_at_a_time", one_at_a_time),
                                ("all_at_once", all_at_once)):
                nats_s, inproc_s = alternate(args.rounds, side, in_process)
                per_unit = [(n - i) / args.units for n, i in zip(nats_s, inproc_s, strict=True)]
                results[label] = {"overhead_ms_per_unit": _summary(per_unit, 1000),
                                  "nats_round_s": _summary(nats_s),
                                  "in_process_round_s": _summary(inproc_s, digits=5)}
            local_s = [local_children() / args.local_units for _ in range(args.rounds)]
            results["local_child_ms_per_unit"] = _summary(local_s, 1000, 1)
            loop.run_until_complete(jobs.close())
        finally:
            worker.terminate()
            worker.wait(30)
            loop.close()

    (RESULTS / "jobs.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"{args.units} ping jobs per round, {args.rounds} rounds alternating the sides; "
          "median [range]")
    print("| dispatch | overhead per unit (ms) | NATS round (s) | in-process round (s) |")
    print("|---|---|---|---|")
    for label in ("one_at_a_time", "all_at_once"):
        r = results[label]
        print(f"| NATS, {label.replace('_', ' ')} | {_fmt(r['overhead_ms_per_unit'])} | "
              f"{_fmt(r['nats_round_s'])} | {_fmt(r['in_process_round_s'])} |")
    print(f"| local child process per job (`local.run`) | "
          f"{_fmt(results['local_child_ms_per_unit'])} | | |")


if __name__ == "__main__":
    main()
