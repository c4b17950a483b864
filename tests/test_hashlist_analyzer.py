"""The ``hashlist`` analyzer as the engine drives it (start, feed, finish, aclose): one
verdict per file with the list's severity, forwarding of chosen outcomes, and follow-up
PCAP queries for every flow where a known-bad hash was seen, recorded in the case
history of a real packet store."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
from hashlistutil import SERVER, http_pcap, step_context
from pcapwire.errors import AnalyzerError, ConfigError
from pcapwire.extract.artifacts import ArtifactStore
from pcapwire.extract.source import carve_pcap
from pcapwire.hashlist import DB_NAME, HashListStore, Source
from pcapwire.hooks.host import build_host
from pcapwire.plugins.hashlist import HashlistAnalyzer, HashlistConfig
from pcapwire.query import QuerySpec
from pcapwire.records import FileRecord, FlowKey, Verdict
from pcapwire.store import Store
from pcapwire.workflow.analyzer import check_analyzer

EVIL = b"MZ" + b"\x90" * 3000 + b"not really evil"
GOOD = b"calc.exe bytes " * 200
OTHER = b"something new " * 100


def lists(data: Path, tmp_path: Path) -> None:
    deny = tmp_path / "deny.txt"
    deny.write_text(hashlib.sha256(EVIL).hexdigest() + "  Trojan.Test\n")
    allow = tmp_path / "allow.csv"
    allow.write_text(f"md5\n{hashlib.md5(GOOD).hexdigest()}\n")  # noqa: S324
    with HashListStore(data / DB_NAME) as s:
        s.import_sources([Source(deny)], name="ioc", kind="deny")
        s.import_sources([Source(allow)], name="gold", kind="allow")


async def analyze(tmp_path: Path, records: list[FileRecord], data: Path | None,
                  **config) -> list:
    out: list = []
    cfg = HashlistConfig.from_mapping(config)
    ctx = step_context(tmp_path, cfg, out, data_dir=data)
    session = HashlistAnalyzer().open_session(ctx)
    try:
        await session.start()
        for rec in records:
            await session.feed(rec)
        await session.finish()
    finally:
        await session.aclose()
        if ctx.queries is not None:
            ctx.queries.close()  # type: ignore[attr-defined]
    return out


@pytest.fixture
def carved(tmp_path: Path) -> tuple[Path, list[FileRecord]]:
    """A store with a capture of four downloads ingested, and the files carved from it."""
    pcap = tmp_path / "dl.pcap"
    http_pcap(pcap, [("evil.exe", EVIL), ("calc.exe", GOOD), ("new.bin", OTHER),
                     ("evil-again.exe", EVIL)])
    data = tmp_path / "data"
    with Store(data) as store:
        store.ingest([pcap])
    result, damage = carve_pcap(pcap, ArtifactStore(tmp_path / "artifacts"))
    assert damage == [] and len(result.files) == 4
    return data, result.files


def test_registered_through_the_entry_point_with_a_strict_config() -> None:
    host = build_host()
    assert "hashlist" in host.analyzers()
    assert not [f for f in host.failures if f.name == "hashlist"]
    assert check_analyzer(HashlistAnalyzer) == []
    assert HashlistAnalyzer.outputs == ("verdict", "file")
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        HashlistConfig.from_mapping({"nope": 1})
    with pytest.raises(ConfigError, match="forward"):
        HashlistConfig.from_mapping({"forward": ["maybe"]})


async def test_verdicts_forwarding_and_follow_up_queries(tmp_path, carved) -> None:
    data, files = carved
    lists(data, tmp_path)
    out = await analyze(tmp_path, files, data, forward=["unknown"])
    verdicts = [o for o in out if isinstance(o, Verdict)]
    forwarded = [o for o in out if isinstance(o, FileRecord)]
    assert [(v.subject_id, v.signature_id, v.severity, v.score, v.signature) for v in
            verdicts] == [
        (files[0].id, "hashlist:known-bad", "critical", 95, "file hash on deny list ioc"),
        (files[1].id, "hashlist:known-good", "info", 0, "file hash on allow list gold"),
        (files[2].id, "hashlist:unknown", "info", 0, "file hash on no list"),
        (files[3].id, "hashlist:known-bad", "critical", 95, "file hash on deny list ioc")]
    bad = verdicts[0]
    assert (bad.tags, bad.category, bad.case, bad.step, bad.flow) == (
        ["hashlist", "known-bad", "ioc"], "known-bad", "IR-9", "triage", files[0].flow)
    assert bad.evidence["matches"] == [{
        "list": "ioc", "kind": "deny", "severity": "critical", "scope": "tenant",
        "algorithm": "sha256", "hash": hashlib.sha256(EVIL).hexdigest(),
        "label": "Trojan.Test"}]
    assert (bad.evidence["sha256"], bad.evidence["filename"]) == (
        hashlib.sha256(EVIL).hexdigest(), "evil.exe")
    assert [f.id for f in forwarded] == [files[2].id]
    assert forwarded[0].extra["hashlist"] == {"verdict": "unknown", "severity": "info",
                                              "lists": []}
    assert "hashlist" not in files[2].extra  # the input record is not modified

    # known-bad: one follow-up query per flow where the hash was seen (both downloads)
    first, again = bad.evidence["follow_up"], verdicts[3].evidence["follow_up"]
    assert [(f["flow"]["src_port"], f["status"]) for f in first] == [(40000, "done"),
                                                                    (40003, "done")]
    assert [(f["query_id"], f["status"]) for f in again] == [
        (first[1]["query_id"], "done (queried earlier in this run)"),
        (first[0]["query_id"], "done (queried earlier in this run)")]
    with Store(data) as store:
        history = [q for q in store.cases.query_history("IR-9")]
        assert [(q["id"], q["event"], q["status"]) for q in history] == [
            (f["query_id"], f"hashlist:{hashlib.sha256(EVIL).hexdigest()}", "done")
            for f in first]
        for f, q in zip(first, history, strict=True):
            (flow,) = [r for r in store.catalog.flows("id=?", (f["flow_id"],))]
            assert q["spec"]["flow_ids"] == [flow.id]
            assert f["packets"] == q["packets"] == flow.packets
            expected = store.query_engine().to_bytes(QuerySpec(
                five_tuple=dataclasses.replace(files[0].flow, sport=f["flow"]["src_port"])))
            assert (data / "results" / f"{q['id']}.pcap").read_bytes() == expected
            assert f["bpf"] == (f"tcp and host 10.0.0.1 and host {SERVER} and port "
                                f"{f['flow']['src_port']} and port 80")


async def test_without_a_packet_store_follow_ups_are_listed_not_run(tmp_path, carved) -> None:
    data, files = carved
    lists(data, tmp_path)
    (tmp_path / "lists-only").mkdir()
    (data / DB_NAME).rename(tmp_path / "lists-only" / DB_NAME)
    out = await analyze(tmp_path, files[:1], tmp_path / "lists-only", verdicts=["known-bad"])
    (v,) = out
    assert [(f["flow"]["src_port"], f["status"]) for f in v.evidence["follow_up"]] == [
        (40000, "not run: the run has no packet store (no data directory with a catalog)"),
        (40003, "not run: the run has no packet store (no data directory with a catalog)")]
    out = await analyze(tmp_path, files[:1], tmp_path / "lists-only", follow_up=False)
    assert out[0].evidence["follow_up"] == []


async def test_outcome_filter_named_lists_and_missing_hashes(tmp_path, carved) -> None:
    data, files = carved
    lists(data, tmp_path)
    unhashed = dataclasses.replace(files[1], md5="", sha1="", sha256="")
    out = await analyze(tmp_path, [unhashed, files[0]], data, verdicts=["known-good"],
                        follow_up=False)
    assert [(v.signature_id, v.evidence["md5"]) for v in out] == [
        ("hashlist:known-good", hashlib.md5(GOOD).hexdigest())]  # noqa: S324
    out = await analyze(tmp_path, [files[0]], data, lists=["gold"])
    assert [v.signature_id for v in out] == ["hashlist:unknown"]
    with pytest.raises(AnalyzerError, match=r"no hash list 'nsrl'; lists: gold, ioc"):
        await analyze(tmp_path, [files[0]], data, lists=["nsrl"])


async def test_explicit_databases_and_no_lists_at_all(tmp_path, carved) -> None:
    data, files = carved
    lists(data, tmp_path)
    out = await analyze(tmp_path, [files[0]], None, databases=[str(data / DB_NAME)],
                        follow_up=False)
    assert [v.signature_id for v in out] == ["hashlist:known-bad"]
    out = await analyze(tmp_path, [files[0]], data, databases=["{data_dir}/" + DB_NAME],
                        follow_up=False)
    assert [v.signature_id for v in out] == ["hashlist:known-bad"]
    with pytest.raises(AnalyzerError, match="hash-list store not found: .*nowhere.sqlite"):
        await analyze(tmp_path, [files[0]], data, databases=[str(tmp_path / "nowhere.sqlite")])
    problems = HashlistAnalyzer().check_config(
        HashlistConfig.from_mapping({"databases": ["missing.sqlite"]}), tmp_path)
    assert problems == [f"databases: {tmp_path / 'missing.sqlite'} does not exist (create it "
                        "with `pcapwire hashlist import`)"]
    out = await analyze(tmp_path, [files[0]], tmp_path / "empty")
    assert [v.signature_id for v in out] == ["hashlist:unknown"]


async def test_only_file_records(tmp_path) -> None:
    v = Verdict("x", "file", "f", FlowKey(6, "10.0.0.1", 1, "10.0.0.2", 2), 0.0, "info", 0)
    with pytest.raises(AnalyzerError, match="hashlist takes file records, not 'verdict'"):
        await analyze(tmp_path, [v], None)


@pytest.mark.parametrize(("verdict", "mime", "routed"), [
    ("unknown", "application/vnd.microsoft.portable-executable", True),
    ("unknown", "application/x-dosexec", True),
    ("unknown", "application/x-executable", True),
    ("unknown", "application/pdf", True),
    ("unknown", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
     True),
    ("unknown", "application/vnd.ms-excel.sheet.macroEnabled.12", True),
    ("unknown", "application/msword", True),
    ("unknown", "text/rtf", True),
    ("unknown", "text/plain", False),
    ("unknown", "image/png", False),
    ("known-bad", "application/vnd.microsoft.portable-executable", False),
    ("known-good", "application/pdf", False),
])
def test_shipped_workflow_sends_only_unknown_executables_and_documents_on(
        verdict: str, mime: str, routed: bool) -> None:
    from pcapwire.workflow.document import load_workflow

    wf = load_workflow(Path(__file__).parents[1] / "workflows" / "file-hash-triage.yaml",
                       build_host())
    assert [(s.id, s.uses, s.input) for s in wf.steps] == [
        ("carve", "carve", "pcap"), ("triage", "hashlist", "carve"),
        ("scan", "yara", "triage"), ("detonate", "sandbox", "triage")]
    assert wf.step("triage").config.forward == ["unknown"]
    ctx = {"file": {"mime_type": mime, "extra": {"hashlist": {"verdict": verdict}}}}
    assert wf.step("scan").condition(ctx) is routed
    assert wf.step("detonate").condition(ctx) is routed
