"""Fuzz pcapwire's MIME parser (pcapwire.extract.mime: headers, RFC 2047 words, nested
multiparts, base64 and quoted-printable with limits) with atheris, the Python code under
coverage instrumentation.

MODE (the first byte) picks one of three uses:

- raw (MODE % 3 == 0): ``parse_message`` on the bytes as an email; for ANY input nothing
  raises (the parser records what it cannot understand), every leaf's ``raw`` is the slice
  of the message at its ``offset``, leaves do not overlap and come in order, entities are
  numbered in document order, the nesting and part limits hold, decoded sizes fit the
  encoding (base64 <= 3/4, quoted-printable <= raw), and the header helpers
  (``header``, ``text_body``, ``decode_words``, ``split_addresses``) never raise;
- body (MODE % 3 == 1): ``parse_body`` as for an HTTP upload, the Content-Type on the
  first line, the same checks;
- built (MODE % 3 == 2): a message written by the standard library (``EmailMessage``,
  attachments with fuzzed bytes, names and transfer encodings, optionally nested in a
  multipart/mixed inside multipart/alternative) is parsed back: every attachment comes out
  with the same bytes, name and type, and the text body with the same text.

Known issues (pyfuzz.KNOWN_ISSUES) are tolerated. Usage (exit status 0 when nothing was found):
    .venv/bin/python tests/fuzz/fuzz_mime.py -max_total_time=15 [libFuzzer flags] [CORPUS_DIR]
"""

from __future__ import annotations

import email.policy
import sys
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import atheris  # noqa: E402
import pyfuzz  # noqa: E402

with atheris.instrument_imports(include=["pcapwire.extract"]):
    from pcapwire.extract import mime  # noqa: E402

NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._- ()éü中"
TYPES = (("application", "octet-stream"), ("application", "pdf"), ("image", "png"),
         ("text", "csv"), ("application", "x-msdownload"))


def check(data: bytes, msg: mime.ParsedMessage) -> None:
    assert len(msg.leaves) <= mime.MAX_MIME_PARTS
    prev_end, prev_entity = -1, -1  # parse_body numbers the HTTP body itself 0
    for leaf in msg.leaves:
        assert 0 <= leaf.offset <= len(data) and leaf.depth <= mime.MAX_MIME_DEPTH + 1
        assert data[leaf.offset:leaf.offset + len(leaf.raw)] == leaf.raw
        assert leaf.offset >= prev_end, (leaf.offset, prev_end)
        assert leaf.entity > prev_entity, (leaf.entity, prev_entity)
        prev_end, prev_entity = leaf.offset + len(leaf.raw), leaf.entity
        if leaf.transfer_encoding == "base64":
            assert len(leaf.data) <= len(leaf.raw) * 3 // 4 + 3
        elif leaf.transfer_encoding == "quoted-printable":
            assert len(leaf.data) <= len(leaf.raw)
        else:
            assert leaf.data == leaf.raw
        assert leaf.role in ("attachment", "inline", "body")
    for name in ("subject", "from", "to", "content-type"):
        msg.header(name)
        msg.header_all(name)
    msg.text_body("plain")
    msg.text_body("html")
    for _key, value in msg.headers:
        mime.decode_words(value)
        mime.bare_addresses(mime.split_addresses(value))


def _printable(text: str) -> str:
    return "".join(c for c in text if c.isprintable())


def built(fdp: atheris.FuzzedDataProvider) -> None:
    """Round trip through the standard library's writer."""
    outer = EmailMessage(policy=email.policy.SMTP)
    outer["From"] = "a@example.com"
    outer["To"] = "b@example.com"
    outer["Subject"] = _printable(fdp.ConsumeUnicodeNoSurrogates(20))
    text = _printable(fdp.ConsumeUnicodeNoSurrogates(80)) + "\n"
    outer.set_content(text)
    if fdp.ConsumeBool():
        outer.add_alternative("<p>" + text + "</p>\n", subtype="html")
    want = []
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        maintype, subtype = TYPES[fdp.ConsumeIntInRange(0, len(TYPES) - 1)]
        name = "".join(NAME_CHARS[b % len(NAME_CHARS)]
                       for b in fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 24))).strip()
        name = name or "file"
        cte = "base64" if fdp.ConsumeBool() else "quoted-printable"
        payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600))
        if cte == "quoted-printable":  # line breaks are the writer's, not the payload's
            payload = payload.replace(b"\r", b"").replace(b"\n", b"")
        outer.add_attachment(payload, maintype=maintype, subtype=subtype, filename=name,
                             cte=cte)
        want.append((payload, name, f"{maintype}/{subtype}"))
    data = outer.as_bytes()
    msg = mime.parse_message(data)
    check(data, msg)
    got = [(leaf.data, leaf.filename, leaf.content_type) for leaf in msg.leaves
           if leaf.role == "attachment"]
    assert got == want, (got, want, data)
    assert msg.text_body("plain").replace("\r\n", "\n") == text, (msg.text_body("plain"), text)


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 3, data[1:]
    if mode == 0:
        check(rest, mime.parse_message(rest))
    elif mode == 1:
        ctype, _, body = rest.partition(b"\n")
        check(body, mime.parse_body(body, ctype.decode("latin-1")))
    else:
        built(atheris.FuzzedDataProvider(rest))


MAIL = (b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.com>\r\nTo: \"x, y\" <a@b>, c@d (c, d)\r\n"
        b"Subject: =?iso-8859-1?b?SGFsbG8=?= report\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\npreamble\r\n--outer\r\n"
        b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n--inner\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: "
        b"quoted-printable\r\n\r\nHall=C3=B6 =\r\nWelt\r\n--inner\r\nContent-Type: text/html"
        b"\r\n\r\n<b>x</b>\r\n--inner--\r\n--outer\r\nContent-Type: application/pdf; "
        b"name=\"a.pdf\"\r\nContent-Disposition: attachment;\r\n filename*0*=utf-8''r%C3"
        b"%A9;\r\n filename*1=\"port.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoK\r\n--outer--\r\nepilogue\r\n")
SEEDS = {
    "nested": b"\x00" + MAIL,
    "upload": b"\x01multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxk\n"
              b"------WebKitFormBoundary7MA4YWxk\r\nContent-Disposition: form-data; "
              b"name=\"file\"; filename=\"x.bin\"\r\n\r\n\x00\x01\x02\r\n"
              b"------WebKitFormBoundary7MA4YWxk--\r\n",
    "unclosed-bad-b64": b"\x00Content-Type: multipart/mixed; boundary=b\n\n--b\n"
                        b"Content-Transfer-Encoding: base64\n\nQUJD=R\x00E*\n--b\nx",
    "built": b"\x02" + bytes(range(256)) * 3,
}
DICTIONARY = [b"Content-Type: ", b"multipart/mixed; boundary=", b"multipart/alternative",
              b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: "
              b"quoted-printable", b"Content-Disposition: attachment; filename=",
              b"filename*0*=utf-8''", b"=?utf-8?q?", b"=?iso-8859-1?b?", b"?=", b"\r\n--",
              b"--\r\n", b"\r\n\r\n", b"message/rfc822", b"charset="]


if __name__ == "__main__":
    pyfuzz.run("mime", TestOneInput, SEEDS, DICTIONARY)
