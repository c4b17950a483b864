"""Capture child for tests/test_capture_native.py and benchmarks/bench_capture.py, run inside
a test's network namespace (``ip netns exec NS python tests/capture_child.py ...``).

Opens one ``_native.Capture`` per ``--out`` (several: one PACKET_FANOUT group), prints one
JSON line ``{"ready": ..., "linktype": ...}`` when capturing, writes every batch's records to
its nanosecond pcap (and the meta to OUT.meta), indexes them with ``SegmentIndexer`` on the
way (as the recorder does), and on SIGTERM/SIGINT (or after --count packets, or --seconds)
drains the ring until it stays empty for --idle-ms, then prints one JSON line of results
(``stats`` per socket, ``flows``, ``packets``, ``rss_kb``, ``cpu_s``) and exits 0.
"""

from __future__ import annotations

import argparse
import json
import resource
import select
import signal
import struct
import sys
import time
from pathlib import Path
from typing import Any

from pcapwire import _native as N

stop = False


def _on_signal(_sig: int, _frame: Any) -> None:
    global stop
    stop = True


def rss_kb(field: str = "VmRSS") -> int:
    """VmRSS (or VmHWM, the peak: ru_maxrss would include the parent that forked us)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", default="v0")
    ap.add_argument("--out", action="append", required=True, type=Path)
    ap.add_argument("--snaplen", type=int, default=262144)
    ap.add_argument("--bpf", default="")
    ap.add_argument("--ring-bytes", type=int, default=64 << 20)
    ap.add_argument("--block-bytes", type=int, default=1 << 20)
    ap.add_argument("--fanout-group", type=int, default=0)
    ap.add_argument("--fanout-mode", default="hash")
    ap.add_argument("--no-promisc", action="store_true")
    ap.add_argument("--block-timeout-ms", type=int, default=100)
    ap.add_argument("--count", type=int, default=0, help="stop after this many packets")
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long")
    ap.add_argument("--idle-ms", type=int, default=400)
    ap.add_argument("--no-meta", action="store_true", help="do not write OUT.meta")
    ap.add_argument("--no-index", action="store_true", help="do not run SegmentIndexer")
    ap.add_argument("--rss-every", type=float, default=0, help="sample RSS every N seconds")
    a = ap.parse_args()
    if len(a.out) > 1 and not a.fanout_group:
        ap.error("several --out need --fanout-group")
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    caps = [N.Capture(a.iface, snaplen=a.snaplen, bpf=a.bpf, ring_bytes=a.ring_bytes,
                      block_bytes=a.block_bytes, fanout_group=a.fanout_group,
                      fanout_mode=a.fanout_mode, promisc=not a.no_promisc,
                      block_timeout_ms=a.block_timeout_ms) for _ in a.out]
    outs = [open(p, "wb") for p in a.out]  # noqa: SIM115 - closed below
    metas = [None if a.no_meta else open(p.with_suffix(p.suffix + ".meta"), "wb")  # noqa: SIM115
             for p in a.out]
    ixs = [N.SegmentIndexer() for _ in a.out]
    sizes = [24] * len(a.out)
    for c, f in zip(caps, outs, strict=True):
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, c.snaplen, c.linktype))
    print(json.dumps({"ready": True, "linktype": caps[0].linktype,
                      "ring": list(caps[0].ring),
                      "userland_filter": caps[0].userland_filter}), flush=True)
    t0 = time.monotonic()
    total = 0
    idle_since: float | None = None
    rss: list[tuple[float, int]] = []
    next_rss = 0.0
    fds = {c.fileno(): i for i, c in enumerate(caps)}
    while True:
        now = time.monotonic()
        if a.rss_every and now >= next_rss:
            rss.append((round(now - t0, 2), rss_kb()))
            next_rss = now + a.rss_every
        if (a.count and total >= a.count) or (a.seconds and now - t0 >= a.seconds):
            break
        if len(caps) == 1:
            ready = [0]
            batches_by = [caps[0].poll(100)]
        else:
            r, _, _ = select.select(list(fds), [], [], 0.1)
            ready = sorted(fds[fd] for fd in r) or list(range(len(caps)))
            batches_by = [caps[i].poll(0) for i in ready]
        got = 0
        for i, batches in zip(ready, batches_by, strict=True):
            for _lt, _snap, _prec, records, meta, _off in batches:
                if not a.no_index:
                    ixs[i].add(meta, sizes[i])
                outs[i].write(records)
                m = metas[i]
                if m is not None:
                    m.write(meta)
                sizes[i] += len(records)
                n = len(meta) // N.META_SIZE
                total += n
                got += n
        if got:
            idle_since = None
        elif stop:
            if idle_since is None:
                idle_since = now
            elif now - idle_since >= a.idle_ms / 1000:
                break
    stats = [c.stats() for c in caps]
    flows = [len(ix.finish()) for ix in ixs]
    for c in caps:
        c.close()
    for f in outs:
        f.close()
    for m in metas:
        if m is not None:
            m.close()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"done": True, "packets": total, "stats": stats, "flows": flows,
                      "rss_kb": rss_kb(), "max_rss_kb": rss_kb("VmHWM"), "rss": rss,
                      "cpu_s": ru.ru_utime + ru.ru_stime}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
