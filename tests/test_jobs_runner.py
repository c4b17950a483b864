"""The job runner in-process: every kind on real inputs (corpus captures, generated HTTP
downloads, hash lists), and the error codes of bad jobs (unknown kind, bad parameters, a
path outside the tenant's store, a missing file, a busy store)."""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from pathlib import Path

import pytest
from conftest import corpus_file
from hashlistutil import http_pcap
from pcaputil import read_records
from pcapwire.hashlist import HashListSet
from pcapwire.jobs import Job, JobResult
from pcapwire.jobs.handlers_ingest import MAX_INGEST_PATHS
from pcapwire.jobs.runner import KINDS, run_job, tenant_root
from pcapwire.store import Store

BODIES = [("a.bin", b"first file " * 300), ("b.txt", b"second\n" * 1000)]


def job(kind: str, /, **params: object) -> Job:
    return Job(kind, f"u-{kind}", "acme", dict(params))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "tenants" / "acme"
    path.mkdir(parents=True)
    return path


def failed(result: JobResult) -> tuple[bool, str]:
    return result.ok, result.code


def test_ping_answers_with_the_kinds_and_the_worker(root: Path) -> None:
    result = run_job(job("ping"), root, "sensor-a")
    assert result == JobResult("u-ping", True, data={"kinds": list(KINDS)}, worker="sensor-a")
    assert JobResult.from_json(result.to_json()) == result


def test_ingest_stores_every_record_and_skips_a_file_seen_before(root: Path) -> None:
    pcap = root / "uploads" / "get.pcap"
    pcap.parent.mkdir()
    pcap.write_bytes(corpus_file("zeek-http-get").read_bytes())
    _, records = read_records(pcap.read_bytes())
    first = run_job(job("ingest", paths=["uploads/get.pcap"]), root)
    assert first.ok, first
    assert (first.data["files"], first.data["packets"], first.data["already_ingested"]) == (
        1, len(records), 0) == (1, 14, 0)
    again = run_job(job("ingest", paths=[str(pcap)]), root)
    assert (again.data["packets"], again.data["already_ingested"]) == (0, 1)
    with Store(root) as store:
        assert store.catalog.stats()["packets"] == 14


def test_ingest_limits_stop_a_gzip_bomb_and_say_where(root: Path) -> None:
    data = corpus_file("zeek-http-get").read_bytes()
    (root / "big.pcap.gz").write_bytes(gzip.compress(data))
    result = run_job(job("ingest", paths=["big.pcap.gz"],
                         limits={"max_decompressed_bytes": 4096}), root)
    assert result.ok
    [stop] = result.data["stopped"]
    assert (stop["limit_name"], stop["limit"]) == ("max_decompressed_bytes", 4096)
    bad = run_job(job("ingest", paths=["big.pcap.gz"], limits={"max_bytes": 1}), root)
    assert failed(bad) == (False, "invalid_params") and "max_bytes" in bad.message
    negative = run_job(job("ingest", paths=["big.pcap.gz"], limits={"quota_bytes": -1}), root)
    assert failed(negative) == (False, "invalid_params")


def test_ingest_reports_an_input_that_is_no_capture_in_its_summary(root: Path) -> None:
    (root / "notes.txt").write_text("not a capture\n")
    result = run_job(job("ingest", paths=["notes.txt"]), root)
    assert result.ok and result.data["packets"] == 0
    assert result.data["unusable"] and "notes.txt" in result.data["errors"][0]


def test_ingest_while_another_holds_the_store_is_busy(root: Path) -> None:
    (root / "get.pcap").write_bytes(corpus_file("zeek-http-get").read_bytes())
    with Store(root) as store, store.ingest_lock():
        result = run_job(job("ingest", paths=["get.pcap"]), root)
    assert failed(result) == (False, "ingest_busy")
    assert "another ingest is running" in result.message


def test_ingest_reads_the_workers_read_roots_only(root: Path, tmp_path: Path) -> None:
    shared = tmp_path / "pcaps"
    shared.mkdir()
    (shared / "get.pcap").write_bytes(corpus_file("zeek-http-get").read_bytes())
    spec = job("ingest", paths=[str(shared / "get.pcap")])
    assert failed(run_job(spec, root)) == (False, "path_not_allowed")
    assert run_job(spec, root, read_roots=[shared]).data["packets"] == 14
    # a read root is never a place to write: the carve's output stays in the store
    out = run_job(job("extract", pcap=str(shared / "get.pcap"), out=str(shared / "c")), root,
                  read_roots=[shared])
    assert failed(out) == (False, "path_not_allowed")


def test_extract_carves_the_downloads_byte_for_byte(root: Path) -> None:
    http_pcap(root / "dl.pcap", BODIES)
    result = run_job(job("extract", pcap="dl.pcap", out="results/q1.carve"), root)
    assert result.ok, result
    assert result.data["partial"] is False
    assert result.data["summary"]["files"] == 2
    carved = [json.loads(line) for line in
              (root / "results" / "q1.carve" / "files.jsonl").read_text().splitlines()]
    assert sorted(f["sha256"] for f in carved) == sorted(hashlib.sha256(b).hexdigest()
                                                         for _, b in BODIES)


def test_extract_of_a_file_that_is_no_capture_is_an_input_error(root: Path) -> None:
    (root / "x.pcap").write_bytes(b"this is not a capture at all" * 10)
    result = run_job(job("extract", pcap="x.pcap", out="c"), root)
    assert failed(result) == (False, "input_error") and "x.pcap" in result.message
    protocols = run_job(job("extract", pcap="x.pcap", out="c", protocols=["gopher"]), root)
    assert failed(protocols) == (False, "invalid_params") and "gopher" in protocols.message


def test_hashlist_import_loads_the_list_and_keeps_its_error_codes(root: Path) -> None:
    bad = hashlib.sha256(b"malware").hexdigest()
    (root / "deny.txt").write_text(f"{bad}\nnot-a-hash\n")
    spec = job("hashlist_import", path="deny.txt", name="deny1", kind="deny", shown="deny.txt")
    result = run_job(spec, root)
    assert result.ok, result
    assert (result.data["list"], result.data["added_total"], result.data["bad_lines"]) == (
        "deny1", 1, 1)
    assert result.data["files"][0]["file"] == "deny.txt"  # as ``shown``, no server path
    hs = HashListSet.for_data_dir(root)
    try:
        [triage] = hs.triage_hex([bad])
    finally:
        hs.close()
    assert (triage["verdict"], triage["matches"][0]["list"]) == ("known-bad", "deny1")
    assert failed(run_job(spec, root)) == (False, "hashlist_exists")
    (root / "junk.txt").write_text("nothing here\n")
    junk = run_job(job("hashlist_import", path="junk.txt", name="deny2", kind="deny",
                       shown="junk.txt"), root)
    assert failed(junk) == (False, "invalid_hashlist")
    assert junk.data["report"]["bad_lines"] == 1
    limits = run_job(job("hashlist_import", path="deny.txt", name="deny3", kind="deny",
                         limits={"max_rows": 0}), root)
    assert failed(limits) == (False, "invalid_hashlist") and "max_rows" in limits.message


def test_a_cancelled_hashlist_import_keeps_nothing(root: Path) -> None:
    (root / "deny.txt").write_text(hashlib.sha256(b"x").hexdigest() + "\n")
    cancel = threading.Event()
    cancel.set()
    result = run_job(job("hashlist_import", path="deny.txt", name="deny1", kind="deny"), root,
                     cancel=cancel)
    assert failed(result) == (False, "hashlist_import_cancelled")
    hs = HashListSet.for_data_dir(root)
    try:
        assert hs.lists() == []
    finally:
        hs.close()


@pytest.mark.parametrize(("spec", "code"), [
    (job("rm_rf"), "unknown_kind"),
    (job("extract", out="c"), "invalid_params"),
    (job("extract", pcap=7, out="c"), "invalid_params"),
    (job("extract", pcap="bad\x00name", out="c"), "invalid_params"),
    (job("ingest", paths="get.pcap"), "invalid_params"),
    (job("ingest", paths=[]), "invalid_params"),
    (job("ingest", paths=["x"] * (MAX_INGEST_PATHS + 1)), "invalid_params"),
    (job("extract", pcap="../other/get.pcap", out="c"), "path_not_allowed"),
    (job("extract", pcap="/etc/passwd", out="c"), "path_not_allowed"),
    (job("extract", pcap="escape/get.pcap", out="c"), "path_not_allowed"),
    (job("extract", pcap="get.pcap", out="../other/c"), "path_not_allowed"),
    (job("ingest", paths=["get.pcap", "../other/get.pcap"]), "path_not_allowed"),
    (job("hashlist_import", path="/etc/hostname", name="x", kind="deny"), "path_not_allowed"),
    (job("extract", pcap="missing.pcap", out="c"), "not_found"),
    (job("hashlist_import", path="missing.txt", name="x", kind="deny"), "not_found"),
])
def test_bad_jobs_fail_with_a_code_and_touch_nothing(root: Path, spec: Job, code: str) -> None:
    other = root.parent / "other"
    other.mkdir()
    (other / "get.pcap").write_bytes(corpus_file("zeek-http-get").read_bytes())
    (root / "get.pcap").write_bytes(corpus_file("zeek-http-get").read_bytes())
    (root / "escape").symlink_to(other)  # a link out of the store is still outside
    before = sorted(p.name for p in root.rglob("*"))
    result = run_job(spec, root)
    assert failed(result) == (False, code), result
    assert result.unit_id == spec.unit_id and result.message
    assert sorted(p.name for p in root.rglob("*")) == before
    assert sorted(p.name for p in other.iterdir()) == ["get.pcap"]


def test_a_missing_tenant_store_is_not_found_and_tenant_names_are_checked(
        tmp_path: Path) -> None:
    result = run_job(job("extract", pcap="x.pcap", out="c"), tmp_path / "nowhere")
    assert failed(result) == (False, "not_found")
    assert not (tmp_path / "nowhere").exists()
    assert tenant_root(tmp_path, "acme") == tmp_path / "tenants" / "acme"
    with pytest.raises(Exception) as info:
        tenant_root(tmp_path, "../acme")
    assert getattr(info.value, "code", "") == "invalid_job"
