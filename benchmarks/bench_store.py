"""Store benchmark: pcapwire side by side with tcpdump on the same generated capture.

    python benchmarks/bench_store.py [--size-mib 1024] [--flows 20]

Measures, in one run (ratios, because these machines are noisy):
- ingest + index throughput vs ``tcpdump -r FILE -w /dev/null`` (both on a warm page cache);
- narrow 5-tuple queries through the library in a warm process (time to first chunk and
  total) vs ``tcpdump -r FILE -w - '<that 5-tuple>'``;
- a non-indexable BPF query (``tcp[13] & 2 != 0``) vs tcpdump with the same expression;
- index size (catalog) as a share of the pcap bytes; peak RSS of the ingest process.
Results are printed as a table and written to benchmarks/results/store.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchdata import DATA, RESULTS, synth_capture


def _timed(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of a child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return elapsed, usage.ru_maxrss


def _warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(16 * 2**20):
            pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--flows", type=int, default=20, help="5-tuple queries to time")
    args = ap.parse_args()

    from pcapwire.query import QuerySpec
    from pcapwire.query.flows import flow_dict
    from pcapwire.records import FlowKey
    from pcapwire.store import Store

    cap = synth_capture(args.size_mib, seed=42)
    size = cap.stat().st_size
    _warm(cap)

    # 1. ingest vs tcpdump read
    t_tcpdump_read, _ = _timed(["tcpdump", "-r", str(cap), "-w", "/dev/null"])
    copy = DATA / "tcpdump-copy.pcap"  # what storing the packets costs without an index
    t_tcpdump_copy, _ = _timed(["tcpdump", "-r", str(cap), "-w", str(copy)])
    copy.unlink()
    store_dir = DATA / "store"
    shutil.rmtree(store_dir, ignore_errors=True)
    t_ingest, rss_kib = _timed([sys.executable, "-m", "pcapwire.cli", "--data-dir",
                                str(store_dir), "ingest", "--progress", "none", str(cap)])
    index_bytes = sum(p.stat().st_size for p in store_dir.glob("catalog.sqlite*"))
    inplace_dir = DATA / "store-in-place"
    shutil.rmtree(inplace_dir, ignore_errors=True)
    t_inplace, rss_inplace_kib = _timed([sys.executable, "-m", "pcapwire.cli", "--data-dir",
                                         str(inplace_dir), "ingest", "--in-place",
                                         "--progress", "none", str(cap)])
    with Store(inplace_dir) as store:
        assert store.catalog.stats()["packets"] > 0
        inplace_engine = store.query_engine()
        check = "tcp[13] & 2 != 0"
        assert inplace_engine.to_bytes(QuerySpec(bpf=check)) == subprocess.run(
            ["tcpdump", "-r", str(cap), "-w", "-", check], capture_output=True).stdout
    shutil.rmtree(inplace_dir)

    with Store(store_dir) as store:
        stats = store.catalog.stats()
        engine = store.query_engine()
        # 2. narrow 5-tuple queries, warm process
        rows = list(store.catalog.flows("proto = 6"))
        step = max(1, len(rows) // args.flows)
        picks = [flow_dict(r) for r in rows[::step][: args.flows]]
        engine.to_bytes(QuerySpec(flow_ids=[rows[0].id]))  # warm up imports and SQLite
        firsts, totals, tcpdumps = [], [], []
        for f in picks:
            key = FlowKey(6, f["src_ip"], f["src_port"], f["dest_ip"], f["dest_port"])
            t0 = time.perf_counter()
            it = engine.iter_chunks(QuerySpec(five_tuple=key))
            first = next(it)
            t1 = time.perf_counter()
            n = first.packets + sum(c.packets for c in it)
            t2 = time.perf_counter()
            firsts.append(t1 - t0)
            totals.append(t2 - t0)
            expr = (f"tcp and host {f['src_ip']} and host {f['dest_ip']} and port "
                    f"{f['src_port']} and port {f['dest_port']}")
            t3 = time.perf_counter()
            out = subprocess.run(["tcpdump", "-r", str(cap), "-w", "-", expr],
                                 capture_output=True).stdout
            tcpdumps.append(time.perf_counter() - t3)
            assert n == f["pkts_toserver"] + f["pkts_toclient"], "count mismatch"
            assert out[24:] == engine.to_bytes(QuerySpec(five_tuple=key))[24:], "byte mismatch"
        # 3. non-indexable BPF
        expr = "tcp[13] & 2 != 0"
        t0 = time.perf_counter()
        ours = engine.to_bytes(QuerySpec(bpf=expr))
        t_bpf = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = subprocess.run(["tcpdump", "-r", str(cap), "-w", "-", expr],
                                capture_output=True).stdout
        t_bpf_tcpdump = time.perf_counter() - t0
        assert ours == theirs, "non-indexable BPF result differs from tcpdump"

    res = {
        "capture_bytes": size, "packets": stats["packets"], "flows": stats["flows"],
        "segments": stats["segments"],
        "ingest_s": round(t_ingest, 3), "tcpdump_read_s": round(t_tcpdump_read, 3),
        "ingest_mb_s": round(size / t_ingest / 1e6, 1),
        "ingest_vs_tcpdump": round(t_tcpdump_read / t_ingest, 2),
        "tcpdump_copy_s": round(t_tcpdump_copy, 3),
        "ingest_in_place_s": round(t_inplace, 3),
        "ingest_in_place_vs_tcpdump": round(t_tcpdump_read / t_inplace, 2),
        "ingest_in_place_peak_rss_mib": round(rss_inplace_kib / 1024, 1),
        "ingest_vs_tcpdump_copy": round(t_tcpdump_copy / t_ingest, 2),
        "ingest_peak_rss_mib": round(rss_kib / 1024, 1),
        "index_bytes": index_bytes, "index_pct": round(100 * index_bytes / size, 2),
        "five_tuple_first_chunk_ms_median": round(1000 * statistics.median(firsts), 2),
        "five_tuple_total_ms_median": round(1000 * statistics.median(totals), 2),
        "five_tuple_tcpdump_ms_median": round(1000 * statistics.median(tcpdumps), 1),
        "five_tuple_speedup": round(statistics.median(tcpdumps) / statistics.median(totals), 1),
        "bpf_expr": expr, "bpf_s": round(t_bpf, 3), "bpf_tcpdump_s": round(t_bpf_tcpdump, 3),
        "bpf_vs_tcpdump": round(t_bpf_tcpdump / t_bpf, 2),
    }
    (RESULTS / "store.json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"capture: {size / 2**20:.0f} MiB, {res['packets']} packets, {res['flows']} flows, "
          f"{res['segments']} segments")
    print("| measure | pcapwire | tcpdump | ratio |")
    print("|---|---|---|---|")
    print(f"| ingest+index (s) | {res['ingest_s']} ({res['ingest_mb_s']} MB/s) | "
          f"{res['tcpdump_copy_s']} (`-r -w copy`) | {res['ingest_vs_tcpdump_copy']}x |")
    print(f"| ingest+index (s) | {res['ingest_s']} | {res['tcpdump_read_s']} (`-w /dev/null`) | "
          f"{res['ingest_vs_tcpdump']}x |")
    print(f"| ingest --in-place (s) | {res['ingest_in_place_s']} | {res['tcpdump_read_s']} "
          f"(`-w /dev/null`) | {res['ingest_in_place_vs_tcpdump']}x |")
    print(f"| 5-tuple query, median of {len(picks)} (ms) | {res['five_tuple_total_ms_median']} "
          f"(first chunk {res['five_tuple_first_chunk_ms_median']}) | "
          f"{res['five_tuple_tcpdump_ms_median']} | {res['five_tuple_speedup']}x |")
    print(f"| `{expr}` (s) | {res['bpf_s']} | {res['bpf_tcpdump_s']} | {res['bpf_vs_tcpdump']}x |")
    print(f"| index size | {res['index_pct']} % of pcap bytes | | |")
    print(f"| ingest peak RSS | {res['ingest_peak_rss_mib']} MiB (in place "
          f"{res['ingest_in_place_peak_rss_mib']} MiB) | | |")


if __name__ == "__main__":
    main()
