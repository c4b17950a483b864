"""Suricata step benchmark: the pcapwire Suricata step side by side with ``suricata -r`` by
hand, same capture, same rules, in one run.

    python benchmarks/bench_suricata.py [--size-mib 210] [--repeat 3]

Measures:
- wall clock of the whole capture through the Suricata step -- store query -> chunks ->
  the workflow engine running a one-step workflow -> warm engine -> every verdict out of
  the engine, EVE metadata written -- against
  ``suricata -r FILE`` typed by hand (the distribution's suricata.yaml; and, to separate
  the output cost, the same command with the plugin's own generated config writing EVE to
  a file). Ratio target <= 1.15.
- two rule profiles: "typical" (the distribution's rules and two local ones) and
  "alert-heavy" (plus two rules that fire on every HTTP session);
- the alert sets: (sid, packet 5-tuple) multisets must be identical. (Timestamps are left
  out of the key: alerts raised while Suricata flushes its flows at the end of the input
  carry the time of whichever thread handles that flush, which differs between two runs
  by hand as well.)
- time from query submission to the first Suricata verdict with the engine warm (a spare
  from the pool, rules already loaded). Target < 1 s.
- CPU time (user and system) of each side: Suricata's (the child process, by hand and in
  the step) and the pcapwire process's (query thread, event loop, FIFO writer thread;
  ``main_thread`` is the event loop alone). On a 2-core machine that Suricata keeps busy,
  the pcapwire side's CPU is what the step's wall clock pays for. (A warm step's Suricata
  CPU includes the rule loading done before the timer started.)
- the same Suricata on both sides: same binary, rules, ``-k none``, no ``--runmode``
  (pcap-file's default, autofp); ``suricata --dump-config`` of the plugin's generated
  config must equal the by-hand one outside the keys the plugin owns (outputs, logging,
  log and rule paths, command socket, stats), else the benchmark stops.

Warm and cold: "warm" is the step as a long-running pcapwire runs it, with a spare engine
whose rules were loaded before the query was submitted (not timed); "cold" starts Suricata
inside the timed run, rule loading included, like ``suricata -r`` by hand does. Both are
reported; the rounds alternate (by hand, by hand with the plugin's outputs, warm, cold;
the odd rounds in the reverse order) and every figure is the median over the rounds
(``*_paired``: the median of each round's own ratio).
The capture is generated (pcapwire.synth: HTTP sessions, DNS, EICAR markers) if absent.
Results are printed and written to benchmarks/results/suricata.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchdata import RESULTS, synth_capture

DIST_RULES = Path("/etc/suricata/rules")
#: Distribution rule files that need protocols the default config disables.
DIST_SKIP = {"dnp3-events.rules", "modbus-events.rules"}
#: Rules for both profiles: the EICAR marker of 1 in 97 synthetic sessions, DNS lookups.
LOCAL_RULES = """\
alert tcp any any -> any any (msg:"bench EICAR marker"; flow:established; \
content:"EICAR-STANDARD-ANTIVIRUS-TEST-FILE"; classtype:trojan-activity; sid:7000003; rev:1;)
alert dns any any -> any any (msg:"bench DNS example.com"; dns.query; content:"example.com"; \
endswith; sid:7000004; rev:1;)
"""
#: The alert-heavy profile adds two rules that fire on every HTTP session (two verdicts
#: per session: the per-verdict cost of the Python side shows).
HEAVY_RULES = """\
alert http any any -> any any (msg:"bench GET of /files/"; flow:established,to_server; \
http.method; content:"GET"; http.uri; content:"/files/"; startswith; sid:7000001; rev:1;)
alert http any any -> any any (msg:"bench host demo.example"; flow:established,to_server; \
http.host; content:"demo.example"; sid:7000002; rev:1;)
"""
PROFILES = ("typical", "alert-heavy")
ARGS = ["-k", "none"]
DIST_CONFIG = "/etc/suricata/suricata.yaml"
#: suricata.yaml keys the plugin sets itself (its outputs, log directory, rule files; no
#: command socket, no stats); every other setting must be the one ``suricata -r`` by hand
#: runs with (runmode, threads, detection, flow and stream settings...).
PLUGIN_OWNED_KEYS = ("outputs", "logging", "default-log-dir", "unix-command", "stats",
                     "rule-files", "default-rule-path")


def _rules(tmp: Path, profile: str) -> list[str]:
    """The local rules plus the distribution's, without its checksum rules: the synthetic
    capture carries zero TCP/UDP checksums, so those would alert on every packet."""
    local = tmp / f"bench-{profile}.rules"
    local.write_text(LOCAL_RULES + (HEAVY_RULES if profile == "alert-heavy" else ""))
    dist = tmp / "dist.rules"
    lines = []
    for path in sorted(DIST_RULES.glob("*.rules")):
        if path.name not in DIST_SKIP:
            lines += [ln for ln in path.read_text().splitlines() if "-csum:" not in ln]
    dist.write_text("\n".join(lines) + "\n")
    return [str(local), str(dist)]


def _hand_alerts(eve: Path) -> Counter:
    out: Counter = Counter()
    with open(eve) as f:
        for line in f:
            e = json.loads(line)
            if e.get("event_type") == "alert":
                out[(e["alert"]["signature_id"], e["src_ip"], e.get("src_port", 0),
                     e["dest_ip"], e.get("dest_port", 0))] += 1
    return out


def _plugin_alerts(verdicts: list) -> Counter:
    out: Counter = Counter()
    for v in verdicts:
        p = v.evidence["packet"]
        out[(v.evidence["sid"], p["src_ip"], p.get("src_port") or 0, p["dest_ip"],
             p.get("dest_port") or 0)] += 1
    return out


def _cpu(who: int) -> tuple[float, float]:
    r = resource.getrusage(who)
    return r.ru_utime, r.ru_stime


def _cpu_since(who: int, before: tuple[float, float]) -> dict[str, float]:
    now = _cpu(who)
    return {"user": now[0] - before[0], "sys": now[1] - before[1]}


def by_hand(capture: Path, rules: list[str], tmp: Path, config: Path | None
            ) -> tuple[float, Counter, dict[str, float]]:
    """``suricata -r`` as typed by hand; returns (wall seconds, alert multiset, Suricata's
    CPU seconds)."""
    log_dir = Path(tempfile.mkdtemp(dir=tmp, prefix="hand-"))
    if config is None:
        # the user's command: the distribution config, rules given on the command line
        rule_file = log_dir / "all.rules"
        rule_file.write_text("".join(Path(r).read_text() + "\n" for r in rules))
        cmd = ["suricata", "-c", DIST_CONFIG, "-S", str(rule_file),
               "--set", "unix-command.enabled=no"]
    else:
        cmd = ["suricata", "-c", str(config)]
    cmd += ["-r", str(capture), "-l", str(log_dir), *ARGS]
    children = _cpu(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    cpu = _cpu_since(resource.RUSAGE_CHILDREN, children)
    if proc.returncode != 0:
        raise SystemExit(f"suricata by hand failed:\n{proc.stdout}{proc.stderr}")
    return elapsed, _hand_alerts(log_dir / "eve.json"), cpu


def plugin_file_config(rules: list[str], tmp: Path) -> Path:
    """The plugin's generated suricata.yaml, with EVE to a regular file instead of its
    socket (the 'same outputs' by-hand variant)."""
    import yaml
    from pcapwire.plugins.suricata.config import SuricataSettings, build_config

    settings = SuricataSettings.from_mapping({"rules": rules, "args": ARGS})
    text = build_config(settings, tmp, tmp / "unused.sock", settings.rule_files())
    cfg = yaml.safe_load(text)
    eve = cfg["outputs"][0]["eve-log"]
    eve["filetype"], eve["filename"] = "regular", "eve.json"
    out = tmp / "plugin-file.yaml"
    out.write_text("%YAML 1.1\n---\n" + yaml.safe_dump(cfg, sort_keys=False)
                   .replace(": null\n", ":\n"))
    return out


def _dumped_config(args: list[str]) -> dict[str, str]:
    out = subprocess.run(["suricata", "--dump-config", *args], capture_output=True,
                         text=True, check=True).stdout
    cfg = {}
    for line in out.splitlines():
        key, sep, value = line.partition(" = ")
        if sep and not key.startswith(PLUGIN_OWNED_KEYS):
            cfg[key] = {"yes": "true", "no": "false"}.get(value, value)  # YAML spellings
    return cfg


def config_differences(plugin_cfg: Path) -> list[str]:
    """Settings (``suricata --dump-config``) on which the plugin's engine differs from the
    by-hand run, outside :data:`PLUGIN_OWNED_KEYS`. Must be empty for a fair comparison."""
    hand = _dumped_config(["-c", DIST_CONFIG, "--set", "unix-command.enabled=no"])
    plugin = _dumped_config(["-c", str(plugin_cfg)])
    return sorted(k for k in hand.keys() | plugin.keys() if hand.get(k) != plugin.get(k))


def _workflow(rules: list[str], keep_dir: Path | None) -> str:
    """One Suricata step; every verdict kept (no dedupe), so alert sets compare 1:1.
    ``keep_dir`` None: the EVE metadata is kept where the metadata index reads it (the
    run's data directory, bench_search_pace.py)."""
    keep = f"      keep_dir: \"{keep_dir}\"\n" if keep_dir is not None else ""
    return (f"name: bench-suricata\nverdicts:\n  dedupe: false\nsteps:\n"
            f"  - id: ids\n    uses: suricata\n    timeout: 1h\n    with:\n"
            f"      rules: {json.dumps(rules)}\n      args: {json.dumps(ARGS)}\n"
            f"      on_rule_error: warn\n{keep}")


async def _prewarm(host: Any, rules: list[str]) -> None:
    """What a long-running pcapwire has between runs: a spare with its rules loaded."""
    from pcapwire.plugins.suricata.analyzer import to_settings

    analyzer = host.analyzer("suricata")
    settings = to_settings(analyzer.Config.from_mapping({"rules": rules, "args": ARGS,
                                                         "on_rule_error": "warn"}))
    pool = analyzer.pool()
    pool.warm(settings)
    await asyncio.gather(*[t for group in pool._spares.values() for t in group])


async def through_step(store: Any, rules: list[str], tmp: Path, warm: bool) -> dict[str, Any]:
    """The whole store queried into a workflow with one Suricata step, run by the workflow
    engine; timed from query submission to the end of the run."""
    from pcapwire.hooks.host import build_host
    from pcapwire.query import QuerySpec
    from pcapwire.workflow.document import load_workflow
    from pcapwire.workflow.engine import Engine

    host = build_host()
    wf = load_workflow("bench.yaml", host, text=_workflow(rules, tmp / "keep"))
    if warm:
        await _prewarm(host, rules)
    first: dict[str, float] = {}
    verdicts: list[Any] = []

    def on_verdict(v: Any) -> None:
        first.setdefault("verdict", time.perf_counter())
        verdicts.append(v)

    async def chunks() -> Any:
        async for chunk in store.query_engine().run(QuerySpec(), record=False):
            first.setdefault("chunk", time.perf_counter())
            yield chunk

    own, children = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    main = time.thread_time()
    t0 = time.perf_counter()
    summary = await Engine(host).run(wf, chunks(), case="bench", query_id="full",
                                     on_verdict=on_verdict)
    elapsed = time.perf_counter() - t0
    # Suricata is reaped inside the run (a spare started for the next run is not)
    cpu = {"pcapwire": _cpu_since(resource.RUSAGE_SELF, own),
           "main_thread": time.thread_time() - main,
           "suricata": _cpu_since(resource.RUSAGE_CHILDREN, children)}
    analyzer = host.analyzer("suricata")
    reused = analyzer.pool().reused
    await analyzer.aclose()
    if summary.status != "ok":
        raise SystemExit(f"run {summary.status}: {[s.to_dict() for s in summary.steps]}")
    return {"seconds": elapsed, "alerts": _plugin_alerts(verdicts), "chunks": summary.chunks,
            "first_verdict_s": first["verdict"] - t0, "first_chunk_s": first["chunk"] - t0,
            "spare_used": bool(reused), "cpu": cpu}


async def first_verdict_latency(store: Any, rules: list[str], tmp: Path,
                                repeat: int) -> list[float]:
    """Warm engine (spare ready): query submission -> first verdict out of the workflow
    engine; the run is then cancelled (every session closed, engines reaped)."""
    from pcapwire.hooks.host import build_host
    from pcapwire.query import QuerySpec
    from pcapwire.workflow.document import load_workflow
    from pcapwire.workflow.engine import Engine

    host = build_host()
    wf = load_workflow("bench.yaml", host, text=_workflow(rules, tmp / "keep"))
    out = []
    for i in range(repeat):
        await _prewarm(host, rules)
        got = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        run = asyncio.create_task(Engine(host).run(
            wf, store.query_engine().run(QuerySpec(), record=False), case="bench",
            query_id=f"lat{i}",
            on_verdict=lambda v, got=got: got.done() or got.set_result(time.perf_counter())))
        out.append(await got - t0)
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    await host.analyzer("suricata").aclose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=210)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from pcapwire.store import Store

    capture = synth_capture(args.size_mib)
    size = capture.stat().st_size
    assert size >= 200 * 2**20, "the benchmark capture must be at least 200 MiB"

    med = statistics.median
    result: dict[str, Any] = {"capture_bytes": size, "cpus": os.cpu_count(),
                              "load_average_before": os.getloadavg(), "repeat": args.repeat}
    with tempfile.TemporaryDirectory(prefix="bench-suricata-") as tmpname:
        tmp = Path(tmpname)
        with Store(tmp / "store") as store:
            store.ingest([capture])
            for profile in PROFILES:
                result[profile] = measure(store, capture, _rules(tmp, profile), tmp, args.repeat)
            latency = asyncio.run(first_verdict_latency(store, _rules(tmp, "typical"), tmp,
                                                        args.repeat))
    result["first_verdict_warm_s"] = med(latency)
    result["first_verdict_warm_all_s"] = latency
    result["load_average_after"] = os.getloadavg()
    (RESULTS / "suricata.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


def measure(store: Any, capture: Path, rules: list[str], tmp: Path, repeat: int
            ) -> dict[str, Any]:
    """One rule profile: by hand, by hand with the plugin's outputs, step warm and cold,
    interleaved ``repeat`` times; alert sets compared on every run."""
    hand, hand_same, step_warm, step_cold = [], [], [], []
    hand_cpu, hand_same_cpu = [], []
    alerts_ref: Counter | None = None
    plugin_cfg = plugin_file_config(rules, tmp)
    differences = config_differences(plugin_cfg)
    if differences:
        raise SystemExit(f"the step's Suricata settings differ from by hand: {differences}")
    for i in range(repeat):
        # odd rounds run in the reverse order, so a load that rises or falls during a
        # round does not always favour the same side
        runs: dict[str, Any] = {}
        order = ["hand", "hand_same", "warm", "cold"]
        for what in order if i % 2 == 0 else order[::-1]:
            if what == "hand":
                runs[what] = by_hand(capture, rules, tmp, None)
            elif what == "hand_same":
                runs[what] = by_hand(capture, rules, tmp, plugin_cfg)
            else:
                runs[what] = asyncio.run(through_step(store, rules, tmp, warm=what == "warm"))
        s, alerts_hand, cpu = runs["hand"]
        hand.append(s)
        hand_cpu.append(cpu)
        s, alerts_same, cpu = runs["hand_same"]
        hand_same.append(s)
        hand_same_cpu.append(cpu)
        warm, cold = runs["warm"], runs["cold"]
        step_warm.append(warm)
        step_cold.append(cold)
        alerts_ref = alerts_ref or alerts_hand
        for got in (alerts_hand, alerts_same, warm["alerts"], cold["alerts"]):
            if got != alerts_ref:
                raise SystemExit("alert sets differ: "
                                 f"{sum((got - alerts_ref).values())} extra, "
                                 f"{sum((alerts_ref - got).values())} missing")
    med = statistics.median
    sids: Counter = Counter()
    for key, n in (alerts_ref or Counter()).items():
        sids[key[0]] += n
    warm_s = [r["seconds"] for r in step_warm]
    cold_s = [r["seconds"] for r in step_cold]
    return {
        "alerts": sum(sids.values()),
        "alerts_by_sid": {str(k): v for k, v in sorted(sids.items())},
        "alert_sets_identical": True,
        "suricata_settings_identical": not differences,  # outside PLUGIN_OWNED_KEYS
        "args_both_sides": ARGS,
        "suricata_by_hand_s": med(hand), "suricata_by_hand_plugin_outputs_s": med(hand_same),
        "step_warm_s": med(warm_s), "step_cold_s": med(cold_s),
        "ratio_warm_vs_hand": med(warm_s) / med(hand),
        "ratio_warm_vs_hand_plugin_outputs": med(warm_s) / med(hand_same),
        "ratio_cold_vs_hand": med(cold_s) / med(hand),
        # the median of each round's own ratio (the two runs of a round share its load)
        "ratio_warm_vs_hand_paired": med(w / h for w, h in zip(warm_s, hand, strict=True)),
        "ratio_warm_vs_hand_plugin_outputs_paired": med(
            w / h for w, h in zip(warm_s, hand_same, strict=True)),
        "ratio_cold_vs_hand_paired": med(c / h for c, h in zip(cold_s, hand, strict=True)),
        # the least disturbed run of each (other jobs share this machine's cores)
        "ratio_warm_vs_hand_best": min(warm_s) / min(hand),
        "all_runs_s": {"hand": hand, "hand_plugin_outputs": hand_same, "step_warm": warm_s,
                       "step_cold": cold_s},
        "first_verdict_in_full_run_s": med(r["first_verdict_s"] for r in step_warm),
        "first_chunk_s": med(r["first_chunk_s"] for r in step_warm),
        "chunks": step_warm[0]["chunks"],
        "spare_used": all(r["spare_used"] for r in step_warm),
        "cpu_s": {
            "suricata_by_hand": _cpu_median(hand_cpu),
            "suricata_by_hand_plugin_outputs": _cpu_median(hand_same_cpu),
            "step_warm": {k: _cpu_median([r["cpu"][k] for r in step_warm])
                          for k in ("suricata", "pcapwire")},
            "step_warm_main_thread": med(r["cpu"]["main_thread"] for r in step_warm),
            "step_cold": {k: _cpu_median([r["cpu"][k] for r in step_cold])
                          for k in ("suricata", "pcapwire")},
        },
    }


def _cpu_median(runs: list[dict[str, float]]) -> dict[str, float]:
    """Medians of user, sys and user+sys over the rounds."""
    med = statistics.median
    return {"user": med(r["user"] for r in runs), "sys": med(r["sys"] for r in runs),
            "total": med(r["user"] + r["sys"] for r in runs)}


if __name__ == "__main__":
    main()
