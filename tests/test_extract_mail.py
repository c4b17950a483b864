"""SMTP, POP3, IMAP and MIME fed as byte streams (pcapwire.extract.smtp/pop3/imap/mime)."""

from __future__ import annotations

import base64
import binascii
import random
import re

import pytest
from pcapwire.extract import mime, smtp
from pcapwire.extract.buffer import CarvedEmail, Session
from pcapwire.extract.imap import ImapSession
from pcapwire.extract.pop3 import Pop3Session
from pcapwire.extract.smtp import SmtpSession


def run(session: Session, *events: tuple[str, bytes | int]) -> list[CarvedEmail]:
    for direction, data in events:
        if isinstance(data, int):
            session.gap(direction, data, 0.0)
        else:
            session.feed(direction, data, 0.0)
    session.close(1.0)
    return [x for x in session.take() if isinstance(x, CarvedEmail)]


MSG1 = b"Subject: one\r\n\r\n.leading dot\r\nbody\r\n"
MSG2 = b"Subject: two\r\n\r\nsecond\r\n"


def stuff(msg: bytes) -> bytes:
    return msg.replace(b"\r\n.", b"\r\n..").replace(b"\r\n..", b"\r\n..") if not msg.startswith(
        b".") else b"." + stuff(msg)


def test_smtp_two_messages_dot_unstuffing_and_rset() -> None:
    client = (b"EHLO me\r\nMAIL FROM:<a@x.org> SIZE=10\r\nRCPT TO:<b@y.org>\r\n"
              b"RCPT TO:<c@y.org>\r\nDATA\r\n" + stuff(MSG1) + b".\r\n"
              b"MAIL FROM:<z@x.org>\r\nRSET\r\nMAIL FROM:<d@x.org>\r\nRCPT TO:<e@y.org>\r\n"
              b"DATA\r\n" + stuff(MSG2) + b".\r\nQUIT\r\n")
    out = run(SmtpSession(), ("resp", b"220 mx ESMTP\r\n"), ("orig", client))
    assert [(m.mail_from, m.rcpt_to, m.data) for m in out] == [
        ("a@x.org", ["b@y.org", "c@y.org"], MSG1), ("d@x.org", ["e@y.org"], MSG2)]
    assert out[0].extra == {"transfer": "DATA", "helo": "me", "tls": False}


def test_smtp_byte_at_a_time_gives_the_same_message() -> None:
    client = b"HELO me\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n" + stuff(MSG1) + b".\r\n"
    s = SmtpSession()
    for i in range(len(client)):
        s.feed("orig", client[i:i + 1], 0.0)
    s.close(1)
    assert [m.data for m in s.take()] == [MSG1]


def test_smtp_bdat_chunks() -> None:
    part1, part2 = b"Subject: b\r\n\r\n.no stuffing", b" in BDAT\r\n"
    client = (b"EHLO me\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n"
              + f"BDAT {len(part1)}\r\n".encode() + part1
              + f"BDAT {len(part2)} LAST\r\n".encode() + part2 + b"QUIT\r\n")
    (m,) = run(SmtpSession(), ("orig", client))
    assert m.data == part1 + part2 and m.extra["transfer"] == "BDAT" and not m.incomplete


def test_smtp_refused_data_opens_no_message() -> None:
    s = SmtpSession()
    s.feed("resp", b"220 hi\r\n", 0)
    s.feed("orig", b"EHLO a\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n", 0)
    s.feed("resp", b"250-hi\r\n250 ok\r\n250 ok\r\n550 no such user\r\n", 0)
    s.feed("orig", b"DATA\r\n", 0)
    s.feed("resp", b"554 no valid recipients\r\n", 0)
    s.feed("orig", b"RSET\r\nQUIT\r\n", 0)
    s.close(1)
    assert s.take() == [] and "DATA refused with 554" in s.notes


def test_smtp_starttls_rest_is_opaque() -> None:
    out = run(SmtpSession(), ("resp", b"220 mx\r\n"), ("orig", b"EHLO a\r\nSTARTTLS\r\n"),
              ("resp", b"250 ok\r\n220 go ahead\r\n"),
              ("orig", b"\x16\x03\x01\x00\xa5MAIL FROM:<hidden@x>\r\nDATA\r\n"))
    assert out == []


def test_smtp_gap_in_data_marks_the_message() -> None:
    out = run(SmtpSession(), ("orig", b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nSubj"),
              ("orig", 100), ("orig", b"tail\r\n.\r\n"))
    (m,) = out
    assert m.incomplete and m.missing_ranges == [(4, 100)] and m.data == b"Subjtail\r\n"


def test_smtp_truncated_capture() -> None:
    (m,) = run(SmtpSession(), ("orig", b"MAIL FROM:<a@x>\r\nDATA\r\nSubject: cut\r\n\r\nhal"))
    assert m.incomplete and m.data == b"Subject: cut\r\n\r\nhal"


def test_smtp_max_message_size(monkeypatch: pytest.MonkeyPatch) -> None:
    assert smtp.MAX_MESSAGE_SIZE == 64 * 1024 * 1024
    monkeypatch.setattr(smtp, "MAX_MESSAGE_SIZE", 10)
    (m,) = run(SmtpSession(), ("orig", b"MAIL FROM:<a@x>\r\nDATA\r\n" + b"x" * 50 + b"\r\n.\r\n"))
    assert m.data == b"x" * 10 and m.incomplete and m.extra["dropped_bytes"] == 42


def test_smtp_max_messages_per_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert smtp.MAX_MESSAGES_PER_CONNECTION == 10_000
    monkeypatch.setattr(smtp, "MAX_MESSAGES_PER_CONNECTION", 2)
    s = SmtpSession()
    out = run(s, ("orig", b"MAIL FROM:<a@x>\r\nDATA\r\nm\r\n.\r\n" * 3))
    assert len(out) == 2 and any("MAX_MESSAGES_PER_CONNECTION=2" in n for n in s.notes)


def test_smtp_max_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert smtp.MAX_COMMAND_LINE == 16 * 1024
    monkeypatch.setattr(smtp, "MAX_COMMAND_LINE", 32)
    s = SmtpSession()
    run(s, ("orig", b"MAIL FROM:<" + b"a" * 100))
    assert any("MAX_COMMAND_LINE=32" in n for n in s.notes)


def test_pop3_retr_top_and_sasl_pairing() -> None:
    body = b"Subject: p\r\n\r\n..dot\r\nend\r\n"
    client = (b"CAPA\r\nAUTH PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\nLIST 1\r\nRETR 1\r\n"
              b"TOP 1 0\r\nQUIT\r\n")
    server = (b"+OK ready\r\n+OK caps\r\nSASL PLAIN\r\n.\r\n+ \r\n+OK logged in\r\n+OK 1 30\r\n"
              b"+OK 30 octets\r\n" + body + b".\r\n+OK top\r\nSubject: p\r\n\r\n.\r\n+OK bye\r\n")
    out = run(Pop3Session(), ("orig", client), ("resp", server))
    assert [(m.data, m.extra["command"], m.incomplete) for m in out] == [
        (b"Subject: p\r\n\r\n.dot\r\nend\r\n", "RETR 1", False),
        (b"Subject: p\r\n\r\n", "TOP 1 0", True)]


def test_imap_fetch_literals_and_append() -> None:
    full = b"Subject: full\r\n\r\nbody\r\n"
    head = b"Subject: head\r\n\r\n"
    client = (b"a1 SELECT \"Work\"\r\na2 FETCH 1 (BODY.PEEK[])\r\n"
              + f"a3 APPEND Sent {{{len(full)}+}}\r\n".encode() + full + b"\r\n")
    server = (b"* OK IMAP ready\r\na1 OK done\r\n"
              + f"* 1 FETCH (UID 7 BODY[] {{{len(full)}}}\r\n".encode() + full
              + f" BODY[HEADER] {{{len(head)}}}\r\n".encode() + head + b")\r\na2 OK\r\n")
    out = run(ImapSession(), ("orig", client), ("resp", server))
    assert [(m.data, m.extra.get("fetch") or m.extra["command"], m.incomplete) for m in out] == [
        (full, "APPEND", False), (full, "BODY[]", False), (head, "BODY[HEADER]", True)]
    assert out[1].extra["folder"] == "Work"


NESTED = (b"From: =?utf-8?q?J=C3=B6rg?= <j@x.org>\r\nTo: a@x.org, \"B, C\" <b@x.org>\r\n"
          b"Subject: =?utf-8?b?w6RwZmVs?= and\r\n more\r\n"
          b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\npreamble\r\n"
          b"--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
          b"--inner\r\nContent-Type: text/plain; charset=utf-8\r\n"
          b"Content-Transfer-Encoding: quoted-printable\r\n\r\nS=C3=BC=\r\nd\r\n"
          b"--inner\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--inner--\r\n"
          b"--outer\r\nContent-Type: application/pdf; name=r.pdf\r\n"
          b"Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf\r\n"
          b"Content-Transfer-Encoding: base64\r\n\r\n"
          + base64.encodebytes(b"%PDF-1.4 fake") + b"--outer\r\nContent-Type: image/png\r\n"
          b"Content-Disposition: inline; filename=logo.png\r\nContent-Transfer-Encoding: base64"
          b"\r\n\r\niVBORw0KGgo=\r\n--outer--\r\nepilogue\r\n")


def test_mime_nested_parts_decodings_and_headers() -> None:
    p = mime.parse_message(NESTED)
    assert p.header("subject") == "äpfel and more"
    assert p.header("from") == "Jörg <j@x.org>"
    assert mime.split_addresses(p.header("to")) == ["a@x.org", '"B, C" <b@x.org>']
    got = [(x.entity, x.depth, x.content_type, x.filename, x.role, x.data) for x in p.leaves]
    assert got == [
        (3, 2, "text/plain", "", "body", "Süd".encode()),
        (4, 2, "text/html", "", "body", b"<p>hi</p>"),
        (5, 1, "application/pdf", "résumé.pdf", "attachment", b"%PDF-1.4 fake"),
        (6, 1, "image/png", "logo.png", "inline", binascii.a2b_base64(b"iVBORw0KGgo=")),
    ]
    assert p.leaves[0].zeek_data == "Süd".encode() + b"\r\n"
    assert p.text_body("plain") == "Süd" and p.text_body("html") == "<p>hi</p>"
    assert p.errors == []


def test_mime_unclosed_boundary_keeps_the_last_part() -> None:
    msg = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nfirst\r\n--b\r\n\r\ncut"
    p = mime.parse_message(msg)
    assert [x.data for x in p.leaves] == [b"first", b"cut"]
    assert any("not closed" in e for e in p.errors)


def _delimiters_by_regex(data: bytes, start: int, end: int, boundary: bytes) -> list:
    """The boundary search as a plain regular-expression scan (the reference for
    mime._delimiters, which finds the same delimiters with bytes.find)."""
    tail = re.escape(boundary) + rb"(--)?[ \t]*(?:\r?\n|\Z)"
    first = re.compile(rb"--" + tail).match(data, start, end)
    out = []
    for m in ([first] if first else []) + list(
            re.compile(rb"\r?\n--" + tail).finditer(data, start, end)):
        out.append((m.start(), m.end(), bool(m.group(1))))
        if m.group(1):
            break
    return out


def test_mime_delimiters_found_like_the_regular_expression() -> None:
    rng = random.Random(11)
    pieces = [b"--b0", b"--b0--", b"\r\n", b"\n", b"\r", b" ", b"\t", b"x", b"--", b"b0",
              b"-", b"QUJD", b"--b0 \t\r\n", b"\r\n--b0--\r\n"]
    for _ in range(5000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        start = rng.randint(0, len(data))
        end = rng.randint(start, len(data))
        assert mime._delimiters(data, start, end, b"b0") == _delimiters_by_regex(
            data, start, end, b"b0"), (data, start, end)


def test_mime_depth_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert mime.MAX_MIME_DEPTH == 20
    monkeypatch.setattr(mime, "MAX_MIME_DEPTH", 2)
    msg = (b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\n\r\ndeep\r\n--c--\r\n"
           b"--b--\r\n--a--\r\n")
    p = mime.parse_message(msg)
    assert len(p.leaves) == 1 and p.leaves[0].content_type == "multipart/mixed"
    assert any("MAX_MIME_DEPTH=2" in e for e in p.errors)


def test_mime_parts_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert mime.MAX_MIME_PARTS == 1000
    monkeypatch.setattr(mime, "MAX_MIME_PARTS", 3)
    msg = b"Content-Type: multipart/mixed; boundary=a\r\n\r\n" + b"".join(
        b"--a\r\n\r\npart%d\r\n" % i for i in range(5)) + b"--a--\r\n"
    p = mime.parse_message(msg)
    assert [x.data for x in p.leaves] == [b"part0", b"part1", b"part2"]
    assert p.skipped_parts == 2


def test_mime_header_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert mime.MAX_MIME_HEADER_BYTES == 256 * 1024
    monkeypatch.setattr(mime, "MAX_MIME_HEADER_BYTES", 64)
    p = mime.parse_message(b"X-Long: " + b"a" * 200 + b"\r\n\r\nbody")
    assert p.headers == [] and p.leaves[0].data.endswith(b"body")


def test_lenient_base64() -> None:
    assert mime.decode_transfer(b"aGVs\r\nbG8*!\r\n", "base64") == b"hello"
    assert mime.decode_transfer(b"aGVsbG8", "base64") == b"hello"  # missing padding
