"""HTTP/1.x framing and HTTP files, fed as byte streams (pcapwire.extract.http/httpfiles)."""

from __future__ import annotations

import gzip
import hashlib

import pytest
from pcapwire.extract import http
from pcapwire.extract.buffer import CarvedFile
from pcapwire.extract.httpfiles import (
    HttpSession,
    disposition_filename,
    parse_content_range,
    uri_filename,
)
from pcapwire.extract.ranges import RangeAssembler


def run(*events: tuple[str, bytes | int], step: int = 0) -> HttpSession:
    """Feed (direction, bytes) events -- an int is a gap -- optionally in tiny steps."""
    s = HttpSession()
    for direction, data in events:
        if isinstance(data, int):
            s.gap(direction, data, 0.0)
        elif step:
            for i in range(0, len(data), step):
                s.feed(direction, data[i:i + step], 0.0)
        else:
            s.feed(direction, data, 0.0)
    s.close(1.0)
    return s


def files(s: HttpSession) -> list[CarvedFile]:
    return [f for f in s.take() if isinstance(f, CarvedFile)]


def resp(body: bytes, headers: str = "", status: str = "200 OK") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n").encode() + body


def chunked(body: bytes, size: int) -> bytes:
    out = b""
    for i in range(0, len(body), size):
        piece = body[i:i + size]
        out += f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n"
    return out + b"0\r\nX-Trailer: yes\r\n\r\n"


REQS = b"".join(f"GET /f{i}.bin HTTP/1.1\r\nHost: h\r\n\r\n".encode() for i in range(3))
BODIES = [b"A" * 10, b"B" * 2000, b"C" * 3]


@pytest.mark.parametrize("step", [0, 1, 7])
def test_pipelined_keep_alive(step: int) -> None:
    # all requests first (pipelining), then all responses on the same connection
    s = run(("orig", REQS), ("resp", b"".join(resp(b) for b in BODIES)), step=step)
    out = files(s)
    assert [f.data for f in out] == BODIES
    assert [f.filename for f in out] == ["f0.bin", "f1.bin", "f2.bin"]
    assert [f.extra["http"]["trans_depth"] for f in out] == [1, 2, 3]
    assert all(not f.incomplete and f.direction == "resp" for f in out)
    assert len(s.transactions) == 3


def test_response_waits_for_its_request() -> None:
    # the server side arrives first (per-direction delivery): HEAD must still be honoured
    s = HttpSession()
    s.feed("resp", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + resp(b"hello"), 0)
    assert s.take() == []
    s.feed("orig", b"HEAD /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n", 0)
    s.close(1)
    out = files(s)
    assert [(f.filename, f.data) for f in out] == [("b", b"hello")]


def test_chunked_with_extensions_and_trailers() -> None:
    body = bytes(range(256)) * 40
    s = run(("orig", b"GET /c HTTP/1.1\r\n\r\n"),
            ("resp", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
             + chunked(body, 1000) + resp(b"next")), step=3)
    out = files(s)
    assert [f.data for f in out] == [body, b"next"]


def test_gzip_chunked_response_is_decoded_and_transferred_hashes_kept() -> None:
    body = b"var x = 1;\n" * 3000
    enc = gzip.compress(body)
    s = run(("orig", b"GET /app.js HTTP/1.1\r\n\r\n"),
            ("resp", b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n" + chunked(enc, 500)))
    (f,) = files(s)
    assert f.data == body and f.extra["content_decoded"] is True
    assert f.extra["transferred"]["sha256"] == hashlib.sha256(enc).hexdigest()
    assert f.extra["transferred"]["size"] == len(enc)


def test_decompression_bomb_is_stopped_and_reported() -> None:
    bomb = gzip.compress(b"\0" * (8 * 1024 * 1024), 9)
    s = run(("orig", b"GET /bomb HTTP/1.1\r\n\r\n"),
            ("resp", resp(bomb, "Content-Encoding: gzip\r\n")))
    (f,) = files(s)
    assert f.data == bomb  # kept as transferred, not followed
    assert f.extra["content_decoded"] is False
    assert f.extra["decode_limit"] == "MAX_DECOMPRESSION_RATIO"
    assert any("decompression stopped" in n for n in s.notes)


def test_body_until_close_and_no_body_statuses() -> None:
    s = run(("orig", b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.0\r\n\r\n"),
            ("resp", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"
                     b"HTTP/1.1 204 No Content\r\n\r\n"
                     b"HTTP/1.0 200 OK\r\n\r\nuntil the end"))
    out = files(s)
    assert [(f.filename, f.data, f.incomplete) for f in out] == [("c", b"until the end", False)]
    assert [t["response"]["framing"] for t in s.transactions] == ["none", "none", "close"]


def test_interim_100_continue_and_upload() -> None:
    s = run(("orig", b"PUT /up.txt HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n"
                     b"\r\ndata"),
            ("resp", b"HTTP/1.1 100 Continue\r\n\r\n" + resp(b"ok")))
    out = files(s)
    assert [(f.direction, f.data) for f in out] == [("orig", b"data"), ("resp", b"ok")]
    assert out[1].extra["http"]["method"] == "PUT"


def test_connect_tunnel_is_opaque() -> None:
    s = run(("orig", b"CONNECT h:443 HTTP/1.1\r\n\r\n\x16\x03\x01binary"),
            ("resp", b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x03tls"))
    assert files(s) == []


def test_gap_inside_body_is_marked_not_invented() -> None:
    s = run(("orig", b"GET /g.bin HTTP/1.1\r\n\r\n"),
            ("resp", b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n0123456789"),
            ("resp", 10), ("resp", b"abcdefghij" + resp(b"after")))
    a, b = files(s)
    assert a.data == b"0123456789abcdefghij" and a.incomplete
    assert a.missing_ranges == [(10, 10)]
    assert (b.data, b.incomplete) == (b"after", False)


def test_every_gap_is_placed_where_it_was_in_the_body() -> None:
    s = run(("orig", b"GET /g.bin HTTP/1.1\r\n\r\n"),
            ("resp", b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n0123456789"),
            ("resp", 10), ("resp", b"abcdefghij"), ("resp", 10), ("resp", b"ABCDEFGHIJ"))
    (a,) = files(s)
    assert a.data == b"0123456789abcdefghijABCDEFGHIJ" and a.incomplete
    assert a.missing_ranges == [(10, 10), (30, 10)]


def test_truncated_capture_keeps_the_head_and_names_the_missing_tail() -> None:
    s = run(("orig", b"GET /t.iso HTTP/1.1\r\n\r\n"),
            ("resp", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 300))
    (f,) = files(s)
    assert (len(f.data), f.incomplete, f.missing_ranges) == (300, True, [(300, 700)])


def test_gap_in_headers_resynchronises() -> None:
    s = run(("orig", b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"),
            ("resp", b"HTTP/1.1 200 OK\r\nContent-Le"), ("resp", 40),
            ("resp", b"garbage\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    out = files(s)
    assert [f.data for f in out] == [b"ok"]
    assert any("resynchronised" in n for n in s.notes)


def test_max_header_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert http.MAX_HEADER_BYTES == 64 * 1024
    monkeypatch.setattr(http, "MAX_HEADER_BYTES", 200)
    big = b"GET /big HTTP/1.1\r\n" + b"X-Pad: " + b"p" * 300 + b"\r\n\r\n"
    s = run(("orig", big + b"GET /small HTTP/1.1\r\n\r\n"),
            ("resp", resp(b"one") + resp(b"two")))
    assert any("MAX_HEADER_BYTES=200" in n for n in s.notes)
    assert [t["request"]["start_line"] for t in s.transactions if t["request"]] == [
        "GET /small HTTP/1.1"]


def test_max_chunk_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert http.MAX_CHUNK_LINE == 4096
    monkeypatch.setattr(http, "MAX_CHUNK_LINE", 16)
    s = run(("orig", b"GET /c HTTP/1.1\r\n\r\n"),
            ("resp", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"5;" + b"e" * 40 + b"\r\nhello\r\n0\r\n\r\n"))
    assert s.transactions[0]["response"]["errors"] == ["MAX_CHUNK_LINE=16 exceeded"]
    assert files(s) == []


def test_max_body_size(monkeypatch: pytest.MonkeyPatch) -> None:
    assert http.MAX_BODY_SIZE == 512 * 1024 * 1024
    monkeypatch.setattr(http, "MAX_BODY_SIZE", 100)
    s = run(("orig", b"GET /l HTTP/1.1\r\n\r\n"), ("resp", resp(b"z" * 250)))
    (f,) = files(s)
    assert len(f.data) == 100 and f.incomplete and f.extra["dropped_bytes"] == 150
    assert f.extra["truncated_by_limit"] == "MAX_BODY_SIZE=100"


def test_multipart_upload_parts_are_files() -> None:
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"../../etc/pw.txt\""
            b"\r\nContent-Type: text/plain\r\n\r\nsecret\r\nline2\r\n--XyZ--\r\n")
    req = (b"POST /upload HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n"
           + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    s = run(("orig", req), ("resp", resp(b"")))
    out = files(s)
    assert [(f.extra["form_field"], f.filename, f.data) for f in out] == [
        ("note", "", b"hi"), ("f", "../../etc/pw.txt", b"secret\r\nline2")]
    assert all(f.direction == "orig" for f in out)


def test_filenames() -> None:
    assert disposition_filename('attachment; filename="a b.pdf"') == "a b.pdf"
    assert disposition_filename("attachment; filename*=UTF-8''na%C3%AFve%20r%C3%A9sum%C3%A9.txt"
                                ) == "naïve résumé.txt"
    assert uri_filename("/dir/x%20y.tar.gz?token=1#frag") == "x y.tar.gz"
    assert uri_filename("/dir/") == ""
    s = run(("orig", b"GET /download?id=7 HTTP/1.1\r\n\r\n"),
            ("resp", resp(b"pdf", 'Content-Disposition: attachment; filename="report.pdf"\r\n')))
    assert files(s)[0].filename == "report.pdf"


def test_206_parts_join_across_connections() -> None:
    whole = bytes(range(256)) * 10
    parts = []
    for first, last in ((0, 999), (1000, 2559)):
        s = run(("orig", b"GET /doc.pdf HTTP/1.1\r\nHost: h\r\nRange: bytes=0-\r\n\r\n"),
                ("resp", resp(whole[first:last + 1],
                              f"Content-Range: bytes {first}-{last}/{len(whole)}\r\n"
                              "ETag: \"e1\"\r\n",
                              status="206 Partial Content")))
        parts += files(s)
    assert [p.extra["content_range"]["first"] for p in parts] == [0, 1000]
    asm = RangeAssembler()
    for i, p in enumerate(reversed(parts)):
        asm.add(p, f"id{i}")
    (joined,) = asm.finish()
    assert joined.data == whole and not joined.incomplete and joined.missing_ranges == []
    assert joined.extra["assembled_from_ranges"]["conflicting_overlaps"] == 0


def test_206_missing_range_is_reported() -> None:
    a = CarvedFile(b"abc", "http", "resp", 0, extra={
        "content_range": {"first": 0, "last": 2, "total": 10}, "range_key": ["h", "/x", 10, ""]})
    b = CarvedFile(b"hij", "http", "resp", 0, extra={
        "content_range": {"first": 7, "last": 9, "total": 10}, "range_key": ["h", "/x", 10, ""]})
    asm = RangeAssembler()
    asm.add(a, "a")
    asm.add(b, "b")
    (joined,) = asm.finish()
    assert (joined.data, joined.incomplete, joined.missing_ranges) == (b"abchij", True, [(3, 4)])
    assert parse_content_range("bytes 5-2/10") is None
    assert parse_content_range("bytes 0-9/*") == (0, 9, None)


def test_sniffers() -> None:
    assert http.looks_like_request(b"GET / HTTP/1.1\r\n")
    assert not http.looks_like_request(b"SSH-2.0-OpenSSH\r\n")
    assert http.looks_like_response(b"HTTP/1.0 404 Not Found\r\n")
