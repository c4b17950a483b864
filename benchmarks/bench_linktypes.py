"""What settling a query's link types costs (:mod:`pcapwire.query.linktypes`).

    python benchmarks/bench_linktypes.py [--size-mib 256] [--raw-mib 64]

A store of two link types: the generated Ethernet capture and a smaller generated capture
(another seed) with its Ethernet headers cut off (LINKTYPE_RAW, 101). Filters the index
cannot narrow, so every segment is read:

- ``greater 1441``: matches Ethernet frames only (raw packets are 14 bytes shorter);
- ``less 53``: matches raw packets only (pure ACKs; Ethernet frames are at least 54);
- ``tcp[13] & 2 != 0``: matches both (a mixed result: pcapng).

Each runs settled (the shipping code) and unsettled (the plan used as planned: what the
engine did before, pcapng over both link types); times to the first chunk and in total.
Results are printed and written to benchmarks/results/linktypes.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from benchdata import DATA, RESULTS, synth_capture
from pcapwire.pcapformat import RECORD, iter_records, pcap_header
from pcapwire.query import QuerySpec
from pcapwire.store import Store

QUERIES = ("greater 1441", "less 53", "tcp[13] & 2 != 0")
RUNS = 3


def raw_ip_copy(src: Path, dst: Path) -> None:
    """``src`` (Ethernet, little-endian µs) as LINKTYPE_RAW: each frame without its
    14-byte Ethernet header."""
    data = src.read_bytes()
    with open(dst, "wb") as out:
        out.write(pcap_header(101, 65535))
        for sec, usec, caplen, origlen, at in iter_records(data):
            out.write(RECORD.pack(sec, usec, caplen - 14, origlen - 14))
            out.write(data[at + 14:at + caplen])


def timed(store: Store, bpf: str, settled: bool) -> tuple[float, float, int, str]:
    """(seconds to the first chunk, total seconds, packets, output format)."""
    engine = store.query_engine()
    t0 = time.perf_counter()
    plan = engine.plan(QuerySpec(bpf=bpf))
    plan.settled = not settled  # unsettled: what the engine did before settling
    first = None
    packets = 0
    for chunk in engine.iter_chunks(plan.spec, plan=plan):
        first = first if first is not None else time.perf_counter() - t0
        packets += chunk.packets
    total = time.perf_counter() - t0
    return first or total, total, packets, "pcap" if len(plan.snaplens) == 1 else "pcapng"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--raw-mib", type=int, default=64)
    args = ap.parse_args()
    eth = synth_capture(args.size_mib)
    raw = DATA / f"synth-{args.raw_mib}m-raw.pcap"
    if not raw.exists():
        raw_ip_copy(synth_capture(args.raw_mib, seed=2), raw)
    root = DATA / "store-linktypes"
    shutil.rmtree(root, ignore_errors=True)
    queries: dict[str, dict[str, float | int | str]] = {}
    with Store(root) as store:
        store.ingest([eth, raw])
        for bpf in QUERIES:
            row: dict[str, float | int | str] = {}
            totals = {}
            for settled in (False, True):
                runs = [timed(store, bpf, settled) for _ in range(RUNS)]
                key = "settled" if settled else "unsettled"
                totals[key] = statistics.median(r[1] for r in runs)
                row[f"{key}_first_chunk_s"] = round(statistics.median(r[0] for r in runs), 3)
                row[f"{key}_total_s"] = round(totals[key], 3)
                row[f"{key}_format"] = runs[0][3]
                row["packets"] = runs[0][2]
            row["total_ratio"] = round(totals["settled"] / totals["unsettled"], 2)
            queries[bpf] = row
            print(f"{bpf:20} {row}")
    shutil.rmtree(root, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    results = {"ethernet_bytes": eth.stat().st_size, "raw_bytes": raw.stat().st_size,
               "queries": queries}
    (RESULTS / "linktypes.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
