"""Store benchmark: pcapwire side by side with tcpdump on the same generated capture.

    python benchmarks/bench_store.py [--size-mib 1024] [--flows 20] [--rounds 3]

Every measure is taken in ``--rounds`` rounds that alternate the two sides (A B, then
B A, ...), each side a whole process, with ``sync`` before every timed command so that
page-cache writeback from one side never lands on the other's clock. Reported: the median
and range of the per-round ratios (these machines are noisy: only ratios taken in one run
mean anything).

- ingest + index (``pcapwire ingest``, a fresh store per round) vs ``tcpdump -r F -w copy``
  (storing the packets without an index) and vs ``tcpdump -r F -w /dev/null`` (reading);
  ``ingest --in-place`` vs the same read;
- narrow 5-tuple queries as processes (``pcapwire query --five-tuple … -w -``) vs
  ``tcpdump -r F -w - '<that 5-tuple>'``, and in a warm library process (first chunk and
  total) for what an API query costs;
- a non-indexable BPF query (``tcp[13] & 2 != 0``) as processes, both sides;
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

from benchdata import DATA, RESULTS, alternate, synth_capture

PCAPWIRE = [sys.executable, "-m", "pcapwire.cli"]
BPF = "tcp[13] & 2 != 0"


def _timed(cmd: list[str], stdout: int | None = subprocess.DEVNULL) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of a child process, after a sync (so writeback of
    what earlier commands wrote is not charged to this one)."""
    os.sync()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return elapsed, usage.ru_maxrss


def _warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(16 * 2**20):
            pass


def _ratio(ours: list[float], theirs: list[float]) -> dict[str, float]:
    """theirs / ours per round (> 1: pcapwire faster): median and range."""
    r = [t / o for o, t in zip(ours, theirs, strict=True)]
    return {"median": round(statistics.median(r), 2), "min": round(min(r), 2),
            "max": round(max(r), 2), "ours_s": round(statistics.median(ours), 4),
            "theirs_s": round(statistics.median(theirs), 4)}


def _fmt(r: dict[str, float]) -> str:
    return f"{r['median']}x [{r['min']}-{r['max']}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--flows", type=int, default=20, help="5-tuple queries to time")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from pcapwire.query import QuerySpec
    from pcapwire.query.flows import flow_dict
    from pcapwire.records import FlowKey
    from pcapwire.store import Store

    cap = synth_capture(args.size_mib, seed=42)
    size = cap.stat().st_size
    _warm(cap)
    store_dir, inplace_dir, copy = (DATA / "store", DATA / "store-in-place",
                                    DATA / "tcpdump-copy.pcap")
    rss: list[int] = []
    rss_inplace: list[int] = []

    # 1. ingest (a fresh store each round) vs tcpdump storing and reading
    def ingest() -> float:
        shutil.rmtree(store_dir, ignore_errors=True)
        t, kib = _timed([*PCAPWIRE, "--data-dir", str(store_dir), "ingest", "--progress",
                         "none", str(cap)])
        rss.append(kib)
        return t

    def tcpdump_copy() -> float:
        t = _timed(["tcpdump", "-r", str(cap), "-w", str(copy)])[0]
        copy.unlink()
        return t

    def inplace() -> float:
        shutil.rmtree(inplace_dir, ignore_errors=True)
        t, kib = _timed([*PCAPWIRE, "--data-dir", str(inplace_dir), "ingest", "--in-place",
                         "--progress", "none", str(cap)])
        rss_inplace.append(kib)
        return t

    def tcpdump_read() -> float:
        return _timed(["tcpdump", "-r", str(cap), "-w", "/dev/null"])[0]

    ingest_vs_copy = _ratio(*alternate(args.rounds, ingest, tcpdump_copy))
    ingest_vs_read = _ratio(*alternate(args.rounds, ingest, tcpdump_read))
    inplace_vs_read = _ratio(*alternate(args.rounds, inplace, tcpdump_read))
    with Store(inplace_dir) as store:  # the in-place index answers like tcpdump
        assert store.query_engine().to_bytes(QuerySpec(bpf=BPF)) == subprocess.run(
            ["tcpdump", "-r", str(cap), "-w", "-", BPF], capture_output=True).stdout
    shutil.rmtree(inplace_dir)
    index_bytes = sum(p.stat().st_size for p in store_dir.glob("catalog.sqlite*"))

    with Store(store_dir) as store:
        stats = store.catalog.stats()
        engine = store.query_engine()
        rows = list(store.catalog.flows("proto = 6"))
        step = max(1, len(rows) // args.flows)
        picks = [flow_dict(r) for r in rows[::step][: args.flows]]
        # 2a. warm library process: what an API query costs
        engine.to_bytes(QuerySpec(flow_ids=[rows[0].id]))  # warm up imports and SQLite
        firsts, totals = [], []
        for f in picks:
            key = FlowKey(6, f["src_ip"], f["src_port"], f["dest_ip"], f["dest_port"])
            t0 = time.perf_counter()
            it = engine.iter_chunks(QuerySpec(five_tuple=key))
            first = next(it)
            t1 = time.perf_counter()
            n = first.packets + sum(c.packets for c in it)
            totals.append(time.perf_counter() - t0)
            firsts.append(t1 - t0)
            assert n == f["pkts_toserver"] + f["pkts_toclient"], "count mismatch"

    # 2b. 5-tuple queries as whole processes: each round a pass over the flows, the two
    # sides alternating from flow to flow; a round's ratio is of its medians
    out_ours, out_theirs = DATA / "q-pcapwire.pcap", DATA / "q-tcpdump.pcap"
    round_ours, round_theirs = [], []
    for r in range(args.rounds):
        ours_s, theirs_s = [], []
        for i, f in enumerate(picks):
            ours = [*PCAPWIRE, "--data-dir", str(store_dir), "query", "--five-tuple",
                    f"tcp:{f['src_ip']}:{f['src_port']}:{f['dest_ip']}:{f['dest_port']}",
                    "-w", str(out_ours)]
            theirs = ["tcpdump", "-r", str(cap), "-w", str(out_theirs),
                      f"tcp and host {f['src_ip']} and host {f['dest_ip']} and port "
                      f"{f['src_port']} and port {f['dest_port']}"]
            if (i + r) % 2:
                theirs_s.append(_timed(theirs)[0])
                ours_s.append(_timed(ours)[0])
            else:
                ours_s.append(_timed(ours)[0])
                theirs_s.append(_timed(theirs)[0])
            assert out_ours.read_bytes() == out_theirs.read_bytes(), "5-tuple result differs"
        round_ours.append(statistics.median(ours_s))
        round_theirs.append(statistics.median(theirs_s))
    five_cli = _ratio(round_ours, round_theirs)

    # 3. non-indexable BPF, whole processes
    def bpf_ours() -> float:
        return _timed([*PCAPWIRE, "--data-dir", str(store_dir), "query", "--bpf", BPF, "-w",
                       str(out_ours)])[0]

    def bpf_theirs() -> float:
        return _timed(["tcpdump", "-r", str(cap), "-w", str(out_theirs), BPF])[0]

    bpf = _ratio(*alternate(args.rounds, bpf_ours, bpf_theirs))
    assert out_ours.read_bytes() == out_theirs.read_bytes(), "BPF result differs"
    out_ours.unlink()
    out_theirs.unlink()

    res = {
        "capture_bytes": size, "packets": stats["packets"], "flows": stats["flows"],
        "segments": stats["segments"], "rounds": args.rounds,
        "ingest_vs_tcpdump_copy": ingest_vs_copy, "ingest_vs_tcpdump_read": ingest_vs_read,
        "ingest_in_place_vs_tcpdump_read": inplace_vs_read,
        "ingest_mb_s": round(size / ingest_vs_copy["ours_s"] / 1e6, 1),
        "ingest_peak_rss_mib": round(max(rss) / 1024, 1),
        "ingest_in_place_peak_rss_mib": round(max(rss_inplace) / 1024, 1),
        "index_bytes": index_bytes, "index_pct": round(100 * index_bytes / size, 2),
        "five_tuple_cli_vs_tcpdump": five_cli,
        "five_tuple_library_first_chunk_ms_median": round(1000 * statistics.median(firsts), 2),
        "five_tuple_library_total_ms_median": round(1000 * statistics.median(totals), 2),
        "bpf_expr": BPF, "bpf_cli_vs_tcpdump": bpf,
    }
    (RESULTS / "store.json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"capture: {size / 2**20:.0f} MiB, {res['packets']} packets, {res['flows']} flows, "
          f"{res['segments']} segments; {args.rounds} alternating rounds; ratio = tcpdump's "
          "time / pcapwire's (> 1: pcapwire faster), median [range]")
    print("| measure | pcapwire (median s) | tcpdump (median s) | ratio |")
    print("|---|---|---|---|")
    for label, r, other in (
            ("ingest+index", ingest_vs_copy, "`-r F -w copy`"),
            ("ingest+index", ingest_vs_read, "`-r F -w /dev/null`"),
            ("ingest --in-place", inplace_vs_read, "`-r F -w /dev/null`"),
            (f"5-tuple query, process ({len(picks)} flows)", five_cli, "`-r F -w - '5-tuple'`"),
            (f"`{BPF}`, process", bpf, "`-r F -w - BPF`")):
        print(f"| {label} | {r['ours_s']} | {r['theirs_s']} {other} | {_fmt(r)} |")
    print(f"| 5-tuple query, warm library | {res['five_tuple_library_total_ms_median']} ms "
          f"(first chunk {res['five_tuple_library_first_chunk_ms_median']} ms) | | |")
    print(f"| index size | {res['index_pct']} % of pcap bytes | | |")
    print(f"| ingest peak RSS | {res['ingest_peak_rss_mib']} MiB (in place "
          f"{res['ingest_in_place_peak_rss_mib']} MiB) | | |")


if __name__ == "__main__":
    main()
