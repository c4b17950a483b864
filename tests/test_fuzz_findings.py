"""What the fuzz harnesses of the Python parsers (tests/fuzz/fuzz_{http,mime,smtp}.py)
found, each reduced to a few lines and kept as a regression test once fixed. A finding not
fixed yet is tolerated by the harness (tests/fuzz/pyfuzz.py ``KNOWN_ISSUES``) and kept here
as a strict xfail, which fails the run the day the parser is fixed."""

from __future__ import annotations

import sys
from pathlib import Path

from pcapwire.extract import mime
from pcapwire.extract.httpfiles import HttpSession

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
import pyfuzz  # noqa: E402


def _http(orig: list[bytes], resp: list[bytes]) -> HttpSession:
    s = HttpSession()
    for piece in orig:
        s.feed("orig", piece, 1.0)
    for piece in resp:
        s.feed("resp", piece, 1.0)
    s.close(2.0)
    return s


def test_no_finding_is_tolerated_any_more() -> None:
    assert pyfuzz.KNOWN_ISSUES == ()


def test_a_nul_in_a_charset_name_leaves_the_text_body_readable() -> None:
    """A charset name with a NUL made bytes.decode raise ValueError (not LookupError)."""
    msg = mime.parse_message(b'Content-Type: text/plain; charset="utf\x00-8"\r\n\r\nhello')
    assert msg.text_body("plain") == "hello"


def test_a_nul_in_an_rfc2231_filename_charset_leaves_the_part_carvable() -> None:
    msg = mime.parse_message(b"Content-Type: application/octet-stream\r\nContent-Disposition:"
                             b" attachment; filename*=utf\x00-8''x.bin\r\n\r\nabc")
    assert [leaf.data for leaf in msg.leaves] == [b"abc"]


def test_mixed_rfc2231_continuations_leave_an_http_download_carvable() -> None:
    """email.utils.decode_params raised TypeError on '*0*' mixed with '*1'."""
    s = _http([b"GET /x.bin HTTP/1.1\r\nHost: h\r\n\r\n"],
              [b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename*=*0utf-8''a; "
               b"filename*1=\"b\"\r\nContent-Length: 3\r\n\r\nabc"])
    assert [f.data for f in s.take()] == [b"abc"]


def test_http_resynchronisation_does_not_depend_on_segment_boundaries() -> None:
    """_resync kept the last 64 bytes of what it skipped and matched its pattern's ^ at
    their start, a segment boundary, not a line start."""
    req = b"GET /a HTTP/1.0\r\n\r\n"
    junk = b"\x01junk\r\n\r\n" + b"?" * 30  # "GET /b" below is not at the start of a line
    tail = b"GET /b HTTP/1.0\r\n\r\n" + b"Y" * 45  # 64 bytes: what the parser keeps
    whole = _http([req + junk + tail + b"Z"], [])
    split = _http([req + junk + tail, b"Z"], [])
    lines = [[t["request"]["start_line"] for t in s.transactions] for s in (whole, split)]
    assert lines[0] == lines[1], lines


def test_a_long_request_line_after_junk_is_found_whatever_the_segmentation() -> None:
    """_resync kept only the last 64 bytes of what it skipped: a longer start line split
    across segments was lost."""
    data = b"\x01junk\r\n\r\n" + b"GET /" + b"a" * 80 + b" HTTP/1.1\r\n\r\n"
    whole = _http([data], [])
    split = _http([data[:90], data[90:]], [])
    lines = [[t["request"]["start_line"] for t in s.transactions] for s in (whole, split)]
    assert lines[0] == lines[1], lines


def test_a_superscript_digit_in_content_length_is_an_invalid_length_not_a_crash() -> None:
    """str.isdigit() is true for '¹' (latin-1 0xB9), which int() refuses."""
    s = _http([b"GET /x HTTP/1.1\r\n\r\n"],
              [b"HTTP/1.1 200 OK\r\nContent-Length: 1\xb9\r\n\r\nabc"])
    (t,) = s.transactions
    assert "invalid Content-Length ['1\xb9']" in t["response"]["errors"]


def test_files_come_out_in_the_order_they_complete_in_the_bytes_handed_over() -> None:
    """The HTTP harness compared the files of a whole-fed session (client bytes first) with
    an interleaved one in one list: a download that completes before a pipelined upload came
    first only when interleaved. That order is the capture's and is kept; within each
    direction the order never depends on the segmentation."""
    orig = (b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /3.bin HTTP/1.1\r\nContent-Length: 5"
            b"\r\n\r\nhello")
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
    whole = _http([orig], [resp]).take()
    assert [(f.filename, f.direction, f.data) for f in whole] == [
        ("3.bin", "orig", b"hello"), ("1", "resp", b"abc")]
    s = HttpSession()
    for direction, piece in pyfuzz.interleave(orig, resp, 0x09):
        s.feed(direction, piece, 1.0)
    s.close(2.0)
    assert [(f.filename, f.direction, f.data) for f in s.take()] == [
        ("1", "resp", b"abc"), ("3.bin", "orig", b"hello")]
