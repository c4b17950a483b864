"""Security finding 9.1/9.2: a workflow posted to ``POST /api/v1/workflows/validate`` (open
to viewers) may read only inside its tenant's ``workflows/`` and ``rules/`` directories,
never chooses a program, never echoes another file's contents, and is checked in a child
process with time and memory limits, off the event loop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from apiutil import Tokens
from pcapwire.api import ApiConfig, create_app
from pcapwire.workflow.config import AnalyzerConfig, option
from pcapwire.workflow.confine import (
    MAX_CONFINED_FILE_BYTES,
    MAX_CONFINED_WALK_ENTRIES,
    Confinement,
    confine_config,
)
from pcapwire.workflow.isolated import CheckFailed, CheckLimits, check_isolated

SECRET = "pcw_SECRET_token_of_globex_0123456789"


@pytest.fixture
async def api(aiohttp_client, tmp_path):
    data = tmp_path / "data"
    tokens = Tokens(data)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=data)))
    acme = data / "tenants" / "acme"
    globex = data / "tenants" / "globex"
    for d in (acme / "rules", acme / "workflows", globex / "results"):
        d.mkdir(parents=True)
    (globex / "results" / "admin-token.txt").write_text(SECRET + "\n")

    async def validate(text: str) -> dict:
        resp = await client.post("/api/v1/workflows/validate", data=text.encode(),
                                 headers={**tokens.headers("acme", "viewer"),
                                          "Content-Type": "application/yaml"})
        assert resp.status == 200, await resp.text()
        return await resp.json()

    return validate, acme, globex, tmp_path


def _messages(body: dict) -> str:
    return "\n".join(p["message"] for p in body["problems"])


def _step(uses: str, with_: str) -> str:
    return f"name: probe\nsteps:\n  - id: s\n    uses: {uses}\n    with:\n{with_}"


async def test_suricata_binary_from_a_posted_workflow_never_runs(api):
    validate, _acme, _globex, tmp = api
    marker = tmp / "ran"
    script = tmp / "evil.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    body = await validate(_step("suricata", f"      binary: {script}\n"
                                            "      rules: ['../rules/x.rules']\n"))
    assert body["valid"] is False
    assert "'binary' is set by the server's configuration" in _messages(body)
    assert not marker.exists()


@pytest.mark.parametrize("option_line", [
    "      args: ['--set', 'outputs.0.fast.filename=/tmp/x']\n",
    "      set: {default-log-dir: /tmp}\n",
    "      keep_dir: /tmp/elsewhere\n",
    "      base_config: /etc/passwd\n",
])
async def test_server_only_suricata_options_are_refused(api, option_line):
    validate, *_ = api
    body = await validate(_step("suricata", option_line))
    key = option_line.split(":")[0].strip()
    assert body["valid"] is False
    assert f"{key!r} is set by the server's configuration" in _messages(body)


async def test_sandbox_cannot_send_server_secrets_to_a_url_of_the_callers(api):
    validate, *_ = api
    body = await validate(_step("sandbox", "      backend: cape\n"
                                           "      cape_url: http://127.0.0.1:9/\n"
                                           "      cape_token_env: HOME\n"))
    messages = _messages(body)
    assert "'cape_url' is set by the server's configuration" in messages
    assert "'cape_token_env' is set by the server's configuration" in messages


@pytest.mark.parametrize("path", ["/etc/passwd", "/etc/no-such-file", "../../globex/results",
                                  "{data_dir}/../globex/results/admin-token.txt",
                                  "{data_dir}/catalog.sqlite"])
async def test_paths_outside_the_tenant_give_one_answer_whether_or_not_they_exist(api, path):
    validate, *_ = api
    body = await validate(_step("suricata", f"      rules: ['{path}']\n"))
    (problem,) = body["problems"]
    assert problem["message"].startswith("rules: ") and problem["message"].endswith(
        "is outside this tenant's workflow and rule directories; a workflow submitted "
        "through the API reads only files inside them (relative paths start in workflows/)")
    assert (problem["line"], problem["column"]) == (6, 14)


async def test_globs_do_not_enumerate_other_tenants_or_walk_the_server(api):
    validate, *_ = api
    for pattern in ("../../globex/**", "/usr/**/*.so", "../../*/results/*"):
        body = await validate(_step("yara", f"      rules: ['{pattern}']\n"))
        assert "is outside this tenant's workflow and rule directories" in _messages(body)
        assert SECRET not in str(body) and "admin-token" not in str(body)


async def test_a_link_out_of_the_tenant_is_refused(api):
    validate, acme, globex, _ = api
    (acme / "rules" / "escape.yar").symlink_to(globex / "results" / "admin-token.txt")
    for rules in ("../rules/escape.yar", "../rules", "../rules/*.yar"):
        body = await validate(_step("yara", f"      rules: ['{rules}']\n"))
        assert body["valid"] is False
        assert SECRET not in str(body)


async def test_a_link_loop_under_a_recursive_glob_is_bounded(api):
    validate, acme, *_ = api
    (acme / "rules" / "loop").symlink_to(acme / "rules")
    (acme / "rules" / "a.yar").write_text('rule a { strings: $a = "x" condition: $a }\n')
    body = await validate(_step("yara", "      rules: ['../rules/**/*.yar']\n"))
    assert body == {"valid": True, "name": "probe", "problems": []}


async def test_yara_include_of_another_tenants_file_leaks_nothing(api):
    validate, acme, globex, _ = api
    target = globex / "results" / "admin-token.txt"
    (acme / "rules" / "inc.yar").write_text(f'include "{target}"\nrule r {{ condition: true }}\n')
    (acme / "rules" / "rel.yar").write_text('include "../../globex/results/admin-token.txt"\n'
                                            "rule s { condition: true }\n")
    for name in ("inc.yar", "rel.yar"):
        body = await validate(_step("yara", f"      rules: ['../rules/{name}']\n"))
        assert body["valid"] is False
        assert SECRET not in str(body) and "pcw_" not in str(body)
        assert "include" in _messages(body)


async def test_yara_include_inside_the_tenant_works(api):
    validate, acme, *_ = api
    (acme / "rules" / "common.yar").write_text('rule base { strings: $a = "evil" '
                                               "condition: $a }\n")
    (acme / "rules" / "main.yar").write_text('include "common.yar"\n'
                                             "rule top { condition: base }\n")
    body = await validate(_step("yara", "      rules: ['../rules/main.yar']\n"))
    assert body == {"valid": True, "name": "probe", "problems": []}


async def test_own_suricata_rules_are_checked_by_suricata_with_file_and_line(api):
    validate, acme, *_ = api
    (acme / "rules" / "local.rules").write_text(
        'alert tcp any any -> any any (msg:"ok"; sid:1; rev:1;)\n'
        'alert tcp any any -> any any (msg:"bad"; nosuchkeyword; sid:2; rev:1;)\n')
    body = await validate(_step("suricata", "      rules: ['{data_dir}/rules/local.rules']\n"))
    (problem,) = body["problems"]
    assert problem["message"].startswith(f"{acme.resolve() / 'rules' / 'local.rules'}:2: ")


async def test_own_suricata_rules_may_not_name_server_files(api, tmp_path):
    """Finding of the trigger work: Suricata 7 opens a dataset's ``load`` file by
    absolute or ``..`` path whatever ``allow-absolute-filenames`` says; a tenant's rule
    text names no file on the server: refused by line before Suricata reads the rules."""
    validate, acme, globex, _ = api
    (acme / "rules" / "probe.rules").write_text(
        'alert tcp any any -> any any (msg:"ok"; sid:1; rev:1;)\n'
        'alert dns any any -> any any (dns.query; dataset:isset,x,type string,load '
        f'{globex / "results" / "admin-token.txt"}; sid:2; rev:1;)\n'
        'alert tcp any any -> any any (msg:"l"; lua:probe.lua; sid:3; rev:1;)\n')
    body = await validate(_step("suricata", "      rules: ['{data_dir}/rules/probe.rules']\n"))
    assert [p["message"] for p in body["problems"]] == [
        "probe.rules:2: dataset with load/save/state is not allowed (it names a file on the "
        "server); give the values as indicators instead",
        "probe.rules:3: Lua rules are not allowed (they run scripts on the server)"]
    assert SECRET not in _messages(body)


async def test_an_oversized_rule_file_is_refused_without_being_read(api):
    validate, acme, *_ = api
    big = acme / "rules" / "huge.yar"
    with open(big, "wb") as f:  # sparse: nothing is written, nothing needs to be read
        f.truncate(MAX_CONFINED_FILE_BYTES + 1)
    body = await validate(_step("yara", "      rules: ['../rules/huge.yar']\n"))
    assert (f"huge.yar is larger than MAX_CONFINED_FILE_BYTES={MAX_CONFINED_FILE_BYTES} "
            f"({MAX_CONFINED_FILE_BYTES + 1} bytes)") in _messages(body)
    at_limit = acme / "rules" / "edge.yar"
    with open(at_limit, "wb") as f:
        f.truncate(MAX_CONFINED_FILE_BYTES)
    body = await validate(_step("yara", "      rules: ['../rules/edge.yar']\n"))
    assert "MAX_CONFINED_FILE_BYTES" not in _messages(body)


def test_a_walk_is_bounded_by_entries(tmp_path):
    root = tmp_path / "rules"
    root.mkdir()
    for i in range(MAX_CONFINED_WALK_ENTRIES + 1):
        (root / f"{i}.txt").touch()
    conf = Confinement(roots=(root.resolve(),), base_dir=root.resolve())

    @dataclasses_frozen
    class Cfg(AnalyzerConfig):
        rules: list[str] = option([], kind="glob")

    _, problems = confine_config(Cfg, {"rules": ["*.yar"]}, conf)
    assert problems == [("rules", f"rules: more than MAX_CONFINED_WALK_ENTRIES="
                                  f"{MAX_CONFINED_WALK_ENTRIES} directory entries to look "
                                  "through; name the files or a smaller directory")]
    (root / "0.txt").unlink()
    out, problems = confine_config(Cfg, {"rules": ["1.tx?"]}, conf)
    assert (problems, out) == ([], {"rules": [str(root.resolve() / "1.txt")]})


def test_undeclared_string_options_of_third_party_analyzers_are_not_trusted(tmp_path):
    conf = Confinement(roots=(tmp_path,), base_dir=tmp_path)

    @dataclasses_frozen
    class Cfg(AnalyzerConfig):
        database: str = option("")
        count: int = option(1)
        name: str = option("", kind="text")

    _, problems = confine_config(Cfg, {"database": "/etc/shadow", "count": 5, "name": "x"},
                                 conf)
    assert problems == [("database", "the analyzer does not declare what 'database' is "
                                     "(option(kind=...)): a workflow submitted through the "
                                     "API may not set it")]


def test_every_built_in_string_option_declares_its_kind():
    """The meta-test that keeps the class closed: a new path or program option in a
    built-in plugin cannot slip through undeclared."""
    import dataclasses
    import typing

    from pcapwire.hooks.host import build_host
    from pcapwire.workflow.confine import needs_kind

    undeclared = []
    for name, entry in build_host().analyzers().items():
        cls = type(entry.analyzer).Config
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if needs_kind(hints[f.name]) and f.metadata.get("kind") is None:
                undeclared.append(f"{name}.{f.name}")
    assert undeclared == []


def dataclasses_frozen(cls):
    import dataclasses

    return dataclasses.dataclass(frozen=True)(cls)


YARA_WF = "name: w\nsteps:\n  - uses: yara\n    input: stream\n    with:\n      rules: [{}]\n"


async def test_isolated_check_is_killed_at_its_time_limit_with_what_it_started(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "x.rules").write_text('alert tcp any any -> any any (msg:"x"; sid:1; rev:1;)\n')
    conf = Confinement.for_tenant(tmp_path)
    (tmp_path / "workflows").mkdir()
    text = ("name: w\nsteps:\n  - uses: suricata\n    with:\n"
            "      rules: ['{data_dir}/rules/x.rules']\n")
    with pytest.raises(CheckFailed, match=r"longer than MAX_CHECK_SECONDS=0.2 s"):
        await check_isolated(text, "w.yaml", conf, CheckLimits(seconds=0.2))
    # the child's process group (python and suricata -T) is gone
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert b"pcapwire.workflow.isolated" not in cmd


async def test_isolated_check_stops_at_its_memory_limit(tmp_path):
    conf = Confinement.for_tenant(tmp_path)
    with pytest.raises(CheckFailed, match="MAX_CHECK_MEMORY_BYTES=67108864"):
        await check_isolated(YARA_WF.format("'x.yar'"), "w.yaml", conf,
                             CheckLimits(memory_bytes=64 * 2**20))


async def test_deeply_nested_yaml_is_a_clear_problem(api):
    validate, *_ = api
    body = await validate("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert body["valid"] is False
    assert "nested deeper than MAX_YAML_DEPTH=64 levels" in _messages(body)
