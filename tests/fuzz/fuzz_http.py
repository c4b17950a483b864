"""Fuzz pcapwire's HTTP/1.x parsing (pcapwire.extract.http: framing, chunked, pipelining,
1xx, HEAD, CONNECT; pcapwire.extract.httpfiles: request/response pairing, uploads split by
MIME, Content-Encoding decoding with limits, 206 ranges and multipart/byteranges) with
atheris, the Python code under coverage instrumentation.

The input is a conversation (pyfuzz.py: MODE, client bytes, SEP, server bytes). Beyond "no
exception", for ANY input:

- feeding each direction whole or in small interleaved pieces gives the same files (bytes,
  name, direction, completeness, missing ranges, metadata), in the same order within each
  direction, and the same transactions (junk where a start line belongs included:
  resynchronisation must not depend on the segmentation). Across directions, files come
  out in the order they complete in the bytes handed over, which is capture order in a
  real session and differs here, where the reference feeds the client's bytes first;
- every file's missing ranges are in order, disjoint, non-empty;
- with a gap reported (MODE bits 6-7) nothing raises and the same checks on ranges hold.

Usage (exit status 0 when nothing was found):
    .venv/bin/python tests/fuzz/fuzz_http.py -max_total_time=15 [libFuzzer flags] [CORPUS_DIR]
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import atheris  # noqa: E402
import pyfuzz  # noqa: E402

with atheris.instrument_imports(include=["pcapwire.extract"]):
    from pcapwire.extract.buffer import CarvedFile  # noqa: E402
    from pcapwire.extract.httpfiles import HttpSession  # noqa: E402


def carve(events: list[tuple[str, bytes]], gaps: dict[int, tuple[str, int]]
          ) -> tuple[list[Any], list[Any], list[str]]:
    s = HttpSession()
    for i, (direction, piece) in enumerate(events):
        s.feed(direction, piece, 1.0 + i / 1000)
        if i in gaps:
            s.gap(*gaps[i], 1.0 + i / 1000)
    s.close(2.0)
    files = s.take()
    for f in files:
        assert isinstance(f, CarvedFile), f
        assert f.protocol == "http" and f.direction in ("orig", "resp")
        end = -1
        for off, n in f.missing_ranges:
            assert n > 0 and off > end, f.missing_ranges
            end = off + n
    keys = [(f.data, f.filename, f.direction, f.incomplete, f.missing_ranges, f.extra,
             f.transferred) for f in files]
    return keys, s.transactions, s.notes


def TestOneInput(data: bytes) -> None:
    mode, orig, resp = pyfuzz.split_session(data)
    events = pyfuzz.interleave(orig, resp, mode)
    gaps: dict[int, tuple[str, int]] = {}
    if mode & 0xC0 and events:
        at = len(orig) % len(events)
        gaps[at] = ("orig" if mode & 0x40 else "resp", 1 + len(resp) % 3000)
    got = carve(events, gaps)
    if gaps:
        return
    whole = [("orig", orig)] if orig else []
    whole += [("resp", resp)] if resp else []
    ref = carve(whole, {})
    for direction in ("orig", "resp"):
        assert _of(got[0], direction) == _of(ref[0], direction), (direction, got[0], ref[0])
    # the ts of a message is that of its first piece: compare without it
    assert [_no_ts(t) for t in got[1]] == [_no_ts(t) for t in ref[1]], (got[1], ref[1])


def _of(files: list[Any], direction: str) -> list[Any]:
    return [f for f in files if f[2] == direction]


def _no_ts(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _no_ts(v) for k, v in obj.items() if k not in ("ts", "end_ts")}
    if isinstance(obj, list):
        return [_no_ts(v) for v in obj]
    return obj


def _session(orig: bytes, resp: bytes, mode: int = 0) -> bytes:
    return bytes([mode]) + orig + pyfuzz.SEP + resp


BODY = b"hello world\n" * 20
SEEDS = {
    "get-length": _session(b"GET /a/b.txt?x=1 HTTP/1.1\r\nHost: h\r\n\r\n",
                           b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY),
    "pipelined-chunked": _session(
        b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nHEAD /2 HTTP/1.1\r\n\r\nGET /3.bin HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: y\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n"
        b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", 0x09),
    # files of the two directions complete in a different order when interleaved
    "upload-beside-download": _session(
        b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /3.bin HTTP/1.1\r\nContent-Length: 5\r\n"
        b"\r\nhello", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", 0x09),
    "gzip-disposition": _session(
        b"GET /dl HTTP/1.0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Encoding: gzip\r\nContent-Disposition: attachment; "
        b"filename*=UTF-8''r%C3%A9sum%C3%A9.pdf\r\n\r\n" + gzip.compress(BODY, mtime=0), 0x1A),
    "upload-multipart": _session(
        b"POST /up HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n"
        b"Content-Length: 151\r\n\r\n--XyZ\r\nContent-Disposition: form-data; name=\"f\"; "
        b"filename=\"a.exe\"\r\nContent-Type: application/octet-stream\r\n\r\nMZ\x90\x00\r\n"
        b"--XyZ\r\nContent-Disposition: form-data; name=\"t\"\r\n\r\nv\r\n--XyZ--\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n", 0x24),
    "range-206": _session(
        b"GET /big.iso HTTP/1.1\r\nRange: bytes=0-4,10-14\r\n\r\n",
        b"HTTP/1.1 206 Partial Content\r\nContent-Type: multipart/byteranges; boundary=B\r\n"
        b"Content-Length: 150\r\n\r\n--B\r\nContent-Range: bytes 0-4/100\r\n\r\nABCDE\r\n--B\r\n"
        b"Content-Range: bytes 10-14/100\r\n\r\nKLMNO\r\n--B--\r\n", 0x3F),
    "connect-close": _session(
        b"CONNECT h:443 HTTP/1.1\r\n\r\n\x16\x03\x01\x00\x05hello",
        b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x03\x00\x02hi", 0x12),
    "close-delimited-gap": _session(
        b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n"
        + BODY, 0x80),
}
DICTIONARY = [b"HTTP/1.1 ", b"HTTP/1.0 200 OK", b"GET ", b"HEAD ", b"POST ", b"CONNECT ",
              b"\r\n\r\n", b"Content-Length: ", b"Transfer-Encoding: chunked",
              b"Content-Encoding: gzip", b"Content-Encoding: deflate",
              b"Content-Encoding: br", b"Content-Range: bytes ", b"206 ",
              b"multipart/byteranges; boundary=", b"multipart/form-data; boundary=",
              b"Content-Disposition: attachment; filename=", b"filename*=UTF-8''",
              b"Connection: close", b"Expect: 100-continue", b"100 Continue", b"0\r\n\r\n",
              b"\x1f\x8b\x08\x00", b"\x78\x9c"]


if __name__ == "__main__":
    pyfuzz.run("http", TestOneInput, SEEDS, DICTIONARY)
