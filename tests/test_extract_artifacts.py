"""Content-addressed store, filename sanitising, record making (pcapwire.extract.artifacts/emit)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from pcapwire.extract import artifacts
from pcapwire.extract.artifacts import ArtifactStore, sanitize_filename
from pcapwire.extract.buffer import CarvedEmail, CarvedFile
from pcapwire.extract.emit import RecordMaker
from pcapwire.records import EmailRecord, FileRecord, FlowKey, record_from_dict

FLOW = FlowKey(6, "10.0.0.1", 1234, "10.0.0.2", 25)
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489")


@pytest.mark.parametrize("raw,safe", [
    ("../../etc/passwd", "passwd"),
    ("C:\\Windows\\system32\\evil.dll", "evil.dll"),
    ("..", "unnamed"),
    (".bashrc", "bashrc"),
    ("a\x00b\nc\x7f.txt", "a_b_c_.txt"),
    ('what?<>:"|*.pdf', "what_______.pdf"),
    ("CON.txt", "_CON.txt"),
    ("  spaced .  ", "spaced"),
    ("", "unnamed"),
    ("naïve résumé.pdf", "naïve résumé.pdf"),
])
def test_sanitize_filename(raw: str, safe: str) -> None:
    assert sanitize_filename(raw) == safe


def test_sanitize_keeps_extension_within_the_byte_limit() -> None:
    assert artifacts.MAX_FILENAME_BYTES == 200
    name = sanitize_filename("é" * 300 + ".docx")
    assert name.endswith(".docx") and len(name.encode()) <= 200
    assert len(sanitize_filename("x" * 500).encode()) == 200


def test_store_layout_metadata_and_idempotence(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "a")
    first = store.put(PNG)
    sha = hashlib.sha256(PNG).hexdigest()
    assert first.new and first.path == str(tmp_path / "a" / sha[:2] / sha)
    assert Path(first.path).read_bytes() == PNG
    assert (first.mime_type, first.md5, first.sha1) == (
        "image/png", hashlib.md5(PNG).hexdigest(), hashlib.sha1(PNG).hexdigest())
    assert first.magic.startswith("PNG image data, 1 x 1")
    meta = json.loads(Path(first.path + ".json").read_text())
    assert meta == {"sha256": sha, "md5": first.md5, "sha1": first.sha1, "size": len(PNG),
                    "mime_type": "image/png", "magic": first.magic}
    mode = stat.S_IMODE(os.stat(first.path).st_mode)
    assert mode == 0o444  # carved bytes are never executable
    again = store.put(PNG)
    assert not again.new and again.path == first.path
    assert sorted(os.listdir(tmp_path / "a" / sha[:2])) == [sha, sha + ".json"]


def test_record_maker_file_and_sightings(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    maker = RecordMaker(store)
    carved = CarvedFile(PNG, "http", "resp", 5.0, filename="../x/logo.png",
                        incomplete=True, missing_ranges=[(10, 5)], extra={"k": 1})
    rec = maker.file(carved, FLOW)
    assert isinstance(rec, FileRecord)
    assert (rec.filename, rec.extra["safe_filename"], rec.size, rec.mime_type) == (
        "../x/logo.png", "logo.png", len(PNG), "image/png")
    assert rec.incomplete and rec.missing_ranges == [(10, 5)]
    assert record_from_dict(json.loads(json.dumps(rec.to_dict()))) == rec
    (s,) = store.sightings(rec.path)
    assert s["filename"] == "../x/logo.png" and s["flow"]["dest_port"] == 25
    rec2 = RecordMaker(store).file(carved, FLOW)
    assert rec2.id == rec.id  # ids are stable across runs


def test_record_maker_email_with_attachment(tmp_path: Path) -> None:
    msg = (b"From: A <a@x.org>\r\nTo: b@y.org, C <c@y.org>\r\nCc: d@y.org\r\n"
           b"Subject: =?iso-8859-1?q?Gr=FC=DFe?=\r\nDate: Mon, 5 Oct 2009 11:36:07 +0530\r\n"
           b"Message-ID: <m1@x.org>\r\nX-Mailer: test 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\n"
           b"Content-Type: text/plain\r\n\r\nhello\r\n--z\r\nContent-Type: image/png\r\n"
           b"Content-Disposition: attachment; filename=\"p.png\"\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n"
           + __import__("base64").encodebytes(PNG) + b"--z--\r\n")
    maker = RecordMaker(ArtifactStore(tmp_path))
    email, files = maker.email(CarvedEmail(msg, "smtp", 3.0, "a@x.org", ["b@y.org"]), FLOW)
    assert isinstance(email, EmailRecord)
    assert Path(email.path).read_bytes() == msg and email.path.endswith(".eml")
    assert email.sha256 == hashlib.sha256(msg).hexdigest() and email.size == len(msg)
    assert (email.subject, email.from_, email.to, email.cc) == (
        "Grüße", "A <a@x.org>", ["b@y.org", "C <c@y.org>"], ["d@y.org"])
    assert (email.date, email.message_id, email.text_body) == (
        "Mon, 5 Oct 2009 11:36:07 +0530", "<m1@x.org>", "hello")
    assert email.extra["user_agent"] == "test 1.0"
    assert email.extra["to_addresses"] == ["b@y.org", "c@y.org"]
    assert [(f.filename, f.mime_type, f.extra["mime_role"]) for f in files] == [
        ("", "text/plain", "body"), ("p.png", "image/png", "attachment")]
    assert email.attachments == [files[1].id]
    assert files[1].sha256 == hashlib.sha256(PNG).hexdigest()
    assert all(f.extra["email_id"] == email.id for f in files)
