"""Truncated and damaged captures: what was carried is kept, marked incomplete, with the
missing byte ranges; the damage is reported with file and byte offset."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
from conftest import CASES, corpus_file
from pcapwire.cli import main
from pcapwire.errors import CaptureFormatError
from pcapwire.extract.artifacts import ArtifactStore
from pcapwire.extract.source import carve_pcap

PDF = "suricata-http-pdf-filestore"


def test_capture_cut_mid_record(tmp_path: Path) -> None:
    data = corpus_file(PDF).read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) // 2 + 7])  # ends inside a packet record
    result, damage = carve_pcap(cut, ArtifactStore(tmp_path / "a"))
    (f,) = result.files
    want = CASES[PDF]["computed"]["http_transactions"]["connections"][0]["responses"][0]
    total = want["body_as_transferred"]["size"]
    assert f.incomplete and 0 < f.size < total
    assert f.missing_ranges == [(f.size, total - f.size)]  # the tail never seen
    # what was kept is exactly the start of the real file
    full, _ = carve_pcap(corpus_file(PDF), ArtifactStore(tmp_path / "b"))
    assert Path(full.files[0].path).read_bytes()[: f.size] == Path(f.path).read_bytes()
    assert full.files[0].sha256 == want["body_as_transferred"]["sha256"]
    assert len(damage) == 1 and damage[0].startswith(f"{cut} at byte ")
    # the CLI says so and exits 1 (partial)
    assert main(["extract", "--pcap", str(cut), "--out", str(tmp_path / "o")]) == 1


def test_gzip_capture_cut_short(tmp_path: Path) -> None:
    raw = gzip.compress(corpus_file(PDF).read_bytes())
    bad = tmp_path / "cut.pcap.gz"
    bad.write_bytes(raw[: len(raw) * 3 // 4])
    result, damage = carve_pcap(bad, ArtifactStore(tmp_path / "a"))
    assert [f.incomplete for f in result.files] == [True]
    assert any("gzip stream truncated after" in d for d in damage)


def test_not_a_capture(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("this is not a pcap\n" * 10)
    with pytest.raises(CaptureFormatError, match="notes.txt"):
        carve_pcap(junk, ArtifactStore(tmp_path / "a"))
    assert main(["extract", "--pcap", str(junk), "--out", str(tmp_path / "o")]) == 2


def test_same_file_twice_is_stored_once(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "a")
    r1, _ = carve_pcap(corpus_file("zeek-http-get"), store)
    r2, _ = carve_pcap(corpus_file("zeek-http-qinq-vlan0"), store)  # same file, VLAN-tagged
    assert r1.files[0].sha256 == r2.files[0].sha256 and r1.files[0].path == r2.files[0].path
    assert len(store.sightings(r1.files[0].path)) == 2
    assert hashlib.sha256(Path(r1.files[0].path).read_bytes()).hexdigest() == r1.files[0].sha256


def test_whole_gzip_capture_reports_no_damage(tmp_path: Path) -> None:
    result, damage = carve_pcap(corpus_file("zeek-gzip-pcap-iso-download"),
                                ArtifactStore(tmp_path / "a"))
    assert damage == [] and [f.filename for f in result.files] == ["myiso.iso"]
