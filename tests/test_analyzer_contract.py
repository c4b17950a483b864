"""The analyzer contract, finished: ``Analyzer[Config]`` types ``ctx.config`` (``Config``
comes from the type argument; a mismatch is reported), the host's ``aclose`` closes every
analyzer, and a host that runs one workflow and exits starts no spare engine: after
``pcapwire run`` (and ``pcapwire workflow test``) with a Suricata workflow, exactly the
run's engine was started, before the run ended, and no Suricata process is left. Counted
by wrapping the engine's start and the workflow engine's ``run`` (no sleeps)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import corpus_file
from pcapwire.cli import main
from pcapwire.hooks import RegisterAnalyzer, impl
from pcapwire.hooks.host import build_host
from pcapwire.plugins.suricata import engine as suricata_engine
from pcapwire.plugins.suricata.analyzer import SuricataAnalyzer, SuricataConfig
from pcapwire.plugins.suricata.config import SuricataSettings
from pcapwire.plugins.suricata.pool import EnginePool
from pcapwire.workflow import Analyzer, AnalyzerConfig, StepContext, option
from pcapwire.workflow import engine as workflow_engine
from pcapwire.workflow.analyzer import check_analyzer
from suricatautil import assert_reaped, our_zombies, proc_state

RULES = ('alert http any any -> any any (msg:"GET"; flow:established,to_server; '
         'http.method; content:"GET"; sid:8001; rev:1;)\n')


@dataclass(frozen=True)
class NeedleConfig(AnalyzerConfig):
    needle: str = option("x", kind="text", description="what to look for")


class Needle(Analyzer[NeedleConfig]):
    name = "c.needle"
    input_kind = "stream"
    version = "1"

    async def analyze(self, record: Any, ctx: StepContext[NeedleConfig]) -> Any:
        if ctx.config.needle.encode() in record.data:  # typed, no isinstance
            yield ctx.verdict_for(record, severity="low", signature="needle")


def test_config_comes_from_the_type_argument() -> None:
    assert Needle.Config is NeedleConfig and check_analyzer(Needle) == []
    assert SuricataAnalyzer.Config is SuricataConfig

    class Sub(Needle):  # inherits it
        name = "c.sub"

    @dataclass(frozen=True)
    class Other(AnalyzerConfig):
        pass

    class Wrong(Analyzer[NeedleConfig]):
        name = "c.wrong"
        input_kind = "stream"
        version = "1"
        Config = Other

        async def analyze(self, record: Any, ctx: Any) -> Any:
            yield

    assert Sub.Config is NeedleConfig and check_analyzer(Sub) == []
    assert check_analyzer(Wrong) == [
        "Config Other is not the NeedleConfig of Analyzer[NeedleConfig] (or a subclass of it)"]


async def test_the_hosts_aclose_closes_every_analyzer(caplog: pytest.LogCaptureFixture) -> None:
    closed: list[str] = []

    class Closing(Needle):
        name = "c.closing"

        async def aclose(self) -> None:
            closed.append(self.name)

    class Failing(Needle):
        name = "c.failing"

        async def aclose(self) -> None:
            closed.append(self.name)
            raise OSError("engine already gone")

    class Plugin:
        @impl
        def pcapwire_register_analyzers(self, register: RegisterAnalyzer) -> None:
            register(Failing)
            register(Closing)
            register(Needle)  # the default aclose keeps nothing

    host = build_host(entry_points=False, extra=[Plugin()])
    await host.aclose()
    assert closed == ["c.closing", "c.failing"]  # by name; one failing stops nothing
    assert [r.getMessage() for r in caplog.records if "aclose" in r.getMessage()] == [
        "analyzer c.failing (plugin Plugin): aclose() failed"]


async def test_a_closed_pool_starts_no_spare(tmp_path: Path) -> None:
    rules = tmp_path / "r.rules"
    rules.write_text(RULES)
    settings = SuricataSettings.from_mapping({"rules": [str(rules)], "warm_spares": 2})
    analyzer = SuricataAnalyzer()
    pool = analyzer.pool()
    await analyzer.aclose()
    assert analyzer.pool() is pool  # this loop's pool stays closed
    pool.release(settings)  # a run that ends after the host closed
    pool.warm(settings)
    assert (pool.spares, pool.started) == (0, 0)
    assert EnginePool().spares == 0


def _workflow(tmp_path: Path) -> Path:
    rules = tmp_path / "t.rules"
    rules.write_text(RULES)
    wf = tmp_path / "ids.yaml"
    wf.write_text(f"""
name: ids
steps:
  - id: ids
    uses: suricata
    with:
      rules: ["{rules}"]
      args: ["-k", "none"]
      warm_spares: 2
""")
    return wf


def _suricata_children() -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            state = proc_state(int(entry.name))
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if state and state[1] == os.getpid() and "suricata" in comm.lower():
                out.append(int(entry.name))
    return out


@pytest.mark.parametrize("command", ["run", "workflow test"])
def test_the_cli_starts_no_spare_and_leaves_no_process(
        command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    starts: list[tuple[Any, bool]] = []  # (engine, whether the run had ended)
    run_ended = [False]
    original_start = suricata_engine.SuricataEngine.start
    original_run = workflow_engine.Engine.run

    async def start(self: Any) -> None:
        starts.append((self, run_ended[0]))
        await original_start(self)

    async def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original_run(self, *args, **kwargs)
        finally:
            run_ended[0] = True

    monkeypatch.setattr(suricata_engine.SuricataEngine, "start", start)
    monkeypatch.setattr(workflow_engine.Engine, "run", run)
    monkeypatch.setenv("PCAPWIRE_LOAD_PLUGINS", "suricata")
    wf, pcap = _workflow(tmp_path), corpus_file("zeek-http-get")
    expect = tmp_path / "expect.yaml"
    expect.write_text("verdicts:\n  - {signature_id: '8001'}\n")
    argv = (["run", str(wf), "--pcap", str(pcap), "--no-store"] if command == "run" else
            ["workflow", "test", str(wf), "--pcap", str(pcap), "--expect", str(expect)])
    assert main(["--data-dir", str(tmp_path / "data"), *argv]) == 0, capsys.readouterr()
    assert run_ended == [True]
    assert [ended for _engine, ended in starts] == [False]  # the run's engine, no spare
    for engine, _ended in starts:
        assert_reaped(engine.pid)
    assert _suricata_children() == [] and our_zombies() == []


async def test_the_api_closes_the_analyzers_before_it_cancels_the_queries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At shutdown the host's aclose comes first: runs cancelled afterwards find the
    Suricata pool closed and warm no spare."""
    from aiohttp.test_utils import TestClient, TestServer
    from pcapwire.api import ApiConfig, create_app
    from pcapwire.api.jobs import QueryManager
    from pcapwire.hooks.host import PluginHost

    calls: list[str] = []
    host_aclose, manager_close = PluginHost.aclose, QueryManager.close

    async def aclose(self: Any) -> None:
        calls.append("host.aclose")
        await host_aclose(self)

    async def close(self: Any) -> None:
        calls.append("queries.close")
        await manager_close(self)

    monkeypatch.setattr(PluginHost, "aclose", aclose)
    monkeypatch.setattr(QueryManager, "close", close)
    monkeypatch.setenv("PCAPWIRE_LOAD_PLUGINS", "suricata")
    async with TestClient(TestServer(create_app(ApiConfig(data_dir=tmp_path)))) as client:
        assert (await client.get("/api/v1/health")).status == 200
        assert calls == []
    assert calls == ["host.aclose", "queries.close"]
