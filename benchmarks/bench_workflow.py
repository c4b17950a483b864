"""Workflow engine benchmark: YARA over reassembled streams, through the engine and by
hand with yara-python on the same reassembled data, in one run.

    python benchmarks/bench_workflow.py [--size-mib 100] [--repeat 5]

The capture is generated (pcapwire.synth: interleaved HTTP-like TCP sessions and DNS;
the EICAR test string in 1 session of 97) if absent. The rules are the shipped demo
rules (workflows/rules/) plus two bench rules that fire on every HTTP request and every
response, so that verdicts are plentiful (the per-verdict cost shows).

The workflow has two steps: ``requests`` (yara on the client streams) and ``responses``
(yara on the server streams), split by their ``if:`` conditions, so each stream is
scanned exactly once -- as in the direct loop, which is what makes the two comparable:

- **direct**: the same chunks (already in memory) -> pcapwire's reassembler and stream
  collector -> ``rules.match(data=...)`` per stream, in a plain loop;
- **engine**: the same chunks as an async iterator -> ``Engine.run`` of the two-step
  workflow (routing, conditions, bounded queues, per-call timeouts, verdict policy).

Both must produce the same number of matches. Reported: wall clock and CPU time of each
over ``--repeat`` interleaved rounds (alternating which goes first): the best round
(least disturbed by other load on the machine), the median, and the median of each
round's own ratio; engine overhead = engine / direct (target <= 1.2); chunks/s and
verdicts/s through the engine; and -- with the capture ingested into a store -- the time
from query submission (``QueryEngine.run`` of the whole store) to the first verdict and
to the end of the run. Results go to benchmarks/results/workflow.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchdata import HERE, RESULTS, synth_capture

REPO = HERE.parent
SHIPPED_RULES = REPO / "workflows" / "rules"
BENCH_RULES = """\
rule Bench_Synth_Request : bench
{
    meta:
        score = 30
    strings:
        $ua = "User-Agent: pcapwire-synth"
    condition:
        $ua
}

rule Bench_Octet_Stream_Response : bench
{
    meta:
        severity = "info"
    strings:
        $ct = "Content-Type: application/octet-stream"
    condition:
        $ct at 17
}
"""
WORKFLOW = """\
name: bench-two-steps
verdicts:
  dedupe: true
steps:
  - id: requests
    uses: yara
    input: stream
    if: "stream.direction == 'orig'"
    with:
      rules: [{shipped}, {bench}]
  - id: responses
    uses: yara
    input: stream
    if: "stream.direction == 'resp'"
    with:
      rules: [{shipped}, {bench}]
"""


def _cpu() -> float:
    return time.process_time()


def direct(chunks: list[Any], rules: Any) -> dict[str, Any]:
    """Reassemble the chunks and scan every stream with yara-python, in a plain loop."""
    from pcapwire.reassembly import Reassembler, StreamCollector

    t0, c0 = time.perf_counter(), _cpu()
    reassembler, collector = Reassembler(), StreamCollector()
    streams = matches = 0
    for chunk in chunks:
        for ev in reassembler.feed_chunk(chunk):
            for rec in collector.push(ev):
                streams += 1
                matches += len(rules.match(data=rec.data))
    for ev in reassembler.flush():
        for rec in collector.push(ev):
            streams += 1
            matches += len(rules.match(data=rec.data))
    return {"seconds": time.perf_counter() - t0, "cpu": _cpu() - c0, "streams": streams,
            "matches": matches}


async def through_engine(chunks: list[Any], host: Any, wf: Any) -> dict[str, Any]:
    from pcapwire.workflow.engine import Engine

    async def source() -> Any:
        for c in chunks:
            yield c

    first: list[float] = []
    t0, c0 = time.perf_counter(), _cpu()
    summary = await Engine(host).run(
        wf, source(), case="bench",
        on_verdict=lambda v: first.append(time.perf_counter()) if not first else None)
    elapsed, cpu = time.perf_counter() - t0, _cpu() - c0
    if summary.status != "ok":
        raise SystemExit(f"run {summary.status}: {[s.to_dict() for s in summary.steps]}")
    return {"seconds": elapsed, "cpu": cpu, "chunks": summary.chunks,
            "verdicts": summary.verdicts,
            "streams": sum(s.records_in - s.records_skipped for s in summary.steps),
            "queue_peak": max(s.queue_peak for s in summary.steps),
            "first_verdict_s": first[0] - t0}


async def from_query(store: Any, host: Any, wf: Any) -> dict[str, Any]:
    """Query submission (the whole store) -> chunks -> engine; first verdict and end."""
    from pcapwire.query import QuerySpec
    from pcapwire.workflow.engine import Engine

    first: list[float] = []
    t0 = time.perf_counter()
    summary = await Engine(host).run(
        wf, store.query_engine().run(QuerySpec(), record=False), case="bench",
        on_verdict=lambda v: first.append(time.perf_counter()) if not first else None)
    return {"first_verdict_s": first[0] - t0, "seconds": time.perf_counter() - t0,
            "verdicts": summary.verdicts, "chunks": summary.chunks}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()

    from pcapwire.hooks.host import build_host
    from pcapwire.store import Store
    from pcapwire.workflow.document import load_workflow
    from pcapwire.workflow.sources import iter_file_chunks

    capture = synth_capture(args.size_mib)
    med = statistics.median
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-workflow-") as tmpname:
        tmp = Path(tmpname)
        bench = tmp / "bench.yar"
        bench.write_text(BENCH_RULES)
        host = build_host(env={"PCAPWIRE_LOAD_PLUGINS": "yara"})
        wf = load_workflow("bench.yaml", host, text=WORKFLOW.format(shipped=SHIPPED_RULES,
                                                                      bench=bench))
        # the same compiled rules the steps use (the analyzer's cache)
        rules = host.analyzer("yara").cache.get([str(SHIPPED_RULES), str(bench)], None).rules
        chunks = list(iter_file_chunks(capture))
        rounds: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for i in range(args.repeat):  # interleaved, alternating order
            if i % 2:
                e = asyncio.run(through_engine(chunks, host, wf))
                d = direct(chunks, rules)
            else:
                d = direct(chunks, rules)
                e = asyncio.run(through_engine(chunks, host, wf))
            if (d["streams"], d["matches"]) != (e["streams"], e["verdicts"]):
                raise SystemExit(f"results differ: direct {d}, engine {e}")
            rounds.append((d, e))
        with Store(tmp / "store") as store:
            store.ingest([capture])
            queries = [asyncio.run(from_query(store, host, wf)) for _ in range(args.repeat)]
    ds = [d for d, _ in rounds]
    es = [e for _, e in rounds]
    e_wall, d_wall = med(e["seconds"] for e in es), med(d["seconds"] for d in ds)
    e_best, d_best = min(e["seconds"] for e in es), min(d["seconds"] for d in ds)
    e_cpu, d_cpu = med(e["cpu"] for e in es), med(d["cpu"] for d in ds)
    size = capture.stat().st_size
    result: dict[str, Any] = {
        "capture_bytes": size, "chunks": es[0]["chunks"], "streams": es[0]["streams"],
        "verdicts": es[0]["verdicts"], "cpus": os.cpu_count(), "repeat": args.repeat,
        "load_average_before": load_before,
        "direct_s": d_wall, "engine_s": e_wall, "direct_best_s": d_best,
        "engine_best_s": e_best, "direct_cpu_s": d_cpu, "engine_cpu_s": e_cpu,
        "ratio_wall": e_wall / d_wall, "ratio_best": e_best / d_best,
        "ratio_cpu": e_cpu / d_cpu,
        "ratio_wall_paired": med(e["seconds"] / d["seconds"] for d, e in rounds),
        "rounds": [{"direct_s": d["seconds"], "engine_s": e["seconds"]} for d, e in rounds],
        "chunks_per_s": es[0]["chunks"] / e_wall, "verdicts_per_s": es[0]["verdicts"] / e_wall,
        "mib_per_s": size / 2**20 / e_wall,
        "queue_peak": max(e["queue_peak"] for e in es),
        "first_verdict_in_memory_s": med(e["first_verdict_s"] for e in es),
        "query_first_verdict_s": med(q["first_verdict_s"] for q in queries),
        "query_first_verdict_all_s": [q["first_verdict_s"] for q in queries],
        "query_run_s": med(q["seconds"] for q in queries),
        "query_verdicts": queries[0]["verdicts"], "query_chunks": queries[0]["chunks"],
        "load_average_after": os.getloadavg(),
    }
    (RESULTS / "workflow.json").write_text(json.dumps(result, indent=1) + "\n")
    rows = [
        ("capture", f"{size / 2**20:.0f} MiB, {result['chunks']} chunks, "
                    f"{result['streams']} streams, {result['verdicts']} verdicts"),
        ("direct (reassembly + yara-python)",
         f"{d_wall:.2f} s median, {d_best:.2f} s best, {d_cpu:.2f} s CPU"),
        ("engine (two-step workflow)",
         f"{e_wall:.2f} s median, {e_best:.2f} s best, {e_cpu:.2f} s CPU"),
        ("engine / direct (target <= 1.2)",
         f"{result['ratio_best']:.2f} best, {result['ratio_wall']:.2f} median, "
         f"{result['ratio_wall_paired']:.2f} paired median"),
        ("throughput (median run)", f"{result['chunks_per_s']:.0f} chunks/s, "
                                    f"{result['verdicts_per_s']:.0f} verdicts/s, "
                                    f"{result['mib_per_s']:.0f} MiB/s"),
        ("query submission -> first verdict",
         f"{result['query_first_verdict_s'] * 1000:.0f} ms (whole-store query; run "
         f"{result['query_run_s']:.2f} s, {result['query_verdicts']} verdicts)"),
        ("largest step queue", f"{result['queue_peak']} records (queue_size 16)"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"bench_workflow: {args.repeat} rounds, {os.cpu_count()} CPUs, load average "
          f"{load_before[0]:.2f} before, {result['load_average_after'][0]:.2f} after")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    main()
