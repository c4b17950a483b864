"""``workflows/file-hash-triage.yaml`` end to end on real traffic: a local HTTP server, real
downloads (urllib), captured by tcpdump on loopback, ingested, lists imported and the
workflow run with ``pcapwire`` on a query of the store -- as a responder would.

Known-bad downloads give critical verdicts and one follow-up PCAP query per flow where the
hash was seen (kept in the case history, PCAP identical to tcpdump's for that flow);
known-good files stop; unknown executables and documents go to YARA and the sandbox, other
unknown files stop."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from e2e.capture import LoopbackCapture, tcpdump_available
from e2e.servers import HttpContent, http_server
from pcaputil import read_records, tcpdump
from pcapwire.cases import CaseStore
from pcapwire.cli import main
from pcapwire.store import Store

WORKFLOW = Path(__file__).parents[1] / "workflows" / "file-hash-triage.yaml"
SAMPLE = Path(__file__).parent / "samples" / "benign.c"
CC = "x86_64-w64-mingw32-gcc"

pytestmark = [
    pytest.mark.skipif(tcpdump_available() is not None, reason=str(tcpdump_available())),
    pytest.mark.skipif(shutil.which(CC) is None, reason=f"{CC} is not installed")]


def test_file_hash_triage_on_real_http_downloads(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    exe = tmp_path / "benign.exe"
    subprocess.run([CC, "-O1", "-s", "-o", str(exe), str(SAMPLE)], check=True,
                   capture_output=True)
    pe = exe.read_bytes()
    files = {"/evil.exe": pe + b"EVIL-MARKER", "/calc.exe": pe + b"GOOD-MARKER",
             "/tool.exe": pe, "/report.pdf": b"%PDF-1.4\n" + b"0 obj << >> endobj\n" * 200,
             "/notes.txt": b"meeting notes\n" * 300}
    content = HttpContent(files={p: (b, {}) for p, b in files.items()})
    with http_server(content) as port, LoopbackCapture(tmp_path / "cap.pcap",
                                                       f"tcp port {port}") as cap:
        for path in ("/evil.exe", "/calc.exe", "/tool.exe", "/report.pdf", "/notes.txt",
                     "/evil.exe"):  # the bad file twice, on two connections
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
                assert r.read() == files[path]
        pcap = cap.stop()

    data = tmp_path / "data"
    bad, good = (hashlib.sha256(files["/evil.exe"]).hexdigest(),
                 hashlib.md5(files["/calc.exe"]).hexdigest())  # noqa: S324
    (tmp_path / "ioc.txt").write_text(f"# IR feed\n{bad}  Dropper.Test\n")
    (tmp_path / "gold.csv").write_text(f"md5,product\n{good},Calculator\n")
    cli = ["--data-dir", str(data)]
    assert main([*cli, "ingest", str(pcap)]) == 0
    assert main([*cli, "hashlist", "import", str(tmp_path / "ioc.txt"), "--name", "ioc",
                 "--kind", "deny"]) == 0
    assert main([*cli, "hashlist", "import", str(tmp_path / "gold.csv"), "--name", "gold",
                 "--kind", "allow"]) == 0
    capsys.readouterr()
    rc = main([*cli, "run", str(WORKFLOW), "--case", "IR-7", "--port", str(port), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    docs = [json.loads(line) for line in out.splitlines()]
    name = {}  # subject id -> downloaded name
    for d in docs:
        ev = d["pcapwire"]["evidence"]
        if d["pcapwire"]["analyzer"] == "hashlist":
            name[d["pcapwire"]["subject"]["id"]] = ev["filename"]
    got = sorted((d["pcapwire"]["analyzer"], name[d["pcapwire"]["subject"]["id"]],
                  d["rule"]["id"] if d["pcapwire"]["analyzer"] == "hashlist"
                  else d["pcapwire"]["severity"] if d["pcapwire"]["analyzer"] == "yara"
                  else "-") for d in docs)
    assert got == sorted([
        ("hashlist", "evil.exe", "hashlist:known-bad"),
        ("hashlist", "evil.exe", "hashlist:known-bad"),
        ("hashlist", "calc.exe", "hashlist:known-good"),
        ("hashlist", "tool.exe", "hashlist:unknown"),
        ("hashlist", "report.pdf", "hashlist:unknown"),
        ("hashlist", "notes.txt", "hashlist:unknown"),
        ("yara", "tool.exe", "high"),            # PE_Executable_In_Stream
        ("sandbox", "tool.exe", "-"), ("sandbox", "report.pdf", "-")])
    bads = [d for d in docs if d["rule"]["id"] == "hashlist:known-bad"]
    assert {(d["pcapwire"]["severity"], d["event"]["risk_score"]) for d in bads} == {
        ("critical", 95.0)}
    assert {d["file"]["hash"]["sha256"] for d in bads} == {bad}

    # one follow-up query per flow where the bad hash was seen, in the case history
    first, again = (d["pcapwire"]["evidence"]["follow_up"] for d in bads)
    ports = sorted(d["source"]["port"] for d in bads)
    assert sorted(f["flow"]["src_port"] for f in first) == ports
    assert {f["status"] for f in first} == {"done"}
    assert {f["status"] for f in again} == {"done (queried earlier in this run)"}
    assert {f["query_id"] for f in again} == {f["query_id"] for f in first}
    with Store(data) as store:
        history = store.cases.query_history("IR-7")
    follow_ups = [q for q in history if q["event"] == f"hashlist:{bad}"]
    assert sorted(q["id"] for q in follow_ups) == sorted(f["query_id"] for f in first)
    assert len(history) == 3 and all(q["status"] == "done" for q in history)
    for f in first:
        mine = read_records((data / "results" / f"{f['query_id']}.pcap").read_bytes())[1]
        theirs = read_records(tcpdump(pcap, f"tcp port {f['flow']['src_port']} and "
                                            f"port {port}"))[1]
        assert mine == theirs and f["packets"] == len(theirs) > 0

    # known-good and other unknown files got no further work; the routing is in the steps
    cases = CaseStore(data / "cases.sqlite")
    try:
        (run,) = cases.runs("IR-7")
        steps = {s.step: (s.status, s.records_in, s.records_skipped, s.outputs)
                 for s in cases.steps(run.run_id)}
    finally:
        cases.close()
    assert steps == {"carve": ("ok", steps["carve"][1], 0, {"file": 6}),
                     "triage": ("ok", 6, 0, {"verdict": 6, "file": 3}),
                     "scan": ("ok", 3, 1, {"verdict": 1}),
                     "detonate": ("ok", 3, 1, {"verdict": 2})}

    # carved files are kept in the store's artifact store, once, with every sighting
    kept = data / "artifacts" / bad[:2] / bad
    assert kept.read_bytes() == files["/evil.exe"]
    seen = [json.loads(line) for line in Path(f"{kept}.sightings.jsonl").read_text()
            .splitlines()]
    assert sorted(s["flow"]["src_port"] for s in seen) == ports

    # a run that keeps nothing (--no-store) on the capture file still consults the store's
    # lists, and its verdicts point at the same flows; no run is recorded for its case
    capsys.readouterr()
    rc = main([*cli, "run", str(WORKFLOW), "--case", "IR-8", "--pcap", str(pcap), "--json",
               "--no-store"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    docs = [json.loads(line) for line in out.splitlines()]
    assert sorted(d["source"]["port"] for d in docs
                  if d["rule"]["id"] == "hashlist:known-bad") == ports
    cases = CaseStore(data / "cases.sqlite")
    try:
        assert cases.runs("IR-8") == []
    finally:
        cases.close()
