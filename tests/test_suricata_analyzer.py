"""The analyzers under the workflow contract (sessions driven the way the engine drives
them: start, feed in order, finish, always aclose), registration through the plugin host,
the warm-spare pool, and the shipped incident-triage workflow's step settings."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import corpus_file
from pcapwire.errors import AnalyzerError, ConfigError
from pcapwire.hooks.host import build_host
from pcapwire.plugins.enginekit.keep import keep_dir
from pcapwire.plugins.suricata.analyzer import METADATA_FILE, SuricataAnalyzer
from pcapwire.plugins.suricata.config import SuricataSettings
from pcapwire.plugins.suricata.pool import MAX_SPARE_CONFIGS, EnginePool
from pcapwire.plugins.zeek.analyzer import ZeekAnalyzer
from pcapwire.records import PcapChunk, Verdict
from pcapwire.workflow import RunInfo, StepContext
from suricatautil import assert_reaped, our_zombies

REPO = Path(__file__).resolve().parents[1]
FAKE_ZEEK = Path(__file__).parent / "data" / "fake_zeek" / "zeek"
RULES = ('alert http any any -> any any (msg:"GET"; flow:established,to_server; http.method; '
         'content:"GET"; sid:5001; rev:1;)\n')


def _chunk(query: str = "q1") -> PcapChunk:
    return PcapChunk(query, 0, 1, 65535, corpus_file("zeek-http-get").read_bytes(), 14, 0, 0)


def _ctx(analyzer: Any, config: dict[str, Any], tmp: Path, out: list[Any],
         query: str = "q1", case: str = "c1") -> StepContext:
    async def emit(item: Any) -> None:
        out.append(item)

    return StepContext(run=RunInfo(run_id=f"r-{query}", workflow="t", case=case,
                                   query_id=query),
                       step="ids", analyzer=analyzer.name,
                       config=type(analyzer).Config.from_mapping(config),
                       workdir=tmp / f"work-{query}", outputs=analyzer.outputs, emit_fn=emit)


async def _drive(analyzer: Any, ctx: StepContext, chunks: list[PcapChunk]) -> Any:
    session = analyzer.open_session(ctx)
    try:
        await session.start()
        for chunk in chunks:
            await session.feed(chunk)
        await session.finish()
        return session
    finally:
        await session.aclose()


def test_both_analyzers_register_through_the_entry_points() -> None:
    host = build_host()
    assert {"suricata", "zeek"} <= set(host.analyzers())
    assert not [f for f in host.failures if f.name in ("suricata", "zeek")]
    assert host.analyzers()["suricata"].plugin == "suricata"
    assert host.analyzer("zeek").input_kind == "pcap"


async def test_second_run_starts_on_a_spare_loaded_before_it_was_asked_for(
        tmp_path: Path) -> None:
    rules = tmp_path / "r.rules"
    rules.write_text(RULES)
    analyzer = SuricataAnalyzer()
    out: list[Any] = []
    cfg = {"rules": [str(rules)], "args": ["-k", "none"], "keep_dir": str(tmp_path / "keep")}
    first = await _drive(analyzer, _ctx(analyzer, cfg, tmp_path, out, "q1"), [_chunk("q1")])
    assert first.result.sid_counts() == {5001: 1}
    pool = analyzer.pool()
    assert pool.spares == 1
    spare = await next(iter(pool._spares.values()))[0]  # started when q1 took its engine
    asked = time.monotonic()
    ctx2 = _ctx(analyzer, cfg, tmp_path, out, "q2")
    session = analyzer.open_session(ctx2)
    await session.start()
    engine = session.run._first
    assert engine is spare and engine.ready_at is not None and engine.ready_at < asked
    assert pool.reused == 1
    await session.feed(_chunk("q2"))
    await session.finish()
    await session.aclose()
    assert [(v.query_id, v.case, v.step, v.signature_id) for v in out] == [
        ("q1", "c1", "ids", "5001"), ("q2", "c1", "ids", "5001")]
    meta = [json.loads(line) for line in
            (tmp_path / "keep" / "c1" / "q2-ids" / METADATA_FILE).read_text().splitlines()]
    assert [m["event_type"] for m in meta] == ["http", "fileinfo"]  # Suricata's own EVE
    assert meta[0]["http"]["url"] == "/download/CHANGES.bro-aux.txt"
    assert [meta[0][k] for k in ("proto", "src_ip", "src_port", "dest_ip", "dest_port")] == [
        "TCP", "141.142.228.5", 59856, "192.150.187.43", 80]
    assert meta[0]["flow_id"] == out[1].evidence["flow_id"]  # linked to the alert's flow
    pids = [t.result().pid for group in pool._spares.values() for t in group if t.done()]
    await analyzer.aclose()
    for pid in pids:
        assert_reaped(pid)
    assert our_zombies() == []


async def test_session_errors_end_the_step_and_aclose_reaps(tmp_path: Path) -> None:
    """A broken rule with on_rule_error=fail: start() raises with file and line; a chunk
    of the wrong kind is refused; aclose() leaves nothing running."""
    rules = tmp_path / "bad.rules"
    rules.write_text(RULES + 'alert tcp any any -> any any (msg:"x"; bogus; sid:2; rev:1;)\n')
    analyzer = SuricataAnalyzer()
    session = analyzer.open_session(_ctx(analyzer, {"rules": [str(rules)]}, tmp_path, []))
    with pytest.raises(AnalyzerError, match=rf"{rules}:2: unknown rule keyword 'bogus'"):
        await session.start()
    await session.aclose()
    rules.write_text(RULES)
    session = analyzer.open_session(_ctx(analyzer, {"rules": [str(rules)]}, tmp_path, []))
    await session.start()
    with pytest.raises(AnalyzerError, match="takes pcap chunks, not str"):
        await session.feed("not a chunk")
    pids = [e.pid for e, _t in session.run._engines.values()] + [session.run._first.pid]
    await session.aclose()
    await analyzer.aclose()
    for pid in pids:
        assert_reaped(pid)
    with pytest.raises(ConfigError, match="with.rulez: unknown key 'rulez'"):
        SuricataAnalyzer.Config.from_mapping({"rulez": []})


async def test_a_spare_loads_after_a_run_and_stale_rules_are_not_used(
        tmp_path: Path) -> None:
    """The next spare starts when a run ends (not while it runs: loading rules would
    compete for CPU); after a rule file changed, the spare with the old rules is not used."""
    rules = tmp_path / "r.rules"
    rules.write_text(RULES)
    pool = EnginePool()
    settings = SuricataSettings.from_mapping({"rules": [str(rules)]})
    engine = await pool.acquire(settings)
    assert pool.spares == 0  # nothing loads while the run's engine works
    await engine.kill()
    pool.release(settings)
    stale = await next(iter(pool._spares.values()))[0]
    before = settings.fingerprint()
    rules.write_text(RULES.replace("sid:5001", "sid:5002"))
    assert settings.fingerprint() != before
    engine = await pool.acquire(settings)
    assert engine is not stale and pool.reused == 0 and pool.started == 3
    await engine.kill()
    await pool.close()
    assert_reaped(stale.pid)
    assert MAX_SPARE_CONFIGS == 4


async def test_zeek_session_with_fake_zeek_keeps_logs_with_the_case(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FAKE Zeek (tests/data/fake_zeek): the session emits the notice and weird verdicts
    at finish and leaves the logs plus metadata.json in the keep directory."""
    monkeypatch.setenv("PCAPWIRE_FAKE_ZEEK_MODE", "ok")
    analyzer = ZeekAnalyzer()
    out: list[Verdict] = []
    cfg = {"binary": str(FAKE_ZEEK), "keep_dir": str(tmp_path / "cases")}
    session = await _drive(analyzer, _ctx(analyzer, cfg, tmp_path, out, "q7", "inc-1"),
                           [_chunk("q7")])
    run_dir = tmp_path / "cases" / "inc-1" / "q7-ids"
    assert session.log_dir == run_dir
    assert sorted(p.name for p in run_dir.glob("*.log")) == ["conn.log", "notice.log",
                                                             "weird.log"]
    assert [(v.signature_id, v.case, v.query_id) for v in out] == [
        ("Fake::Notice", "inc-1", "q7"), ("fake_weird", "inc-1", "q7")]
    meta = [json.loads(x) for x in (run_dir / "metadata.json").read_text().splitlines()]
    assert [(m["log"], m["flow"]["src_ip"]) for m in meta] == [("conn", "141.142.228.5")]


async def test_zeek_without_binary_is_one_clear_step_error(tmp_path: Path) -> None:
    analyzer = ZeekAnalyzer()
    session = analyzer.open_session(_ctx(analyzer, {"binary": "no-such-zeek"}, tmp_path, []))
    with pytest.raises(AnalyzerError, match="^zeek not found; set the step's 'binary'"):
        await session.start()
    await session.aclose()


def test_keep_dir_names_are_sanitised(tmp_path: Path) -> None:
    def ctx(**kw: Any) -> StepContext:
        return StepContext(run=RunInfo(run_id="r1", workflow="w", case="../../etc",
                                       query_id="q/../1"),
                           step="ids", analyzer="zeek", config=ZeekAnalyzer.Config(),
                           workdir=tmp_path / "scratch", **kw)

    where, kept = keep_dir(ctx(), str(tmp_path / "k"), "zeek")
    assert kept and where == tmp_path / "k" / "etc" / "q_.._1-ids"
    where, kept = keep_dir(ctx(data_dir=tmp_path / "data"), "", "zeek")
    assert kept and where == tmp_path / "data" / "cases" / "etc" / "zeek" / "q_.._1-ids"
    where, kept = keep_dir(ctx(), "", "zeek")
    assert not kept and where == tmp_path / "scratch" / "zeek" / "q_.._1-ids"
    where, kept = keep_dir(ctx(base_dir=tmp_path / "wf", data_dir=tmp_path / "d"),
                           "{data_dir}/kept", "zeek")
    assert where == tmp_path / "d" / "kept" / "etc" / "q_.._1-ids"


def test_shipped_workflow_loads_and_its_rules_load_in_suricata(tmp_path: Path) -> None:
    """incident-triage.yaml against the workflow schema and every analyzer's checks
    (``check_config``: Suricata loads the shipped rules with ``suricata -T``)."""
    from pcapwire.plugins.suricata.analyzer import to_settings
    from pcapwire.workflow.document import check_workflow

    path = REPO / "workflows" / "incident-triage.yaml"
    doc = yaml.safe_load(path.read_text())
    schema = json.loads((REPO / "core" / "workflow" / "workflow.schema.json").read_text())
    jsonschema.validate(doc, schema)
    host = build_host()
    if "yara" not in host.analyzers():
        pytest.skip("the yara analyzer (its own plugin) is not installed in this tree")
    wf, problems = check_workflow(path, host)
    assert wf is not None and problems == []
    assert {s.uses for s in wf.steps} == {"suricata", "zeek", "yara"}
    assert wf.triggered_by("any-case", "any-event")
    ids = wf.step("ids")
    settings = to_settings(ids.config, wf.base_dir)
    assert settings.rule_files() == [REPO / "workflows" / "rules" / "pcapwire-demo.rules"]
    assert settings.ja3 and settings.ja4
    assert SuricataAnalyzer().check_config(ids.config, wf.base_dir) == []
    bad = tmp_path / "bad.rules"
    bad.write_text(RULES + 'alert tcp any any -> any any (msg:"x"; nope; sid:3; rev:1;)\n')
    cfg = SuricataAnalyzer.Config.from_mapping({"rules": ["bad.rules"]})
    assert SuricataAnalyzer().check_config(cfg, tmp_path) == [
        f"{bad}:2: unknown rule keyword 'nope'."]
