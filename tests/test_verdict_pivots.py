"""Every verdict pivots: the shipped workflows (workflows/*.yaml), with local rules that
fire on the corpus and the real Suricata, over every corpus capture -- one query per
capture, and one query over all of them at once (a query that spans captures years apart:
where Suricata's end-of-run alerts used to carry the run's first packet time) -- and every
verdict produced, turned into an event-to-PCAP query the way a SIEM does it (the ECS
export's 5-tuple and ``@timestamp``, through the API's own
:func:`pcapwire.api.events.event_spec` with its ±60 s margin), finds packets.

Besides the corpus, one generated capture (:func:`suricatautil.eicar_at_the_end`) holds an
alert Suricata raises only when its input ends, on a pseudo packet it stamps with the
run's first packet time. Zeek is not installed here (its ``nsm`` step is an error record);
Zeek verdict times are tested on logs in test_zeek_verdicts.py."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from apiutil import GET_RULE
from conftest import CASES, corpus_file
from pcapwire.api.events import event_spec
from pcapwire.cases.export import verdict_to_ecs
from pcapwire.hooks.host import build_host
from pcapwire.query import QuerySpec
from pcapwire.records import PcapChunk, Verdict
from pcapwire.store import Store
from pcapwire.workflow.document import load_workflow
from pcapwire.workflow.engine import Engine
from suricatautil import eicar_at_the_end, our_zombies

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "workflows").glob("*.yaml"))
DEMO_RULES = REPO / "workflows" / "rules"
#: What the API's event-to-PCAP uses by default (ApiConfig.event_margin_s).
MARGIN_S = 60.0
#: Local Suricata rules that fire on the corpus: HTTP requests, DNS queries, TLS server
#: names, and TCP payload with a NUL byte (raw stream: also at flow timeouts).
SURICATA_RULES = GET_RULE + (
    'alert dns any any -> any any (msg:"pcapwire DNS query"; dns.query; content:"."; '
    'sid:1000002; rev:1;)\n'
    'alert tls any any -> any any (msg:"pcapwire TLS SNI"; tls.sni; content:"."; '
    'sid:1000003; rev:1;)\n'
    'alert tcp any any -> any any (msg:"pcapwire NUL in a TCP stream"; flow:established; '
    'content:"|00|"; sid:1000004; rev:1;)\n')
#: Local YARA rules that fire on the corpus' streams and files.
YARA_RULES = """
rule Pivot_HTTP_Message { strings: $a = "HTTP/1." condition: $a }
rule Pivot_Mail_Command { strings: $a = "MAIL FROM:" nocase $b = "RETR " $c = "FETCH "
                          condition: any of them }
rule Pivot_PDF { strings: $a = "%PDF-" condition: $a at 0 }
"""


def _overrides(rules: Path) -> dict[str, dict[str, Any]]:
    """Every workflow's steps get the local rules next to the shipped ones; Suricata
    without spares beyond the one the pool keeps for the next capture."""
    suricata = [str(DEMO_RULES / "pcapwire-demo.rules"), str(rules / "local.rules")]
    yara = [str(DEMO_RULES), str(rules / "local.yar")]
    return {"ids": {"rules": suricata, "on_rule_error": "fail"},
            "streams": {"rules": yara}, "yara": {"rules": yara}, "scan": {"rules": yara}}


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Case id -> capture: every corpus capture and the generated end-of-run one."""
    out = {case: corpus_file(case) for case in CASES}
    generated = tmp_path_factory.mktemp("gen") / "eicar-at-the-end.pcap"
    eicar_at_the_end(generated)
    out["generated-eicar-at-the-end"] = generated
    return out


async def _chunks(store: Store, spec: QuerySpec) -> AsyncIterator[PcapChunk]:
    for chunk in store.query_engine().iter_chunks(spec, query_id="q"):
        yield chunk


def _pivot_packets(store: Store, v: Verdict) -> int:
    """Packets of the event-to-PCAP query for this verdict as a SIEM holds it (ECS)."""
    doc = verdict_to_ecs(v)
    event = {"five_tuple": {"proto": doc["network"]["transport"],
                            "src_ip": doc["source"]["ip"], "src_port": doc["source"]["port"],
                            "dest_ip": doc["destination"]["ip"],
                            "dest_port": doc["destination"]["port"]},
             "timestamp": doc["@timestamp"]}
    spec, _parsed = event_spec(event, MARGIN_S, "pivot", None, None)
    return sum(chunk.packets for chunk in store.query_engine().iter_chunks(spec))


async def test_every_verdict_of_the_shipped_workflows_pivots_to_its_packets(
        captures: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no zeek, whatever the machine has
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "local.rules").write_text(SURICATA_RULES)
    (rules / "local.yar").write_text(YARA_RULES)
    host = build_host()
    missing = {"suricata", "yara", "carve", "hashlist", "sandbox"} - set(host.analyzers())
    if missing:
        pytest.skip(f"analyzers not installed in this tree: {sorted(missing)}")
    workflows = [load_workflow(path, host, overrides={
        sid: cfg for sid, cfg in _overrides(rules).items()
        if sid in {s["id"] for s in _steps(path)}}) for path in WORKFLOWS]
    assert {wf.name for wf in workflows} >= {"incident-triage", "file-hash-triage",
                                              "yara-streams"}
    engine = Engine(host, data_dir=tmp_path / "data")

    # one store per capture (one query each), and one store holding them all
    stores = {}
    for case, path in captures.items():
        stores[case] = Store(tmp_path / "stores" / case)
        stores[case].ingest([path])
    everything = Store(tmp_path / "stores" / "all")
    everything.ingest(list(captures.values()))
    stores["all captures in one query"] = everything

    started = time.monotonic()
    failures: list[str] = []
    produced: Counter[tuple[str, str]] = Counter()
    try:
        for case, store in stores.items():
            for wf in workflows:
                seen: list[Verdict] = []
                summary = await engine.run(wf, _chunks(store, QuerySpec()), case="pivots",
                                           query_id=f"{case}-{wf.name}",
                                           on_verdict=seen.append)
                for step in summary.steps:  # nothing but the absent Zeek may fail
                    if step.status in ("error", "timeout"):
                        ok = step.analyzer == "zeek" or (
                            case in ("zeek-linux-sll2", "all captures in one query")
                            and "link type 276" in step.reason)  # SLL2: Suricata 7 can't
                        assert ok, (case, wf.name, step.to_dict())
                for v in seen:
                    produced[wf.name, v.analyzer] += 1
                    if _pivot_packets(store, v) == 0:
                        failures.append(f"{case} / {wf.name}: {v.analyzer} "
                                        f"{v.signature_id} {v.flow.bpf()} at {v.ts} finds "
                                        "no packet")
    finally:
        await host.analyzer("suricata").aclose()
        for store in stores.values():
            store.close()
    elapsed = time.monotonic() - started
    assert failures == [], "\n".join(failures)
    # the workflows did produce verdicts of every analyzer that can run here
    for key in (("incident-triage", "suricata"), ("incident-triage", "yara"),
                ("yara-streams", "yara"), ("file-hash-triage", "hashlist"),
                ("file-hash-triage", "yara"), ("file-hash-triage", "sandbox")):
        assert produced[key] > 0, (key, dict(produced))
    assert sum(produced.values()) >= 100, dict(produced)
    assert our_zombies() == []
    print(f"{sum(produced.values())} verdicts from {len(stores)} queries x "
          f"{len(workflows)} workflows in {elapsed:.1f} s: {dict(produced)}")


def _steps(path: Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load(path.read_text())["steps"])
