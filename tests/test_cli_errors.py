"""Issue 10 (items 3, 6, 7): exit codes as documented, `workflow test` never passes by
accident, comparisons that name every field, tracebacks of plugin errors, a client that
closes a stream is not an error."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import workflow_plugins as wp
from aiohttp import web
from conftest import corpus_file
from pcapwire.api.errors import CLIENT_CLOSED, error_middleware
from pcapwire.hooks.host import build_host
from pcapwire.records import FlowKey, Verdict
from pcapwire.workflow.document import load_workflow
from pcapwire.workflow.engine import Engine
from pcapwire.workflow.expect import Expectation, compare
from pcapwire.workflow.sources import file_chunks

YARA_WF = """\
name: t
steps:
  - uses: yara
    input: stream
    with:
      rules: [r.yar]
"""


def pcapwire(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pcapwire.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def _workdir(tmp_path: Path) -> Path:
    (tmp_path / "w.yaml").write_text(YARA_WF)
    (tmp_path / "r.yar").write_text('rule never { strings: $a = "zq-never-zq" condition: $a }\n')
    (tmp_path / "e.yaml").write_text("verdicts: []\n")
    (tmp_path / "not-a-capture.pcap").write_text("garbage\n")
    return tmp_path


def test_workflow_test_on_an_unreadable_capture_fails_with_2_never_passes(tmp_path):
    d = _workdir(tmp_path)
    p = pcapwire("--data-dir", "store", "workflow", "test", "w.yaml", "--pcap",
                 "not-a-capture.pcap", "--expect", "e.yaml", cwd=d)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "PASS" not in p.stdout
    assert ("ERROR w.yaml on not-a-capture.pcap: the run failed: input failed after 0 "
            "chunk(s): not-a-capture.pcap at byte 0: not a pcap or pcapng file") in p.stderr


def test_run_on_an_unreadable_capture_is_an_input_error(tmp_path):
    d = _workdir(tmp_path)
    p = pcapwire("--data-dir", "store", "run", "w.yaml", "--pcap", "not-a-capture.pcap", cwd=d)
    assert p.returncode == 2
    missing = pcapwire("--data-dir", "store", "run", "w.yaml", "--pcap", "nope.pcap", cwd=d)
    assert (missing.returncode, missing.stderr.strip()) == (
        2, "pcapwire: error: --pcap nope.pcap: no such file")


def test_commands_answering_from_the_store_refuse_a_directory_that_is_not_one(tmp_path):
    d = _workdir(tmp_path)
    (d / "empty").mkdir()
    for name, what in (("nostore", "does not exist"), ("empty", "is not a pcapwire store")):
        for cmd in (["query", "--bpf", "tcp", "-w", "out.pcap"], ["flows"],
                    ["run", "w.yaml", "--bpf", "tcp"], ["extract", "--bpf", "tcp", "--out", "o"]):
            p = pcapwire("--data-dir", name, *cmd, cwd=d)
            assert (p.returncode, p.stderr.strip()) == (
                2, f"pcapwire: error: data directory {name} {what} (no catalog.sqlite); "
                   "ingest into it first, or name the store with --data-dir or "
                   "PCAPWIRE_DATA_DIR"), cmd
    assert not (d / "nostore").exists() and list((d / "empty").iterdir()) == []


def test_query_into_a_missing_directory_is_a_clear_error(tmp_path):
    d = _workdir(tmp_path)
    assert pcapwire("--data-dir", "store", "ingest", str(corpus_file("zeek-http-get")),
                    cwd=d).returncode == 0
    p = pcapwire("--data-dir", "store", "query", "-w", "no/such/dir/x.pcap", cwd=d)
    assert (p.returncode, p.stderr.strip()) == (
        2, f"pcapwire: error: -w no/such/dir/x.pcap: directory {d / 'no/such/dir'} does not "
           "exist; create it first")
    assert "Traceback" not in p.stderr


def _verdict(signature_id: str, port: int = 80) -> Verdict:
    return Verdict(analyzer="suricata", subject_kind="flow", subject_id="f1",
                   flow=FlowKey(6, "10.0.0.1", 1234, "10.0.0.2", port), ts=1.0,
                   severity="high", score=80, signature_id=signature_id, signature="x")


def test_integer_and_string_signature_ids_compare_equal():
    exp = Expectation(verdicts=[{"analyzer": "suricata", "signature_id": 2100498}])
    assert compare(exp, [_verdict("2100498")]) == []


def test_a_failed_comparison_lists_every_compared_field():
    exp = Expectation(verdicts=[{"analyzer": "suricata", "signature_id": 1, "dest_port": 80}])
    diffs = compare(exp, [_verdict("2", 80), _verdict("2", 443)])
    assert diffs[:4] == [
        "verdicts[0] {'analyzer': 'suricata', 'signature_id': 1, 'dest_port': 80}: "
        "expected 1, got 0",
        "    analyzer: expected 'suricata'; 2 of 2 match; the run had 'suricata' ×2",
        "    signature_id: expected 1; 0 of 2 match; the run had '2' ×2",
        "    dest_port: expected 80; 1 of 2 match; the run had 80 ×1, 443 ×1"]


async def test_a_plugin_exception_keeps_its_traceback_in_the_error_record(caplog):
    host = build_host(entry_points=False, extra=[wp])
    wp.STATE = wp.State()
    wf = load_workflow("<test>", host, text="name: t\nsteps:\n  - uses: t.raise\n")
    caplog.set_level(logging.INFO, logger="pcapwire.workflow.engine")
    summary = await Engine(host, None).run(wf, file_chunks(corpus_file("zeek-http-get")))
    err = summary.steps[0].errors[0]
    plugin_file = str(Path(wp.__file__))
    assert err.traceback.startswith("Traceback (most recent call last):")
    assert f'File "{plugin_file}", line ' in err.traceback
    assert err.traceback.rstrip().endswith(f"ValueError: {err.message.split(': ', 1)[1]}")
    assert any(plugin_file in r.getMessage() for r in caplog.records
               if r.levelno == logging.INFO)  # shown with -v


async def test_a_client_that_closes_a_stream_is_not_an_error(caplog):
    async def handler(request: web.Request) -> web.StreamResponse:
        raise ConnectionResetError("Cannot write to closing transport")

    caplog.set_level(logging.DEBUG)
    from aiohttp.test_utils import make_mocked_request

    resp = await error_middleware(make_mocked_request("GET", "/x"), handler)
    assert resp.status == CLIENT_CLOSED == 499
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_run_reads_gzip_captures_like_ingest(tmp_path):
    import gzip

    from pcapwire.workflow.sources import iter_file_chunks

    plain = corpus_file("zeek-http-pipelined-5-files")
    gz = tmp_path / "c.pcap.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    want = [c.data for c in iter_file_chunks(plain, chunk_bytes=4096)]
    assert len(want) > 1
    assert [c.data for c in iter_file_chunks(gz, chunk_bytes=4096)] == want
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(gz.read_bytes()[:len(gz.read_bytes()) // 2])
    got = b"".join(c.data[24:] for c in iter_file_chunks(cut, chunk_bytes=4096))
    oracle = subprocess.run(f"zcat {cut} | tcpdump -r - -w -", shell=True,
                            capture_output=True, check=False).stdout
    assert got == oracle[24:] and 0 < len(got) < sum(len(c) - 24 for c in want)


def test_ingest_of_a_missing_file_or_a_non_capture_is_an_input_error(tmp_path):
    d = _workdir(tmp_path)
    good = str(corpus_file("zeek-http-get"))
    for inputs in (["nope.pcap"], ["not-a-capture.pcap"], ["not-a-capture.pcap", good]):
        p = pcapwire("--data-dir", "store", "ingest", *inputs, cwd=d)
        assert p.returncode == 2, (inputs, p.stderr)
    assert "error: not-a-capture.pcap: byte 0: not a pcap or pcapng file" in p.stderr
    # the valid capture beside it was kept, and the bad one is not remembered as ingested
    q = pcapwire("--data-dir", "store", "query", "-w", "out.pcap", "--stats", cwd=d)
    assert q.stderr.startswith("14 packets, ")
    again = pcapwire("--data-dir", "store", "ingest", "not-a-capture.pcap", cwd=d)
    assert again.returncode == 2 and "already ingested" not in again.stdout


async def test_api_answers_an_upload_that_is_not_a_capture_with_400(aiohttp_client, tmp_path):
    from apiutil import PCAP_TYPE, Tokens
    from pcapwire.api import ApiConfig, create_app

    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    resp = await client.post("/api/v1/ingest", data=b"this is no capture\n",
                             params={"filename": "notes.txt"},
                             headers={**tokens.headers("acme", "analyst"),
                                      "Content-Type": PCAP_TYPE})
    body = await resp.json()
    assert (resp.status, body["code"]) == (400, "not_a_capture")
    assert body["message"] == ("notes.txt: byte 0: not a pcap or pcapng file (magic "
                               "0x74686973); upload a pcap or pcapng file (gzip'd or not)")
