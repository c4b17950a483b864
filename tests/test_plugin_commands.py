"""Plugin subcommands (``pcapwire_register_commands``): a third-party plugin, installed as
a distribution with an entry point, adds ``pcapwire hello``, which ``--help`` lists and
which runs; names taken by core commands or by another plugin are reported; a broken
``setup`` fails only its command; Suricata's ``pcapwire rules`` comes from its plugin the
same way; and core commands such as ``pcapwire query`` load neither plugins nor the
workflow engine. The register callbacks' types are real run-time names."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from test_plugins import install, run_cli

HELLO = '''
from pcapwire.hooks import RegisterCommand, impl


def _run(args):
    print(f"hello {args.name} from {args.data_dir}")
    return 3 if args.name == "partial" else 0


def _setup(parser):
    parser.add_argument("--name", default="world")
    parser.set_defaults(func=_run)


def _broken(parser):
    raise RuntimeError("no config for this command")


@impl
def pcapwire_register_commands(register: RegisterCommand) -> None:
    register("hello", _setup, help="say hello (a third-party command)")
    register("hello-broken", _broken, help="a command whose setup fails")
    register("query", _setup, help="tries to replace a core command")
    register("rules", _setup, help="tries to take Suricata's command")
    register("Bad Name", _setup)
'''


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    # entry point "welcome": loads after "suricata" (name order), which keeps "rules"
    install(site, "pcapwire-hello", "0.2", {"hello_plugin": HELLO},
            {"welcome": "hello_plugin"})
    return site


ENV = {"PCAPWIRE_LOAD_PLUGINS": "welcome,suricata"}


def test_a_plugin_command_is_listed_in_help_and_runs(site: Path, tmp_path: Path) -> None:
    done = run_cli("--help", pythonpath=site, env=ENV)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # argparse wraps long help lines
    assert " hello say hello (a third-party command) [plugin welcome] " in text
    assert (" rules Suricata rule sets: update (suricata-update), check, groups "
            "[plugin suricata] " in text)
    assert " query write the packets that match as pcap " in text  # the core's, untouched

    done = run_cli("--data-dir", str(tmp_path / "d"), "hello", "--name", "responder",
                   pythonpath=site, env=ENV)
    assert (done.returncode, done.stdout) == (0, f"hello responder from {tmp_path / 'd'}\n")
    done = run_cli("hello", "--name", "partial", pythonpath=site, env=ENV)
    assert done.returncode == 3  # the handler's exit status

    done = run_cli("hello", "--help", pythonpath=site, env=ENV)
    assert done.returncode == 0 and "--name NAME" in done.stdout


def test_a_setup_that_raises_fails_only_its_command(site: Path) -> None:
    done = run_cli("hello-broken", pythonpath=site, env=ENV)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "pcapwire: error: command 'hello-broken' of plugin 'welcome' failed to set up: "
        "RuntimeError: no config for this command")
    assert run_cli("hello", pythonpath=site, env=ENV).returncode == 0


def test_taken_and_invalid_names_are_reported_as_plugin_failures(site: Path) -> None:
    done = run_cli("plugins", "list", "--json", pythonpath=site, env=ENV)
    assert done.returncode == 1
    doc = json.loads(done.stdout)
    (hello,) = [p for p in doc["plugins"] if p["name"] == "welcome"]
    assert hello["commands"] == ["hello", "hello-broken"]
    assert hello["hooks"] == ["pcapwire_register_commands"]
    assert hello["error"] == (
        "command 'query' is a core pcapwire command; "
        "command 'rules' is already registered by plugin 'suricata'; "
        "command 'Bad Name': a name must match ^[a-z][a-z0-9-]{0,31}$")
    (suricata,) = [p for p in doc["plugins"] if p["name"] == "suricata"]
    assert suricata["commands"] == ["rules"] and suricata["error"] == ""
    text = run_cli("plugins", "list", pythonpath=site, env=ENV).stdout
    assert "  commands: hello, hello-broken" in text.splitlines()


def test_an_unknown_command_names_the_plugins_that_failed(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install(site, "pcapwire-gone", "0.1", {"gone_plugin": "import nope_nope  # noqa\n"},
            {"gone": "gone_plugin"})
    done = run_cli("hello", pythonpath=site, env={"PCAPWIRE_LOAD_PLUGINS": "gone"})
    assert done.returncode == 2
    assert "pcapwire: warning: plugin gone: import failed: ModuleNotFoundError" in done.stderr
    assert "invalid choice: 'hello'" in done.stderr


def test_core_commands_load_no_plugin_and_no_workflow_engine() -> None:
    code = ("import sys\n"
            "from pcapwire.cli import build_parser\n"
            "build_parser(['--data-dir', 'x', 'query', '-w', '-'])\n"
            "print(sorted(m for m in sys.modules if m.startswith(('pcapwire.plugins', "
            "'pcapwire.workflow', 'pcapwire.hooks', 'pcapwire.api'))))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_rules_is_the_suricata_plugins_command() -> None:
    from pcapwire.hooks.host import build_host

    host = build_host(env={"PCAPWIRE_LOAD_PLUGINS": "suricata"})
    assert host.commands()["rules"].plugin == "suricata"
    core = Path(__file__).resolve().parents[1] / "core"
    top, inside = set(), set()
    for path in core.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if any(n.startswith("pcapwire.plugins") for n in names):
                rel = str(path.relative_to(core))
                (top if node in tree.body else inside).add(rel)
    assert top == set()  # no core module needs a plugin to be imported
    # Only features built on the shipped engines reach into them, when they run: the
    # triggers' content engines (the Suricata and YARA plugins' own runs and checks), the
    # metadata index (Suricata's EVE records, where steps keep their outputs), the
    # rule-group routes (the Suricata plugin's rule groups) and the sandbox job (the
    # sandbox plugin's analyzer on a carved file).
    assert inside == {"triggers/match_engines.py", "search/sources.py", "search/ecs.py",
                      "api/routes_rulegroups.py", "jobs/handlers_sandbox.py"}


def test_the_register_callback_types_exist_at_run_time() -> None:
    import pcapwire.plugins.suricata as suricata
    from pcapwire.hooks import CommandSetup, RegisterAnalyzer, RegisterCommand

    hints = typing.get_type_hints(suricata.pcapwire_register_commands)
    assert hints["register"] is RegisterCommand
    hints = typing.get_type_hints(suricata.pcapwire_register_analyzers)
    assert hints["register"] is RegisterAnalyzer
    assert CommandSetup is not None
