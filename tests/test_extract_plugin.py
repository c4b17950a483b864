"""The carve analyzers as the workflow engine drives them (contract of
pcapwire.workflow.analyzer: open_session -> start, feed in order, finish, aclose)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import corpus_file
from pcapwire.hooks.host import build_host
from pcapwire.plugins.carve import CarveAnalyzer, CarveStreamsAnalyzer
from pcapwire.plugins.carve.analyzer import CarveConfig
from pcapwire.records import EmailRecord, FileRecord, FlowKey, PcapChunk, StreamRecord
from pcapwire.workflow import RunInfo, StepContext
from pcapwire.workflow.analyzer import check_analyzer


def _ctx(tmp_path: Path, name: str, config: dict, out: list) -> StepContext:
    async def emit(item: object) -> None:
        out.append(item)

    return StepContext(run=RunInfo("run-1", "wf"), step="carve-step", analyzer=name,
                       config=CarveConfig.from_mapping(config), workdir=tmp_path / "work",
                       outputs=("file", "email"), emit_fn=emit)


def test_registered_through_the_entry_point() -> None:
    host = build_host()
    assert {"carve", "carve.streams"} <= set(host.analyzers())
    assert not [f for f in host.failures if f.name == "carve"]
    assert check_analyzer(CarveAnalyzer) == [] and check_analyzer(CarveStreamsAnalyzer) == []
    schema = CarveAnalyzer.Config.json_schema()
    assert schema["additionalProperties"] is False
    assert schema["properties"]["protocols"]["items"]["enum"] == ["http", "smtp", "pop3",
                                                                  "imap", "ftp"]


def test_unknown_config_keys_are_errors() -> None:
    with pytest.raises(Exception, match="nope"):
        CarveConfig.from_mapping({"nope": 1})
    with pytest.raises(Exception, match="gopher"):
        CarveConfig.from_mapping({"protocols": ["gopher"]})


async def test_pcap_chunks_in_emails_and_files_out(tmp_path: Path) -> None:
    out: list = []
    ctx = _ctx(tmp_path, "carve", {"artifacts_dir": str(tmp_path / "art")}, out)
    session = CarveAnalyzer().open_session(ctx)
    data = corpus_file("zeek-smtp-two-messages").read_bytes()
    await session.start()
    try:
        await session.feed(PcapChunk("q1", 0, 1, 65535, data, 0, 0.0, 0.0))
        await session.finish()
    finally:
        await session.aclose()
    emails = [r for r in out if isinstance(r, EmailRecord)]
    files = [r for r in out if isinstance(r, FileRecord)]
    assert [e.sha256[:12] for e in emails] == ["64ff3e167112", "fa70511f24f1"]
    assert len(files) == 4 and all(Path(f.path).is_relative_to(tmp_path / "art") for f in files)
    # each email comes before the files cut from it, so downstream steps can link them
    assert out.index(emails[0]) < out.index(next(f for f in files if f.extra["email_id"] ==
                                                 emails[0].id))


async def test_stream_records_in(tmp_path: Path) -> None:
    out: list = []
    ctx = _ctx(tmp_path, "carve.streams", {"protocols": ["http"],
                                           "artifacts_dir": str(tmp_path / "a")}, out)
    key = FlowKey(6, "10.0.0.1", 3333, "10.0.0.2", 8080)
    body = b"0123456789" * 100
    records = [
        StreamRecord("s1", key, "orig", b"GET /x.bin HTTP/1.1\r\nHost: h\r\n\r\n", 1.0, 1.0),
        StreamRecord("s2", key, "resp", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
                     + body[:300] + body[500:], 1.1, 1.2, gaps=[(341, 200)], complete=False),
    ]
    session = CarveStreamsAnalyzer().open_session(ctx)
    await session.start()
    for rec in records:
        await session.feed(rec)
    await session.finish()
    await session.aclose()
    (f,) = out
    assert isinstance(f, FileRecord)
    assert (f.filename, f.size, f.incomplete, f.missing_ranges) == ("x.bin", 800, True,
                                                                    [(300, 200)])
    assert Path(f.path).read_bytes() == body[:300] + body[500:]
