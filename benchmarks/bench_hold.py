"""Legal-hold benchmark: creating a hold over a ~1 GiB window (``pcapwire hold create``,
which copies the matching packets into evidence, hashes and fsyncs them and writes the
custody log) side by side with ``tcpdump -V SEGMENT-LIST -w OUT FILTER`` over the same
segment files with the same filter (what a user would run by hand to keep them).

    python benchmarks/bench_hold.py [--size-mib 1024] [--rounds 3]

The store is the generated capture (``benchmarks/data/synth-<size>m.pcap``) ingested into
``benchmarks/data/store-hold-<size>m`` (kept between runs). Three holds: a BPF expression the
index narrows (``net … and port 443``), one flow's 5-tuple, and a BPF expression it
cannot narrow (every TCP SYN: each segment is scanned). Each in ``--rounds`` rounds that
alternate the two sides, whole processes, ``sync`` before each; every round checks that the
evidence is byte for byte what tcpdump wrote. Reported: median and range of the per-round
ratio tcpdump / pcapwire (> 1: pcapwire faster). Written to benchmarks/results/hold.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from bench_store import _alternate, _fmt, _ratio, _timed, _warm
from benchdata import DATA, RESULTS, synth_capture

PCAPWIRE = [sys.executable, "-m", "pcapwire.cli"]
def _store(cap: Path, root: Path) -> tuple[list[Path], int, int]:
    """The ingested store's segment files and its time range [first, last]."""
    from pcapwire.store import Store

    if not (root / "catalog.sqlite").exists():
        shutil.rmtree(root, ignore_errors=True)
        _timed([*PCAPWIRE, "--data-dir", str(root), "ingest", "--progress", "none", str(cap)])
    with Store(root) as store:
        segs = store.catalog.segments()
        return ([root / s.path for s in segs], min(s.first_ns for s in segs),
                max(s.last_ns for s in segs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from pcapwire.query.flows import flow_dict
    from pcapwire.store import Store

    cap = synth_capture(args.size_mib, seed=42)
    store_dir = DATA / f"store-hold-{args.size_mib}m"
    segments, first_ns, last_ns = _store(cap, store_dir)
    listing = DATA / "hold-segments.txt"
    listing.write_text("".join(f"{p}\n" for p in segments))
    for p in segments:
        _warm(p)
    with Store(store_dir) as store:  # the busiest TCP flow
        busiest = store.catalog.db.execute("SELECT id FROM flows WHERE proto = 6 ORDER BY "
                                           "pkts_a2b + pkts_b2a DESC LIMIT 1").fetchone()[0]
        f = flow_dict(next(store.catalog.flows("id = ?", [busiest])))
    tuple_arg = f"tcp:{f['src_ip']}:{f['src_port']}:{f['dest_ip']}:{f['dest_port']}"
    tuple_bpf = (f"tcp and host {f['src_ip']} and host {f['dest_ip']} and port "
                 f"{f['src_port']} and port {f['dest_port']}")
    holds = [("BPF, indexed", ["--bpf", "net 198.51.100.0/24 and port 443"],
              "net 198.51.100.0/24 and port 443"),
             ("5-tuple", ["--five-tuple", tuple_arg], tuple_bpf),
             ("BPF, not indexable", ["--bpf", "tcp[13] & 2 != 0"], "tcp[13] & 2 != 0")]
    window = ["--start", str(first_ns / 1e9 - 1), "--end", str(last_ns / 1e9 + 1)]
    out = DATA / "hold-tcpdump.pcap"
    evidence = store_dir / "evidence"
    results: dict[str, dict[str, float]] = {}
    sizes: dict[str, int] = {}
    for label, selection, expr in holds:
        made: list[Path] = []

        def ours(selection: list[str] = selection, label: str = label,
                 made: list[Path] = made) -> float:
            shutil.rmtree(evidence, ignore_errors=True)
            t = _timed([*PCAPWIRE, "--data-dir", str(store_dir), "hold", "create", "--case",
                        f"bench {label}", "--reason", "benchmark", *selection, *window])[0]
            made[:] = sorted(evidence.rglob("part-*.pcap"))
            return t

        def theirs(expr: str = expr) -> float:
            return _timed(["tcpdump", "-V", str(listing), "-w", str(out), expr])[0]

        results[label] = _ratio(*_alternate(args.rounds, ours, theirs))
        assert len(made) == 1 and made[0].read_bytes() == out.read_bytes(), label
        sizes[label] = out.stat().st_size
    shutil.rmtree(evidence, ignore_errors=True)
    out.unlink()
    listing.unlink()

    window_bytes = sum(p.stat().st_size for p in segments)
    res = {"window_bytes": window_bytes, "segments": len(segments), "rounds": args.rounds,
           "holds": {k: {**v, "evidence_bytes": sizes[k]} for k, v in results.items()}}
    (RESULTS / "hold.json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"window: {window_bytes / 2**20:.0f} MiB in {len(segments)} segments; "
          f"{args.rounds} alternating rounds; ratio = tcpdump's time / pcapwire's "
          "(> 1: pcapwire faster), median [range]")
    print("| hold | evidence | `pcapwire hold create` (median s) | `tcpdump -V segs -w` "
          "(median s) | ratio |")
    print("|---|---|---|---|---|")
    for label, r in results.items():
        print(f"| {label} | {sizes[label] / 2**20:.1f} MiB | {r['ours_s']} | {r['theirs_s']} "
              f"| {_fmt(r)} |")


if __name__ == "__main__":
    main()
