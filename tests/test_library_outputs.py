"""Shapes the library defines and the CLI and the API only pass on: the ingest summary
(:meth:`IngestReport.summary`) and the carve output directory
(:mod:`pcapwire.extract.layout`)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import corpus_file
from pcapwire.api.schemas import validate
from pcapwire.cli import main
from pcapwire.extract.layout import CarveDir, artifact_store, write_carve
from pcapwire.extract.source import carve_pcap
from pcapwire.store import Store
from pcapwire.store.limits import IngestLimits
from pcapwire.synth import generate

BASE_KEYS = {"files", "already_ingested", "packets", "bytes", "flows_new", "flows_total",
             "segments", "seconds", "mb_per_s", "errors", "warnings"}
TIMING = ("seconds", "mb_per_s")


def test_ingest_summary_is_what_the_cli_prints(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    pcap = corpus_file("zeek-http-get")
    with Store(tmp_path / "lib") as store:
        summary = store.ingest([pcap]).summary()
    assert set(summary) == BASE_KEYS  # no "stopped", no "unusable" unless there are any
    assert summary["files"] == 1 and summary["packets"] > 0 and summary["errors"] == []
    validate({**summary, "sensor": None}, "IngestSummary")  # what the API answers
    assert main(["--data-dir", str(tmp_path / "cli"), "ingest", "--json", str(pcap)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in printed.items() if k not in TIMING} == {
        k: v for k, v in summary.items() if k not in TIMING}
    with Store(tmp_path / "lib") as store:  # again: already ingested, nothing new
        again = store.ingest([pcap]).summary()
    assert (again["already_ingested"], again["packets"], again["flows_new"]) == (1, 0, 0)


def test_ingest_summary_names_unusable_inputs_and_limit_stops(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("not a capture\n" * 10)
    plain = tmp_path / "synth.pcap"
    generate(plain, 3 * 2**20, seed=3)
    gz = tmp_path / "synth.pcap.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=1))
    with Store(tmp_path / "s") as store:
        summary = store.ingest([junk]).summary()
        assert summary["unusable"] == [str(junk)] and "stopped" not in summary
        assert len(summary["errors"]) == 1 and str(junk) in summary["errors"][0]
        report = store.ingest([gz], limits=IngestLimits(max_decompressed_bytes=2**20))
    summary = report.summary()
    assert "unusable" not in summary
    (stop,) = summary["stopped"]
    assert stop == report.stopped[0].as_dict()
    assert (stop["limit_name"], stop["path"]) == ("max_decompressed_bytes", str(gz))
    assert set(summary) == BASE_KEYS | {"stopped"}
    json.dumps(summary)  # plain JSON all through


def test_carve_directory_written_and_read_back(tmp_path: Path) -> None:
    out = tmp_path / "carve"
    result, damage = carve_pcap(corpus_file("zeek-smtp-two-messages"), artifact_store(out))
    summary = write_carve(out, result, damage, by_name=True)
    carved = CarveDir(out)
    assert carved.complete and carved.summary() == summary
    assert (summary["files"], summary["emails"], summary["input_damage"]) == (4, 2, [])
    assert carved.files() == [json.loads(json.dumps(f.to_dict(), default=str))
                              for f in result.files]
    assert [e["sha256"] for e in carved.emails()] == [e.sha256 for e in result.emails]
    assert carved.http() == [] and carved.ftp() == []
    for f in carved.files():
        path = carved.content(f["sha256"])
        assert path is not None and str(path) == f["path"]
    for e in carved.emails():
        assert carved.content(e["sha256"], ".eml") == Path(e["path"])
        assert carved.content(e["sha256"]) is None  # an email's bytes are the .eml
    assert len(list((out / "named").iterdir())) == 4
    sha = result.files[0].sha256
    for bad in (sha.upper(), sha + "\n", "../" + sha[3:], sha[:63], "", "x" * 64):
        assert carved.content(bad) is None
    assert not CarveDir(tmp_path / "nothing").complete
    assert CarveDir(tmp_path / "nothing").summary() is None
    assert CarveDir(tmp_path / "nothing").files() == []
