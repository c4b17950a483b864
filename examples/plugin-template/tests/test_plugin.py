"""The plugin inside pcapwire: found through its entry point once installed, its
analyzer validated and run through pcapwire's engine with the testing kit
(``pcapwire.testing``: ``run_analyzer``, ``assert_verdicts``), and the shipped workflow
run on a capture with exact verdicts (the same check a detection engineer's CI runs with
``pcapwire workflow test``)."""

from __future__ import annotations

import importlib.metadata as md
import json
from pathlib import Path

import pcapwire_cleartext
import pytest
from conftest import CLIENT, SERVER
from pcapwire.cli import main
from pcapwire.hooks.host import build_host
from pcapwire.records import FlowKey, StreamRecord
from pcapwire.testing import arun_analyzer, assert_verdicts, run_analyzer
from pcapwire.workflow.document import load_workflow
from pcapwire.workflow.engine import Engine
from pcapwire.workflow.sources import file_chunks
from pcapwire_cleartext import CleartextLogins

HERE = Path(__file__).resolve().parent
WORKFLOW = HERE.parent / "workflows" / "cleartext-logins.yaml"


def test_the_entry_point_is_installed() -> None:
    (ep,) = [e for e in md.entry_points(group="pcapwire") if e.name == "cleartext"]
    assert (ep.value, ep.dist.name if ep.dist else None) == ("pcapwire_cleartext",
                                                            "pcapwire-cleartext-logins")
    host = build_host(env={"PCAPWIRE_LOAD_PLUGINS": "cleartext"})
    assert host.failures == [] and list(host.analyzers()) == ["cleartext.logins"]


def test_run_the_analyzer_on_a_capture(capture: Path) -> None:
    """One step through the real engine (streams reassembled from the capture)."""
    result = run_analyzer(CleartextLogins, capture, {"severity": "high"})
    assert (result.step.status, result.step.records_in) == ("ok", 6)
    assert_verdicts(result.verdicts, [
        {"signature_id": "cleartext:user-pass", "severity": "info", "dest_port": 21},
        {"signature_id": "cleartext:auth-plain", "severity": "high", "dest_port": 587,
         "tags": ["credentials", "smtp"], "src_ip": CLIENT, "dest_ip": SERVER}])
    assert all("hunter2" not in json.dumps(v.to_dict()) for v in result.verdicts)


async def test_run_the_analyzer_on_stream_records() -> None:
    """Records in, without a capture; a bad config is the engine's clear error."""
    flow = FlowKey(6, CLIENT, 40000, SERVER, 143)
    record = StreamRecord(id="C1-orig", flow=flow, direction="orig",
                          data=b"a1 LOGIN joe secret\r\n", start_ts=1.0, end_ts=2.0)
    result = await arun_analyzer(CleartextLogins, [record],
                                 {"mechanisms": ["imap-login"]})
    assert_verdicts(result.verdicts, [{"signature": "Clear-text IMAP login (imap-login)",
                                       "subject_id": "C1-orig", "count": 1}])
    with pytest.raises(Exception, match="with.severity: 'urgent' is not one of"):
        await arun_analyzer(CleartextLogins, [record], {"severity": "urgent"})


async def test_workflow_on_a_capture(capture: Path) -> None:
    host = build_host(entry_points=False, extra=[pcapwire_cleartext])
    wf = load_workflow(WORKFLOW, host)
    got = []
    summary = await Engine(host).run(wf, file_chunks(capture), case="IR-1",
                                     on_verdict=got.append)
    assert summary.status == "ok"
    assert [(s.step, s.records_in, s.records_skipped, s.outputs) for s in summary.steps] == [
        ("logins", 6, 3, {"verdict": 2})]
    assert sorted((v.signature_id, v.severity, v.flow.dport, v.evidence["username"],
                   v.evidence["password_length"]) for v in got) == [
        ("cleartext:auth-plain", "medium", 587, "carol@example.org", 7),
        ("cleartext:user-pass", "info", 21, "anonymous", 6)]


def test_workflow_test_command(capture: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    expect = tmp_path / "expect.yaml"
    expect.write_text("verdicts:\n"
                      "  - {signature_id: 'cleartext:user-pass', severity: info, "
                      "dest_port: 21}\n"
                      "  - {signature_id: 'cleartext:auth-plain', severity: medium, "
                      "dest_port: 587, tags: [credentials, smtp]}\n"
                      "steps: {logins: ok}\n")
    rc = main(["workflow", "test", str(WORKFLOW), "--pcap", str(capture), "--expect",
               str(expect)])
    assert (rc, capsys.readouterr().out) == (
        0, f"PASS {WORKFLOW} on {capture}: 2 verdict(s) as expected\n")


def test_unknown_config_keys_are_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(WORKFLOW.read_text().replace("severity: medium", "severty: medium"))
    host = build_host(entry_points=False, extra=[pcapwire_cleartext])
    with pytest.raises(Exception) as exc:
        load_workflow(bad, host)
    assert "steps[0].with.severty: unknown key 'severty'; known keys: anonymous_severity, " \
        "anonymous_users, mechanisms, severity" in str(exc.value)
