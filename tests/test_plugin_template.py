"""The third-party path, proven: ``examples/plugin-template`` is pip-installed (into a
directory of its own, so this environment is left as it was), then pcapwire -- run as a
separate process with that directory on its path -- discovers it through the entry-point
group, lists it, and runs workflows that use its analyzer on real captures from the
corpus; the template's own test suite passes against the installed package."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import corpus_file

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "examples" / "plugin-template"
WORKFLOW = TEMPLATE / "workflows" / "cleartext-logins.yaml"


def _can_build_offline() -> bool:
    """setuptools builds wheels by itself from 70.1; before that it needs ``wheel``."""
    return any(importlib.util.find_spec(m) is not None
               for m in ("wheel", "setuptools.command.bdist_wheel"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install --no-deps --target SITE`` of a copy of the template (a build writes
    into its source tree; the checkout stays clean)."""
    tmp = tmp_path_factory.mktemp("template")
    src = tmp / "src"
    shutil.copytree(TEMPLATE, src, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                  "__pycache__"))
    site = tmp / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
           "--disable-pip-version-check", "--target", str(site), str(src)]
    if _can_build_offline():
        cmd.insert(4, "--no-build-isolation")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return site


def pcapwire(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, PYTHONPATH=str(site), PCAPWIRE_LOAD_PLUGINS="cleartext,yara",
                **env)
    return subprocess.run([sys.executable, "-m", "pcapwire.cli", *args], capture_output=True,
                          text=True, env=full, timeout=120)


def test_installed_distribution_and_entry_point(site: Path) -> None:
    (dist,) = [d for d in md.distributions(path=[str(site)])]
    assert (dist.metadata["Name"], dist.version) == ("pcapwire-cleartext-logins", "0.1.0")
    assert [(e.group, e.name, e.value) for e in dist.entry_points] == [
        ("pcapwire", "cleartext", "pcapwire_cleartext")]
    assert (site / "pcapwire_cleartext" / "py.typed").is_file()
    # not visible to this process: the environment was not modified
    assert "cleartext" not in {e.name for e in md.entry_points(group="pcapwire")}


def test_plugins_list_shows_it(site: Path) -> None:
    done = pcapwire(site, "plugins", "list")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:4] == [
        "cleartext  [entry point pcapwire_cleartext (pcapwire-cleartext-logins 0.1.0)]",
        "  hooks: pcapwire_case_completed, pcapwire_register_analyzers",
        "  analyzer cleartext.logins 0.1.0: stream -> verdict  (logins sent in clear text "
        "(FTP, POP3, IMAP, SMTP AUTH, HTTP Basic))",
        "yara  [entry point pcapwire.plugins.yara (pcapwire 0.1.0)]"]


def test_run_a_workflow_with_its_analyzer(site: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.jsonl"
    done = pcapwire(site, "--data-dir", str(tmp_path / "data"), "run", str(WORKFLOW),
                    "--pcap", str(corpus_file("zeek-pop3-retr-3-messages")), "--json",
                    "--case", "IR-9", PCAPWIRE_CLEARTEXT_REPORT=str(report))
    assert done.returncode == 0, done.stderr
    docs = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted((d["rule"]["id"], d["pcapwire"]["severity"], d["destination"]["port"],
                   d["pcapwire"]["subject"]["id"], d["pcapwire"]["evidence"]["username"],
                   d["pcapwire"]["evidence"]["password_length"]) for d in docs) == [
        ("cleartext:auth-plain", "medium", 110, "C5a29861b1deaf82d-orig",
         "digitalinvestigator@networksims.com", 9),
        ("cleartext:auth-plain", "medium", 110, "C7a8ecc8cd8071a4e-orig",
         "digitalinvestigator@networksims.com", 9),
        ("cleartext:auth-plain", "medium", 110, "C7b7e8c1a239d173b-orig",
         "digitalinvestigator@networksims.com", 6)]
    # its broadcast hook ran once, at the end of the run
    (line,) = [json.loads(x) for x in report.read_text().splitlines()]
    assert (line["case"], line["status"], line["cleartext_logins"], line["workflow"]) == (
        "IR-9", "ok", 3, "cleartext-logins")
    assert line["run_id"] == docs[0]["pcapwire"]["run_id"]


def test_workflow_test_with_its_analyzer(site: Path, tmp_path: Path) -> None:
    expect = tmp_path / "expect.yaml"
    expect.write_text("verdicts:\n"
                      "  - analyzer: cleartext.logins\n"
                      "    signature: Clear-text IMAP login (imap-login)\n"
                      "    severity: medium\n"
                      "    score: 60\n"
                      "    subject_id: C355feab4b99d08ec-orig\n"
                      "    dest_port: 143\n"
                      "steps:\n  logins: ok\n")
    imap = corpus_file("arkime-imap-inbox")
    done = pcapwire(site, "workflow", "test", str(WORKFLOW), "--pcap", str(imap),
                    "--expect", str(expect))
    assert (done.returncode, done.stdout) == (
        0, f"PASS {WORKFLOW} on {imap}: 1 verdict(s) as expected\n"), done.stderr


def test_the_templates_own_tests_pass_against_the_installed_package(site: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(TEMPLATE / "tests")], capture_output=True, text=True, cwd=TEMPLATE,
        env=dict(os.environ, PYTHONPATH=str(site)), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("12 passed")
