"""Search benchmark: the metadata index (SQLite: B-tree postings + FTS5) next to DuckDB
(one wide columnar table) and a full scan of the same JSON lines, on the same synthetic
records (benchmarks/search_data.py), in one run.

    python benchmarks/bench_search.py [--records 1000000,3000000] [--repeat 15] [--no-duckdb]
    python benchmarks/bench_search.py --records 10000000 --pool 500000 --no-duckdb --no-scan
    python benchmarks/bench_search.py --index DIR/search-10000000.sqlite --out search-10m.json

For each size N:
- the records are generated and written as ECS JSON lines (what ``pcapwire export``
  writes); with ``--pool P`` (10 M records) only P are generated and the rest cycle
  through them with keys and times of their own (search_data.cycled);
- **indexing**: SearchIndex.put in batches of ``--batch`` records (10,000; records/s, size
  on disk); DuckDB:
  loading the flattened JSON lines (read_json) into a table;
- **search latency** p50/p99 per query class (field:value exact, wildcard prefix/suffix,
  CIDR, numeric range, time range, boolean combinations, free text), each query run
  ``--repeat`` times after one warm-up, hits identical between the stores (checked);
- **full scan**: ``grep -F -c`` of one needle over the JSON lines (a lower bound of any
  scan), and Python json over every line for one exact query (``--no-scan``: neither,
  and no JSON lines are written).
With ``--index FILE`` nothing is built: the searches are measured on that index as it is
(one kept by ``--work DIR --keep``, or one a build is still writing: one read snapshot).
Results go to benchmarks/results/search.json (or ``--out``). DuckDB needs ``pip install
duckdb`` (not a dependency of pcapwire: see docs/search.md for why the index is SQLite).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"
#: Sizes on the way to a larger one where the searches are measured too (the build goes on
#: after each; results/search-<N>-partial.json has them as soon as they are known).
CHECKPOINTS = (1_000_000, 3_000_000, 5_000_000)
#: Records per SearchIndex.put (one transaction each) unless --batch says otherwise.
BATCH = 10_000

from pcapwire.search.index import SearchIndex  # noqa: E402
from pcapwire.search.query import search  # noqa: E402
from search_data import NEEDLE_DOMAIN, NEEDLE_HASH, T0, Synth, cycled  # noqa: E402

QUERIES: dict[str, list[str]] = {
    "exact": [f"url.domain:{NEEDLE_DOMAIN}", f"file.hash.sha256:{NEEDLE_HASH}",
              "source.ip:10.0.0.7", "rule.id:2000123"],
    "wildcard": ["url.domain:login.evil*", "url.domain:*.evil.example",
                 "file.name:invoice-12*"],
    "cidr": ["source.ip:10.0.3.0/24", "destination.ip:11.0.0.0/8"],
    "numeric range": ["destination.port:[3000 TO 4000]", "http.response.body.bytes:>99990"],
    "time range": [f"@timestamp:[{int(T0) + 86400} TO {int(T0) + 90000}]",
                   f"@timestamp:[{int(T0) + 86400 * 10} TO {int(T0) + 86400 * 10 + 60}] AND "
                   "http.request.method:POST"],
    "boolean": ["url.domain:*.example AND http.request.method:POST",
                f"(dns.question.name:{NEEDLE_DOMAIN} OR tls.client.server_name:"
                f"{NEEDLE_DOMAIN}) AND NOT source.ip:10.0.0.0/16",
                "network.transport:udp AND destination.port:53 AND source.ip:10.0.1.0/24"],
    "free text": ["quarterly", '"report overdue"', "whiskey AND zulu AND invoice"],
}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def timed(fn: Any, repeat: int) -> tuple[list[float], Any]:
    result = fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return times, result


def one_size(n: int, repeat: int, duck: bool, work: Path, keep: bool, pool: int,
             scan: bool, batch: int) -> dict[str, Any]:
    print(f"-- {n:,} records", flush=True)
    jsonl, flat = work / f"records-{n}.jsonl", work / f"flat-{n}.jsonl"
    ix_path = work / f"search-{n}.sqlite"
    built = work / f"built-{n}.json"
    if keep and built.exists():  # made by an earlier --keep run: measure searches again
        out = json.loads(built.read_text())
        index = SearchIndex(ix_path)
        con = None
        if duck:
            import duckdb

            con = duckdb.connect(str(work / f"search-{n}.duckdb"))
        return measure(n, repeat, out, index, con, jsonl if scan else None, work, keep)
    return build(n, repeat, duck, work, keep, jsonl if scan else None, flat, ix_path, built,
                 pool, batch)


def build(n: int, repeat: int, duck: bool, work: Path, keep: bool, jsonl: Path | None,
          flat: Path, ix_path: Path, built: Path, pool: int, size: int) -> dict[str, Any]:
    index = SearchIndex(ix_path)
    duck_rows = None
    if duck:
        from search_duckdb import flat_row

        duck_rows = open(flat, "w")
    gen_s = index_s = flatten_s = 0.0
    checkpoints = sorted(c for c in CHECKPOINTS if c < n)
    partial: list[dict[str, Any]] = []
    docs = cycled(n, pool) if 0 < pool < n else Synth().docs(n)
    with open(jsonl or os.devnull, "w") as f:
        done = 0
        while done < n:  # streamed in batches: memory stays flat at any size
            t = time.perf_counter()
            batch = [d for _, d in zip(range(size), docs, strict=False)]
            gen_s += time.perf_counter() - t
            if not batch:
                break
            for d in batch if jsonl else ():
                f.write(json.dumps(d.body, separators=(",", ":")) + "\n")
            t = time.perf_counter()
            index.put(batch)
            index_s += time.perf_counter() - t
            if duck_rows is not None:
                t = time.perf_counter()
                for i, d in enumerate(batch):
                    duck_rows.write(json.dumps(flat_row(done + i + 1, d.body),
                                               separators=(",", ":")) + "\n")
                flatten_s += time.perf_counter() - t
            done += len(batch)
            if checkpoints and done >= checkpoints[0]:  # searches at this size, on the way
                checkpoints.pop(0)
                print(f"   {done:,} records indexed in {index_s:.0f} s "
                      f"({done / index_s:,.0f}/s)", flush=True)
                partial.append({"records": done, "index_s": round(index_s, 1),
                                "records_per_s": round(done / index_s),
                                **latencies(index, None, repeat)})
                (RESULTS / f"search-{n}-partial.json").write_text(
                    json.dumps({"checkpoints": partial}, indent=1) + "\n")
    t = time.perf_counter()
    index.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    index_s += time.perf_counter() - t
    out: dict[str, Any] = {"records": n, "generate_s": round(gen_s, 1), "pool": pool,
                           "batch": size, "checkpoints": partial,
                           "jsonl_bytes": jsonl.stat().st_size if jsonl else None}
    out["sqlite_index"] = {"seconds": round(index_s, 1), "records_per_s": round(n / index_s),
                           "bytes": ix_path.stat().st_size}
    print(f"   sqlite: indexed in {index_s:.0f} s ({n / index_s:,.0f}/s), "
          f"{ix_path.stat().st_size / 2**20:,.0f} MiB", flush=True)

    con = None
    if duck_rows is not None:
        import duckdb
        from search_duckdb import load

        duck_rows.close()
        db_path = work / f"search-{n}.duckdb"
        con = duckdb.connect(str(db_path))
        t = time.perf_counter()
        load(con, flat)
        load_s = time.perf_counter() - t
        out["duckdb_index"] = {"flatten_s": round(flatten_s, 1), "load_s": round(load_s, 1),
                               "records_per_s": round(n / (flatten_s + load_s)),
                               "bytes": db_path.stat().st_size}
        print(f"   duckdb: flattened in {flatten_s:.0f} s, loaded in {load_s:.0f} s, "
              f"{db_path.stat().st_size / 2**20:,.0f} MiB", flush=True)

    built.write_text(json.dumps(out))
    return measure(n, repeat, out, index, con, jsonl, work, keep)


def latencies(index: SearchIndex, con: Any, repeat: int) -> dict[str, Any]:
    """p50/p99 per query class (and of all queries) in SQLite, and in DuckDB with ``con``."""
    out: dict[str, Any] = {}
    classes: dict[str, Any] = {}
    all_sqlite: list[float] = []
    all_duck: list[float] = []
    for cls, queries in QUERIES.items():
        st: list[float] = []
        dt: list[float] = []
        per_query = []
        for q in queries:
            times, res = timed(lambda q=q: search(index, q, limit=50), repeat)
            st += times
            row = {"query": q, "hits": len(res.hits), "total": res.total,
                   "sqlite_p50_ms": round(pct(times, 50), 2)}
            if con is not None:
                from search_duckdb import search as duck_search

                dtimes, dres = timed(lambda q=q: duck_search(con, q), repeat)
                dt += dtimes
                row["duckdb_p50_ms"] = round(pct(dtimes, 50), 2)
                row["same_hits"] = dres == [h["id"] for h in res.hits]
            per_query.append(row)
        all_sqlite += st
        all_duck += dt
        classes[cls] = {"sqlite_p50_ms": round(pct(st, 50), 2),
                        "sqlite_p99_ms": round(pct(st, 99), 2), "queries": per_query}
        if dt:
            classes[cls].update({"duckdb_p50_ms": round(pct(dt, 50), 2),
                                 "duckdb_p99_ms": round(pct(dt, 99), 2)})
        print(f"   {cls:14} sqlite p50 {pct(st, 50):8.2f} ms p99 {pct(st, 99):8.2f} ms"
              + (f"   duckdb p50 {pct(dt, 50):8.2f} ms p99 {pct(dt, 99):8.2f} ms" if dt else ""),
              flush=True)
    out["classes"] = classes
    out["sqlite_all"] = {"p50_ms": round(pct(all_sqlite, 50), 2),
                         "p99_ms": round(pct(all_sqlite, 99), 2)}
    if all_duck:
        out["duckdb_all"] = {"p50_ms": round(pct(all_duck, 50), 2),
                             "p99_ms": round(pct(all_duck, 99), 2)}
    return out


def measure(n: int, repeat: int, out: dict[str, Any], index: SearchIndex, con: Any,
            jsonl: Path | None, work: Path, keep: bool) -> dict[str, Any]:
    out.update(latencies(index, con, repeat))
    if jsonl is not None:
        out["full_scan"] = full_scan(index, jsonl)
    index.close()
    if con is not None:
        con.close()
    if not keep:
        for p in work.glob(f"*-{n}.*"):
            p.unlink()
    return out


def full_scan(index: SearchIndex, jsonl: Path) -> dict[str, Any]:
    t = time.perf_counter()
    grep = subprocess.run(["grep", "-F", "-c", f'"{NEEDLE_DOMAIN}"', str(jsonl)],
                          capture_output=True, text=True)
    grep_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    found = 0
    with open(jsonl) as f:
        for line in f:
            doc = json.loads(line)
            if (doc.get("url") or {}).get("domain") == NEEDLE_DOMAIN:
                found += 1
    py_ms = (time.perf_counter() - t) * 1000
    exact = search(index, f"url.domain:{NEEDLE_DOMAIN}", limit=1000)
    assert found == exact.total, (found, exact.total)
    print(f"   full scan: grep -F {grep_ms:,.0f} ms, python json {py_ms:,.0f} ms "
          f"({found} hits)", flush=True)
    return {"grep_F_ms": round(grep_ms, 1), "grep_lines": int(grep.stdout or 0),
            "python_json_ms": round(py_ms, 1), "python_json_hits": found}


def measure_index(path: Path, repeat: int) -> dict[str, Any]:
    """The searches on an existing index, in one read transaction (a snapshot: a build
    that is still writing does not change it under the measurement)."""
    index = SearchIndex(path)
    index.db.execute("BEGIN")
    n = index.db.execute("SELECT coalesce(max(id), 0) FROM docs").fetchone()[0]
    print(f"-- {path}: {n:,} documents", flush=True)
    out = {"index": str(path), "records": n, "bytes": path.stat().st_size,
           **latencies(index, None, repeat)}
    index.db.execute("COMMIT")
    index.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", default=os.environ.get("PCAPWIRE_BENCH_SEARCH", "1000000"),
                    help="comma-separated sizes (default 1000000)")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--no-duckdb", action="store_true")
    ap.add_argument("--pool", type=int, default=0, help="generate only this many records "
                    "(a multiple of 50,000) and cycle through them (default: all)")
    ap.add_argument("--no-scan", action="store_true", help="no JSON lines, no full scans")
    ap.add_argument("--batch", type=int, default=BATCH, help="records per transaction")
    ap.add_argument("--out", default="search.json", help="file in benchmarks/results/")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated data and stores "
                    "in --work; a later --keep run measures the searches again on them")
    ap.add_argument("--index", type=Path, help="measure the searches on this index file "
                    "(no build)")
    args = ap.parse_args()
    if args.index is not None:
        RESULTS.mkdir(exist_ok=True)
        result = {"sizes": [measure_index(args.index, args.repeat)]}
        (RESULTS / args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"results in {RESULTS / args.out}")
        return
    duck = not args.no_duckdb
    if duck:
        try:
            import duckdb  # noqa: F401
        except ImportError:
            print("duckdb is not installed (pip install duckdb): SQLite only")
            duck = False
    work = Path(args.work or tempfile.mkdtemp(prefix="pcapwire-bench-search-"))
    work.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    sizes: list[dict[str, Any]] = []
    try:
        for n in args.records.split(","):
            sizes.append(one_size(int(n), args.repeat, duck, work,
                                  args.keep and args.work is not None, args.pool,
                                  not args.no_scan, args.batch))
            (RESULTS / args.out).write_text(json.dumps({"sizes": sizes}, indent=1) + "\n")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"results in {RESULTS / args.out}")


if __name__ == "__main__":
    main()
