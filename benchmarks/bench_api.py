"""API benchmark: concurrent clients on loopback while an ingest runs.

    python benchmarks/bench_api.py [--clients 50] [--min-queries 5] [--max-queries 500]
                                   [--query-data-mib 64] [--ingest-mib 256] [--max-seconds 120]

The server is ``pcapwire serve`` in its own process on 127.0.0.1; this process is the load
generator (asyncio + aiohttp). Each client repeatedly submits a narrow query (a host taken
from the flow index) and streams its PCAP to the end, counting bytes, for as long as one
more client uploads and ingests a large capture through ``POST /api/v1/ingest`` (into
another tenant). Every loop is bounded in
count and time. Reported: requests/s, p50/p99 of submit latency, PCAP time to first byte
and whole-query time, 429 refusals, ingest throughput alone vs under load, and the proof
that the ingest lost nothing: the packets the server reports and then returns for the
capture's time window equal the records in the file (counted independently here).
Results go to benchmarks/results/api.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PCAP = "application/vnd.tcpdump.pcap"


def count_records(path: Path) -> int:
    """Records of a little-endian classic pcap, read independently of pcapwire."""
    n = 0
    with open(path, "rb") as f:
        f.seek(24)
        while len(hdr := f.read(16)) == 16:
            f.seek(struct.unpack_from("<I", hdr, 8)[0], 1)
            n += 1
    return n


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit("server exited during start-up")
            try:
                async with s.get(f"{url}/api/v1/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)  # the port is not open yet: poll the condition
    raise SystemExit("server did not start")


async def upload(session: aiohttp.ClientSession, url: str, path: Path) -> tuple[dict, float]:
    async def body():
        with open(path, "rb") as f:
            while block := f.read(4 * 2**20):
                yield block

    t0 = time.perf_counter()
    async with session.post(f"{url}/api/v1/ingest", data=body(),
                            headers={"Content-Type": PCAP}) as r:
        summary = await r.json()
        if r.status != 200:
            raise SystemExit(f"ingest failed: {summary}")
    return summary, time.perf_counter() - t0


class Stats:
    def __init__(self) -> None:
        self.submit: list[float] = []
        self.ttfb: list[float] = []
        self.total: list[float] = []
        self.bytes = 0
        self.requests = 0
        self.refused = 0
        self.errors: list[str] = []


async def client(url: str, token: str, hosts: list[str], least: int, most: int,
                 deadline: float, ingest: asyncio.Future, stats: Stats, seed: int) -> None:
    """Queries until the ingest has finished (at least ``least``, at most ``most`` of them,
    and never past ``deadline``)."""
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        for i in range(most):
            if time.monotonic() > deadline or (i >= least and ingest.done()):
                return
            t0 = time.perf_counter()
            async with s.post(f"{url}/api/v1/queries",
                              json={"hosts": [rng.choice(hosts)], "case": "bench"}) as r:
                stats.requests += 1
                body = await r.json()
                if r.status == 429:
                    stats.refused += 1
                    continue
                if r.status != 202:
                    stats.errors.append(f"{r.status} {body}")
                    continue
            t1 = time.perf_counter()
            stats.submit.append(t1 - t0)
            async with s.get(f"{url}{body['links']['pcap']}") as r:
                stats.requests += 1
                first = True
                async for block in r.content.iter_any():
                    if first:
                        stats.ttfb.append(time.perf_counter() - t1)
                        first = False
                    stats.bytes += len(block)
            stats.total.append(time.perf_counter() - t0)


async def run(args: argparse.Namespace) -> dict:
    from pcapwire.api.authdb import AuthDB
    from pcapwire.synth import generate

    work = Path(tempfile.mkdtemp(prefix="pcapwire-bench-api-"))
    try:
        query_cap, ingest_cap = work / "query.pcap", work / "ingest.pcap"
        generate(query_cap, args.query_data_mib * 2**20, seed=5)
        generate(ingest_cap, args.ingest_mib * 2**20, seed=6, start_s=1_900_000_000)
        expected_packets = count_records(ingest_cap)
        data = work / "data"
        db = AuthDB(data / "auth.sqlite")
        tok_load, _ = db.create_token("load", "analyst")
        tok_ingest, _ = db.create_token("feed", "analyst")
        tok_alone, _ = db.create_token("alone", "analyst")
        tok_probe, _ = db.create_token("bystander", "analyst")
        db.close()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "pcapwire.cli", "--data-dir", str(data), "serve",
             "--listen", f"127.0.0.1:{port}", "--max-queries", str(args.clients)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await wait_ready(url, server)
            auth = {"Authorization": f"Bearer {tok_load}"}
            async with aiohttp.ClientSession(headers=auth) as s:
                await upload(s, url, query_cap)
                async with s.get(f"{url}/api/v1/flows", params={"limit": "1000"}) as r:
                    flows = (await r.json())["flows"]
            hosts = sorted({f["src_ip"] for f in flows} | {f["dest_ip"] for f in flows})
            # Ingest alone (another tenant), for the baseline.
            async with aiohttp.ClientSession(
                    headers={"Authorization": f"Bearer {tok_alone}"}) as s:
                alone, t_alone = await upload(s, url, ingest_cap)
            async with aiohttp.ClientSession(
                    headers={"Authorization": f"Bearer {tok_probe}"}) as s:
                await upload(s, url, query_cap)  # the bystander tenant has the same data
            # One client alone first: the latency without load, for the ratio.
            idle = Stats()
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            await client(url, tok_probe, hosts, args.min_queries * 4, args.min_queries * 4,
                         time.monotonic() + args.max_seconds, done, idle, 7)
            stats, probe = Stats(), Stats()
            deadline = time.monotonic() + args.max_seconds
            t0 = time.perf_counter()

            async def ingest_under_load() -> tuple[dict, float]:
                async with aiohttp.ClientSession(
                        headers={"Authorization": f"Bearer {tok_ingest}"}) as s:
                    return await upload(s, url, ingest_cap)

            ingest_task = asyncio.create_task(ingest_under_load())
            await asyncio.gather(*(client(url, tok_load, hosts, args.min_queries,
                                          args.max_queries, deadline, ingest_task, stats, i)
                                   for i in range(args.clients)),
                                 client(url, tok_probe, hosts, args.min_queries,
                                        args.max_queries, deadline, ingest_task, probe, 999))
            load_seconds = time.perf_counter() - t0
            loaded, t_loaded = await ingest_task
            # Proof: the feed tenant's store returns every packet of the capture.
            async with aiohttp.ClientSession(
                    headers={"Authorization": f"Bearer {tok_ingest}"}) as s:
                async with s.post(f"{url}/api/v1/queries", json={"case": "verify"}) as r:
                    q = await r.json()
                async with s.get(f"{url}{q['links']['pcap']}") as r:
                    blob = await r.read()
            returned = count_records_bytes(blob)
        finally:
            server.terminate()
            server.wait(30)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mib = args.ingest_mib
    return {
        "clients": args.clients,
        "load_seconds": round(load_seconds, 2), "requests": stats.requests,
        "requests_per_s": round((stats.requests + probe.requests) / load_seconds, 1),
        "queries_done": len(stats.total), "refused_429": stats.refused,
        "errors": (stats.errors + probe.errors)[:5],
        "pcap_mib_streamed": round(stats.bytes / 2**20, 1),
        "submit_ms_p50": round(1000 * pct(stats.submit, 0.5), 1),
        "submit_ms_p99": round(1000 * pct(stats.submit, 0.99), 1),
        "pcap_ttfb_ms_p50": round(1000 * pct(stats.ttfb, 0.5), 1),
        "pcap_ttfb_ms_p99": round(1000 * pct(stats.ttfb, 0.99), 1),
        "query_ms_p50": round(1000 * pct(stats.total, 0.5), 1),
        "query_ms_p99": round(1000 * pct(stats.total, 0.99), 1),
        "idle_query_ms_p50": round(1000 * pct(idle.total, 0.5), 1),
        "idle_pcap_ttfb_ms_p50": round(1000 * pct(idle.ttfb, 0.5), 1),
        "bystander_queries": len(probe.total),
        "bystander_query_ms_p50": round(1000 * pct(probe.total, 0.5), 1),
        "bystander_query_ms_p99": round(1000 * pct(probe.total, 0.99), 1),
        "ingest_mib": mib, "ingest_alone_mib_s": round(mib / t_alone, 1),
        "ingest_under_load_mib_s": round(mib / t_loaded, 1),
        "ingest_packets_in_file": expected_packets,
        "ingest_packets_reported": loaded["packets"], "ingest_alone_packets": alone["packets"],
        "ingest_packets_returned_by_query": returned,
        "ingest_lost_nothing": expected_packets == loaded["packets"] == returned,
    }


def count_records_bytes(blob: bytes) -> int:
    n, pos = 0, 24
    while pos + 16 <= len(blob):
        pos += 16 + struct.unpack_from("<I", blob, pos + 8)[0]
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--min-queries", type=int, default=5, help="per client")
    ap.add_argument("--max-queries", type=int, default=500, help="per client")
    ap.add_argument("--query-data-mib", type=int, default=64)
    ap.add_argument("--ingest-mib", type=int, default=256)
    ap.add_argument("--max-seconds", type=float, default=120.0)
    args = ap.parse_args()
    result = asyncio.run(run(args))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "api.json").write_text(json.dumps(result, indent=1) + "\n")
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    if not result["ingest_lost_nothing"] or result["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
