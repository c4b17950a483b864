"""End to end on real traffic: local servers, real clients (curl, urllib, smtplib, ftplib),
captured by tcpdump on loopback, carved by pcapwire, compared with the bytes that were sent.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import random
import shutil
import smtplib
import subprocess
import urllib.request
from email.message import EmailMessage
from pathlib import Path

import pytest
from e2e.capture import LoopbackCapture, tcpdump_available
from e2e.servers import HttpContent, SmtpInbox, ftp_server, http_server, smtp_server
from pcapwire.extract.artifacts import ArtifactStore
from pcapwire.extract.source import carve_pcap

pytestmark = pytest.mark.skipif(tcpdump_available() is not None,
                                reason=str(tcpdump_available()))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


TEXT = b"".join(b"line %06d: pcapwire carves what crossed the wire\n" % i for i in range(6000))
LOG = b"".join(TEXT.splitlines(keepends=True)[:60]) + b"=\ttab, trailing space \n"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_http_downloads_and_upload(tmp_path: Path) -> None:
    content = HttpContent(files={
        "/plain.bin": (blob(300_000, 1), {}),
        "/text.txt": (TEXT, {"gzip": True, "type": "text/plain"}),
        "/chunked.bin": (blob(150_000, 2), {"chunked": True, "chunk": 7000}),
        "/dl?id=3": (b"%PDF-1.4\n" + blob(20_000, 3),
                     {"disposition": 'attachment; filename="report.pdf"',
                      "type": "application/pdf"}),
    })
    upload = tmp_path / "notes.txt"
    upload.write_bytes(b"uploaded by curl -F\n" * 100)
    with http_server(content) as port, LoopbackCapture(tmp_path / "http.pcap",
                                                       f"tcp port {port}") as cap:
        base = f"http://127.0.0.1:{port}"
        # one curl, several URLs: one keep-alive connection
        subprocess.run(["curl", "-sS", "--compressed", "-o", "/dev/null", "-o", "/dev/null",
                        "-o", "/dev/null", "-o", "/dev/null", f"{base}/plain.bin",
                        f"{base}/text.txt", f"{base}/chunked.bin", f"{base}/dl?id=3"],
                       check=True, timeout=30)
        subprocess.run(["curl", "-sS", "-o", "/dev/null", "-F", f"file=@{upload}",
                        "-F", "comment=hello", f"{base}/upload"], check=True, timeout=30)
        with urllib.request.urlopen(f"{base}/plain.bin", timeout=30) as r:
            assert r.read() == content.files["/plain.bin"][0]
        pcap = cap.stop()

    result, damage = carve_pcap(pcap, ArtifactStore(tmp_path / "out"))
    assert damage == []
    down = [f for f in result.files if f.direction == "resp" and f.extra["http"]["status"] == 200
            and f.extra["http"]["uri"] != "/upload"]
    sent = {path: body for path, (body, _) in content.files.items()}
    assert [(f.extra["http"]["uri"], f.sha256) for f in down] == [
        (p, sha(sent[p])) for p in ("/plain.bin", "/text.txt", "/chunked.bin", "/dl?id=3",
                                    "/plain.bin")]
    assert [f.filename for f in down] == ["plain.bin", "text.txt", "chunked.bin",
                                          "report.pdf", "plain.bin"]
    gz = down[1]
    assert gz.extra["content_decoded"] is True and gz.extra["content_encoding"] == "gzip"
    assert gz.extra["transferred"]["size"] < len(TEXT)
    assert Path(gz.path).read_bytes() == TEXT  # stored decoded
    assert down[3].mime_type == "application/pdf"
    assert [f.extra["http"]["trans_depth"] for f in down[:4]] == [1, 2, 3, 4]
    # one connection for the four downloads (keep-alive), one for the upload, one for urllib
    assert len({f.flow for f in down[:4]}) == 1 and len({f.flow for f in down}) == 2
    # the multipart upload: the file part is a file with its name, as the server received it
    (raw_upload,) = content.uploads
    parts = [f for f in result.files if f.direction == "orig"]
    assert [(f.extra["form_field"], f.filename) for f in parts] == [("file", "notes.txt"),
                                                                     ("comment", "")]
    assert parts[0].sha256 == sha(upload.read_bytes())
    assert parts[0].extra["container"]["sha256"] == sha(raw_upload)
    assert all(not f.incomplete for f in result.files)


def _message(i: int, attachment: bytes) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Sender {i} <sender{i}@example.org>"
    msg["To"] = "rcpt@example.net, Other <other@example.net>"
    msg["Subject"] = f"Report {i} — Grüße"  # non-ASCII: RFC 2047 encoded on the wire
    msg["Message-ID"] = f"<msg{i}@example.org>"
    msg.set_content("Hello,\n.this line starts with a dot\n..and this with two\n")
    msg.add_attachment(attachment, maintype="application", subtype="octet-stream",
                       filename=f"data{i}.bin")
    msg.add_attachment(LOG.decode(), subtype="plain", filename="log.txt",
                       cte="quoted-printable")
    return msg


def test_smtp_messages_with_attachments(tmp_path: Path) -> None:
    inbox = SmtpInbox()
    attachments = [blob(40_000, 10), blob(70_000, 11)]
    with smtp_server(inbox) as port, LoopbackCapture(tmp_path / "smtp.pcap",
                                                     f"tcp port {port}") as cap:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            for i, att in enumerate(attachments):
                client.send_message(_message(i, att), from_addr=f"sender{i}@example.org",
                                    to_addrs=["rcpt@example.net", "other@example.net"])
        pcap = cap.stop()

    result, damage = carve_pcap(pcap, ArtifactStore(tmp_path / "out"))
    assert damage == [] and len(result.emails) == 2 and len(inbox.messages) == 2
    for i, (email_rec, (mail_from, rcpts, received)) in enumerate(zip(result.emails,
                                                                       inbox.messages,
                                                                       strict=True)):
        assert Path(email_rec.path).read_bytes() == received  # byte for byte
        assert (email_rec.sha256, email_rec.size) == (sha(received), len(received))
        assert (email_rec.mail_from, email_rec.rcpt_to) == (mail_from, rcpts)
        assert email_rec.subject == f"Report {i} — Grüße"
        assert email_rec.message_id == f"<msg{i}@example.org>"
        assert email_rec.to == ["rcpt@example.net", "Other <other@example.net>"]
        assert email_rec.text_body.startswith("Hello,\r\n.this line starts with a dot\r\n..and")
        files = {f.id: f for f in result.files}
        got = [(files[a].filename, files[a].sha256) for a in email_rec.attachments]
        # a text part travels in canonical form (CRLF line ends, RFC 2046 4.1.1)
        assert got == [(f"data{i}.bin", sha(attachments[i])),
                       ("log.txt", sha(LOG.replace(b"\n", b"\r\n")))]


@pytest.mark.filterwarnings("ignore:The (asyncore|asynchat) module is deprecated")
def test_ftp_passive_active_retr_and_stor(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "pub.bin").write_bytes(blob(200_000, 20))
    (home / "notes.txt").write_bytes(TEXT[:50_000])
    upload = blob(80_000, 21)
    with ftp_server(home) as port, LoopbackCapture(tmp_path / "ftp.pcap",
                                                   "tcp and host 127.0.0.1") as cap:
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", port, timeout=30)
        ftp.login("user", "secret")
        got: list[bytes] = []
        ftp.retrbinary("RETR pub.bin", got.append)  # passive (PASV)
        ftp.set_pasv(False)
        ftp.retrbinary("RETR notes.txt", got.append)  # active (PORT)
        ftp.set_pasv(True)
        ftp.storbinary("STOR upload.bin", io.BytesIO(upload))
        ftp.quit()
        pcap = cap.stop()

    result, damage = carve_pcap(pcap, ArtifactStore(tmp_path / "out"))
    mine = [f for f in result.files if f.protocol == "ftp"
            and f.extra["ftp"]["control"]["dest_port"] == port]
    assert [(f.extra["ftp"]["command"], f.filename, f.direction, f.extra["ftp"]["passive"],
             f.sha256) for f in mine] == [
        ("RETR", "pub.bin", "resp", True, sha((home / "pub.bin").read_bytes())),
        ("RETR", "notes.txt", "resp", False, sha((home / "notes.txt").read_bytes())),
        ("STOR", "upload.bin", "orig", True, sha(upload))]
    assert (home / "upload.bin").read_bytes() == upload
    assert all(f.extra["ftp"]["user"] == "user" and not f.incomplete for f in mine)
    assert "secret" not in repr([f.extra for f in mine])
