"""Suricata and Zeek steps inside the real workflow engine (pcapwire.workflow.engine):
verdicts streaming while the query runs, equality with ``suricata -r`` by hand, and fault
isolation -- a missing, hung or killed engine is an error record for its step, the rest
of the workflow completes, and no process is left behind.

Zeek is not installed here: the zeek steps use the FAKE Zeek of tests/data/fake_zeek
(named as such) or a binary that does not exist."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import corpus_file
from pcapwire.hooks.host import build_host
from pcapwire.records import PcapChunk, Verdict
from pcapwire.workflow.document import load_workflow
from pcapwire.workflow.engine import Engine
from suricatautil import assert_reaped, by_hand, our_zombies, sid_counts, store_chunks

REPO = Path(__file__).resolve().parents[1]
FAKE_ZEEK = Path(__file__).parent / "data" / "fake_zeek" / "zeek"
RULES = (
    'alert http any any -> any any (msg:"GET"; flow:established,to_server; http.method; '
    'content:"GET"; sid:8001; rev:1;)\n'
    'alert http any any -> any any (msg:"image"; flow:established,to_client; '
    'http.content_type; content:"image/"; sid:8002; rev:1;)\n')
CAPTURE = "zeek-http-pipelined-5-files"


def _workflow(rules: Path, keep: Path, zeek: str, zeek_timeout: str = "60s",
              spares: int = 1) -> str:
    return f"""
name: triage-test
verdicts:
  dedupe: false
steps:
  - id: ids
    uses: suricata
    timeout: 60s
    with:
      rules: ["{rules}"]
      args: ["-k", "none"]
      keep_dir: "{keep}"
      warm_spares: {spares}
  - id: nsm
    uses: zeek
    timeout: {zeek_timeout}
    with:
      binary: "{zeek}"
      keep_dir: "{keep}"
"""


@pytest.fixture(scope="module")
def host() -> Any:
    return build_host()


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "t.rules"
    path.write_text(RULES)
    return path


async def _source(chunks: list[PcapChunk], gate: asyncio.Event | None = None
                  ) -> AsyncIterator[PcapChunk]:
    for i, chunk in enumerate(chunks):
        if gate is not None and i == len(chunks) - 1:
            await asyncio.wait_for(gate.wait(), 30)  # the last chunk waits for a verdict
        yield chunk


async def _close_pools(host: Any) -> None:
    await host.analyzer("suricata").aclose()


async def test_verdicts_stream_during_the_run_and_match_suricata_by_hand(
        host: Any, rules: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FAKE Zeek for the nsm step. The source holds back its last chunk until the first
    Suricata verdict reached on_verdict: verdicts leave while the query is still running."""
    monkeypatch.setenv("PCAPWIRE_FAKE_ZEEK_MODE", "ok")
    chunks = store_chunks(corpus_file(CAPTURE), tmp_path / "store", chunk_bytes=4096)
    assert len(chunks) >= 10
    wf = load_workflow("t.yaml", host, text=_workflow(rules, tmp_path / "keep", str(FAKE_ZEEK)))
    first_verdict = asyncio.Event()
    seen: list[Verdict] = []

    def on_verdict(v: Verdict) -> None:
        seen.append(v)
        if v.analyzer == "suricata":
            first_verdict.set()

    summary = await Engine(host).run(wf, _source(chunks, first_verdict), case="IR-7",
                                     query_id="q-test", on_verdict=on_verdict)
    await _close_pools(host)
    steps = {s.step: s for s in summary.steps}
    assert summary.status == "ok", [s.to_dict() for s in summary.steps]
    assert steps["ids"].status == steps["nsm"].status == "ok"
    assert steps["ids"].records_in == len(chunks)
    query_file = tmp_path / "query.pcap"
    query_file.write_bytes(chunks[0].data[:24] + b"".join(c.data[24:] for c in chunks))
    hand = sid_counts(by_hand(query_file, rules, ["-k", "none"], tmp_path / "hand"))
    ours = [v for v in seen if v.analyzer == "suricata"]
    assert dict(sid_counts([{"event_type": "alert", "alert": {"signature_id": v.evidence["sid"]}}
                            for v in ours])) == dict(hand) == {8001: 5, 8002: 3}
    assert {(v.case, v.query_id, v.step) for v in ours} == {("IR-7", "q-test", "ids")}
    assert [v.signature_id for v in seen if v.analyzer == "zeek"] == ["Fake::Notice",
                                                                     "fake_weird"]
    run_dir = tmp_path / "keep" / "IR-7" / "q-test-nsm"
    assert (run_dir / "conn.log").exists() and (run_dir / "metadata.json").exists()
    assert (tmp_path / "keep" / "IR-7" / "q-test-ids" / "eve-metadata.json").exists()
    assert our_zombies() == []


async def test_missing_zeek_is_an_error_record_and_the_rest_completes(
        host: Any, rules: Path, tmp_path: Path) -> None:
    chunks = store_chunks(corpus_file(CAPTURE), tmp_path / "store", chunk_bytes=4096)
    wf = load_workflow("t.yaml", host, text=_workflow(rules, tmp_path / "keep",
                                                      "zeek-not-installed"))
    summary = await Engine(host).run(wf, _source(chunks), case="c")
    await _close_pools(host)
    steps = {s.step: s for s in summary.steps}
    assert steps["ids"].status == "ok" and steps["ids"].outputs == {"verdict": 8}
    assert steps["nsm"].status == "error"
    assert steps["nsm"].reason.startswith("start failed: ZeekNotFoundError: zeek not found; "
                                          "set the step's 'binary'")
    assert summary.status == "partial" and summary.verdicts == 8


async def test_hung_engine_hits_the_step_timeout_and_is_reaped(
        host: Any, rules: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FAKE Zeek that never exits after its input: the step's 1 s timeout ends it (status
    timeout), the Suricata step completes, the fake is killed and reaped."""
    monkeypatch.setenv("PCAPWIRE_FAKE_ZEEK_MODE", "hang_after_eof")
    chunks = store_chunks(corpus_file(CAPTURE), tmp_path / "store", chunk_bytes=4096)
    wf = load_workflow("t.yaml", host, text=_workflow(rules, tmp_path / "keep",
                                                      str(FAKE_ZEEK), zeek_timeout="1s"))
    summary = await Engine(host).run(wf, _source(chunks), case="c", query_id="q")
    await _close_pools(host)
    steps = {s.step: s for s in summary.steps}
    assert steps["ids"].status == "ok"
    assert steps["nsm"].status == "timeout"
    assert steps["nsm"].reason == "finish took longer than 1 s"
    pid = int((tmp_path / "keep" / "c" / "q-nsm" / "fake-zeek.pid").read_text())
    assert_reaped(pid)
    assert our_zombies() == []


def _suricata_children() -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and cmd[0].endswith(
                b"suricata") and b"-r" in cmd:
            out.append(int(entry.name))
    return out


async def test_killed_suricata_is_an_error_record_and_the_rest_completes(
        host: Any, rules: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Suricata engine (no spares: the only suricata child) is SIGKILLed when its
    first verdict arrives: its step records the error with the signal, the FAKE Zeek step
    still completes, nothing is left running."""
    monkeypatch.setenv("PCAPWIRE_FAKE_ZEEK_MODE", "ok")
    chunks = store_chunks(corpus_file(CAPTURE), tmp_path / "store", chunk_bytes=4096)
    wf = load_workflow("t.yaml", host, text=_workflow(rules, tmp_path / "keep",
                                                      str(FAKE_ZEEK), spares=0))
    killed: list[int] = []
    done = asyncio.Event()  # the source holds its last chunk back: Suricata is still alive

    def on_verdict(v: Verdict) -> None:
        if v.analyzer == "suricata" and not killed:
            (pid,) = _suricata_children()
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            done.set()

    summary = await Engine(host).run(wf, _source(chunks, done), case="c", query_id="q",
                                     on_verdict=on_verdict)
    await _close_pools(host)
    steps = {s.step: s for s in summary.steps}
    assert len(killed) == 1
    assert steps["ids"].status == "error"
    assert "killed by SIGKILL" in steps["ids"].reason
    assert steps["nsm"].status == "ok" and steps["nsm"].outputs == {"verdict": 2}
    assert summary.status == "partial"
    assert_reaped(killed[0])
    assert _suricata_children() == [] and our_zombies() == []


async def test_shipped_incident_triage_workflow(host: Any, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """workflows/incident-triage.yaml on a real capture (zeek-http-get: a Wget download).
    Zeek is absent here: the nsm step is an error record; the shipped demo rule on
    command-line HTTP clients fires in the ids step; Suricata's EVE metadata is kept
    under the data directory's case."""
    if "yara" not in host.analyzers():
        pytest.skip("the yara analyzer (its own plugin) is not installed in this tree")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no zeek, whatever the machine has
    wf = load_workflow(REPO / "workflows" / "incident-triage.yaml", host)
    chunks = store_chunks(corpus_file("zeek-http-get"), tmp_path / "store")
    seen: list[Verdict] = []
    summary = await Engine(host, data_dir=tmp_path / "data").run(
        wf, _source(chunks), case="IR-9", query_id="q1", on_verdict=seen.append)
    await _close_pools(host)
    steps = {s.step: s for s in summary.steps}
    assert steps["ids"].status == "ok"
    assert [(v.analyzer, v.signature_id) for v in seen if v.analyzer == "suricata"] == [
        ("suricata", "9100002")]
    assert steps["nsm"].status == "error" and "zeek not found" in steps["nsm"].reason
    assert steps["streams"].status in ("ok", "skipped")
    assert summary.status == "partial"
    kept = tmp_path / "data" / "cases" / "IR-9" / "suricata" / "q1-ids" / "eve-metadata.json"
    meta = [json.loads(line) for line in kept.read_text().splitlines()]
    assert [(m["event_type"], m.get("http", {}).get("url")) for m in meta][:1] == [
        ("http", "/download/CHANGES.bro-aux.txt")]
    assert our_zombies() == []
