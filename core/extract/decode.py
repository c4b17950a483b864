"""Content-Encoding decoders (gzip, deflate, brotli) with named limits.

A body is decoded incrementally; the decoder stops -- it does not follow -- when the output
would pass :data:`MAX_DECOMPRESSED_SIZE` or when the output/input ratio passes
:data:`MAX_DECOMPRESSION_RATIO` (checked once the output exceeds
:data:`RATIO_CHECK_AFTER`, so that small, very compressible bodies are not flagged). Either
way it raises :class:`DecodeLimitExceeded`, which names the limit; the caller keeps the body
as transferred and reports the reason.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable

from pcapwire.errors import PcapwireError

log = logging.getLogger(__name__)

#: Largest decoded body kept, in bytes (a larger output is a decompression bomb or simply
#: too big to carve; decoding stops there).
MAX_DECOMPRESSED_SIZE = 256 * 1024 * 1024
#: Largest output/input ratio accepted. deflate's own ceiling is about 1032:1, reached only
#: by degenerate input (runs of one byte); real files stay far below.
MAX_DECOMPRESSION_RATIO = 200
#: The ratio is judged only once this many bytes have come out.
RATIO_CHECK_AFTER = 1024 * 1024
#: Stacked encodings accepted in one Content-Encoding header ("gzip, br" is two).
MAX_ENCODING_LAYERS = 3
#: Decoders hand out at most this much output per inner call (keeps memory bounded).
_STEP = 64 * 1024
#: The same for one zlib call (each releases the GIL: fewer, larger calls; a step still
#: stops as soon as its output passes the room left).
_ZLIB_STEP = 1024 * 1024

try:  # brotli is optional at import time; pyproject lists it as a dependency.
    import brotli as _brotli
except ImportError:  # pragma: no cover - exercised only without the package
    _brotli = None


class DecodeError(PcapwireError):
    """The body is not valid for its declared Content-Encoding."""


class DecodeLimitExceeded(DecodeError):
    """Decoding stopped at a named limit (``limit`` is the constant's name)."""

    def __init__(self, limit: str, value: int, detail: str) -> None:
        self.limit = limit
        self.value = value
        super().__init__(f"{limit}={value} reached: {detail}")


def _zlib_step(make: Callable[[], zlib._Decompress], gzip: bool
               ) -> Callable[[bytes, int], bytes]:
    """A zlib-based step; for gzip it restarts on concatenated members (RFC 1952 2.2) and
    ignores trailing bytes that are not another member, as browsers do."""
    state: dict[str, zlib._Decompress | None] = {"d": make()}

    def step(data: bytes, room: int) -> bytes:
        out: list[bytes] = []
        size = 0
        buf = data
        while state["d"] is not None:
            d = state["d"]
            limit = max(1, min(room - size + 1, _ZLIB_STEP))
            chunk = d.decompress(buf, limit)
            out.append(chunk)
            size += len(chunk)
            if size > room:
                break
            if d.eof:
                rest = d.unused_data
                if gzip and rest[:2] == b"\x1f\x8b":
                    state["d"] = make()
                    buf = rest
                    continue
                if rest.strip(b"\0"):
                    log.debug("ignoring %d bytes after the end of the compressed data",
                              len(rest))
                state["d"] = None
                break
            buf = d.unconsumed_tail
            if not buf and len(chunk) < limit:
                break
        return b"".join(out)

    return step


class _Deflate:
    """``deflate`` is zlib-wrapped by the RFC but raw deflate in much of the wild."""

    def __init__(self) -> None:
        self._inner: Callable[[bytes, int], bytes] | None = None
        self._head = b""

    def __call__(self, data: bytes, room: int) -> bytes:
        if self._inner is None:
            self._head += data
            if len(self._head) < 2:
                return b""
            cmf, flg = self._head[0], self._head[1]
            wrapped = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
            wbits = 15 if wrapped else -15
            self._inner = _zlib_step(lambda: zlib.decompressobj(wbits), gzip=False)
            data, self._head = self._head, b""
        return self._inner(data, room)


class _Brotli:
    def __init__(self) -> None:
        if _brotli is None:
            raise DecodeError("Content-Encoding br needs the 'brotli' package")
        self._d = _brotli.Decompressor()

    def __call__(self, data: bytes, room: int) -> bytes:
        out = bytearray()
        try:
            out += self._d.process(data, output_buffer_limit=max(1, min(room + 1, _STEP)))
            while len(out) <= room and not self._d.can_accept_more_data():
                out += self._d.process(b"", output_buffer_limit=max(1, min(room + 1, _STEP)))
        except _brotli.error as exc:
            raise DecodeError(f"invalid brotli data: {exc}") from exc
        return bytes(out)


def _make(coding: str) -> Callable[[bytes, int], bytes]:
    if coding in ("gzip", "x-gzip"):
        return _zlib_step(lambda: zlib.decompressobj(16 + 15), gzip=True)
    if coding == "deflate":
        return _Deflate()
    if coding == "br":
        return _Brotli()
    raise DecodeError(f"unsupported Content-Encoding {coding!r}")


def parse_codings(header: str) -> list[str]:
    """The codings of a Content-Encoding header, in the order they were applied."""
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    return [c for c in codings if c != "identity"]


def supported(codings: list[str]) -> bool:
    known = {"gzip", "x-gzip", "deflate"} | ({"br"} if _brotli is not None else set())
    return all(c in known for c in codings)


class ContentDecoder:
    """Incremental decoder for one body: ``feed()`` then ``finish()``; both return output.

    ``codings`` is the Content-Encoding list in application order; decoding undoes them in
    reverse. Raises :class:`DecodeLimitExceeded` or :class:`DecodeError`.
    """

    def __init__(self, codings: list[str], max_size: int = MAX_DECOMPRESSED_SIZE,
                 max_ratio: int = MAX_DECOMPRESSION_RATIO,
                 ratio_after: int = RATIO_CHECK_AFTER) -> None:
        if len(codings) > MAX_ENCODING_LAYERS:
            raise DecodeLimitExceeded("MAX_ENCODING_LAYERS", MAX_ENCODING_LAYERS,
                                      f"{len(codings)} stacked encodings")
        self.codings = codings
        self._steps = [_make(c) for c in reversed(codings)]
        self.max_size = max_size
        self.max_ratio = max_ratio
        self.ratio_after = ratio_after
        self.consumed = 0
        self.produced = 0

    def feed(self, data: bytes) -> bytes:
        self.consumed += len(data)
        out = data
        for step in self._steps:
            try:
                out = step(out, self.max_size - self.produced)
            except zlib.error as exc:
                raise DecodeError(f"invalid {self.codings} data after {self.consumed} input "
                                  f"bytes: {exc}") from exc
        self.produced += len(out)
        if self.produced > self.max_size:
            raise DecodeLimitExceeded("MAX_DECOMPRESSED_SIZE", self.max_size,
                                      f"output passed {self.max_size} bytes after "
                                      f"{self.consumed} input bytes")
        if self.produced > self.ratio_after and self.produced > self.max_ratio * self.consumed:
            raise DecodeLimitExceeded("MAX_DECOMPRESSION_RATIO", self.max_ratio,
                                      f"{self.produced} bytes out of {self.consumed}")
        return out

    def finish(self) -> bytes:
        return b""


def decode_body(body: bytes, codings: list[str], **limits: int) -> bytes:
    """Decode a whole body (feeds it in steps so a bomb stops early)."""
    dec = ContentDecoder(codings, **limits)
    out = [dec.feed(body[pos:pos + _STEP]) for pos in range(0, len(body), _STEP)]
    out.append(dec.finish())
    return b"".join(out)
