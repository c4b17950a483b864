"""The stable k-way merge of sensors' answers: many classic-pcap byte streams in, one
classic pcap out, byte for byte what ``mergecap -F pcap -w OUT IN0 IN1 …`` writes for the
same inputs (Wireshark 4.0's mergecap, checked by experiment and by the tests):

- **Header.** Magic ``a1b2c3d4`` (microseconds, little-endian), version 2.4, thiszone and
  sigfigs 0, snaplen :data:`OUTPUT_SNAPLEN` whatever the inputs' snaplens are, the link
  type of the inputs. Inputs of different link types are refused (mergecap cannot write
  them as one pcap either): :class:`~pcapwire.errors.CaptureFormatError` naming them.
- **Records.** In timestamp order, compared at full precision (nanoseconds for a
  nanosecond input). **Ties go to the higher input index first** (mergecap keeps the last
  of the inputs whose head has the smallest timestamp); records of one input keep their
  order. Nanosecond timestamps are written as microseconds, truncated; big-endian records
  are rewritten little-endian; captured bytes are never changed.

The header leaves, as a piece of its own, once every input's header is known (or that
input has ended or failed):
the snaplen does not depend on the inputs, but the link types must agree before a byte
goes out. A record leaves once every live input holds a head record, so the order is
final. Output comes in pieces of whole records of at most ``chunk_bytes`` (a single record
larger than that travels alone; the first piece of records may have a limit of its own,
``first_chunk_bytes``, so that a relay with large pieces does not delay its first chunk),
each handed over as soon as the merge would otherwise wait for an input. Memory is bounded
by one piece per input plus one output piece.

An input that raises (a sensor gone mid-stream), ends inside a record or a header, is not
a classic pcap or holds a record over :data:`MAX_RECORD_BYTES` is *dropped*: the merge
reports it once through ``on_failure(name, reason)`` (for format errors the reason names
the input and the byte offset) and goes on with the others. Every whole record it sent
before the failure is merged; a partial record is discarded. (mergecap instead stops the
whole merge at the first unreadable input.)

The record loop is native (:func:`pcapwire._native.merge_records`, ``core/native/merge.c``):
given every live input's received bytes, read position and format, it writes the merged,
rewritten records until an input lacks a whole record or the piece is full; this module
keeps the headers, the waiting for input, the failures and the output pieces.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence

from pcapwire import _native
from pcapwire.errors import CaptureFormatError
from pcapwire.pcapformat import (
    HEADER_LEN,
    RECORD,
    RECORD_LEN,
    PcapHeader,
    parse_header,
    pcap_header,
)
from pcapwire.query.spec import DEFAULT_CHUNK_BYTES

log = logging.getLogger(__name__)

#: snaplen of the output header: what ``mergecap -F pcap`` writes for any input
OUTPUT_SNAPLEN = 262144
#: largest captured length of one record; mergecap refuses larger ones ("bigger than
#: maximum of 262144") for every link type pcapwire stores
MAX_RECORD_BYTES = 262144


class _Input:
    """One input stream: the bytes received and not merged yet, its header once read and
    its format for :func:`~pcapwire._native.merge_records`."""

    __slots__ = ("name", "stream", "buf", "pos", "base", "header", "format", "_unpack")

    def __init__(self, name: str, stream: AsyncIterator[bytes]) -> None:
        self.name, self.stream = name, stream
        self.buf = bytearray()
        self.pos = 0  # where the head record starts in buf
        self.base = 0  # stream offset of buf[0]
        self.header: PcapHeader | None = None
        self.format = 0  # _native.MERGE_NANO | _native.MERGE_SWAPPED as they apply
        self._unpack = RECORD.unpack_from

    async def fill(self) -> bool:
        """Append the next piece of the stream; False at its end."""
        try:
            piece = await anext(self.stream)
        except StopAsyncIteration:
            return False
        if self.pos:
            del self.buf[:self.pos]
            self.base += self.pos
            self.pos = 0
        self.buf += piece
        return True

    async def read_header(self) -> None:
        while len(self.buf) < HEADER_LEN and await self.fill():
            pass
        self.header = hdr = parse_header(bytes(self.buf[:HEADER_LEN]), self.name)
        self.pos = HEADER_LEN
        self._unpack = hdr.record.unpack_from
        self.format = (_native.MERGE_NANO if hdr.tsprec == 9 else 0) | (
            _native.MERGE_SWAPPED if hdr.order != "<" else 0)

    def parse(self) -> bool:
        """Whether a whole record starts at ``pos``; :class:`CaptureFormatError` when its
        header says more than :data:`MAX_RECORD_BYTES`."""
        pos, buf = self.pos, self.buf
        if len(buf) - pos < RECORD_LEN:
            return False
        caplen = self._unpack(buf, pos)[2]
        if caplen > MAX_RECORD_BYTES:
            raise CaptureFormatError(self.name, self.base + pos,
                                     f"record of {caplen} captured bytes, over the limit of "
                                     f"{MAX_RECORD_BYTES} (MAX_RECORD_BYTES)")
        return pos + RECORD_LEN + caplen <= len(buf)

    async def next_record(self) -> bool:
        """Read until a whole record starts at ``pos``; False when the input ends cleanly
        after its last record."""
        while not self.parse():
            if not await self.fill():
                if len(self.buf) > self.pos:
                    raise CaptureFormatError(
                        self.name, self.base + self.pos,
                        f"stream ended inside a record ({len(self.buf) - self.pos} bytes "
                        "of it arrived)")
                return False
        return True


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _check_linktypes(inputs: list[_Input]) -> int:
    """The one link type of all inputs (whose headers are read), or
    :class:`CaptureFormatError` naming the first that differs and listing them all."""
    types = [inp.header.linktype if inp.header is not None else -1 for inp in inputs]
    for inp, linktype in zip(inputs, types, strict=True):
        if linktype != types[0]:
            listed = ", ".join(f"{i.name}: {lt}" for i, lt in zip(inputs, types, strict=True))
            raise CaptureFormatError(inp.name, 0, f"link type {linktype} differs from link "
                                     f"type {types[0]} of {inputs[0].name}; one classic pcap "
                                     f"holds one link type (inputs: {listed})")
    return types[0]


async def merge_streams(streams: Sequence[AsyncIterator[bytes]], names: Sequence[str], *,
                        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                        first_chunk_bytes: int | None = None,
                        on_failure: Callable[[str, str], None]) -> AsyncIterator[bytes]:
    """The classic pcap that merges ``streams`` (``names[i]`` names ``streams[i]`` in
    errors), in pieces of whole records of at most ``chunk_bytes`` (the first piece of
    records: at most ``first_chunk_bytes``, when given). Nothing at all comes out when no
    input delivers a header. Every stream that has ``aclose`` is closed when the merge
    ends, fails or is closed."""
    if len(streams) != len(names):
        raise ValueError(f"{len(streams)} streams but {len(names)} names")
    for name, size in (("chunk_bytes", chunk_bytes), ("first_chunk_bytes", first_chunk_bytes)):
        if size is not None and size < 1:
            raise ValueError(f"{name} must be positive, not {size}")
    max_out = chunk_bytes if first_chunk_bytes is None else first_chunk_bytes
    inputs = [_Input(n, s) for s, n in zip(streams, names, strict=True)]

    def failed(inp: _Input, exc: Exception) -> None:
        on_failure(inp.name, _reason(exc))

    try:
        live: list[_Input] = []
        for inp in inputs:
            try:
                await inp.read_header()
                live.append(inp)
            except Exception as exc:
                failed(inp, exc)
        if not live:
            return
        yield pcap_header(_check_linktypes(live), OUTPUT_SNAPLEN)
        while live:  # in input order: merge_records gives ties to the later one
            piece, positions, stop = _native.merge_records(
                [inp.buf for inp in live], [inp.pos for inp in live],
                [inp.format for inp in live], max_out=max_out,
                max_record=MAX_RECORD_BYTES)
            for inp, pos in zip(live, positions, strict=True):
                inp.pos = pos
            if piece:
                max_out = chunk_bytes
                yield piece
            if stop < 0:  # the piece is full
                continue
            inp = live[stop]  # lacks a whole record: wait for it, or it ended or is bad
            try:
                if await inp.next_record():
                    continue
            except Exception as exc:
                failed(inp, exc)
            del live[stop]
    finally:
        for inp in inputs:
            aclose = getattr(inp.stream, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception as exc:  # closing is best effort; the merge's outcome stands
                    log.warning("closing input %s: %s", inp.name, _reason(exc))
