"""``pcapwire.testing``, the kit for plugin authors: captures from a few lines (read back by
tcpdump and by pcapwire's reassembler), one analyzer run through the real engine on a
capture, on records, or as a producer whose records are collected, and verdict checks
that are ``pcapwire workflow test``'s comparison."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from pcaputil import read_records
from pcapwire.errors import WorkflowError
from pcapwire.reassembly import streams_from_file
from pcapwire.records import FlowKey, StreamRecord
from pcapwire.testing import (
    T0,
    arun_analyzer,
    assert_verdicts,
    capture,
    dns_query,
    http_download,
    run_analyzer,
    tcp_session,
    udp_exchange,
    write_capture,
)
from workflow_plugins import Needle, Producer

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SESSIONS = [
    tcp_session("10.0.0.1:1234 > 10.0.0.2:80", client=b"GET / HTTP/1.1\r\n\r\n",
                server=b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"),
    udp_exchange("10.0.0.1:5353 > 10.0.0.9:53", client=dns_query(7, "example.org"),
                 server=dns_query(7, "example.org", "192.0.2.1")),
    http_download("10.0.0.1:40000 > 10.0.0.2:80", "/files/e.com", EICAR * 40),
]


def test_a_capture_from_a_few_lines(tmp_path: Path) -> None:
    data = capture(SESSIONS)
    header, records = read_records(data)
    assert header[:4] == b"\xd4\xc3\xb2\xa1" and len(records) > 20
    assert int.from_bytes(records[0][:4], "little") == T0  # the first packet, 1 ms in
    assert capture(SESSIONS) == data  # a pure function of the call
    path = write_capture(tmp_path / "x.pcap", SESSIONS)
    done = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, text=True,
                          check=True)
    assert len(done.stdout.splitlines()) == len(records)
    assert "10.0.0.9.53: 7+ A? example.org." in done.stdout
    streams = {(s.flow.sport, s.direction): s.data for s in streams_from_file(path)}
    assert streams[(1234, "orig")] == b"GET / HTTP/1.1\r\n\r\n"
    assert streams[(40000, "resp")].endswith(EICAR * 40)
    with pytest.raises(ValueError, match="expected 'A.B.C.D:PORT > A.B.C.D:PORT'"):
        tcp_session("10.0.0.1 > 10.0.0.2:80")


def test_run_an_installed_analyzer_by_name_on_a_capture() -> None:
    rules = Path(__file__).resolve().parents[1] / "workflows" / "rules" / "pcapwire-demo.yar"
    result = run_analyzer("yara", input=capture(SESSIONS), config={"rules": [str(rules)]})
    assert (result.step.step, result.step.analyzer, result.step.status) == (
        "test", "yara", "ok")
    assert_verdicts(result.verdicts, [{"analyzer": "yara", "signature": "EICAR_Test_File",
                                       "subject_kind": "stream", "src_port": 40000,
                                       "count": 1}])


async def test_run_an_analyzer_class_on_records_and_collect_a_producers_outputs() -> None:
    flow = FlowKey(6, "10.0.0.1", 1, "10.0.0.2", 25)
    recs = [StreamRecord(id=f"S{i}", flow=flow, direction="orig", data=data, start_ts=1.0,
                         end_ts=2.0) for i, data in enumerate([b"EHLO x", b"QUIT", b"EHLO y"])]
    result = await arun_analyzer(Needle, recs, {"needle": "EHLO", "severity": "high"})
    assert (result.step.records_in, result.step.outputs) == (3, {"verdict": 2})
    assert_verdicts(result.verdicts, [{"subject_id": "S0", "severity": "high"},
                                      {"subject_id": "S2", "severity": "high"}])
    produced = await arun_analyzer(Producer, recs[:2])
    assert [r.kind for r in produced.outputs] == ["file", "file"]
    assert produced.step.outputs == {"file": 2} and produced.verdicts == []


async def test_errors_are_the_engines() -> None:
    with pytest.raises(WorkflowError, match=r"steps\[0\].with: 'needle' is a required property"):
        await arun_analyzer(Needle, [], {})
    with pytest.raises(ValueError, match="several kinds"):
        await arun_analyzer(Needle, [StreamRecord(
            id="s", flow=FlowKey(6, "1.1.1.1", 1, "2.2.2.2", 2), direction="orig",
            data=b"", start_ts=0, end_ts=0), object()], {"needle": "x"})
    with pytest.raises(RuntimeError, match="use `await pcapwire.testing.arun_analyzer"):
        run_analyzer(Needle, [], {"needle": "x"})


def test_assert_verdicts_reports_every_difference() -> None:
    result = asyncio.run(arun_analyzer(Needle, [StreamRecord(
        id="S1", flow=FlowKey(6, "10.0.0.1", 1, "10.0.0.2", 25), direction="orig",
        data=b"needle", start_ts=0, end_ts=0)], {"needle": "needle"}))
    assert_verdicts(result.verdicts, [{"signature": "needle"}])
    with pytest.raises(AssertionError) as exc:
        assert_verdicts(result.verdicts, [{"signature": "other", "count": 2}])
    assert str(exc.value).splitlines()[:3] == [
        "verdicts differ:",
        "verdicts[0] {'signature': 'other'}: expected 2, got 0",
        "    signature: expected 'other'; 0 of 1 match; the run had 'needle' ×1"]
    assert "unexpected verdict: t.needle" in str(exc.value)
    assert_verdicts(result.verdicts, [], exhaustive=False)
    with pytest.raises(WorkflowError, match="unknown key.*colour"):
        assert_verdicts(result.verdicts, [{"colour": "red"}])
