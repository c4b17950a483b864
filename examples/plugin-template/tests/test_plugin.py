"""The plugin inside pcapwire: found through its entry point once installed, its
analyzer validated, and the shipped workflow run on a capture with exact verdicts (the
same check a detection engineer's CI runs with ``pcapwire workflow test``)."""

from __future__ import annotations

import base64
import importlib.metadata as md
import json
from pathlib import Path

import pcapwire_cleartext
import pytest
from conftest import tcp_session, write_pcap
from pcapwire.cli import main
from pcapwire.hooks.host import build_host
from pcapwire.workflow.document import load_workflow
from pcapwire.workflow.engine import Engine
from pcapwire.workflow.sources import file_chunks

HERE = Path(__file__).resolve().parent
WORKFLOW = HERE.parent / "workflows" / "cleartext-logins.yaml"


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    plain = base64.b64encode(b"\0carol@example.org\0hunter2")
    return write_pcap(tmp_path / "logins.pcap", [
        tcp_session(40001, 21, b"USER anonymous\r\nPASS guest@\r\nQUIT\r\n",
                    b"220 ready\r\n", 1700000000.0),
        tcp_session(40002, 587, b"EHLO me\r\nAUTH PLAIN " + plain + b"\r\nQUIT\r\n",
                    b"250 ok\r\n", 1700000001.0),
        tcp_session(40003, 80, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK\r\n",
                    1700000002.0),
    ])


def test_the_entry_point_is_installed() -> None:
    (ep,) = [e for e in md.entry_points(group="pcapwire") if e.name == "cleartext"]
    assert (ep.value, ep.dist.name if ep.dist else None) == ("pcapwire_cleartext",
                                                            "pcapwire-cleartext-logins")
    host = build_host(env={"PCAPWIRE_LOAD_PLUGINS": "cleartext"})
    assert host.failures == [] and list(host.analyzers()) == ["cleartext.logins"]


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
    assert all("hunter2" not in json.dumps(v.to_dict()) for v in got)


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
