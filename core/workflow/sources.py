"""Chunk sources for a run that does not come from the store: a pcap/pcapng file cut into
:class:`~pcapwire.records.PcapChunk` records, each a complete classic pcap (24-byte header +
whole records) of at most :data:`CHUNK_BYTES` (a single record larger than that travels
alone in its chunk). The engine accepts any ``AsyncIterator[PcapChunk]``; the query engine
(:meth:`pcapwire.query.QueryEngine.run`) is the other source."""

from __future__ import annotations

import asyncio
import logging
import struct
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from pcapwire import _native
from pcapwire.chunking import ChunkBuilder
from pcapwire.errors import CaptureFormatError
from pcapwire.records import PcapChunk
from pcapwire.store.gunzip import GZIP_MAGIC, Gunzip

log = logging.getLogger(__name__)

#: Largest chunk cut from a capture file (bytes, header included).
CHUNK_BYTES = 256 * 1024
#: Bytes read from the file at a time.
READ_BYTES = 4 * 2**20
_META = struct.Struct(_native.META_STRUCT)


def iter_file_chunks(path: str | Path, *, query_id: str = "",
                     chunk_bytes: int = CHUNK_BYTES) -> Iterator[PcapChunk]:
    """Chunks of a capture file (pcap, pcapng, either gzip'd), in file order. Damage is
    skipped as the native reader does (a broken gzip stream ends the input after every
    packet before it); a file that is not a capture raises :class:`CaptureFormatError`."""
    path = Path(path)
    reader = _native.Reader(str(path))
    builder = ChunkBuilder(query_id or f"file:{path.name}", chunk_bytes)

    def batches(bs: list) -> Iterator[PcapChunk]:
        for linktype, snaplen, tsprec, records, meta, _off in bs:
            for m in _META.iter_unpack(meta):
                ts_ns, rec_off, caplen = m[0], m[1], m[2]
                chunk = builder.add((linktype, snaplen, tsprec),
                                    records[rec_off:rec_off + 16 + caplen], ts_ns, ts_ns)
                if chunk is not None:
                    yield chunk

    with path.open("rb") as fh:
        gz = Gunzip(fh) if fh.read(2) == GZIP_MAGIC else None
        fh.seek(0)
        blocks = gz.blocks(READ_BYTES) if gz is not None else iter(lambda: fh.read(READ_BYTES),
                                                                    b"")
        for block in blocks:
            yield from batches(reader.feed(bytes(block)))
            if reader.format is None and reader.errors:
                break
    yield from batches(reader.finish())
    if gz is not None and gz.damage is not None:
        log.warning("%s: gzip stream broken after %d decompressed bytes: %s; the packets "
                    "before it were read", path, gz.out, gz.damage)
    if reader.format is None:
        off, msg = reader.errors[0] if reader.errors else (0, "not a pcap or pcapng file")
        raise CaptureFormatError(str(path), off, msg)
    last = builder.flush()
    if last is not None:
        yield last


async def file_chunks(path: str | Path, *, query_id: str = "",
                      chunk_bytes: int = CHUNK_BYTES) -> AsyncIterator[PcapChunk]:
    """:func:`iter_file_chunks` as an async iterator (file reading in a thread)."""
    it = iter_file_chunks(path, query_id=query_id or uuid.uuid4().hex, chunk_bytes=chunk_bytes)
    end = object()
    while True:
        chunk = await asyncio.to_thread(next, it, end)
        if chunk is end:
            return
        yield chunk  # type: ignore[misc]
