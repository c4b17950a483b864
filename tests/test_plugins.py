"""The plugin system: entry-point discovery (built-in plugins and third-party ones through
the same group), failures reported while everything else loads, hook validation,
analyzer declarations, allow/block lists, ``pcapwire plugins list``, and meta-tests that
every hook specification is documented and exercised (Datasette's test_docs idea).

Third-party plugins here are real installed distributions: a ``*.dist-info`` directory
with ``entry_points.txt`` next to the plugin module, on ``sys.path`` (what pip writes)."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import workflow_plugins as wp
from pcapwire.hooks import spec
from pcapwire.hooks.host import build_host
from pcapwire.workflow.engine import Engine
from pcapwire.workflow.sources import file_chunks

TESTS = Path(__file__).resolve().parent
BUILTINS = {"carve", "hashlist", "sandbox", "suricata", "yara", "zeek"}

GOOD = '''
from dataclasses import dataclass
from pcapwire.hooks import impl
from pcapwire.workflow import Analyzer, AnalyzerConfig, option


class Upper(Analyzer):
    name = "good.upper"
    input_kind = "stream"
    version = "2.1"
    description = "flags streams written in capitals"

    @dataclass(frozen=True)
    class Config(AnalyzerConfig):
        min_len: int = option(4, minimum=1, description="shortest run of capitals")

    async def analyze(self, record, ctx):
        if False:
            yield


@impl
def pcapwire_register_analyzers(register):
    register(Upper)
'''
BROKEN = "import this_module_does_not_exist  # noqa\n"
BAD_HOOK = '''
from pcapwire.hooks import impl

@impl
def pcapwire_verdict_sink(verdict):  # misspelt: no such hook
    pass
'''
BAD_ANALYZERS = '''
from pcapwire.hooks import impl
from pcapwire.workflow import Analyzer


class NoKind(Analyzer):
    name = "bad.nokind"
    input_kind = "packets"
    version = "1"

    async def analyze(self, record, ctx):
        yield


class Taken(Analyzer):
    name = "yara"  # the built-in YARA plugin has it
    input_kind = "stream"
    version = "1"

    async def analyze(self, record, ctx):
        yield


class Fine(Analyzer):
    name = "bad.fine"
    input_kind = "file"
    version = "1"

    async def analyze(self, record, ctx):
        yield


@impl
def pcapwire_register_analyzers(register):
    register(NoKind)
    register(Taken)
    register(Fine)
'''


def install(site: Path, dist: str, version: str, modules: dict[str, str],
            entry_points: dict[str, str]) -> None:
    """What ``pip install`` leaves behind: modules and a dist-info with entry points."""
    for name, text in modules.items():
        (site / f"{name}.py").write_text(text)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        "[pcapwire]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    install(site, "pcapwire-good", "1.2", {"good_plugin": GOOD}, {"good": "good_plugin"})
    install(site, "pcapwire-broken", "0.1", {"broken_plugin": BROKEN},
            {"broken": "broken_plugin"})
    install(site, "pcapwire-badhook", "0.1", {"badhook_plugin": BAD_HOOK},
            {"badhook": "badhook_plugin"})
    install(site, "pcapwire-badanalyzers", "0.3", {"badanalyzers_plugin": BAD_ANALYZERS},
            {"zbad": "badanalyzers_plugin"})  # loads after "yara" (entry-point name order)
    monkeypatch.syspath_prepend(str(site))
    for mod in ("good_plugin", "broken_plugin", "badhook_plugin", "badanalyzers_plugin"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    return site


def test_builtin_plugins_load_through_the_entry_point_group() -> None:
    host = build_host()
    assert BUILTINS <= set(host.plugins)
    yara = host.plugins["yara"]
    assert (yara.source, yara.module, yara.dist, yara.analyzers, yara.error) == (
        "entry point pcapwire.plugins.yara (pcapwire 0.1.0)", "pcapwire.plugins.yara",
        "pcapwire", ["yara"], "")
    assert host.analyzers()["yara"].plugin == "yara"
    assert [f.name for f in host.failures] == []


def test_failures_are_reported_and_everything_else_loads(site: Path) -> None:
    host = build_host()
    assert BUILTINS | {"good", "zbad"} <= set(host.plugins)
    assert "broken" not in host.plugins and "badhook" not in host.plugins
    good = host.plugins["good"]
    assert (good.source, good.dist, good.dist_version, good.analyzers, good.hooks) == (
        "entry point good_plugin (pcapwire-good 1.2)", "pcapwire-good", "1.2",
        ["good.upper"], ["pcapwire_register_analyzers"])
    failures = {f.name: f.error for f in host.failures}
    assert set(failures) == {"broken", "badhook", "zbad"}
    assert re.fullmatch(r"import failed: ModuleNotFoundError: No module named "
                        r"'this_module_does_not_exist' \(.*broken_plugin\.py:1\)",
                        failures["broken"])
    assert failures["badhook"].startswith("unknown hook: unknown hook 'pcapwire_verdict_sink' "
                                          "in plugin ")
    assert failures["zbad"] == (
        "analyzer 'bad.nokind': input_kind 'packets' must be one of pcap, stream, file, "
        "email, verdict (or a tuple of them); analyzer 'yara' is already registered by "
        "plugin 'yara'")
    # the plugin's valid analyzer still loads; the first plugin keeps the name
    assert host.plugins["zbad"].analyzers == ["bad.fine"]
    assert host.analyzers()["yara"].plugin == "yara"
    assert set(host.analyzers()) >= {"good.upper", "bad.fine", "yara", "suricata"}


def test_allow_and_block_lists(site: Path) -> None:
    host = build_host(env={"PCAPWIRE_LOAD_PLUGINS": "good, yara"})
    assert (set(host.plugins), host.failures) == ({"good", "yara"}, [])
    host = build_host(env={"PCAPWIRE_LOAD_PLUGINS": ""})
    assert (host.plugins, host.analyzers()) == ({}, {})
    host = build_host(env={"PCAPWIRE_BLOCK_PLUGINS": "broken,badhook,zbad"})
    assert host.failures == [] and "good" in host.plugins


def test_a_registration_hook_that_raises_fails_only_its_plugin() -> None:
    class Mine(wp.Analyzer):
        name = "mine"
        input_kind = "stream"
        version = "1"

        async def analyze(self, record: Any, ctx: Any) -> Any:
            yield

    class Exploding:
        @wp.impl
        def pcapwire_register_analyzers(self, register: Any) -> None:
            register(Mine)
            raise RuntimeError("config file missing")

    host = build_host(entry_points=False, extra=[Exploding(), wp])
    (failure,) = host.failures
    assert failure.name == "Exploding"
    assert re.fullmatch(r"pcapwire_register_analyzers raised RuntimeError: config file "
                        r"missing \(.*test_plugins\.py:\d+\)", failure.error)
    # what it registered before raising stays, and the other plugin is whole
    assert host.plugins["Exploding"].analyzers == ["mine"]
    assert {c.name for c in wp.ANALYZERS} <= set(host.analyzers())
    with pytest.raises(Exception, match="^Exploding: pcapwire_register_analyzers raised"):
        build_host(entry_points=False, extra=[Exploding()], strict=True)


def test_unknown_analyzer_lists_the_known_ones() -> None:
    host = build_host(entry_points=False, extra=[wp])
    with pytest.raises(Exception) as exc:
        host.analyzer("t.nope")
    assert str(exc.value) == ("unknown analyzer 't.nope'; available: t.badstart, t.block, "
                              "t.escalate, t.flood, t.hang, t.mailer, t.needle, t.producer, "
                              "t.raise, t.session, t.subject, t.subprocess")


def run_cli(*args: str, pythonpath: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, **(env or {}))
    if pythonpath is not None:
        full["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-m", "pcapwire.cli", *args], capture_output=True,
                          text=True, env=full, timeout=120)


def test_plugins_list_cli(site: Path) -> None:
    env = {"PCAPWIRE_LOAD_PLUGINS": "good,broken,badhook,yara"}
    done = run_cli("plugins", "list", pythonpath=site, env=env)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    import yara

    assert lines[:9] == [
        "good  [entry point good_plugin (pcapwire-good 1.2)]",
        "  hooks: pcapwire_register_analyzers",
        "  analyzer good.upper 2.1: stream -> verdict  (flags streams written in capitals)",
        "yara  [entry point pcapwire.plugins.yara (pcapwire 0.1.0)]",
        "  hooks: pcapwire_register_analyzers",
        f"  analyzer yara 1.0 (libyara {yara.__version__}): stream|file -> verdict  "
        "(YARA rules over reassembled streams and carved files)",
        "badhook  [entry point badhook_plugin (pcapwire-badhook 0.1)]",
        lines[7],
        "broken  [entry point broken_plugin (pcapwire-broken 0.1)]",
    ]  # failures last, by name
    assert lines[7].startswith("  FAILED: unknown hook: unknown hook 'pcapwire_verdict_sink'")
    assert re.fullmatch(r"  FAILED: import failed: ModuleNotFoundError: No module named "
                        r"'this_module_does_not_exist' \(.*broken_plugin\.py:1\)", lines[9])
    assert len(lines) == 10
    done = run_cli("plugins", "list", "--json", pythonpath=site, env=env)
    doc = json.loads(done.stdout)
    assert done.returncode == 1
    assert [p["name"] for p in doc["plugins"]] == ["good", "yara"]
    assert [f["name"] for f in doc["failures"]] == ["badhook", "broken"]
    upper = next(a for a in doc["analyzers"] if a["name"] == "good.upper")
    assert upper == {
        "name": "good.upper", "input_kinds": ["stream"], "outputs": ["verdict"],
        "version": "2.1", "description": "flags streams written in capitals",
        "plugin": "good", "unavailable": None,
        "config_schema": {"type": "object", "additionalProperties": False, "properties": {
            "min_len": {"type": "integer", "description": "shortest run of capitals",
                        "minimum": 1, "default": 4}}}}
    ok = run_cli("plugins", "list", env={"PCAPWIRE_LOAD_PLUGINS": "yara"})
    assert ok.returncode == 0 and ok.stdout.splitlines()[0].startswith("yara  [entry point")


async def test_a_failing_sink_does_not_stop_the_run_or_the_other_sinks(
        caplog: pytest.LogCaptureFixture) -> None:
    class FailingSink:
        @wp.impl
        def pcapwire_verdict(self, verdict: Any) -> None:
            raise OSError("SIEM unreachable")

        @wp.impl
        async def pcapwire_case_completed(self, summary: Any) -> None:
            raise ValueError("report failed")

    wp.STATE = wp.State()
    host = build_host(entry_points=False, extra=[wp, FailingSink()])
    from conftest import corpus_file
    from pcapwire.workflow.document import load_workflow

    wf = load_workflow("<t>", host, text="name: t\nsteps:\n  - uses: t.needle\n"
                       "    with: {needle: EHLO}\n")
    summary = await Engine(host).run(wf, file_chunks(corpus_file("zeek-smtp-two-messages")))
    assert summary.status == "ok" and summary.verdicts == 2
    assert [c[0] for c in wp.STATE.hook_calls] == ["run_started", "verdict", "verdict",
                                                   "case_completed"]
    failed = sorted(r.getMessage() for r in caplog.records if "failed" in r.getMessage())
    assert failed == ["plugin FailingSink: pcapwire_case_completed failed",
                      "plugin FailingSink: pcapwire_verdict failed",
                      "plugin FailingSink: pcapwire_verdict failed"]


# ---- meta-tests --------------------------------------------------------------------------
HOOKS = sorted(n for n, f in vars(spec).items() if n.startswith("pcapwire_") and callable(f))


def test_the_hook_set() -> None:
    assert HOOKS == ["pcapwire_case_completed", "pcapwire_register_analyzers",
                     "pcapwire_register_commands", "pcapwire_run_started", "pcapwire_verdict"]


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_documented(name: str) -> None:
    """A third-party author works from the docstring: when it is called, every
    parameter, and what the return value means."""
    fn = getattr(spec, name)
    doc = inspect.getdoc(fn) or ""
    assert len(doc.splitlines()[0]) > 20, f"{name}: no summary line"
    for param in inspect.signature(fn).parameters:
        assert f":param {param}:" in doc, f"{name}: parameter {param} undocumented"
    assert ":return:" in doc, f"{name}: return value undocumented"
    assert "Called" in doc, f"{name}: does not say when it is called"


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_has_a_test(name: str) -> None:
    """Each hook is implemented by a plugin the tests load (so its call is tested)."""
    sources = [p.read_text() for p in TESTS.glob("*.py") if p.name != Path(__file__).name]
    sources.append(GOOD)
    assert any(f"def {name}(" in s for s in sources), f"no test plugin implements {name}"


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_named_in_the_readme(name: str) -> None:
    """The README's plugin paragraph lists every hook a plugin can implement."""
    assert f"`{name}`" in (TESTS.parent / "README.md").read_text()
