"""Parsers give the same result however the bytes are cut into segments (the reassembler
hands over whatever TCP delivered), and garbage never makes them raise."""

from __future__ import annotations

import gzip

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pcapwire.extract.buffer import CarvedEmail, CarvedFile, Session
from pcapwire.extract.httpfiles import HttpSession
from pcapwire.extract.imap import ImapSession
from pcapwire.extract.pop3 import Pop3Session
from pcapwire.extract.smtp import SmtpSession

BODY = b"payload-" * 300
HTTP = [
    ("orig", b"GET /a.bin HTTP/1.1\r\nHost: h\r\n\r\nGET /b.txt HTTP/1.1\r\nHost: h\r\n\r\n"
             b"POST /u HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=q\r\n"
             b"Content-Length: 62\r\n\r\n--q\r\nContent-Disposition: form-data; name=a\r\n\r\n"
             b"12345\r\n--q--\r\n"),
    ("resp", b"HTTP/1.1 200 OK\r\nContent-Length: 2400\r\n\r\n" + BODY
             + b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
             + b"%x\r\n" % len(gzip.compress(BODY, mtime=0)) + gzip.compress(BODY, mtime=0)
             + b"\r\n0\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"),
]
SMTP = [("resp", b"220 mx\r\n"),
        ("orig", b"EHLO a\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
        ("resp", b"250 a\r\n250 b\r\n250 c\r\n354 d\r\n"),
        ("orig", b"Subject: x\r\n\r\n..dot\r\n" + BODY + b"\r\n.\r\nBDAT 5 LAST\r\nabcde"
                 b"QUIT\r\n")]
POP3 = [("resp", b"+OK hi\r\n"), ("orig", b"RETR 1\r\n"),
        ("resp", b"+OK\r\nSubject: p\r\n\r\n..x\r\n" + BODY + b"\r\n.\r\n")]
IMAP = [("resp", b"* OK hi\r\n"), ("orig", b"a FETCH 1 BODY[]\r\n"),
        ("resp", b"* 1 FETCH (BODY[] {2414}\r\nSubject: i\r\n\r\n" + BODY + b")\r\na OK\r\n")]
CASES = {"http": (HttpSession, HTTP), "smtp": (SmtpSession, SMTP), "pop3": (Pop3Session, POP3),
         "imap": (ImapSession, IMAP)}


def _run(cls: type[Session], events: list[tuple[str, bytes]], cuts: list[int]
         ) -> list[tuple[str, bytes]]:
    s = cls()
    for n, (direction, data) in enumerate(events):
        points = sorted({c % (len(data) + 1) for c in cuts[n::len(events)]} | {0, len(data)})
        for a, b in zip(points, points[1:], strict=False):
            s.feed(direction, data[a:b], 0.0)
    s.close(1.0)
    out = []
    for x in s.take():
        if isinstance(x, CarvedFile):
            out.append(("file", x.data))
        elif isinstance(x, CarvedEmail):
            out.append(("email", x.data))
    return out


WHOLE = {name: _run(cls, ev, []) for name, (cls, ev) in CASES.items()}


def test_whole_stream_results() -> None:
    assert [k for k, _ in WHOLE["http"]] == ["file"] * 4
    assert WHOLE["http"][0][1] == BODY and WHOLE["http"][1][1] == BODY
    assert [d[:13] for _, d in WHOLE["smtp"]] == [b"Subject: x\r\n\r", b"abcde"]
    assert WHOLE["pop3"] == [("email", b"Subject: p\r\n\r\n.x\r\n" + BODY + b"\r\n")]
    assert WHOLE["imap"] == [("email", b"Subject: i\r\n\r\n" + BODY)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(CASES)), cuts=st.lists(st.integers(0, 10**6), max_size=40))
def test_any_segmentation_gives_the_same_result(name: str, cuts: list[int]) -> None:
    cls, events = CASES[name]
    assert _run(cls, events, cuts) == WHOLE[name]


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(sorted(CASES)),
       chunks=st.lists(st.tuples(st.sampled_from(["orig", "resp"]), st.binary(max_size=300)),
                       max_size=12),
       gap=st.integers(0, 5000))
def test_garbage_is_bounded_and_never_raises(name: str, chunks: list[tuple[str, bytes]],
                                             gap: int) -> None:
    cls, _ = CASES[name]
    s = cls()
    total = 0
    for i, (direction, data) in enumerate(chunks):
        s.feed(direction, data, 0.0)
        total += len(data)
        if i == 1:
            s.gap(direction, gap, 0.0)
    s.close(1.0)
    assert sum(len(getattr(x, "data", b"")) for x in s.take()) <= total
