"""Does the metadata index keep pace with the analyzers? The Suricata benchmark's workflow
runs (bench_suricata.py: same capture, rule profiles, one-step workflow, warm engine), now
with a case store and a data directory, so that the engine indexes every run as it does
in ``pcapwire serve`` (``Engine._index_run``: the run's verdicts and the EVE metadata its
step kept, :func:`pcapwire.search.indexer.index_run`'s documents, in the indexer children of
:mod:`pcapwire.search.worker`).

    python benchmarks/bench_search_pace.py [--size-mib 210] [--rounds 3] [--runs 3]

Runs arrive back to back: the next run starts the moment the previous one's steps have
ended (the engine's ``case_completed`` hook, called before it indexes), so a run's
indexing overlaps the next run's analysis on the same cores, as on a busy server. Per
run: the records the analyzers produced (verdicts + EVE metadata lines = the documents
the indexer makes of the run, checked against the index), the run's wall time (submission
to the end of its steps) and the index's (end of the steps to searchable). A sampler
thread reads every ``--sample-s``: records produced so far (verdicts as the engine hands
them out; EVE lines Suricata has written, in its log directory while it runs and in the
kept file after) and records searchable (``count(*)`` of the index's documents in a
connection of its own), so backlog = produced - searchable over time. Per sequence, the
indexer children's CPU time (``index_cpu_us_per_record``: the builder's and the writer's,
:mod:`pcapwire.search.pipeline`, each also in ``index_cpu_us_per_record_by_stage``) and
the cores' worth they got while the index was busy (``index_core_share``: up to 2, one
a stage).

"Keeps pace": the backlog does not grow while runs keep arriving, i.e. the index's rate
(records / the time it was busy with them) >= the production rate (records / the time
from the first submission to the end of the last run's steps). Rounds alternate the
profile order; figures are medians [min-max] over the rounds. Results are printed and
written to benchmarks/results/search_pace.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench_suricata import PROFILES, _prewarm, _rules, _workflow
from benchdata import RESULTS, synth_capture
from pcapwire.hooks import impl

#: The step id of the benchmark workflow (bench_suricata._workflow).
STEP = "ids"
#: The case every run of the benchmark belongs to.
CASE = "pace"


class Arrivals:
    """A plugin: notes when each run's steps have all ended (``case_completed``, before the
    engine indexes the run), so the benchmark submits the next run then."""

    def __init__(self) -> None:
        self.analysed: dict[str, float] = {}
        self.events: dict[str, asyncio.Event] = {}

    @impl
    def pcapwire_case_completed(self, run: Any, summary: Any) -> None:
        self.analysed[run.run_id] = time.perf_counter()
        if run.run_id in self.events:
            self.events[run.run_id].set()


class Backlog(threading.Thread):
    """Samples (seconds since start, records produced, records searchable)."""

    def __init__(self, root: Path, scratch: Path, interval: float) -> None:
        super().__init__(name="bench-backlog", daemon=True)
        self.root, self.scratch, self.interval = root, scratch, interval
        self.t0 = time.perf_counter()
        self.verdicts = 0
        self.samples: list[tuple[float, int, int]] = []
        self._eve: dict[int, tuple[int, int]] = {}  # inode -> (bytes read, lines)
        self._halt = threading.Event()
        self._lock = threading.Lock()  # the sampler thread and the event loop both sample
        self._db = sqlite3.connect(f"file:{root / 'search.sqlite'}?mode=ro", uri=True,
                                   check_same_thread=False)
        self.baseline = self._docs()

    def verdict(self, _verdict: Any) -> None:
        self.verdicts += 1

    def _docs(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM docs").fetchone()[0])

    def _eve_lines(self) -> int:
        """Lines of every EVE metadata file, while Suricata writes it and after the step
        moved it to the case (a rename: the same inode, counted once)."""
        paths = [*self.scratch.glob("pcapwire-suricata-*/log/eve-metadata*.json"),
                 *(self.root / "cases").glob(f"{CASE}/suricata/*/eve-metadata*.json")]
        for path in paths:
            try:
                with open(path, "rb") as f:
                    ino = os.fstat(f.fileno()).st_ino
                    done, lines = self._eve.get(ino, (0, 0))
                    f.seek(done)
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n") + 1  # whole lines only
            self._eve[ino] = (done + end, lines + data.count(b"\n", 0, end))
        return sum(lines for _done, lines in self._eve.values())

    def sample(self) -> tuple[float, int, int]:
        with self._lock:
            produced = self.verdicts + self._eve_lines()
            s = (round(time.perf_counter() - self.t0, 3), produced,
                 self._docs() - self.baseline)
            self.samples.append(s)
            return s

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self._db.close()


async def sequence(store: Any, rules: list[str], runs: int, tag: str, scratch: Path,
                   backlog: Backlog) -> list[dict[str, Any]]:
    """``runs`` workflow runs back to back (each submitted when the previous one's steps
    ended); returns per run its times (relative to the backlog's clock) and records."""
    from pcapwire.cases import CASES_FILE, CaseStore
    from pcapwire.hooks.host import build_host
    from pcapwire.query import QuerySpec
    from pcapwire.workflow.document import load_workflow
    from pcapwire.workflow.engine import Engine

    arrivals = Arrivals()
    host = build_host(extra=[arrivals])
    wf = load_workflow("pace.yaml", host, text=_workflow(rules, None))
    await _prewarm(host, rules)
    cases = CaseStore(store.root / CASES_FILE)
    engine = Engine(host, store=cases, data_dir=store.root, workdir=scratch)
    cpu0 = await _index_cpu()
    out: list[dict[str, Any]] = []
    tasks = []
    indexed: dict[str, float] = {}
    for k in range(runs):
        rid = f"{tag}-{k}"
        arrivals.events[rid] = asyncio.Event()
        _t, produced, searchable = backlog.sample()
        started = time.perf_counter()
        task = asyncio.create_task(engine.run(
            wf, store.query_engine().run(QuerySpec(), record=False), case=CASE,
            query_id=rid, run_id=rid, on_verdict=backlog.verdict))
        def done(_task: asyncio.Task[Any], rid: str = rid) -> None:
            indexed.setdefault(rid, time.perf_counter())
        task.add_done_callback(done)
        tasks.append(task)
        await arrivals.events[rid].wait()
        out.append({"run_id": rid, "started": started, "backlog_at_start": produced - searchable})
    summaries = await asyncio.gather(*tasks)
    index_cpu = {stage: cpu - cpu0[stage] for stage, cpu in (await _index_cpu()).items()}
    await host.analyzer("suricata").aclose()
    cases.close()
    for run, summary in zip(out, summaries, strict=True):
        if summary.status != "ok":
            raise SystemExit(f"run {run['run_id']} {summary.status}")
        rid = run["run_id"]
        kept = store.root / "cases" / CASE / "suricata" / f"{rid}-{STEP}"
        eve = sum(p.read_bytes().count(b"\n") for p in kept.glob("eve-metadata*.json"))
        run.update(verdicts=summary.verdicts, eve=eve, records=summary.verdicts + eve,
                   analysed=arrivals.analysed[rid], indexed=indexed[rid],
                   documents=_run_documents(store.root, rid))
        run["lost"] = run["records"] - run["documents"]  # the hook failed (logged)
    for run in out:
        for key in ("started", "analysed", "indexed"):
            run[key] = round(run[key] - backlog.t0, 3)
        run["analysis_s"] = round(run["analysed"] - run["started"], 3)
        run["index_s"] = round(run["indexed"] - run["analysed"], 3)
        run["index_cpu_s"] = round(sum(index_cpu.values()), 3)  # of the whole sequence
        run["index_cpu_s_by_stage"] = {k: round(v, 3) for k, v in index_cpu.items()}
    return out


async def _index_cpu() -> dict[str, float]:
    """The CPU seconds of each indexer child so far."""
    from pcapwire.search import worker

    return {stage: await worker.call(time.process_time, stage=stage)
            for stage in (worker.BUILDER, worker.WRITER)}


def _run_documents(root: Path, run_id: str) -> int:
    """Documents of one run in the index (verdicts and EVE records, by key)."""
    with sqlite3.connect(root / "search.sqlite") as db:
        return sum(int(db.execute("SELECT count(*) FROM docs WHERE key >= ? AND key < ?",
                                  (f"{kind}:{run_id}:", f"{kind}:{run_id};")).fetchone()[0])
                   for kind in ("verdict", "eve"))


def pace(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Production and indexing rates of one back-to-back sequence."""
    records = sum(r["records"] for r in runs)
    span = runs[-1]["analysed"] - runs[0]["started"]
    busy, until = 0.0, float("-inf")  # the union of the [analysed, indexed] intervals
    for r in sorted(runs, key=lambda r: r["analysed"]):
        start = max(r["analysed"], until)
        if r["indexed"] > start:
            busy += r["indexed"] - start
        until = max(until, r["indexed"])
    return {"records": records, "produced_per_s": records / span,
            "indexed_per_s": records / busy, "production_span_s": span, "index_busy_s": busy,
            "drain_after_last_run_s": runs[-1]["indexed"] - runs[-1]["analysed"],
            "backlog_at_run_starts": [r["backlog_at_start"] for r in runs],
            "index_cpu_us_per_record": runs[0]["index_cpu_s"] / records * 1e6,
            "index_cpu_us_per_record_by_stage": {
                k: v / records * 1e6 for k, v in runs[0]["index_cpu_s_by_stage"].items()},
            "index_core_share": runs[0]["index_cpu_s"] / busy,
            "keeps_pace": records / busy >= records / span}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=210)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3, help="back-to-back runs per sequence")
    ap.add_argument("--sample-s", type=float, default=0.25)
    ap.add_argument("--out", default="search_pace.json", help="file in benchmarks/results")
    args = ap.parse_args()

    from pcapwire.search.indexer import index_flows
    from pcapwire.store import Store

    capture = synth_capture(args.size_mib)
    result: dict[str, Any] = {"capture_bytes": capture.stat().st_size,
                              "cpus": os.cpu_count(), "rounds": args.rounds,
                              "runs_per_sequence": args.runs,
                              "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-pace-") as tmpname:
        tmp = Path(tmpname)
        scratch = tmp / "scratch"  # Suricata's log directories (tempfile) and run workdirs
        scratch.mkdir()
        tempfile.tempdir = str(scratch)
        with Store(tmp / "store") as store:
            store.ingest([capture])
            result["flow_documents"] = index_flows(store.root)
            backlog = Backlog(store.root, scratch, args.sample_s)
            backlog.start()
            rules = {p: _rules(tmp, p) for p in PROFILES}
            seqs: dict[str, list[dict[str, Any]]] = {p: [] for p in PROFILES}
            for i in range(args.rounds):
                for profile in PROFILES if i % 2 == 0 else PROFILES[::-1]:
                    runs = asyncio.run(sequence(store, rules[profile], args.runs,
                                                f"{profile}-{i}", scratch, backlog))
                    seqs[profile].append({"runs": runs, **pace(runs)})
                    print(profile, i, json.dumps(pace(runs)), flush=True)
            backlog.stop()
        tempfile.tempdir = None
    for profile, rounds in seqs.items():
        result[profile] = {"summary": summary(rounds), "rounds": rounds}
    result["samples"] = backlog.samples
    result["load_average_after"] = os.getloadavg()
    (RESULTS / args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v if k not in PROFILES else v["summary"] for k, v in result.items()
                      if k != "samples"}, indent=1))


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median [min, max] over the rounds of the rates and backlogs."""
    def mmm(values: list[float]) -> list[float]:
        return [round(statistics.median(values), 1), round(min(values), 1),
                round(max(values), 1)]
    runs = [r for seq in rounds for r in seq["runs"]]
    return {"records_per_run": mmm([r["records"] for r in runs]),
            "verdicts_per_run": mmm([r["verdicts"] for r in runs]),
            "eve_per_run": mmm([r["eve"] for r in runs]),
            "run_s": mmm([r["analysis_s"] for r in runs]),
            "index_s": mmm([r["index_s"] for r in runs]),
            "produced_per_s": mmm([s["produced_per_s"] for s in rounds]),
            "indexed_per_s": mmm([s["indexed_per_s"] for s in rounds]),
            "index_cpu_us_per_record": mmm([s["index_cpu_us_per_record"] for s in rounds]),
            "index_core_share": mmm([s["index_core_share"] for s in rounds]),
            **{f"index_cpu_us_per_record_{stage}": mmm([
                s["index_cpu_us_per_record_by_stage"][stage] for s in rounds])
               for stage in rounds[0]["index_cpu_us_per_record_by_stage"]},
            "backlog_at_last_run_start": mmm([s["backlog_at_run_starts"][-1]
                                              for s in rounds]),
            "drain_after_last_run_s": mmm([s["drain_after_last_run_s"] for s in rounds]),
            "keeps_pace_rounds": sum(s["keeps_pace"] for s in rounds),
            "records_lost": sum(r["lost"] for r in runs)}


if __name__ == "__main__":
    main()
