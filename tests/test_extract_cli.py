"""``pcapwire extract``: output layout, records, exit codes (design §6)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from conftest import corpus_file
from pcapwire.cli import main


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_extract_smtp_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["extract", "--pcap", str(corpus_file("zeek-smtp-two-messages")),
                 "--out", str(out), "--by-name", "--json"])
    assert code == 0
    files, emails = _jsonl(out / "files.jsonl"), _jsonl(out / "emails.jsonl")
    assert [e["sha256"] for e in emails] == [
        "64ff3e16711236b4d6c704212e28961af3e43ddb63997aab921f458484c6d8ae",
        "fa70511f24f1662b530479d2b4375da071de2b1c5ae21d0411a2c13f039dc06e"]
    for e in emails:
        data = Path(e["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == e["sha256"] and e["path"].endswith(".eml")
        assert Path(e["path"]).parent.parent == out / "artifacts"
    assert len(files) == 4
    for f in files:
        p = Path(f["path"])
        assert p == out / "artifacts" / f["sha256"][:2] / f["sha256"]
        assert hashlib.sha256(p.read_bytes()).hexdigest() == f["sha256"]
    # --by-name: hard links under sanitised names (unnamed parts use their hash)
    named = sorted(os.listdir(out / "named"))
    assert "NEWS.txt" in named and len(named) == 4
    assert os.stat(out / "named" / "NEWS.txt").st_ino == os.stat(
        next(f["path"] for f in files if f["filename"] == "NEWS.txt")).st_ino
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["files"], summary["emails"], summary["connections"]["smtp"]) == (4, 2, 2)
    printed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["kind"] for r in printed] == ["file"] * 4 + ["email"] * 2


def test_extract_http_logs_and_protocol_filter(tmp_path: Path) -> None:
    pcap = str(corpus_file("zeek-http-pipelined-5-files"))
    assert main(["extract", "--pcap", pcap, "--out", str(tmp_path / "a")]) == 0
    http = _jsonl(tmp_path / "a" / "http.jsonl")
    assert [t["request"]["start_line"].split()[1].rsplit("/", 1)[1] for t in http] == [
        "enhanced.css", "urchin.js", "bullet_utility.png", "key-point-top.png",
        "header-sunbird.png"]
    assert [t["response"]["decoded_size"] for t in http] == [2675, 21421, 94, 2349, 27579]
    assert len(_jsonl(tmp_path / "a" / "files.jsonl")) == 5
    assert main(["extract", "--pcap", pcap, "--out", str(tmp_path / "b"),
                 "--protocols", "smtp"]) == 0
    assert _jsonl(tmp_path / "b" / "files.jsonl") == []


def test_extract_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extract", "--out", str(tmp_path)]) == 2
    assert "needs --pcap FILE or query filters" in capsys.readouterr().err
    assert main(["extract", "--pcap", str(corpus_file("zeek-http-get")), "--port", "80",
                 "--out", str(tmp_path)]) == 2
    assert "--pcap FILE or query filters, not both" in capsys.readouterr().err
    assert main(["extract", "--pcap", str(corpus_file("zeek-http-get")), "--out",
                 str(tmp_path), "--protocols", "gopher"]) == 2
    assert "unknown gopher" in capsys.readouterr().err
    assert main(["extract", "--pcap", str(tmp_path / "missing.pcap"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "missing.pcap" in capsys.readouterr().err


def test_extract_from_a_store_query_carves_what_the_file_gives(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The design's ``pcapwire extract (--pcap FILE | query filters)``: the same files from
    the store's packets as from the capture, and the query is in the store's history."""
    pcap = str(corpus_file("zeek-http-pipelined-5-files"))
    data = ["--data-dir", str(tmp_path / "store")]
    assert main([*data, "ingest", pcap]) == 0
    assert main(["extract", "--pcap", pcap, "--out", str(tmp_path / "file")]) == 0
    assert main([*data, "extract", "--port", "80", "--case", "IR-3", "--event", "carve",
                 "--out", str(tmp_path / "query")]) == 0
    capsys.readouterr()
    by_file, by_query = (sorted(f["sha256"] for f in _jsonl(tmp_path / d / "files.jsonl"))
                         for d in ("file", "query"))
    assert by_query == by_file and len(by_file) == 5
    assert main([*data, "extract", "--port", "25", "--out", str(tmp_path / "none")]) == 0
    assert _jsonl(tmp_path / "none" / "files.jsonl") == []
    from pcapwire.store import Store

    with Store(tmp_path / "store") as store:
        history = store.cases.query_history("IR-3")
        total = store.catalog.stats()["packets"]
    assert [(q["event"], q["status"], q["packets"]) for q in history] == [
        ("carve", "done", total)]
