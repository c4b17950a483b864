"""Harmless PDF documents built byte for byte for the sandbox tests: objects, a
cross-reference table and a trailer, streams compressed with zlib where asked. Nothing
in them runs: the JavaScript only shows an alert, the /Launch names a file that is not
there, the URI is on a reserved domain."""

from __future__ import annotations

import zlib


def stream(data: bytes, compress: bool = True) -> bytes:
    body = zlib.compress(data, 9) if compress else data
    filt = b" /Filter /FlateDecode" if compress else b""
    return b"<< /Length %d%s >>\nstream\n%s\nendstream" % (len(body), filt, body)


def build_pdf(objects: list[bytes]) -> bytes:
    """Objects 1..n in order (object 1 is the catalog), with a valid xref table."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


PAGE = [b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        stream(b"BT /F1 12 Tf 72 720 Td (quarterly report) Tj ET", compress=False)]


def benign_pdf() -> bytes:
    return build_pdf([b"<< /Type /Catalog /Pages 2 0 R >>", *PAGE])


def active_pdf() -> bytes:
    """Opens with JavaScript (its action type spelt /J#61vaScript), links a URI, and
    hides a /Launch action in a compressed object stream."""
    objstm = b"6 0 << /S /Launch /F (invoice.exe) >>"
    return build_pdf([
        b"<< /Type /Catalog /Pages 2 0 R /OpenAction 5 0 R >>", *PAGE,
        b"<< /S /J#61vaScript /JS (app.alert\\('hello'\\);) /Next 7 0 R >>",
        b"<< /Type /ObjStm /N 1 /First 4 " + stream(objstm)[2:],
        b"<< /S /URI /URI (http://c2.example.invalid/collect) >>"])


def bomb_pdf(streams: int, mib: int) -> bytes:
    """``streams`` compressed streams that each inflate to ``mib`` MiB of zeros."""
    zeros = stream(b"\0" * (mib * 2**20))
    return build_pdf([b"<< /Type /Catalog /Pages 2 0 R >>", *PAGE] + [zeros] * streams)
