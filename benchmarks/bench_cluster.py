"""Cluster benchmark: a query through the central vs the sensors answering it directly.

    python benchmarks/bench_cluster.py [--size-mib 64] [--rounds 7]

Three sensors and a central run as real ``pcapwire serve`` processes on 127.0.0.1
(:mod:`pcapwire.testing.cluster`: mutual TLS between central and sensors); the generated
capture ``benchmarks/data/synth-<size>m.pcap`` is split by host pair over the three, so
every sensor holds a third of every second. This process is the client (asyncio +
aiohttp). Measured in alternating rounds (:func:`benchdata.alternate`), each figure as
median and range:

- **first chunk**: from the POST of ``{"bpf": "tcp"}`` to the first packet bytes of its
  PCAP stream, through the central vs the three sensors asked directly at once (the
  first sensor's first packet bytes: the issue's target is the central's within 20 ms of
  it; and the last sensor's, which a merge must wait for: no packet can leave before
  every sensor has shown its first); every stream is read to its end, so no round
  leaves work behind for the next;
- **whole query**: the same query through the central (three sensors, merged) to the
  end of its PCAP vs the three sensors asked directly at once, to the end of the last
  answer (no merge): the difference is what fan-out, merge, spool and relay cost,
  against the target of 10 % of the slowest sensor's time. Throughput is the merged
  result's size over each time.

The merged result is checked against the sensors' own answers (same records, byte for
byte, per ``mergecap``) once before timing. The central's CPU seconds per whole query
(``/proc/PID/stat``) are reported too. Results go to benchmarks/results/cluster.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from benchdata import RESULTS, alternate, synth_capture

SENSORS = ("a", "b", "c")
QUERY = {"bpf": "tcp", "case": "bench"}
HEADER_LEN = 24


class Endpoint:
    """One server, one token (and, for a sensor, the central's client certificate)."""

    def __init__(self, url: str, token: str, context: ssl.SSLContext | None = None) -> None:
        self.url, self.context = url, context
        self.headers = {"Authorization": f"Bearer {token}"}

    async def query(self) -> tuple[float, float, bytes]:
        """(seconds to the first packet bytes, seconds to the end, the PCAP)."""
        body = {**QUERY, "workflows": []} if self.context is not None else QUERY
        connector = aiohttp.TCPConnector(ssl=self.context if self.context else False)
        async with aiohttp.ClientSession(headers=self.headers, connector=connector) as s:
            t0 = time.perf_counter()
            async with s.post(f"{self.url}/api/v1/queries", json=body) as r:
                q = await r.json()
                if r.status != 202:
                    raise SystemExit(f"{self.url}: {r.status} {q}")
            got, first = bytearray(), None
            async with s.get(f"{self.url}{q['links']['pcap']}") as r:
                async for block in r.content.iter_any():
                    got += block
                    if first is None and len(got) > HEADER_LEN:
                        first = time.perf_counter() - t0
            whole = time.perf_counter() - t0
            return whole if first is None else first, whole, bytes(got)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size-mib", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()

    from pcapwire.cluster.tls import central_client_context
    from pcapwire.testing.cluster import Cluster, split_capture

    capture = synth_capture(args.size_mib)
    work = Path(tempfile.mkdtemp(prefix="pcapwire-bench-cluster-"))
    try:
        parts = split_capture(capture, work / "parts", SENSORS,
                              lambda _ts, frame: sum(frame[26:34]) % 3)
        with Cluster(work / "nodes", {n: {"acme": [p]} for n, p in zip(SENSORS, parts,
                                                                        strict=True)}) as cl:
            context = central_client_context(cl.client.cert, cl.client.key, cl.ca.cert)
            central = Endpoint(cl.central_url, cl.central_token("acme", "analyst"))
            sensors = [Endpoint(cl.sensor_url(n), cl.sensor_token(n, "acme", "analyst"),
                                context) for n in SENSORS]
            assert cl.central.proc is not None
            out = measure(work, central, sensors, args.rounds, cl.central.proc.pid)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["capture_mib"] = args.size_mib
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cluster.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(work: Path, central: Endpoint, sensors: list[Endpoint], rounds: int,
            central_pid: int) -> dict:
    _, _, merged = asyncio.run(central.query())
    size = len(merged)
    answers = asyncio.run(_all(sensors))
    for i, (_, _, data) in enumerate(answers):
        (work / f"own{i}.pcap").write_bytes(data)
    subprocess.run(["mergecap", "-F", "pcap", "-w", str(work / "merged.pcap"),
                    *(str(work / f"own{i}.pcap") for i in range(len(answers)))], check=True)
    if (work / "merged.pcap").read_bytes() != merged:
        raise SystemExit("the central's answer differs from mergecap of the sensors' answers")

    rows: dict[str, list[float]] = {"first_central": [], "first_sensor": [],
                                    "last_sensor": [], "cpu_central": []}

    def through_central() -> float:
        cpu = cpu_s(central_pid)
        first, whole, _ = asyncio.run(central.query())
        rows["cpu_central"].append(cpu_s(central_pid) - cpu)
        rows["first_central"].append(first)
        return whole

    def sensors_at_once() -> float:
        answers = asyncio.run(_all(sensors))
        rows["first_sensor"].append(min(first for first, _, _ in answers))
        rows["last_sensor"].append(max(first for first, _, _ in answers))
        return max(whole for _, whole, _ in answers)

    whole_central, whole_sensors = alternate(rounds, through_central, sensors_at_once)
    first_central, first_sensor = rows["first_central"], rows["first_sensor"]
    overhead = [c - s for c, s in zip(whole_central, whole_sensors, strict=True)]
    mib = size / 2**20
    return {
        "result_mib": round(mib, 2), "rounds": rounds,
        "first_chunk_s": {"central": summary(first_central),
                          "first_sensor": summary(first_sensor),
                          "last_sensor": summary(rows["last_sensor"])},
        "central_cpu_s_per_query": summary(rows["cpu_central"]),
        "whole_query_s": {"central": summary(whole_central),
                          "sensors_at_once": summary(whole_sensors)},
        "throughput_mib_s": {"central": mib / statistics.median(whole_central),
                             "sensors_at_once": mib / statistics.median(whole_sensors)},
        "merge_overhead_s": summary(overhead),
        "merge_overhead_pct_of_slowest_sensor": 100 * statistics.median(overhead)
        / statistics.median(whole_sensors),
        "first_chunk_extra_ms": 1000 * (statistics.median(first_central)
                                        - statistics.median(first_sensor)),
    }


async def _all(sensors: list[Endpoint]) -> list[tuple[float, float, bytes]]:
    return list(await asyncio.gather(*(s.query() for s in sensors)))


if __name__ == "__main__":
    sys.exit(main())
