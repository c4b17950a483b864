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

The header leaves once every input's header is known (or that input has ended or failed):
the snaplen does not depend on the inputs, but the link types must agree before a byte
goes out. A record leaves once every live input holds a head record, so the order is
final. Output comes in pieces of whole records of at most ``chunk_bytes`` (a single record
larger than that travels alone), each handed over as soon as the merge would otherwise
wait for an input. Memory is bounded by one piece per input plus one output piece.

An input that raises (a sensor gone mid-stream), ends inside a record or a header, is not
a classic pcap or holds a record over :data:`MAX_RECORD_BYTES` is *dropped*: the merge
reports it once through ``on_failure(name, reason)`` (for format errors the reason names
the input and the byte offset) and goes on with the others. Every whole record it sent
before the failure is merged; a partial record is discarded. (mergecap instead stops the
whole merge at the first unreadable input.)
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import AsyncIterator, Callable, Sequence

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

#: (seconds, nanoseconds, -input index): the merge order, ties to the higher index
Key = tuple[int, int, int]


class _Input:
    """One input stream: the bytes received and not merged yet, its header once read, the
    head record (``key``, ``end``) once whole."""

    __slots__ = ("index", "name", "stream", "buf", "pos", "base", "header", "key", "end",
                 "_unpack", "_ns_per_frac", "_rewrite")

    def __init__(self, index: int, name: str, stream: AsyncIterator[bytes]) -> None:
        self.index, self.name, self.stream = index, name, stream
        self.buf = bytearray()
        self.pos = 0  # where the head record starts in buf
        self.base = 0  # stream offset of buf[0]
        self.header: PcapHeader | None = None
        self.key: Key = (0, 0, -index)
        self.end = 0  # where the head record ends in buf
        self._unpack = RECORD.unpack_from
        self._ns_per_frac = 1000
        self._rewrite = False

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
        self._ns_per_frac = 1000 if hdr.tsprec == 6 else 1
        self._rewrite = hdr.order != "<" or hdr.tsprec != 6

    def parse(self) -> bool:
        """Whether a whole record starts at ``pos`` (then ``key`` and ``end`` say it)."""
        pos, buf = self.pos, self.buf
        if len(buf) - pos < RECORD_LEN:
            return False
        sec, frac, caplen, _orig = self._unpack(buf, pos)
        if caplen > MAX_RECORD_BYTES:
            raise CaptureFormatError(self.name, self.base + pos,
                                     f"record of {caplen} captured bytes, over the limit of "
                                     f"{MAX_RECORD_BYTES} (MAX_RECORD_BYTES)")
        end = pos + RECORD_LEN + caplen
        if end > len(buf):
            return False
        self.key, self.end = (sec, frac * self._ns_per_frac, -self.index), end
        return True

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

    def take(self) -> bytes | bytearray:
        """The head record as the output writes it (little-endian, microseconds)."""
        rec = self.buf[self.pos:self.end]
        self.pos = self.end
        if not self._rewrite:
            return rec
        sec, frac, caplen, origlen = self._unpack(rec)
        return RECORD.pack(sec, frac * self._ns_per_frac // 1000, caplen, origlen) + \
            rec[RECORD_LEN:]


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
                        on_failure: Callable[[str, str], None]) -> AsyncIterator[bytes]:
    """The classic pcap that merges ``streams`` (``names[i]`` names ``streams[i]`` in
    errors), in pieces of whole records of at most ``chunk_bytes``. Nothing at all comes
    out when no input delivers a header. Every stream that has ``aclose`` is closed when
    the merge ends, fails or is closed."""
    if len(streams) != len(names):
        raise ValueError(f"{len(streams)} streams but {len(names)} names")
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be positive, not {chunk_bytes}")
    inputs = [_Input(i, n, s) for i, (s, n) in enumerate(zip(streams, names, strict=True))]

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
        out = bytearray(pcap_header(_check_linktypes(live), OUTPUT_SNAPLEN))
        heap: list[Key] = []
        for inp in live:
            try:
                if not inp.parse():
                    if out:
                        yield bytes(out)
                        out.clear()
                    if not await inp.next_record():
                        continue
                heap.append(inp.key)
            except Exception as exc:
                failed(inp, exc)
        heapq.heapify(heap)
        while heap:
            inp = inputs[-heapq.heappop(heap)[2]]
            try:
                while True:  # the run of this input's records that go before all others
                    rec = inp.take()
                    if out and len(out) + len(rec) > chunk_bytes:
                        yield bytes(out)
                        out.clear()
                    out += rec
                    if not inp.parse():
                        if out:
                            yield bytes(out)
                            out.clear()
                        if not await inp.next_record():
                            break
                    if heap and inp.key > heap[0]:
                        heapq.heappush(heap, inp.key)
                        break
            except Exception as exc:
                failed(inp, exc)
        if out:
            yield bytes(out)
    finally:
        for inp in inputs:
            aclose = getattr(inp.stream, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception as exc:  # closing is best effort; the merge's outcome stands
                    log.warning("closing input %s: %s", inp.name, _reason(exc))
