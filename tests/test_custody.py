"""Chain of custody (issue 12, part 4): real actions (ingest, query -w, extract, case
bundle, capture) append to hash-chained logs; `pcapwire custody verify` passes on an
untouched case and names the entry or file that a one-byte change, a removed line or a
reordering breaks; a bundle checks with the real sha256sum, unzip and openssl."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from captureutil import ManualSource, batches_of, wait_for
from conftest import corpus_file
from pcapwire import custody
from pcapwire.capture import Recorder, RecorderConfig
from pcapwire.cli import EXIT_OK, EXIT_PARTIAL, main
from pcapwire.custody import events, signing
from pcapwire.custody.verify import sha256_zstd, verify
from pcapwire.store import Store

SMTP = "arkime-smtp-base64-zip"
IMAP = "arkime-imap-inbox"
CASE = "IR-42"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def entries(data: Path, case: str | None) -> list[dict]:
    return [json.loads(line) for line in custody.read(data, case)]


def cli(data: Path, *args: str) -> int:
    return main(["--data-dir", str(data), *args])


@pytest.fixture
def case_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store after real actions on case IR-42: ingest of two captures, a query written
    to a file, an extraction, a legal hold, a bundle."""
    monkeypatch.delenv(signing.KEY_ENV, raising=False)
    data = tmp_path / "data"
    assert cli(data, "ingest", str(corpus_file(SMTP)), str(corpus_file(IMAP))) == EXIT_OK
    assert cli(data, "query", "--case", CASE, "--port", "25", "-w",
               str(tmp_path / "smtp.pcap")) == EXIT_OK
    assert cli(data, "extract", "--case", CASE, "--port", "25", "--out",
               str(tmp_path / "carved")) == EXIT_OK
    assert cli(data, "hold", "create", "--case", CASE, "--reason", "test", "--port", "25",
               "--start", "0", "--end", "2000000000") == EXIT_OK
    assert cli(data, "case", "bundle", CASE, "-o", str(tmp_path / "case.zip")) == EXIT_OK
    return data


def test_seal_entries_hash_the_segment_files(case_dir: Path) -> None:
    with Store(case_dir) as store:
        segments = {s.path: s for s in store.catalog.segments()}
    seals = entries(case_dir, None)
    assert [e["action"] for e in seals] == ["segment.seal", "segment.seal"]
    objects = [e["objects"][0] for e in seals]
    assert {o["path"] for o in objects} == set(segments)
    for o in objects:
        assert o["sha256"] == sha256(case_dir / o["path"])
        assert (o["size"], o["id"]) == (segments[o["path"]].size, segments[o["path"]].id)
    assert seals[0]["details"]["source"] == str(corpus_file(SMTP))


def test_untouched_case_verifies(case_dir: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    log = entries(case_dir, CASE)
    assert [e["action"] for e in log] == ["query", "export", "query", "extract",
                                          "hold.create", "bundle"]
    assert [e["seq"] for e in log] == [1, 2, 3, 4, 5, 6]
    assert all(e["actor"] == custody.actor_cli() for e in log)
    query, export = log[0], log[1]
    assert query["details"]["packets"] == 28 and query["details"]["status"] == "done"
    assert [o["kind"] for o in query["objects"]] == ["segment"]
    assert export["objects"][0]["sha256"] == sha256(tmp_path / "smtp.pcap")
    assert export["details"]["query_id"] == query["details"]["query_id"]
    carved = {o["sha256"] for o in log[3]["objects"]}
    assert carved == {json.loads(line)["sha256"] for name in ("files.jsonl", "emails.jsonl")
                      for line in (tmp_path / "carved" / name).read_text().splitlines()}
    assert len(carved) == 3
    result = verify(case_dir, CASE)
    assert result.ok, result.problems
    assert (result.entries, result.store_entries, result.files_checked) == (6, 2, 2)
    assert result.head == hashlib.sha256(custody.read(case_dir, CASE)[-1]).hexdigest()
    capsys.readouterr()
    assert cli(case_dir, "custody", "verify", CASE, "--json") == EXIT_OK
    assert json.loads(capsys.readouterr().out)["verified"] is True
    assert cli(case_dir, "custody", "verify", "--store") == EXIT_OK
    assert capsys.readouterr().out.startswith("verified: the store log: 2 entries")


def _rewrite(data: Path, case: str, lines: list[bytes]) -> None:
    custody.log_path(data, case).write_bytes(b"".join(line + b"\n" for line in lines))


def test_one_changed_byte_of_an_entry_is_named(case_dir: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    lines = custody.read(case_dir, CASE)
    lines[1] = lines[1].replace(b'"action":"export"', b'"action":"exporT"')
    _rewrite(case_dir, CASE, lines)
    result = verify(case_dir, CASE)
    first = result.problems[0]
    assert (first.seq, first.line, first.action) == (2, 2, "exporT")
    assert len(result.problems) == 1
    capsys.readouterr()
    assert cli(case_dir, "custody", "verify", CASE) == EXIT_PARTIAL
    out = capsys.readouterr().out
    assert out.startswith("MISMATCH: case 'IR-42': entry seq 2 (line 2, exporT) does not "
                          "hash to the prev of entry seq 3"), out


def test_a_byte_that_breaks_the_json_or_its_form_is_named(case_dir: Path) -> None:
    lines = custody.read(case_dir, CASE)
    _rewrite(case_dir, CASE, [*lines[:2], lines[2].replace(b'{"action"', b'{ "action"'),
                              *lines[3:]])
    first = verify(case_dir, CASE).problems[0]
    assert (first.seq, first.line) == (3, 3) and "canonical" in first.message
    _rewrite(case_dir, CASE, [*lines[:2], lines[2][:-1], *lines[3:]])
    first = verify(case_dir, CASE).problems[0]
    assert first.line == 3 and "not a JSON entry" in first.message


def test_a_removed_or_moved_line_is_named(case_dir: Path) -> None:
    lines = custody.read(case_dir, CASE)
    _rewrite(case_dir, CASE, [lines[0], *lines[2:]])
    first = verify(case_dir, CASE).problems[0]
    assert (first.line, first.seq) == (2, 3)
    assert first.message == "line 2 holds seq 3, expected 2: an entry before it was removed"
    _rewrite(case_dir, CASE, [lines[0], lines[2], lines[1], *lines[3:]])
    first = verify(case_dir, CASE).problems[0]
    assert (first.line, first.seq) == (2, 3)
    _rewrite(case_dir, CASE, lines[1:])
    assert verify(case_dir, CASE).problems[0].message.startswith("line 1 holds seq 2")


def test_one_changed_evidence_byte_names_the_file(case_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    seal = entries(case_dir, None)[0]
    rel = seal["objects"][0]["path"]
    path = case_dir / rel
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    result = verify(case_dir, CASE)
    assert len(result.problems) == 1
    first = result.problems[0]
    assert (first.log, first.path, first.seq, first.action) == ("store", rel, 1,
                                                                 "segment.seal")
    assert (first.expected, first.actual) == (seal["objects"][0]["sha256"],
                                              hashlib.sha256(data).hexdigest())
    capsys.readouterr()
    assert cli(case_dir, "custody", "verify", CASE) == EXIT_PARTIAL
    assert f"MISMATCH: case 'IR-42': {rel} does not match entry seq 1 (segment.seal)" in \
        capsys.readouterr().out
    path.unlink()
    assert "is missing and no entry removed it" in verify(case_dir, CASE).problems[0].message


def test_one_changed_byte_of_hold_evidence_names_the_file(case_dir: Path) -> None:
    hold = next(e for e in entries(case_dir, CASE) if e["action"] == "hold.create")
    rel = hold["objects"][0]["path"]
    data = bytearray((case_dir / rel).read_bytes())
    data[-1] ^= 0x80
    (case_dir / rel).write_bytes(bytes(data))
    problems = verify(case_dir, CASE).problems
    assert [(p.log, p.path, p.seq, p.action) for p in problems] == [
        ("IR-42.jsonl", rel, hold["seq"], "hold.create")]


def test_deleted_and_compressed_segments_follow_the_store_log(case_dir: Path) -> None:
    """A segment retention deleted is not hashed; one replaced by its compressed form is
    checked by the compressed file's hash and by that of its decompressed bytes."""
    from pcapwire.retention.delete import delete_segment
    from pcapwire.retention.plan import Candidate
    from pcapwire.store.compression import compress_segment, store_lock

    smtp, imap = (e["objects"][0] for e in entries(case_dir, None))
    with Store(case_dir) as store:
        seg = store.catalog.segments(ids=[imap["id"]])[0]
        cand = Candidate(seg.id, seg.path, seg.first_ns, seg.last_ns, seg.packets, seg.size)
        assert delete_segment(store, cand, "test", "retention") is not None
    with store_lock(case_dir):
        assert compress_segment(case_dir, smtp["id"]) is not None
    assert [e["action"] for e in entries(case_dir, None)][2:] == ["segment.delete",
                                                                  "segment.compress"]
    assert not (case_dir / smtp["path"]).exists()
    result = verify(case_dir, CASE)
    assert result.ok, result.problems
    assert result.files_checked == 2 and verify(case_dir, None).ok  # .zst and evidence
    zst = case_dir / (smtp["path"] + ".zst")
    assert sha256_zstd(zst) == smtp["sha256"]  # the seekable format, read across frames
    data = bytearray(zst.read_bytes())
    data[len(data) // 2] ^= 0x01
    zst.write_bytes(bytes(data))
    first = verify(case_dir, CASE).problems[0]
    assert (first.path, first.action) == (smtp["path"] + ".zst", "segment.compress")


def test_the_bundle_checks_with_standard_tools(case_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "unpacked"
    subprocess.run(["unzip", "-q", str(tmp_path / "case.zip"), "-d", str(out)], check=True)
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == ["MANIFEST.sha256", "MANIFEST.sha256.sig", "VERIFY.txt", "case.json",
                     "custody-public-key.pem", "custody/IR-42.jsonl", "custody/store.jsonl",
                     "evidence/hold-1/part-0001.pcap", "verdicts.jsonl"]
    hold = json.loads(custody.read(case_dir, CASE)[4])["objects"][0]
    assert sha256(out / "evidence/hold-1/part-0001.pcap") == hold["sha256"]
    listed = [line.split("  ", 1)[1] for line in
              (out / "MANIFEST.sha256").read_text().splitlines()]
    assert sorted(listed) == [n for n in names if not n.startswith("MANIFEST")]
    check = subprocess.run(["sha256sum", "-c", "MANIFEST.sha256"], cwd=out,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    openssl = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "custody-public-key.pem",
               "-rawin", "-in", "MANIFEST.sha256", "-sigfile", "MANIFEST.sha256.sig"]
    ok = subprocess.run(openssl, cwd=out, capture_output=True, text=True)
    assert ok.returncode == 0 and "Signature Verified Successfully" in ok.stdout
    # the bundle's key is the installation's; the logs are the ones kept (up to the bundle)
    assert (out / "custody-public-key.pem").read_bytes() == signing.public_pem(case_dir)
    kept = custody.read(case_dir, CASE)
    assert (out / "custody/IR-42.jsonl").read_bytes() == b"".join(x + b"\n" for x in kept[:-1])
    assert json.loads(kept[-1])["objects"][0]["sha256"] == sha256(out / "MANIFEST.sha256")
    assert subprocess.run([sys.executable, "-m", "pcapwire.cli", "custody", "verify", "--log",
                           str(out / "custody/IR-42.jsonl")], capture_output=True).returncode == 0
    manifest = bytearray((out / "MANIFEST.sha256").read_bytes())
    manifest[0] = ord("0") if manifest[0] != ord("0") else ord("1")
    (out / "MANIFEST.sha256").write_bytes(bytes(manifest))
    bad = subprocess.run(openssl, cwd=out, capture_output=True, text=True)
    assert bad.returncode != 0 and "Signature Verification Failure" in bad.stdout
    assert subprocess.run(["sha256sum", "-c", "--quiet", "MANIFEST.sha256"], cwd=out,
                          capture_output=True).returncode != 0


def test_the_signature_checks_with_the_cryptography_package(case_dir: Path,
                                                            tmp_path: Path) -> None:
    import zipfile

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    with zipfile.ZipFile(tmp_path / "case.zip") as zf:
        key = load_pem_public_key(zf.read("custody-public-key.pem"))
        manifest, sig = zf.read("MANIFEST.sha256"), zf.read("MANIFEST.sha256.sig")
    assert len(sig) == 64
    key.verify(sig, manifest)  # type: ignore[union-attr]
    with pytest.raises(InvalidSignature):
        key.verify(sig, manifest + b"\n")  # type: ignore[union-attr]


_APPENDER = """
import sys
from pcapwire import custody
for i in range(int(sys.argv[3])):
    custody.append(sys.argv[1], "race", "note", sys.argv[2], [], {"i": i})
"""


def test_two_processes_appending_at_once_keep_the_chain(tmp_path: Path) -> None:
    (tmp_path / "catalog.sqlite").touch()
    n = 150
    procs = [subprocess.Popen([sys.executable, "-c", _APPENDER, str(tmp_path), who, str(n)])
             for who in ("a", "b")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    log = entries(tmp_path, "race")
    assert [e["seq"] for e in log] == list(range(1, 2 * n + 1))
    for who in ("a", "b"):
        assert [e["details"]["i"] for e in log if e["actor"] == who] == list(range(n))
    result = verify(tmp_path, "race")
    assert result.ok and result.entries == 2 * n


_KEYMAKER = """
import sys
from pcapwire.custody import signing
sys.stdout.buffer.write(signing.public_pem(sys.argv[1]))
"""


def test_the_key_is_made_once_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(signing.KEY_ENV, raising=False)
    env = {k: v for k, v in os.environ.items() if k != signing.KEY_ENV}
    procs = [subprocess.Popen([sys.executable, "-c", _KEYMAKER, str(tmp_path)], env=env,
                              stdout=subprocess.PIPE) for _ in range(3)]
    pems = {p.communicate(timeout=60)[0] for p in procs}
    assert len(pems) == 1 and pems == {signing.public_pem(tmp_path)}
    key = tmp_path / "custody" / signing.KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == signing.KEY_MODE == 0o600
    assert [p.name for p in key.parent.iterdir()] == [signing.KEY_FILE]  # no temporaries
    other = tmp_path / "elsewhere.pem"
    monkeypatch.setenv(signing.KEY_ENV, str(other))
    assert signing.public_pem(tmp_path) != pems.pop() and other.exists()


def test_many_objects_are_split_over_entries(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "MAX_OBJECTS_PER_ENTRY", 2)
    objects = [{"kind": "export", "path": f"/x/{i}", "sha256": "0" * 64} for i in range(5)]
    events.record(tmp_path, "big", "extract", "me", objects, {"query_id": "q"})
    log = entries(tmp_path, "big")
    assert [len(e["objects"]) for e in log] == [2, 2, 1]
    assert [(e["details"]["part"], e["details"]["parts"]) for e in log] == [(1, 3), (2, 3),
                                                                            (3, 3)]
    assert [o["path"] for e in log for o in e["objects"]] == [o["path"] for o in objects]
    assert events.MAX_OBJECTS_PER_ENTRY == 2  # the limit, named (2000 in the module)


def test_capture_seals_with_the_hash_of_each_segment(tmp_path: Path) -> None:
    src = ManualSource()
    rec = Recorder(tmp_path, RecorderConfig(commit_interval=0.05, status_interval=0.1,
                                            rotate_seconds=0, disk_reserve=0,
                                            segment_bytes=8 * 1024))
    rec.start([src])
    src.push(*batches_of(corpus_file(IMAP), 4 * 1024))
    src.end()
    try:
        wait_for(lambda: rec.inputs_ended, what="the inputs sealed")
    finally:
        rec.stop()
    with Store(tmp_path) as store:
        segments = {s.path: s.id for s in store.catalog.segments()}
    seals = [e["objects"][0] for e in entries(tmp_path, None)]
    assert len(segments) > 2
    assert {o["path"]: o["id"] for o in seals} == segments
    assert all(o["sha256"] == sha256(tmp_path / o["path"]) for o in seals)
    assert verify(tmp_path, None).ok
