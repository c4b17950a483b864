"""Streaming gzip decompression for ingest.

Compressed input is read in small pieces and decompressed with ``zlib.decompressobj``, at
most :data:`GZIP_STEP_BYTES` per call, into blocks handed on as they fill: every byte
decompressed before damage (a truncated file, a corrupt deflate stream, a bad CRC, trailing
bytes that are not gzip) reaches the caller, and the damage is reported with its offsets.
Concatenated members are one stream, as ``zcat`` reads them; zero padding after the last
member is ignored. The decompressed size and the ratio to the compressed bytes read are
limited (:class:`~pcapwire.store.limits.IngestLimits`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import BinaryIO

from pcapwire.store.limits import DECOMPRESSED, RATIO, RATIO_GRACE_BYTES, IngestLimits

GZIP_MAGIC = b"\x1f\x8b"
#: Compressed bytes read from the input at a time.
GZIP_READ_BYTES = 64 * 2**10
#: Decompressed bytes one zlib call may produce (bounds memory, and how far a bomb gets
#: between two limit checks).
GZIP_STEP_BYTES = 1 * 2**20


class Gunzip:
    """Decompress ``f``; after :meth:`blocks` ends, :attr:`damage` or :attr:`stopped` tell
    why it ended early (both None: the whole input was read)."""

    def __init__(self, f: BinaryIO, limits: IngestLimits | None = None) -> None:
        self.f = f
        lim = limits or IngestLimits()
        self.max_bytes = lim.max_decompressed_bytes or None
        self.max_ratio = lim.max_decompression_ratio or None
        self.out = 0  # decompressed bytes handed on
        self.read = 0  # compressed bytes read from f
        self.pending = b""  # … of which not yet consumed by zlib
        self.damage: str | None = None
        self.stopped: tuple[str, float] | None = None  # (limit name, limit)

    @property
    def consumed(self) -> int:
        """Compressed bytes consumed so far (the offset of damage in the input file)."""
        return self.read - len(self.pending)

    def blocks(self, size: int) -> Iterator[memoryview]:
        """Decompressed data in blocks of up to ``size`` bytes, in one reused buffer (each
        block is valid until the next is asked for)."""
        buf = bytearray(size)
        view = memoryview(buf)
        fill = 0
        for data in self._chunks():
            chunk = memoryview(data)
            while chunk:
                n = min(len(chunk), size - fill)
                view[fill:fill + n] = chunk[:n]
                fill, chunk = fill + n, chunk[n:]
                if fill == size:
                    yield view
                    fill = 0
        if fill:
            yield view[:fill]

    def _more(self) -> bool:
        data = self.f.read(GZIP_READ_BYTES)
        self.read += len(data)
        self.pending += data
        return bool(data)

    def _member_start(self) -> bool:
        """At a member boundary: skip zero padding; True if a member follows."""
        while True:
            self.pending = self.pending.lstrip(b"\0")
            if len(self.pending) >= 2 or not self._more():
                break
        if not self.pending:
            return False
        if self.pending[:2] != GZIP_MAGIC:
            self.damage = (f"the bytes from compressed byte {self.consumed} on are not a "
                           "gzip member (trailing data)")
            return False
        return True

    def _chunks(self) -> Iterator[bytes]:
        d: zlib._Decompress | None = None
        while self.damage is None and self.stopped is None:
            if d is None or d.eof:
                if not self._member_start():
                    return
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            ended = not self.pending and not self._more()
            chunk = self._decompress(d)
            if ended and not chunk and not d.eof and self.damage is None:
                self.damage = ("the input ends inside a gzip stream (truncated at compressed "
                               f"byte {self.consumed})")
            chunk = self._limit(chunk)
            if chunk:
                self.out += len(chunk)
                yield chunk

    def _decompress(self, d: zlib._Decompress) -> bytes:
        """Decompress from :attr:`pending`; on damage, what the bytes before it give."""
        cap = GZIP_STEP_BYTES
        if self.max_ratio is not None and self.out < RATIO_GRACE_BYTES:
            cap = min(cap, RATIO_GRACE_BYTES - self.out)  # the first check: at the grace
        if self.max_bytes is not None:
            cap = min(cap, self.max_bytes - self.out + 1)  # one byte over: the limit is hit
        data, before = self.pending, d.copy()
        try:
            chunk = d.decompress(data, cap)
        except zlib.error as exc:
            chunk, bad = _salvage(before, data)
            self.pending = data[bad:]
            self.damage = f"{exc} (at compressed byte {self.consumed})"
            return chunk
        self.pending = d.unused_data if d.eof else d.unconsumed_tail
        return chunk

    def _limit(self, chunk: bytes) -> bytes:
        """``chunk`` cut at the decompressed-size limit if it crosses it; either limit hit
        sets :attr:`stopped`. The ratio is checked at the end of each chunk (at most
        GZIP_STEP_BYTES apart, the first at RATIO_GRACE_BYTES), so the stop offset and the
        compressed bytes read there are the pair that broke it."""
        end = self.out + len(chunk)
        if self.max_bytes is not None and end > self.max_bytes:
            self.stopped = (DECOMPRESSED, self.max_bytes)
            return chunk[:self.max_bytes - self.out]
        if (self.max_ratio is not None and end >= RATIO_GRACE_BYTES
                and end > self.max_ratio * self.consumed):
            self.stopped = (RATIO, self.max_ratio)  # after this chunk: offsets agree
        return chunk


def _salvage(d: zlib._Decompress, data: bytes) -> tuple[bytes, int]:
    """What ``data`` decompresses to before the byte zlib rejects, fed one byte at a time to
    ``d`` (a copy of the decompressor from before the failed call), and that byte's index.
    One input byte gives at most a few hundred output bytes, so this is bounded by what the
    failed call would have returned."""
    out = []
    for i in range(len(data)):
        try:
            out.append(d.decompress(data[i:i + 1]))
        except zlib.error:
            return b"".join(out), i
    return b"".join(out), len(data)
