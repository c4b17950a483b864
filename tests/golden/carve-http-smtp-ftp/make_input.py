"""Regenerate input.pcap of the golden case carve-http-smtp-ftp (deterministic: running it
again writes the same bytes; tests/test_golden.py checks that).

    .venv/bin/python tests/golden/carve-http-smtp-ftp/make_input.py [OUT]

The files, and how each travels (expect-files.yaml lists what carving must find):

- report.pdf: HTTP GET /downloads/report.pdf, Content-Length;
- logo.png: HTTP GET /static/logo.png on the same keep-alive connection, gzip
  Content-Encoding in a chunked body (carved decoded);
- setup.sh: HTTP GET /download?id=7, named by Content-Disposition (not the URI);
- notes.txt: HTTP POST, a multipart/form-data upload (a request-side file);
- photo.gif: an SMTP message (DATA, one line dot-stuffed) with the GIF as a base64
  attachment;
- inventory.json: FTP, passive mode (PASV, 227), RETR on its own data connection.

Compressed bodies use deflate's stored blocks (zlib level 0), whose bytes do not depend on
the zlib version.
"""

from __future__ import annotations

import base64
import struct
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from goldencraft import Capture, TcpConn, write  # noqa: E402

PDF = (b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n2 0 obj\n"
       b"<< /Type /Pages /Kids [] /Count 0 >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n")
GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00"
       b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
SCRIPT = b"#!/bin/sh\n# install the demo tool\nset -e\necho installing\n"
NOTES = b"meeting notes\n- carve files from HTTP, SMTP and FTP\n- hash every one\n" * 3
JSON = b'{"hosts": ["10.2.0.5", "10.2.0.6"], "owner": "golden", "count": 2}\n'


def png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x80\x00", 0)) + chunk(b"IEND", b""))


def gzip_stored(data: bytes) -> bytes:
    """gzip (RFC 1952) with mtime 0, OS unknown, stored deflate blocks."""
    c = zlib.compressobj(0, zlib.DEFLATED, -15)
    body = c.compress(data) + c.flush()
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + body
            + struct.pack("<II", zlib.crc32(data), len(data)))


def chunked(data: bytes, size: int) -> bytes:
    out = b"".join(b"%x\r\n" % len(data[i:i + size]) + data[i:i + size] + b"\r\n"
                   for i in range(0, len(data), size))
    return out + b"0\r\n\r\n"


def http_ok(body: bytes, headers: str) -> bytes:
    return (f"HTTP/1.1 200 OK\r\n{headers}Content-Length: {len(body)}\r\n\r\n").encode() + body


def email() -> bytes:
    b64 = base64.b64encode(GIF).decode()
    lines = "\r\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
    return ("From: Alice <alice@corp.example>\r\nTo: bob@partner.example\r\n"
            "Subject: the photo\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
            "Message-ID: <golden-1@corp.example>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\nHi Bob,\r\n.the photo is "
            "attached.\r\n\r\n--b1\r\nContent-Type: image/gif; name=\"photo.gif\"\r\n"
            "Content-Disposition: attachment; filename=\"photo.gif\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n" + lines + "\r\n--b1--\r\n").encode()


def main() -> None:
    cap = Capture()
    png = png_1x1()
    cap.tcp("10.2.0.5", 40001, "192.0.2.20", 80, [
        ("c", b"GET /downloads/report.pdf HTTP/1.1\r\nHost: files.example\r\n\r\n"),
        ("s", http_ok(PDF, "Content-Type: application/pdf\r\n")),
        ("c", b"GET /static/logo.png HTTP/1.1\r\nHost: files.example\r\n"
              b"Accept-Encoding: gzip\r\n\r\n"),
        ("s", b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Encoding: gzip\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n" + chunked(gzip_stored(png), 40))])
    cap.tcp("10.2.0.5", 40002, "192.0.2.20", 80, [
        ("c", b"GET /download?id=7 HTTP/1.1\r\nHost: files.example\r\n\r\n"),
        ("s", http_ok(SCRIPT, "Content-Type: application/octet-stream\r\nContent-Disposition:"
                              " attachment; filename=\"setup.sh\"\r\n"))], isn=(11000, 15000))
    form = (b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\n"
            b"Content-Type: text/plain\r\n\r\n" + NOTES + b"\r\n--XyZ--\r\n")
    cap.tcp("10.2.0.6", 40003, "192.0.2.21", 80, [
        ("c", b"POST /upload HTTP/1.1\r\nHost: upload.example\r\nContent-Type: multipart/"
              b"form-data; boundary=XyZ\r\nContent-Length: %d\r\n\r\n" % len(form) + form),
        ("s", b"HTTP/1.1 204 No Content\r\n\r\n")], isn=(21000, 25000))
    msg = email()
    stuffed = msg.replace(b"\r\n.", b"\r\n..")
    smtp = [("s", b"220 mx.partner.example ESMTP\r\n"), ("c", b"EHLO corp.example\r\n"),
            ("s", b"250-mx.partner.example\r\n250 8BITMIME\r\n"),
            ("c", b"MAIL FROM:<alice@corp.example>\r\n"), ("s", b"250 OK\r\n"),
            ("c", b"RCPT TO:<bob@partner.example>\r\n"), ("s", b"250 OK\r\n"),
            ("c", b"DATA\r\n"), ("s", b"354 go ahead\r\n"), ("c", stuffed + b".\r\n"),
            ("s", b"250 queued\r\n"), ("c", b"QUIT\r\n"), ("s", b"221 bye\r\n")]
    cap.tcp("10.2.0.5", 40004, "192.0.2.25", 25, smtp, isn=(31000, 35000))
    ctl = TcpConn(cap, "10.2.0.6", 40005, "192.0.2.22", 21, isn=(41000, 45000))
    for side, data in [("s", b"220 ftp.example ready\r\n"), ("c", b"USER anonymous\r\n"),
                       ("s", b"331 password please\r\n"), ("c", b"PASS guest@\r\n"),
                       ("s", b"230 logged in\r\n"), ("c", b"TYPE I\r\n"), ("s", b"200 ok\r\n"),
                       ("c", b"PASV\r\n"),
                       ("s", b"227 Entering Passive Mode (192,0,2,22,195,81)\r\n"),
                       ("c", b"RETR /pub/inventory.json\r\n"),
                       ("s", b"150 opening BINARY data connection\r\n")]:
        ctl.send(side, data)
    data = TcpConn(cap, "10.2.0.6", 40006, "192.0.2.22", 195 * 256 + 81, isn=(51000, 55000))
    data.send("s", JSON)
    data.close(first="s")
    ctl.send("s", b"226 transfer complete\r\n")
    ctl.send("c", b"QUIT\r\n")
    ctl.send("s", b"221 bye\r\n")
    ctl.close()
    write(cap.pcap(), __file__)


if __name__ == "__main__":
    main()
