"""FIFO writer benchmark (``pcapwire.plugins.enginekit.fifo.FifoWriter``, what feeds a warm
Suricata): the timings that tests/test_suricata_fifo.py used to assert as thresholds and
now leaves to this script (the tests check the behaviour, not the speed).

    python benchmarks/bench_fifo.py [--mib 64] [--repeat 5]

Measures, each the median over the rounds (and the worst round):
- event-loop lag while writes wait for a reader that starts 0.5 s late: how much later
  than asked a 1 ms ``asyncio.sleep`` wakes up, max and p99 (was: max < 0.2 s for a 10 ms
  sleep in the test);
- abort latency: from ``abort()`` to ``close()`` raising, the reader reading nothing (the
  writer polls every ``STALL_POLL_S``; was: < STALL_POLL_S + 1 s in the test);
- paced writes to a reader like libpcap (4 KiB reads, 128 KiB bursts then 2 ms pauses,
  about 60 MB/s): ``writev`` calls per MiB, reads that found the pipe empty (starved) per
  1,000 reads;
- throughput to a reader that reads as fast as it can, MB/s.

Results are printed and written to benchmarks/results/fifo.json.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import statistics
import threading
import time
from typing import Any

from benchdata import RESULTS
from pcapwire.plugins.enginekit import fifo
from pcapwire.plugins.enginekit.fifo import STALL_POLL_S, FifoWriter

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, 2**20)
    except OSError:
        pass
    return r, w


def _reader(fd: int, start_after: float = 0.0, burst: int = 0, pause: float = 0.0
            ) -> tuple[threading.Thread, dict[str, int]]:
    stats = {"bytes": 0, "reads": 0, "starved": 0}

    def run() -> None:
        time.sleep(start_after)
        os.set_blocking(fd, False)
        since = 0
        while True:
            try:
                block = os.read(fd, 4096)
            except BlockingIOError:
                stats["starved"] += 1
                os.set_blocking(fd, True)
                block = os.read(fd, 4096)
                os.set_blocking(fd, False)
            if not block:
                break
            stats["reads"] += 1
            stats["bytes"] += len(block)
            since += len(block)
            if burst and since >= burst:
                since = 0
                time.sleep(pause)
        os.close(fd)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, stats


async def loop_lag(mib: int) -> dict[str, float]:
    r, w = _pipe()
    thread, _ = _reader(r, start_after=0.5)
    writer = FifoWriter(w, asyncio.get_running_loop(), high=2**20, low=2**19)
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - t - 0.001)

    tick = asyncio.create_task(ticker())
    chunk = os.urandom(256 * 1024)
    for _ in range(mib * 4):
        await writer.write(chunk)
    await writer.close()
    tick.cancel()
    await asyncio.to_thread(thread.join)
    lags.sort()
    return {"max_ms": lags[-1] * 1000, "p99_ms": lags[int(len(lags) * 0.99)] * 1000}


async def abort_latency() -> float:
    r, w = _pipe()
    writer = FifoWriter(w, asyncio.get_running_loop())
    await writer.write(os.urandom(4 * 2**20))
    await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    writer.abort()
    try:
        await writer.close()
    except BrokenPipeError:
        pass
    took = time.perf_counter() - t0
    os.close(r)
    return took * 1000


async def paced(mib: int) -> dict[str, float]:
    calls = 0
    real = os.writev

    def counting(fd: int, buffers: Any) -> int:
        nonlocal calls
        calls += 1
        return real(fd, buffers)

    fifo.os.writev = counting  # type: ignore[attr-defined]
    try:
        r, w = _pipe()
        thread, stats = _reader(r, burst=128 * 1024, pause=0.002)
        writer = FifoWriter(w, asyncio.get_running_loop())
        chunk = os.urandom(256 * 1024)
        for _ in range(mib * 4):
            await writer.write(chunk)
        await writer.close()
        await asyncio.to_thread(thread.join)
    finally:
        fifo.os.writev = real  # type: ignore[attr-defined]
    return {"writev_per_mib": calls / mib, "starved_per_1000_reads":
            1000 * stats["starved"] / stats["reads"]}


async def throughput(mib: int) -> float:
    r, w = _pipe()
    thread, stats = _reader(r)
    writer = FifoWriter(w, asyncio.get_running_loop())
    chunk = os.urandom(256 * 1024)
    t0 = time.perf_counter()
    for _ in range(mib * 4):
        await writer.write(chunk)
    await writer.close()
    await asyncio.to_thread(thread.join)
    assert stats["bytes"] == mib * 2**20
    return mib * 2**20 / (time.perf_counter() - t0) / 1e6


async def round_(mib: int) -> dict[str, float]:
    lag = await loop_lag(8)
    p = await paced(mib // 4 or 1)
    return {"loop_lag_max_ms": lag["max_ms"], "loop_lag_p99_ms": lag["p99_ms"],
            "abort_to_close_ms": await abort_latency(), **p,
            "throughput_mb_s": await throughput(mib)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=64, help="MiB written per throughput round")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rounds = [asyncio.run(round_(args.mib)) for _ in range(args.repeat)]
    worse_is_higher = {k: k != "throughput_mb_s" for k in rounds[0]}
    out: dict[str, Any] = {"rounds": args.repeat, "mib": args.mib,
                           "stall_poll_ms": STALL_POLL_S * 1000}
    for key, higher_is_worse in worse_is_higher.items():
        values = [r[key] for r in rounds]
        out[key] = round(statistics.median(values), 2)
        out[key + "_worst"] = round(max(values) if higher_is_worse else min(values), 2)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fifo.json").write_text(json.dumps(out, indent=1) + "\n")
    for key, value in out.items():
        print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
