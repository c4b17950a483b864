"""Where the carver's connection events come from.

* :func:`carve_streams` -- :class:`~pcapwire.records.StreamRecord` s (reassembled payload
  per direction, gaps marked): the ``stream`` input kind of the workflow engine;
* :func:`carve_pcap` / :func:`carve_chunks` (:class:`ChunkFeeder`) -- a capture file or
  a query's PcapChunks, through pcapwire's TCP reassembler (:mod:`pcapwire.reassembly`),
  whose events (open, in-order data, gaps, ends, close) map one to one onto the
  :class:`Carver`'s. Both carve in the calling thread and store files (hashes, libmagic,
  writes: all release the GIL) in :data:`STORE_WORKERS` threads.

StreamRecord convention used here: records of one (flow, direction) arrive in stream
order; each continues where the previous one ended; ``gaps`` are ``(offset, length)`` in
that direction's stream coordinates (0 = its first byte), and the gap bytes are absent
from ``data``.
"""

from __future__ import annotations

import logging
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcapwire.errors import CaptureFormatError, PcapwireError
from pcapwire.extract import PROTOCOLS
from pcapwire.extract.artifacts import ArtifactStore
from pcapwire.extract.carve import Carver, CarveResult
from pcapwire.reassembly.events import Event
from pcapwire.reassembly.reassembler import Reassembler
from pcapwire.records import FlowKey, PcapChunk, StreamRecord

log = logging.getLogger(__name__)


@dataclass
class StreamFeeder:
    """Feeds StreamRecords to a :class:`Carver` as connection events."""

    carver: Carver
    offsets: dict[tuple[FlowKey, str], int] = field(default_factory=dict)

    def feed(self, rec: StreamRecord) -> None:
        key = rec.flow
        if key not in self.carver.conns:
            self.carver.open(key, rec.start_ts)
        base = self.offsets.get((key, rec.direction), 0)
        pos_stream, pos_data = base, 0
        for off, length in sorted(rec.gaps):
            if off + length <= base:
                continue  # a gap an earlier record already reported
            take = max(0, off - pos_stream)
            if take:
                self.carver.data(key, rec.direction, rec.data[pos_data:pos_data + take],
                                 rec.start_ts)
                pos_data += take
            self.carver.gap(key, rec.direction, length, rec.start_ts)
            pos_stream = off + length
        if pos_data < len(rec.data):
            self.carver.data(key, rec.direction, rec.data[pos_data:], rec.end_ts)
        consumed_gaps = sum(n for o, n in rec.gaps if o + n > base)
        self.offsets[(key, rec.direction)] = base + len(rec.data) + consumed_gaps

    def finish(self) -> CarveResult:
        return self.carver.finish()


def carve_streams(records: Iterable[StreamRecord], store: ArtifactStore,
                  protocols: tuple[str, ...] = PROTOCOLS) -> CarveResult:
    """Carve from reassembled streams (every connection is closed at the end of input)."""
    feeder = StreamFeeder(Carver(store, protocols=protocols))
    for rec in records:
        if rec.flow.proto == 6:
            feeder.feed(rec)
    return feeder.finish()


def dispatch(carver: Carver, events: Iterable[Event]) -> None:
    """Hand reassembler events (TCP only) to the carver."""
    dispatch_lists(carver, (events,))


def dispatch_lists(carver: Carver, lists: Iterable[Iterable[Event]]) -> None:
    """:func:`dispatch` for events that come in lists. Data, the bulk of the events, goes
    to the connection's state looked up once per reassembler connection (``ev.conn``)."""
    live: dict[int, Any] = {}  # reassembler connection id -> the carver's _Conn
    data_to = carver.data_to
    for events in lists:
        for ev in events:
            t = ev.type
            if t == "data":
                conn = live.get(ev.conn)
                if conn is None or conn.closed:
                    if ev.key.proto != 6:
                        continue
                    carver.data(ev.key, ev.direction, ev.data, ev.ts)
                    live[ev.conn] = carver.conn_of(ev.key)
                else:
                    data_to(conn, ev.direction, ev.data, ev.ts)
                continue
            if ev.key.proto != 6:
                continue
            if t == "gap":
                carver.gap(ev.key, ev.direction, ev.length, ev.ts)
            elif t == "open":
                carver.open(ev.key, ev.ts)
            elif t == "end":
                carver.end(ev.key, ev.direction, ev.ts)
            elif t == "close":
                live.pop(ev.conn, None)
                carver.close(ev.key, ev.ts)


@dataclass
class ChunkFeeder:
    """A query's PcapChunks, one at a time, through one reassembler (one flow table
    across chunk boundaries) into a :class:`Carver`."""

    carver: Carver
    reassembler: Reassembler = field(default_factory=lambda: Reassembler(udp=False))

    def feed(self, chunk: PcapChunk) -> None:
        dispatch(self.carver, self.reassembler.feed_chunk(chunk))

    def damage(self) -> list[str]:
        return [f"byte {off}: {msg}" for off, msg in
                self.reassembler.stats.decode.capture_errors]

    def finish(self) -> CarveResult:
        dispatch(self.carver, self.reassembler.flush())
        return self.carver.finish()


def carve_chunks(chunks: Iterable[PcapChunk], store: ArtifactStore,
                 protocols: tuple[str, ...] = PROTOCOLS) -> tuple[CarveResult, list[str]]:
    """Carve a query's chunk stream."""
    feeder = ChunkFeeder(Carver(store, protocols=protocols, workers=STORE_WORKERS))
    try:
        for chunk in chunks:
            feeder.feed(chunk)
    except BaseException:
        feeder.carver.shutdown()
        raise
    result = feeder.finish()
    return result, feeder.damage()


def carve_pcap(path: str | Path, store: ArtifactStore,
               protocols: tuple[str, ...] = PROTOCOLS) -> tuple[CarveResult, list[str]]:
    """Carve a capture file (pcap, pcapng, either gzip-compressed). Returns the result and
    the input damage met on the way ("FILE at byte N: reason"), which does not stop
    carving; a file that is not a capture at all raises CaptureFormatError."""
    path = Path(path)
    if not path.is_file():
        raise PcapwireError(f"{path}: no such capture file")
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    if gz:
        with tempfile.TemporaryDirectory(prefix="pcapwire-carve-") as tmp:
            plain = Path(tmp) / path.name.removesuffix(".gz")
            broken = _gunzip(path, plain)
            result, damage = _carve_file(plain, store, protocols, shown=path)
            return result, damage + ([broken] if broken else [])
    return _carve_file(path, store, protocols, shown=path)


#: Threads that hash, identify (libmagic) and write carved files while carving goes on.
STORE_WORKERS = 2


def _gunzip(src: Path, dst: Path) -> str:
    """Decompress ``src`` into ``dst``, keeping everything decodable before damage;
    returns what went wrong ('' when nothing)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out_size, in_member = 0, False
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while block := fin.read(1 << 20):
            while block:
                in_member = True
                try:
                    out = d.decompress(block)
                except zlib.error as exc:
                    return (f"{src}: gzip stream broken after {out_size} decompressed "
                            f"bytes: {exc}")
                fout.write(out)
                out_size += len(out)
                block = b""
                if d.eof:  # another member may follow (RFC 1952 2.2)
                    in_member = False
                    rest = d.unused_data
                    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    block = rest if rest.strip(b"\0") else b""
    if in_member:
        return f"{src}: gzip stream truncated after {out_size} decompressed bytes"
    return ""


def _carve_file(path: Path, store: ArtifactStore, protocols: tuple[str, ...],
                shown: Path) -> tuple[CarveResult, list[str]]:
    carver = Carver(store, protocols=protocols, workers=STORE_WORKERS)
    reassembler = Reassembler(udp=False)
    try:
        dispatch_lists(carver, reassembler.feed_file_lists(path))
    except CaptureFormatError as exc:
        carver.shutdown()
        raise CaptureFormatError(str(shown), exc.offset, exc.reason) from exc
    except BaseException:
        carver.shutdown()
        raise
    result = carver.finish()
    damage = [f"{shown} at byte {off}: {msg}"
              for off, msg in reassembler.stats.decode.capture_errors]
    return result, damage
