"""The Zeek subprocess path.

Zeek is not installed here (not packaged for Debian), so the plumbing -- chunks joined
into one pcap on stdin, logs collected from the run directory, timeouts, a crashed or
killed process, no zombies -- runs against a FAKE Zeek (tests/data/fake_zeek/zeek, a
script that says so in its name and output). The real binary runs in
``test_real_zeek_reads_chunks_from_stdin`` whenever ``zeek`` is on PATH.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
from conftest import corpus_file
from pcaputil import read_records
from pcapwire.errors import AnalyzerError, ConfigError
from pcapwire.plugins.enginekit.process import EngineProcess
from pcapwire.plugins.zeek.config import FINISH_TIMEOUT_S, NOT_FOUND, ZeekSettings
from pcapwire.plugins.zeek.run import ZeekRun
from pcapwire.plugins.zeek.runner import ZeekNotFoundError, ZeekRunner
from pcapwire.plugins.zeek.verdicts import MAX_METADATA_PER_LOG
from pcapwire.records import PcapChunk
from suricatautil import assert_reaped, our_zombies, rechunk

FAKE_ZEEK = Path(__file__).parent / "data" / "fake_zeek" / "zeek"


@pytest.fixture
def fake_mode(monkeypatch: pytest.MonkeyPatch):
    def set_mode(mode: str) -> None:
        monkeypatch.setenv("PCAPWIRE_FAKE_ZEEK_MODE", mode)
    set_mode("ok")
    return set_mode


def _chunks() -> list[PcapChunk]:
    data = corpus_file("zeek-http-get").read_bytes()
    return rechunk([PcapChunk("q1", 0, 1, 65535, data, 14, 0.0, 0.0)], packets=4)


def _fake_settings(**kw: object) -> ZeekSettings:
    return ZeekSettings.from_mapping({"binary": str(FAKE_ZEEK), **kw})


async def test_zeek_plumbing_with_fake_zeek_binary(tmp_path: Path, fake_mode) -> None:
    """FAKE Zeek: the chunks reach stdin as one pcap (first header once, then records), the
    generated script and -r - are on its command line, the logs it writes in the run
    directory come back as records, verdicts and flow-linked metadata."""
    chunks = _chunks()
    assert len(chunks) == 4
    settings = _fake_settings(scripts=["policy/protocols/conn/community-id-logging"],
                              redefs={"Site::local_nets": "{ 141.142.0.0/16 }"},
                              log_format="tsv")
    run = ZeekRun(settings, tmp_path / "zeek", step="nsm", case="c9", query_id="q1")
    await run.start()
    for chunk in chunks:
        await run.feed(chunk)
    result = await run.finish()

    header, records = read_records(corpus_file("zeek-http-get").read_bytes())
    assert (tmp_path / "zeek" / "stdin.pcap").read_bytes() == header + b"".join(records)
    argv = json.loads((tmp_path / "zeek" / "argv.json").read_text())
    assert argv[:3] == ["-C", "-r", "-"] and argv[-1].endswith("pcapwire.zeek")
    script = Path(argv[-1]).read_text()
    assert "@load policy/protocols/conn/community-id-logging" in script
    assert "redef Site::local_nets = { 141.142.0.0/16 };" in script
    assert "use_json" not in script

    assert sorted(result.logs) == ["conn", "notice", "weird"]
    assert [(v.signature_id, v.severity, v.score, v.category) for v in result.verdicts] == [
        ("Fake::Notice", "medium", 60, "notice"), ("fake_weird", "info", 20, "weird")]
    flow = result.verdicts[0].flow
    assert (flow.proto, flow.src, flow.sport, flow.dst, flow.dport) == (
        6, "141.142.228.5", 59856, "192.150.187.43", 80)
    assert {(v.step, v.case, v.query_id, v.subject_id) for v in result.verdicts} == {
        ("nsm", "c9", "q1", "zeek-conn:CFake1")}
    conn, = [m for m in result.metadata if m.log == "conn"]
    assert conn.flow == flow and conn.record["tunnel_parents"] == []
    assert result.errors == []
    assert our_zombies() == []


async def test_json_log_format_is_the_default(tmp_path: Path, fake_mode) -> None:
    """FAKE Zeek: ``LogAscii::use_json = T`` goes into the script by default and the JSON
    logs it then writes parse to the same verdicts."""
    run = ZeekRun(_fake_settings(), tmp_path / "z")
    await run.start()
    for chunk in _chunks():
        await run.feed(chunk)
    result = await run.finish()
    assert "redef LogAscii::use_json = T;" in (tmp_path / "z" / "pcapwire.zeek").read_text()
    assert (tmp_path / "z" / "conn.log").read_text().startswith("{")
    assert [v.signature_id for v in result.verdicts] == ["Fake::Notice", "fake_weird"]


async def test_missing_zeek_is_one_clear_error(tmp_path: Path) -> None:
    settings = ZeekSettings.from_mapping({"binary": "zeek-not-installed-here"})
    runner = ZeekRunner(settings, tmp_path / "z")
    with pytest.raises(ZeekNotFoundError) as info:
        await runner.start()
    assert str(info.value) == NOT_FOUND
    assert str(info.value).startswith("zeek not found; set the step's 'binary'")


async def test_fake_zeek_crash_is_an_error_with_its_output(tmp_path: Path, fake_mode) -> None:
    """FAKE Zeek exits 7 after the pcap header: the error names the status and its stderr."""
    fake_mode("crash_after_header")
    run = ZeekRun(_fake_settings(), tmp_path / "z")
    await run.start()
    pid = run.runner.pid
    with pytest.raises(AnalyzerError) as info:
        for chunk in _chunks():
            await run.feed(chunk)
        await run.finish()
    assert "exit status 7" in str(info.value)
    assert "fake zeek: fatal error in <stdin>: simulated crash" in str(info.value)
    await run.abort()
    assert_reaped(pid)


async def test_fake_zeek_killed_by_signal_is_an_error(tmp_path: Path, fake_mode) -> None:
    """FAKE Zeek SIGKILLs itself after reading its input."""
    fake_mode("die_by_signal")
    run = ZeekRun(_fake_settings(), tmp_path / "z")
    await run.start()
    for chunk in _chunks():
        await run.feed(chunk)
    pid = run.runner.pid
    with pytest.raises(AnalyzerError, match=r"zeek failed \(killed by SIGKILL\)"):
        await run.finish()
    assert_reaped(pid)


async def test_fake_zeek_hang_hits_finish_timeout(tmp_path: Path, fake_mode) -> None:
    """FAKE Zeek never exits after EOF: finish() gives up after finish_timeout and the
    process is stopped and reaped."""
    assert FINISH_TIMEOUT_S == 300.0
    fake_mode("hang_after_eof")
    run = ZeekRun(_fake_settings(finish_timeout=0.5), tmp_path / "z")
    await run.start()
    for chunk in _chunks():
        await run.feed(chunk)
    pid = run.runner.pid
    with pytest.raises(AnalyzerError, match=r"did not finish within 0\.5 s"):
        await run.finish()
    assert_reaped(pid)
    assert our_zombies() == []


async def test_cancelled_step_leaves_no_process(tmp_path: Path, fake_mode) -> None:
    """What the workflow's step timeout does to a FAKE Zeek that hangs: cancel, abort."""
    fake_mode("hang_after_eof")
    run = ZeekRun(_fake_settings(), tmp_path / "z")
    await run.start()
    pid = run.runner.pid

    async def step() -> None:
        for chunk in _chunks():
            await run.feed(chunk)
        await run.finish()

    task = asyncio.create_task(step())
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), 1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await run.abort()
    assert_reaped(pid)


async def test_second_link_type_is_skipped_and_reported(tmp_path: Path, fake_mode) -> None:
    """FAKE Zeek: one process reads one link type; SLL2 chunks are reported, not mixed in."""
    run = ZeekRun(_fake_settings(), tmp_path / "z")
    await run.start()
    await run.feed(_chunks()[0])
    sll2 = corpus_file("zeek-linux-sll2").read_bytes()
    await run.feed(PcapChunk("q1", 5, 276, 0, sll2, 0, 0.0, 0.0))
    result = await run.finish()
    assert result.errors == ["link type 276: 1 chunk(s) not analysed (this run's Zeek reads "
                             "link type 1)"]
    assert len((tmp_path / "z" / "stdin.pcap").read_bytes()) == len(_chunks()[0].data)


async def test_engine_process_escalates_to_sigkill() -> None:
    """A process that ignores SIGTERM is SIGKILLed after the grace period and reaped."""
    proc = EngineProcess("stubborn", [sys.executable, "-c",
                                      "import signal, sys, threading;"
                                      "signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                                      "print('ready', flush=True);"
                                      "threading.Event().wait()"])
    ready = asyncio.Event()
    proc.on_output_line = lambda line: ready.set() if line == "ready" else None
    await proc.start()
    await asyncio.wait_for(ready.wait(), 30)
    assert await proc.stop(grace=0.2) == -signal.SIGKILL
    assert_reaped(proc.pid)


async def test_engine_process_keeps_a_bounded_output_tail() -> None:
    from pcapwire.plugins.enginekit.process import OUTPUT_TAIL_LINES

    proc = EngineProcess("chatty", [sys.executable, "-c",
                                    f"[print(i) for i in range({OUTPUT_TAIL_LINES + 50})]"])
    await proc.start()
    assert await proc.wait() == 0
    assert len(proc.output_tail) == OUTPUT_TAIL_LINES
    assert proc.output_tail[0] == "50" and proc.output_text(1) == str(OUTPUT_TAIL_LINES + 49)


def test_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        ZeekSettings.from_mapping({"script": "local"})
    with pytest.raises(ConfigError, match="not a Zeek identifier"):
        ZeekSettings.from_mapping({"redefs": {"a b": "1"}})
    with pytest.raises(ConfigError, match="one expression"):
        ZeekSettings.from_mapping({"redefs": {"X::y": "1; event evil() {}"}})
    with pytest.raises(ConfigError, match="intel file .* does not exist"):
        ZeekSettings.from_mapping({"intel_files": [str(tmp_path / "none.dat")]})
    with pytest.raises(ConfigError, match="'-r' is set by the runner"):
        ZeekSettings.from_mapping({"args": ["-r", "x.pcap"]})
    with pytest.raises(ConfigError, match="not one of info"):
        ZeekSettings.from_mapping({"notice_severity": {"Scan::Port_Scan": "severe"}})
    intel = tmp_path / "intel.dat"
    intel.write_text("#fields\tindicator\tindicator_type\tmeta.source\n")
    text = ZeekSettings.from_mapping({"intel_files": ["intel.dat"]}, base_dir=tmp_path
                                     ).script_text()
    assert "@load frameworks/intel/seen" in text
    assert f'redef Intel::read_files += {{ "{intel}" }};' in text


def test_metadata_limit_is_named() -> None:
    assert MAX_METADATA_PER_LOG == 50_000


@pytest.mark.skipif(shutil.which("zeek") is None,
                    reason="zeek is not installed (not packaged for Debian); this test runs "
                           "the real binary wherever one is on PATH")
async def test_real_zeek_reads_chunks_from_stdin(tmp_path: Path) -> None:
    """The real Zeek, fed zeek-http-get in 4 chunks, logs the connection the corpus's
    Zeek baseline logged (packets, history, service)."""
    run = ZeekRun(ZeekSettings.from_mapping({"log_format": "tsv"}), tmp_path / "z")
    await run.start()
    for chunk in _chunks():
        await run.feed(chunk)
    result = await run.finish()
    conn, = result.logs.rows("conn")
    assert (conn["orig_pkts"], conn["resp_pkts"], conn["history"], conn["service"]) == (
        7, 7, "ShADadFf", "http")
    http, = result.logs.rows("http")
    assert http["uri"] == "/download/CHANGES.bro-aux.txt" and http["status_code"] == 200
    assert os.path.exists(tmp_path / "z" / "conn.log")
