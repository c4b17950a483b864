"""Trigger engines: how long Suricata takes to start (spawned -> rules loaded -> waiting
for input) with N indicators of a trigger, as the engines run them.

    python benchmarks/bench_trigger_engines.py [--repeat 3] [--sizes 10,1000,10000]

Per N (domains; and a mix of N/4 exact domains, N/4 wildcard domains, N/4 URLs and N/4
JA3 hashes): the generated rules and datasets of :mod:`pcapwire.triggers.indicator_rules`,
loaded by the plugin's own engine (:class:`pcapwire.plugins.suricata.engine.SuricataEngine`
with the settings the trigger's workflow step gets). For comparison, the same N domains
as one ``content:"<name>"; startswith; endswith;`` rule per domain and buffer (DNS query,
TLS SNI, HTTP Host): the design the datasets replaced. Median of ``--repeat`` starts
(the content-rule variant once above 1,000 domains: it takes tens of seconds).
Results are printed and written to benchmarks/results/trigger_engines.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pcapwire.errors import AnalyzerError
from pcapwire.plugins.suricata.analyzer import SuricataConfig, to_settings
from pcapwire.plugins.suricata.engine import SuricataEngine
from pcapwire.triggers.match_engines import ALERT_EVE, TriggerEngines
from pcapwire.triggers.model import from_dict

RESULTS = Path(__file__).parent / "results" / "trigger_engines.json"


def definitions(n: int) -> dict[str, dict[str, Any]]:
    q = max(1, n // 4)
    return {
        "domains": {"domains": [f"host{i}.evil{i % 97}.example" for i in range(n)]},
        "mix": {"domains": [f"host{i}.evil.example" for i in range(q)]
                + [f"*.w{i}.example" for i in range(q)],
                "urls": [f"http://u{i}.example/path/{i}?q={i}" for i in range(q)],
                "ja3": [f"{i:032x}" for i in range(q)]},
    }


def content_rules(n: int, path: Path) -> Path:
    sid, lines = 1, []
    for i in range(n):
        name = f"host{i}.evil{i % 97}.example"
        for proto, buf in (("dns", "dns.query"), ("tls", "tls.sni"), ("http", "http.host")):
            nocase = "" if proto == "http" else " nocase;"
            lines.append(f'alert {proto} any any -> any any (msg:"d"; {buf}; '
                         f'content:"{name}";{nocase} startswith; endswith; sid:{sid};)')
            sid += 1
    path.write_text("\n".join(lines) + "\n")
    return path


async def start_seconds(settings: Any) -> tuple[float | None, int | None]:
    """Seconds to rules loaded (None: not within the engine's start timeout), rules."""
    engine = SuricataEngine(settings)
    t = time.monotonic()
    try:
        await engine.start()
        return time.monotonic() - t, engine.rule_log.signatures
    except AnalyzerError:
        return None, engine.rule_log.loaded
    finally:
        await engine.kill()


def trigger_settings(indicators: dict[str, list[str]], work: Path) -> Any:
    engines = TriggerEngines(from_dict({"name": "bench", "indicators": indicators}), work)
    (step,) = engines.workflow.steps
    return to_settings(step.config)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", default="10,1000,10000")
    args = ap.parse_args()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-trigger-engines-") as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            variants = {f"datasets:{k}": trigger_settings(ind, Path(tmp) / f"{k}{n}")
                        for k, ind in definitions(n).items()}
            rules = content_rules(n, Path(tmp) / f"content{n}.rules")
            variants["content-rules:domains"] = to_settings(SuricataConfig.from_mapping(
                {"rules": [str(rules)], "eve_types": ALERT_EVE, "warm_spares": 0}))
            for name, settings in variants.items():
                repeat = 1 if name.startswith("content") and n > 1000 else args.repeat
                runs = [await start_seconds(settings) for _ in range(repeat)]
                times = [r[0] for r in runs]
                loaded = [t for t in times if t is not None]
                row = {"indicators": n, "variant": name, "rules_loaded": runs[0][1],
                       "start_s": (round(statistics.median(loaded), 3)
                                   if len(loaded) == len(times) else
                                   f"> {settings.start_timeout:g} (did not load)"),
                       "runs": [None if t is None else round(t, 3) for t in times]}
                print(json.dumps(row))
                results.append(row)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"results": results}, indent=1) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
