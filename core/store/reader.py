"""Reading a segment's bytes, plain or compressed: the one read path of the query engine.

:func:`segment_pieces` yields what the native scan (``_native.scan``) walks: a buffer, the
range to walk in it (bytes for a sequential scan, indices of ``offsets`` otherwise) and the
record offsets rebased to that buffer.

* A plain segment (``<path>``, or ``<path>.live`` while the recorder writes it; an
  absolute catalog path is a file indexed in place) is one piece: its mmap.
* A compressed one (``<path>.zst``, :mod:`.zstdseek`, written by :mod:`.compression`)
  is a piece per frame it needs: a sequential scan decompresses frame after frame from
  the one holding its start; an indexed read groups its offsets by frame (in their
  order) and decompresses each needed frame once. Frames are cut on record boundaries,
  so each is a run of whole records.

The plain file wins when both exist: compression deletes it only after the compressed
file is complete, verified and committed, and a reader that opened it keeps its mapping.

A frame that cannot be read (damage) loses only its records: ``on_damage`` gets the error
(file, frame, compressed byte offset) and the reading goes on with the next frame;
without ``on_damage`` the error is raised. A seek table that cannot be read loses the
whole segment the same way.
"""

from __future__ import annotations

import hashlib
import mmap
from array import array
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pcapwire.pcapformat import HEADER_LEN, pcap_header
from pcapwire.store.catalog import Segment
from pcapwire.store.segments import ZSTD_SUFFIX, open_segment
from pcapwire.store.zstdseek import SeekableReader, StoredSegmentError

OnDamage = Callable[[StoredSegmentError], None]
EXPORT_BLOCK = 2**20  # bytes written at a time by export_plain


@dataclass(frozen=True, slots=True)
class Piece:
    """What one ``_native.scan`` walk covers: ``buf[start:end]`` (bytes) when ``offsets``
    is None, else ``offsets[start:end]`` (u32 indices into ``buf``); ``buf[0]`` is byte
    ``base`` of the segment's pcap file."""

    buf: mmap.mmap | bytes
    start: int
    end: int
    offsets: bytes | None
    base: int = 0


def compressed_path(root: Path, rel: str) -> Path:
    """Where segment ``rel`` (a catalog path) is stored compressed."""
    base = root / rel
    return base.with_name(base.name + ZSTD_SUFFIX)


def segment_pieces(root: Path, seg: Segment, offsets: bytes | None = None,
                   start: int = HEADER_LEN, on_damage: OnDamage | None = None
                   ) -> Generator[Piece, None, None]:
    """The pieces of ``seg`` to scan: from byte ``start`` to its committed size (a
    sequential scan, ``offsets`` None), or the records at ``offsets`` (u32, in order).
    Close the iterator (or exhaust it) to release the file."""
    path = root / seg.path
    try:
        f = open_segment(path)
    except FileNotFoundError as missing:
        if Path(seg.path).is_absolute():
            raise
        try:
            reader = SeekableReader(compressed_path(root, seg.path))
        except FileNotFoundError:
            raise missing from None
        except StoredSegmentError as exc:
            _report(exc, on_damage)
            return
        with reader:
            yield from _frames(reader, seg, offsets, start, on_damage)
        return
    with f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if offsets is None:  # never past the committed size (a live segment)
            yield Piece(mm, start, min(len(mm), seg.size), None)
        else:
            yield Piece(mm, 0, len(offsets) // 4, offsets)


def _report(exc: StoredSegmentError, on_damage: OnDamage | None) -> None:
    if on_damage is None:
        raise exc
    on_damage(exc)


def _frames(reader: SeekableReader, seg: Segment, offsets: bytes | None, start: int,
            on_damage: OnDamage | None) -> Iterator[Piece]:
    table = reader.table
    if offsets is None:
        end = min(table.plain_size, seg.size)
        first = table.frame_at(start)
        for frame in table.frames[first.index if first else len(table.frames):]:
            if frame.plain_offset >= end:
                return
            try:
                data = reader.read_frame(frame)
            except StoredSegmentError as exc:
                _report(exc, on_damage)
                continue
            yield Piece(data, max(start, frame.plain_offset) - frame.plain_offset,
                        min(end, frame.plain_end) - frame.plain_offset, None, frame.plain_offset)
        return
    wanted = array("I")
    wanted.frombytes(offsets)
    i, n = 0, len(wanted)
    cached: tuple[int, bytes] | None = None  # the last frame read (offsets come in order)
    damaged: set[int] = set()
    while i < n:
        frame = table.frame_at(wanted[i])
        if frame is None:
            raise ValueError(f"corrupt index: record offset {wanted[i]} (index {i}) is "
                             f"outside the segment ({table.plain_size} bytes)")
        j = i + 1
        while j < n and frame.plain_offset <= wanted[j] < frame.plain_end:
            j += 1
        if cached is None or cached[0] != frame.index:
            if frame.index in damaged:
                i = j
                continue
            try:
                cached = frame.index, reader.read_frame(frame)
            except StoredSegmentError as exc:
                damaged.add(frame.index)
                _report(exc, on_damage)
                i = j
                continue
        base = frame.plain_offset
        rebased = array("I", [x - base for x in wanted[i:j]]).tobytes()
        yield Piece(cached[1], 0, j - i, rebased, base)
        i = j


def export_plain(root: Path, seg: Segment, out: BinaryIO,
                 on_damage: OnDamage | None = None) -> tuple[int, str]:
    """Write segment ``seg`` to ``out`` as the plain pcap it was (up to its committed size,
    for one being recorded); returns (bytes written, their SHA-256). With ``on_damage``,
    a damaged frame's records are left out (the rest stays a valid pcap: when the first
    frame is lost, the segment's file header is written in its place)."""
    sha = hashlib.sha256()
    written = 0
    with closing(segment_pieces(root, seg, None, 0, on_damage)) as pieces:
        for piece in pieces:
            if written == 0 and piece.base + piece.start != 0:
                head = pcap_header(seg.linktype, seg.snaplen, seg.tsprec)
                sha.update(head)
                written += out.write(head)
            view = memoryview(piece.buf)
            try:
                for at in range(piece.start, piece.end, EXPORT_BLOCK):
                    block = view[at:min(piece.end, at + EXPORT_BLOCK)]
                    sha.update(block)
                    out.write(block)
                    written += len(block)
                    block.release()
            finally:
                view.release()
    if written == 0:
        head = pcap_header(seg.linktype, seg.snaplen, seg.tsprec)
        sha.update(head)
        written += out.write(head)
    return written, sha.hexdigest()
