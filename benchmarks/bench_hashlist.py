"""Hash-list benchmark: pcapwire's indexed store next to what a user would otherwise reach
for, on the same generated list, in one run.

    python benchmarks/bench_hashlist.py [--millions 2] [--lookups 20000]

- a list of N million random SHA-256 hashes (one per line) is generated;
- **import**: ``pcapwire hashlist import`` (a child process: wall time, peak RSS, size of
  the store on disk) vs loading the text file into a Python ``set`` (child process too);
- **lookup latency** of one hash, p50/p99 in µs over ``--lookups`` hits (hashes on the
  list) and as many misses, in a warm process: ``HashListStore.lookup`` (the SQLite index
  the analyzer and the API use), a whole-file triage (MD5 + SHA-1 + SHA-256 of one file, as
  the ``hashlist`` analyzer does it), and Python ``set`` membership (which first has to
  load the whole list into memory, in every process, every time);
- ``grep -F -x -f QUERIES LIST`` for a batch of 1,000 hashes (half hits) and
  ``grep -F -x HASH LIST`` for one hash, the ad-hoc way (per hash, process included);
- a batch lookup of 1,000 hashes through the store (what ``POST /api/v1/hashlists/lookup``
  does) for comparison with grep's batch.
Hits and misses are checked to agree between all methods. Results are printed as a table
and written to benchmarks/results/hashlist.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE / "results"
BATCH = 1000


def _timed(cmd: list[str]) -> tuple[float, int, bytes]:
    """Wall seconds, peak RSS (KiB) and stdout of a child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return elapsed, usage.ru_maxrss, out


def _pct(samples_ns: list[int], p: float) -> float:
    s = sorted(samples_ns)
    return s[min(len(s) - 1, int(len(s) * p))] / 1000


def _latency(fn, keys: list) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    samples = []
    clock = time.perf_counter_ns
    for k in keys:
        t0 = clock()
        fn(k)
        samples.append(clock() - t0)
    return _pct(samples, 0.50), _pct(samples, 0.99)


def _ratio(r: float) -> str:
    """``r`` = their time / ours."""
    return f"{r:.1f}x faster" if r >= 1 else f"{1 / r:.1f}x slower"


def _set_latency(on_list: list[str], hits: list[str], misses: list[str]
                 ) -> tuple[tuple[float, float], tuple[float, float]]:
    big = set(on_list)
    assert all(h in big for h in hits[:1000]) and not any(h in big for h in misses[:1000])
    return _latency(big.__contains__, hits), _latency(big.__contains__, misses)


SET_LOADER = """
import resource, sys, time
t0 = time.perf_counter()
with open(sys.argv[1]) as f:
    s = {line.strip().lower() for line in f if line.strip()}
print(len(s), time.perf_counter() - t0)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--millions", type=float, default=2.0, help="hashes in the list (millions)")
    ap.add_argument("--lookups", type=int, default=20000, help="timed lookups per kind")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    from pcapwire.hashlist import DB_NAME, HashListSet

    n = int(args.millions * 1_000_000)
    rng = random.Random(args.seed)
    work = DATA / f"hashlist-{n}"
    work.mkdir(parents=True, exist_ok=True)
    listing = work / "sha256.txt"
    if not listing.exists():
        print(f"generating {n} hashes in {listing} ...", file=sys.stderr)
        with open(listing, "w") as f:
            for _ in range(n):
                f.write(f"{rng.getrandbits(256):064x}\n")
    store_dir = work / "store"
    shutil.rmtree(store_dir, ignore_errors=True)

    # 1. import vs loading a set (children forked while this process is still small, so
    # their peak RSS is their own)
    t_import, rss_import, _ = _timed([sys.executable, "-m", "pcapwire.cli", "--data-dir",
                                      str(store_dir), "hashlist", "import", str(listing),
                                      "--name", "bench", "--kind", "deny", "--json"])
    db_bytes = sum(p.stat().st_size for p in store_dir.glob(DB_NAME + "*"))
    t_set, rss_set, out = _timed([sys.executable, "-c", SET_LOADER, str(listing)])
    set_count, set_load_s = out.split()
    assert int(set_count) == n
    with open(listing) as f:
        firsts = [f.readline().strip() for _ in range(5)]
    clis, cli_rss = [], 0
    for h in firsts + [f"{rng.getrandbits(256):064x}" for _ in range(5)]:
        t, rss, out = _timed([sys.executable, "-m", "pcapwire.cli", "--data-dir",
                              str(store_dir), "hashlist", "lookup", h])
        assert (b"known-bad" in out) == (h in firsts)
        clis.append(t)
        cli_rss = max(cli_rss, rss)
    clis.sort()
    cli_single_ms = clis[len(clis) // 2] * 1000
    with open(listing) as f:
        on_list = [line.strip() for line in f]
    hits = rng.sample(on_list, args.lookups)
    misses = [f"{rng.getrandbits(256):064x}" for _ in range(args.lookups)]
    batch = hits[:BATCH // 2] + misses[:BATCH // 2]

    # 2. one-hash lookups, warm process
    hs = HashListSet.for_data_dir(store_dir, refresh_interval=1.0)  # as the analyzer
    (store,) = [s for s in hs.stores if s.lists()]
    assert store.lists()[0].total == n
    hit_d = [bytes.fromhex(h) for h in hits]
    miss_d = [bytes.fromhex(h) for h in misses]
    for d in hit_d[:2000] + miss_d[:2000]:  # warm the page cache and SQLite's
        store.lookup([d])
    assert all(store.lookup([d]) for d in hit_d[:1000])
    assert not any(store.lookup([d]) for d in miss_d[:1000])
    lk_hit = _latency(lambda d: store.lookup([d]), hit_d)
    lk_miss = _latency(lambda d: store.lookup([d]), miss_d)
    triple = [(d, os.urandom(20), os.urandom(16)) for d in hit_d]
    tri_hit = _latency(lambda t: hs.triage(list(t)), triple)
    triple_miss = [(d, os.urandom(20), os.urandom(16)) for d in miss_d]
    tri_miss = _latency(lambda t: hs.triage(list(t)), triple_miss)
    t0 = time.perf_counter()
    found = hs.lookup([bytes.fromhex(h) for h in batch])
    t_batch_store = time.perf_counter() - t0
    assert len(found) == BATCH // 2
    hs.close()

    set_hit, set_miss = _set_latency(on_list, hits, misses)
    del on_list

    # 3. grep
    queries = work / "queries.txt"
    queries.write_text("\n".join(batch) + "\n")
    t0 = time.perf_counter()
    grep = subprocess.run(["grep", "-F", "-x", "-f", str(queries), str(listing)],
                          capture_output=True, text=True)
    t_grep_batch = time.perf_counter() - t0
    assert len(grep.stdout.split()) == BATCH // 2
    singles = []
    for h in hits[:10] + misses[:10]:
        t0 = time.perf_counter()
        subprocess.run(["grep", "-F", "-x", "-m", "1", h, str(listing)], capture_output=True)
        singles.append(time.perf_counter() - t0)
    singles.sort()
    grep_single_ms = singles[len(singles) // 2] * 1000

    res = {
        "hashes": n, "list_bytes": listing.stat().st_size, "lookups_per_kind": args.lookups,
        "import_s": round(t_import, 2), "import_hashes_per_s": round(n / t_import),
        "import_peak_rss_mib": round(rss_import / 1024, 1),
        "store_bytes": db_bytes,
        "set_load_s": round(float(set_load_s), 2), "set_process_s": round(t_set, 2),
        "set_peak_rss_mib": round(rss_set / 1024, 1),
        "store_lookup_hit_us": [round(x, 1) for x in lk_hit],
        "store_lookup_miss_us": [round(x, 1) for x in lk_miss],
        "file_triage_hit_us": [round(x, 1) for x in tri_hit],
        "file_triage_miss_us": [round(x, 1) for x in tri_miss],
        "set_lookup_hit_us": [round(x, 2) for x in set_hit],
        "set_lookup_miss_us": [round(x, 2) for x in set_miss],
        "store_batch_1000_ms": round(t_batch_store * 1000, 2),
        "grep_batch_1000_ms": round(t_grep_batch * 1000, 1),
        "grep_single_ms": round(grep_single_ms, 1),
        "cli_lookup_ms": round(cli_single_ms, 1),
        "cli_lookup_peak_rss_mib": round(cli_rss / 1024, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hashlist.json").write_text(json.dumps(res, indent=1) + "\n")
    mib = 2**20
    rows = [
        ("build (s)", f"{t_import:.2f} import, once ({n / t_import / 1e3:.0f}k/s)",
         f"set: {float(set_load_s):.2f} load, every process",
         _ratio(float(set_load_s) / t_import) + ", once"),
        ("peak RSS building (MiB)", f"{rss_import / 1024:.0f}", f"set: {rss_set / 1024:.0f}",
         ""),
        ("on disk (MiB)", f"{db_bytes / mib:.0f} (text list {listing.stat().st_size / mib:.0f})",
         "", ""),
        ("1 hash, warm, hit p50/p99 (µs)", f"{lk_hit[0]:.1f} / {lk_hit[1]:.1f}",
         f"set: {set_hit[0]:.2f} / {set_hit[1]:.2f}", ""),
        ("1 hash, warm, miss p50/p99 (µs)", f"{lk_miss[0]:.1f} / {lk_miss[1]:.1f}",
         f"set: {set_miss[0]:.2f} / {set_miss[1]:.2f}", ""),
        ("1 file (3 digests), hit p50/p99 (µs)", f"{tri_hit[0]:.1f} / {tri_hit[1]:.1f}", "",
         ""),
        ("1 file (3 digests), miss p50/p99 (µs)", f"{tri_miss[0]:.1f} / {tri_miss[1]:.1f}",
         "", ""),
        ("1,000 hashes, one batch (ms)", f"{t_batch_store * 1000:.1f}",
         f"grep -F -x -f: {t_grep_batch * 1000:.0f}",
         _ratio(t_grep_batch / t_batch_store)),
        ("1 hash from the shell (ms)", f"{cli_single_ms:.0f} (hashlist lookup)",
         f"grep -F -x: {grep_single_ms:.0f}", _ratio(grep_single_ms / cli_single_ms)),
        ("peak RSS answering (MiB)", f"{cli_rss / 1024:.0f} (hashlist lookup)",
         f"set: {rss_set / 1024:.0f}", ""),
    ]
    print(f"hash list: {n:,} SHA-256 hashes, {args.lookups:,} timed lookups per kind")
    print(f"{'measure':<38} {'pcapwire (SQLite index)':<36} {'Python set / grep':<30} ratio")
    for r in rows:
        print(f"{r[0]:<38} {r[1]:<36} {r[2]:<30} {r[3]}")


if __name__ == "__main__":
    main()
