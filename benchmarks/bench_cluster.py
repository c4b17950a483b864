"""Cluster benchmark: a query through the central vs the sensors answering it directly.

    python benchmarks/bench_cluster.py [--size-mib 64] [--rounds 7] [--pinned [--central-alone]]

Three sensors and a central run as real ``pcapwire serve`` processes on 127.0.0.1
(:mod:`pcapwire.testing.cluster`: mutual TLS between central and sensors, and HTTPS from
the central to this client, as a real central serves its users: the client decrypts TLS on
both sides of every comparison); the generated
capture ``benchmarks/data/synth-<size>m.pcap`` is split by host pair over the three, so
every sensor holds a third of every second. This process is the client (asyncio +
aiohttp, one session per server kept for all queries: no handshake in any figure, as the
central keeps its connections to the sensors). Measured in alternating rounds (the order
of the two sides swapped every round), each figure as median and range:

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

On a 2-core machine every process shares both cores, so the central's CPU adds to the
sensors' instead of overlapping with it. ``--pinned`` also measures, in the same rounds
(the order of the two placements alternating too), an emulation of separate machines:
the three sensors (and every thread and child process of theirs) on CPU
:data:`SENSOR_CPU`, the central and this client on CPU :data:`CENTRAL_CPU` — on both sides
of the comparison, so the sensors asked directly run on the one core they have behind the
central. Its figures go under ``"pinned"``; the shared figures stay where they were.
``--central-alone`` pins otherwise: the central alone on CPU :data:`CENTRAL_CPU`, the sensors
and this client on CPU :data:`SENSOR_CPU` (a central with a machine of its own, the client
elsewhere: both sides of the comparison then put the same work on CPU 0, and the central's
only adds what it does not overlap); its results go to ``cluster_central_alone.json``.
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
from benchdata import RESULTS, synth_capture

SENSORS = ("a", "b", "c")
SENSOR_CPU = 0  # --pinned: the three sensors' core
CENTRAL_CPU = 1  # --pinned: the central's and this client's core
QUERY = {"bpf": "tcp", "case": "bench"}
HEADER_LEN = 24


class Endpoint:
    """One server, one token (and, for a sensor, the central's client certificate), one
    HTTP session kept for every query (:meth:`open`): its connection is reused, as the
    central reuses its connections to the sensors, so neither side's figures include a
    TCP or TLS handshake."""

    def __init__(self, url: str, token: str, context: ssl.SSLContext | None = None) -> None:
        self.url, self.context = url, context
        self.headers = {"Authorization": f"Bearer {token}"}
        self.session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self.context if self.context else False)
        self.session = aiohttp.ClientSession(headers=self.headers, connector=connector)

    async def query(self) -> tuple[float, float, bytes]:
        """(seconds to the first packet bytes, seconds to the end, the PCAP)."""
        assert self.session is not None
        s = self.session
        body = {**QUERY, "workflows": []} if self.context is not None else QUERY
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
    p.add_argument("--pinned", action="store_true",
                   help="also measure with the sensors on CPU 0 and the central and client "
                        "on CPU 1 (separate machines emulated)")
    p.add_argument("--central-alone", action="store_true",
                   help="with --pinned: the central alone on CPU 1, the sensors and the "
                        "client on CPU 0")
    args = p.parse_args()
    if args.central_alone and not args.pinned:
        raise SystemExit("--central-alone goes with --pinned")
    if args.pinned and len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("--pinned needs two CPUs")

    from pcapwire.cluster.tls import central_client_context
    from pcapwire.testing.cluster import Cluster, split_capture

    capture = synth_capture(args.size_mib)
    work = Path(tempfile.mkdtemp(prefix="pcapwire-bench-cluster-"))
    try:
        parts = split_capture(capture, work / "parts", SENSORS,
                              lambda _ts, frame: sum(frame[26:34]) % 3)
        with Cluster(work / "nodes", {n: {"acme": [p]} for n, p in zip(SENSORS, parts,
                                                                        strict=True)},
                     central_tls=True) as cl:
            context = central_client_context(cl.client.cert, cl.client.key, cl.ca.cert)
            central = Endpoint(cl.central_url, cl.central_token("acme", "analyst"),
                               ssl.create_default_context(cafile=cl.ca.cert))
            sensors = [Endpoint(cl.sensor_url(n), cl.sensor_token(n, "acme", "analyst"),
                                context) for n in SENSORS]
            pids = {}
            for name, node in [("central", cl.central), *cl.sensors.items()]:
                assert node.proc is not None
                pids[name] = node.proc.pid
            out = asyncio.run(measure(work, central, sensors, args.rounds, pids, args.pinned,
                                      args.central_alone))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["capture_mib"] = args.size_mib
    RESULTS.mkdir(exist_ok=True)
    name = "cluster_central_alone.json" if args.central_alone else "cluster.json"
    (RESULTS / name).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tasks_of(pid: int, descendants: bool = True) -> list[int]:
    """The threads of process ``pid`` and (``descendants``) of all its descendants."""
    if not descendants:
        return [int(t.name) for t in Path(f"/proc/{pid}/task").glob("[0-9]*")]
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # it ended meanwhile
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out += [int(t.name) for t in Path(f"/proc/{p}/task").glob("[0-9]*")]
        todo += children.get(p, [])
    return out


def place(pids: dict[str, int], pinned: bool, alone: bool = False) -> None:
    """Sensors on SENSOR_CPU and central + this client on CENTRAL_CPU (``pinned``; with
    ``alone`` the central alone on CENTRAL_CPU, this client with the sensors), or every
    process on every CPU; threads and children made later inherit it. The servers are this
    process's children: the client is only this process's own threads (pinning its
    descendants too put every server on the client's core)."""
    every = os.sched_getaffinity(0) | {SENSOR_CPU, CENTRAL_CPU}
    central = {"central"} if alone else {"central", "client"}
    for name, pid in [*pids.items(), ("client", os.getpid())]:
        cpus = every if not pinned else {CENTRAL_CPU} if name in central else {SENSOR_CPU}
        for tid in tasks_of(pid, descendants=name != "client"):
            try:
                os.sched_setaffinity(tid, cpus)
            except ProcessLookupError:
                pass  # a thread that ended meanwhile
        if os.sched_getaffinity(pid) != cpus:  # the placement is what the figures claim
            raise SystemExit(f"{name} (pid {pid}) is on CPUs {sorted(os.sched_getaffinity(pid))}"
                             f", not {sorted(cpus)}")


async def measure(work: Path, central: Endpoint, sensors: list[Endpoint], rounds: int,
                  pids: dict[str, int], pinned: bool, alone: bool = False) -> dict:
    for endpoint in (central, *sensors):
        endpoint.open()
    try:
        return await _measure(work, central, sensors, rounds, pids, pinned, alone)
    finally:
        for endpoint in (central, *sensors):
            if endpoint.session is not None:
                await endpoint.session.close()


async def _measure(work: Path, central: Endpoint, sensors: list[Endpoint], rounds: int,
                   pids: dict[str, int], pinned: bool, alone: bool) -> dict:
    _, _, merged = await central.query()
    size = len(merged)
    answers = await _all(sensors)
    for i, (_, _, data) in enumerate(answers):
        (work / f"own{i}.pcap").write_bytes(data)
    subprocess.run(["mergecap", "-F", "pcap", "-w", str(work / "merged.pcap"),
                    *(str(work / f"own{i}.pcap") for i in range(len(answers)))], check=True)
    if (work / "merged.pcap").read_bytes() != merged:
        raise SystemExit("the central's answer differs from mergecap of the sensors' answers")

    placements = (False, True) if pinned else (False,)
    keys = ("first_central", "first_sensor", "last_sensor", "cpu_central", "whole_central",
            "whole_sensors")
    rows: dict[bool, dict[str, list[float]]] = {p: {k: [] for k in keys} for p in placements}

    async def through_central(row: dict[str, list[float]]) -> None:
        cpu = cpu_s(pids["central"])
        first, whole, data = await central.query()
        row["cpu_central"].append(cpu_s(pids["central"]) - cpu)
        row["first_central"].append(first)
        row["whole_central"].append(whole)
        if len(data) != size:
            raise SystemExit(f"the central's answer has {len(data)} bytes, not {size}")

    async def sensors_at_once(row: dict[str, list[float]]) -> None:
        answers = await _all(sensors)
        row["first_sensor"].append(min(first for first, _, _ in answers))
        row["last_sensor"].append(max(first for first, _, _ in answers))
        row["whole_sensors"].append(max(whole for _, whole, _ in answers))

    try:
        for r in range(rounds):  # both orders alternate: placements, and central/sensors
            for p in placements if r % 2 == 0 else placements[::-1]:
                place(pids, p, alone)
                for side in (through_central, sensors_at_once)[::(-1 if r % 2 else 1)]:
                    await side(rows[p])
    finally:
        place(pids, False)
    out = {"result_mib": round(size / 2**20, 2), "rounds": rounds, **figures(rows[False], size)}
    if pinned:
        out["pinned"] = {"sensors_cpu": SENSOR_CPU, "central_cpu": CENTRAL_CPU,
                         "client_cpu": SENSOR_CPU if alone else CENTRAL_CPU,
                         **figures(rows[True], size)}
    return out


def figures(row: dict[str, list[float]], size: int) -> dict:
    whole_central, whole_sensors = row["whole_central"], row["whole_sensors"]
    first_central, first_sensor = row["first_central"], row["first_sensor"]
    overhead = [c - s for c, s in zip(whole_central, whole_sensors, strict=True)]
    mib = size / 2**20
    return {
        "first_chunk_s": {"central": summary(first_central),
                          "first_sensor": summary(first_sensor),
                          "last_sensor": summary(row["last_sensor"])},
        "central_cpu_s_per_query": summary(row["cpu_central"]),
        "whole_query_s": {"central": summary(whole_central),
                          "sensors_at_once": summary(whole_sensors)},
        "throughput_mib_s": {"central": mib / statistics.median(whole_central),
                             "sensors_at_once": mib / statistics.median(whole_sensors)},
        "merge_overhead_s": summary(overhead),
        "merge_overhead_pct_of_slowest_sensor": 100 * statistics.median(overhead)
        / statistics.median(whole_sensors),
        "first_chunk_extra_ms": 1000 * (statistics.median(first_central)
                                        - statistics.median(first_sensor)),
        "first_chunk_extra_ms_per_round": summary(
            [1000 * (c - s) for c, s in zip(first_central, first_sensor, strict=True)]),
    }


async def _all(sensors: list[Endpoint]) -> list[tuple[float, float, bytes]]:
    return list(await asyncio.gather(*(s.query() for s in sensors)))


if __name__ == "__main__":
    sys.exit(main())
