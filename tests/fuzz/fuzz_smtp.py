"""Fuzz pcapwire's SMTP parser (pcapwire.extract.smtp: envelope, DATA with dot-unstuffing,
BDAT chunks, reply pairing, STARTTLS, gaps, limits) with atheris, the Python code under
coverage instrumentation.

MODE (the first byte) picks one of two uses:

- raw (MODE even): the input is a conversation (pyfuzz.py: client bytes, SEP, server
  bytes). For ANY input nothing raises, and feeding each direction whole or in small
  interleaved pieces gives the same emails (bytes, envelope, completeness, missing ranges,
  metadata) -- unless MODE also asks for a gap, then only "nothing raises" and ordered,
  disjoint missing ranges;
- built (MODE odd): a well-formed session written from the fuzzed bytes (EHLO, MAIL FROM,
  RCPT TO, then each message by DATA -- dot-stuffed -- or by BDAT chunks, refused DATA and
  RSET in between, replies from a server), fed in fuzzed pieces: every accepted message
  comes out byte for byte with its envelope, complete, and a refused one does not.

Known issues (pyfuzz.KNOWN_ISSUES) are tolerated. Usage (exit status 0 when nothing was
found):
    .venv/bin/python tests/fuzz/fuzz_smtp.py -max_total_time=15 [libFuzzer flags] [CORPUS_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import atheris  # noqa: E402
import pyfuzz  # noqa: E402

with atheris.instrument_imports(include=["pcapwire.extract"]):
    from pcapwire.extract.buffer import CarvedEmail  # noqa: E402
    from pcapwire.extract.smtp import SmtpSession  # noqa: E402


def carve(events: list[tuple[str, bytes]], gap: tuple[int, str, int] | None = None
          ) -> list[tuple[Any, ...]]:
    s = SmtpSession()
    for i, (direction, piece) in enumerate(events):
        s.feed(direction, piece, 1.0)
        if gap is not None and gap[0] == i:
            s.gap(gap[1], gap[2], 1.0)
    s.close(2.0)
    out = []
    for e in s.take():
        assert isinstance(e, CarvedEmail) and e.protocol == "smtp", e
        end = -1
        for off, n in e.missing_ranges:
            assert n > 0 and off > end, e.missing_ranges
            end = off + n
        out.append((e.data, e.mail_from, e.rcpt_to, e.incomplete, e.missing_ranges, e.extra))
    return out


def raw(mode: int, orig: bytes, resp: bytes) -> None:
    events = pyfuzz.interleave(orig, resp, mode >> 1)
    if mode & 0x80 and events:
        carve(events, (len(orig) % len(events), "orig" if mode & 0x40 else "resp",
                       1 + len(resp) % 5000))
        return
    whole = [("orig", orig)] if orig else []
    whole += [("resp", resp)] if resp else []
    got, ref = carve(events), carve(whole)
    assert got == ref, (got, ref)


def _line(fdp: atheris.FuzzedDataProvider) -> bytes:
    """A line of a message: any bytes but CR and LF (a leading dot now and then)."""
    body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40)).replace(b"\r", b"").replace(b"\n", b"")
    return (b"." * fdp.ConsumeIntInRange(0, 2) + body) if fdp.ConsumeBool() else body


def built(fdp: atheris.FuzzedDataProvider) -> None:
    cli, srv = [b"EHLO client.example\r\n"], [b"220 mx ESMTP\r\n",
                                            b"250-mx\r\n250-CHUNKING\r\n250 OK\r\n"]
    want = []
    for n in range(fdp.ConsumeIntInRange(1, 4)):
        sender, rcpts = f"s{n}@a.example", [f"r{n}.{i}@b.example"
                                             for i in range(fdp.ConsumeIntInRange(1, 3))]
        cli.append(f"MAIL FROM:<{sender}> SIZE=100\r\n".encode())
        srv.append(b"250 OK\r\n")
        for r in rcpts:
            cli.append(f"RCPT TO:<{r}>\r\n".encode())
            srv.append(b"250 OK\r\n")
        message = b"".join(_line(fdp) + b"\r\n" for _ in range(fdp.ConsumeIntInRange(0, 8)))
        how = fdp.ConsumeIntInRange(0, 2)
        if how == 0:  # DATA, dot-stuffed
            cli.append(b"DATA\r\n")
            srv.append(b"354 go ahead\r\n")
            cli.append((b"." if message.startswith(b".") else b"")
                       + message.replace(b"\r\n.", b"\r\n.."))
            cli.append(b".\r\n")
            srv.append(b"250 queued\r\n")
            want.append((message, sender, rcpts))
        elif how == 1:  # BDAT chunks
            pos, chunks = 0, []
            while True:
                size = fdp.ConsumeIntInRange(0, len(message) - pos)
                if fdp.remaining_bytes() == 0:
                    size = len(message) - pos
                last = pos + size >= len(message)
                chunks.append((message[pos:pos + size], last))
                pos += size
                if last:
                    break
            for chunk, last in chunks:
                cli.append(b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"") + chunk)
                srv.append(b"250 OK\r\n")
            want.append((message, sender, rcpts))
        else:  # DATA refused, then RSET
            cli.append(b"DATA\r\n")
            srv.append(b"554 no valid recipients\r\n")
            cli.append(b"RSET\r\n")
            srv.append(b"250 OK\r\n")
    cli.append(b"QUIT\r\n")
    srv.append(b"221 bye\r\n")
    mode = fdp.ConsumeIntInRange(0, 63)
    got = carve(pyfuzz.interleave(b"".join(cli), b"".join(srv), mode))
    assert [(g[0], g[1], g[2]) for g in got] == want, (got, want)
    assert not any(g[3] or g[4] for g in got), got


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:
        built(atheris.FuzzedDataProvider(data[1:]))
    else:
        raw(*pyfuzz.split_session(data))


def _session(orig: bytes, resp: bytes, mode: int = 0) -> bytes:
    return bytes([mode]) + orig + pyfuzz.SEP + resp


SEEDS = {
    "data": _session(
        b"EHLO c\r\nMAIL FROM:<a@b> BODY=8BITMIME\r\nRCPT TO:<c@d>\r\nRCPT TO:e@f\r\nDATA\r\n"
        b"Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n",
        b"220 mx\r\n250-mx\r\n250 OK\r\n250 OK\r\n250 OK\r\n250 OK\r\n354 go\r\n250 OK\r\n"
        b"221 x\r\n"),
    "bdat-starttls": _session(
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 5\r\nhelloBDAT 0 LAST\r\n"
        b"STARTTLS\r\n\x16\x03\x01\x00\x01x", b"220 mx\r\n250 OK\r\n250 OK\r\n250 OK\r\n"
        b"250 OK\r\n250 OK\r\n220 go\r\n", 0x2A),
    "refused-gap": _session(
        b"HELO c\r\nMAIL FROM:<a@b>\r\nDATA\r\nx\r\n.\r\nMAIL FROM:<a@b>\r\nDATA\r\nlost",
        b"220 mx\r\n250 OK\r\n250 OK\r\n554 no\r\n", 0xC4),
    "built": b"\x01" + bytes(range(256)) * 2,
}
DICTIONARY = [b"EHLO ", b"HELO ", b"MAIL FROM:<", b"RCPT TO:<", b"DATA\r\n", b"BDAT ",
              b" LAST\r\n", b"RSET\r\n", b"STARTTLS\r\n", b"QUIT\r\n", b"\r\n.\r\n",
              b"\r\n..", b"354 ", b"250 ", b"220 ", b"554 ", b"\x16\x03\x01"]


if __name__ == "__main__":
    pyfuzz.run("smtp", TestOneInput, SEEDS, DICTIONARY)
