"""The zstd *seekable format* (facebook/zstd ``contrib/seekable_format``): independently
decompressible zstd frames, then a seek table in a skippable frame, so a reader
decompresses only the frames it needs.

Layout (all integers little-endian)::

    frame 0 | frame 1 | ... | frame N-1 |
    skippable frame: magic 0x184D2A5E, u32 content size,
                     N entries (compressed size u32, decompressed size u32[, checksum u32]),
                     footer: number of frames u32, descriptor u8, seekable magic 0x8F92EAB1

The descriptor's bit 7 says whether entries carry a checksum (the low 32 bits of the
XXH64 of the frame's content); bits 2-6 are reserved and must be 0. pcapwire writes no
seek-table checksums: every frame carries zstd's own content checksum instead, which
``zstd -d`` checks too. Any zstd decoder reads the whole file as one stream (skippable
frames are skipped), so ``zstd -d seg.pcap.zst -o seg.pcap`` restores the original file.

Errors name the file, the frame and its compressed byte offset
(:class:`StoredSegmentError`); a damaged frame does not stop the others from being read.
"""

from __future__ import annotations

import bisect
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard
from pcapwire.errors import PcapwireError

SKIPPABLE_MAGIC = 0x184D2A5E
SEEKABLE_MAGIC = 0x8F92EAB1
FOOTER = struct.Struct("<IBI")  # number of frames, descriptor, seekable magic
SKIPPABLE_HEADER = struct.Struct("<II")  # magic, content size
ENTRY = struct.Struct("<II")  # compressed size, decompressed size (no checksum: we write)
CHECKSUM_FLAG = 0x80
RESERVED_BITS = 0x7C
#: The format's limits: sizes are u32, and the reference implementation refuses more
#: frames than this (ZSTD_SEEKABLE_MAXFRAMES).
MAX_FRAME_BYTES = 2**32 - 1
MAX_FRAMES = 0x8000000


class StoredSegmentError(PcapwireError):
    """A compressed segment (or one of its frames) that cannot be read as written."""

    def __init__(self, path: Path | str, reason: str, frame: int | None = None,
                 offset: int | None = None) -> None:
        self.path, self.reason, self.frame, self.offset = str(path), reason, frame, offset
        where = str(path)
        if frame is not None:
            where += f": frame {frame}"
        if offset is not None:
            where += f" at compressed byte {offset}"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class Frame:
    index: int
    offset: int  # first compressed byte in the file
    size: int  # compressed bytes
    plain_offset: int  # first byte of its content in the decompressed stream
    plain_size: int

    @property
    def plain_end(self) -> int:
        return self.plain_offset + self.plain_size


class SeekTable:
    """The frames of one file, found by compressed or decompressed position."""

    def __init__(self, frames: list[Frame]) -> None:
        self.frames = frames
        self._starts = [f.plain_offset for f in frames]

    @property
    def plain_size(self) -> int:
        return self.frames[-1].plain_end if self.frames else 0

    @property
    def compressed_size(self) -> int:
        return self.frames[-1].offset + self.frames[-1].size if self.frames else 0

    def frame_at(self, plain_offset: int) -> Frame | None:
        """The frame holding decompressed byte ``plain_offset`` (None: past the end)."""
        i = bisect.bisect_right(self._starts, plain_offset) - 1
        if i < 0 or plain_offset >= self.frames[i].plain_end:
            return None
        return self.frames[i]


def read_seek_table(fh: BinaryIO, path: Path | str) -> SeekTable:
    """The seek table at the end of an open seekable file, checked against its size."""
    size = os.fstat(fh.fileno()).st_size
    if size < SKIPPABLE_HEADER.size + FOOTER.size:
        raise StoredSegmentError(path, f"{size} bytes is too short for a seekable zstd file "
                                 "(no seek table)")
    nframes, descriptor, magic = FOOTER.unpack(os.pread(fh.fileno(), FOOTER.size,
                                                        size - FOOTER.size))
    if magic != SEEKABLE_MAGIC:
        raise StoredSegmentError(path, f"no seek table: the last 4 bytes are {magic:#010x}, "
                                 f"not the seekable magic {SEEKABLE_MAGIC:#010x}",
                                 offset=size - 4)
    if descriptor & RESERVED_BITS:
        raise StoredSegmentError(path, f"seek table descriptor {descriptor:#04x} has reserved "
                                 "bits set", offset=size - 5)
    if nframes > MAX_FRAMES:
        raise StoredSegmentError(path, f"seek table claims {nframes} frames, more than the "
                                 f"format's limit of {MAX_FRAMES}", offset=size - FOOTER.size)
    entry_size = ENTRY.size + (4 if descriptor & CHECKSUM_FLAG else 0)
    table_len = nframes * entry_size + FOOTER.size
    table_at = size - table_len - SKIPPABLE_HEADER.size
    if table_at < 0:
        raise StoredSegmentError(path, f"seek table of {nframes} frames is larger than the "
                                 f"file ({size} bytes)", offset=size - FOOTER.size)
    raw = os.pread(fh.fileno(), table_len - FOOTER.size + SKIPPABLE_HEADER.size, table_at)
    skip_magic, skip_len = SKIPPABLE_HEADER.unpack_from(raw)
    if skip_magic != SKIPPABLE_MAGIC or skip_len != table_len:
        raise StoredSegmentError(path, f"seek table header {skip_magic:#010x}/{skip_len} is "
                                 f"not a skippable frame of {table_len} bytes", offset=table_at)
    frames: list[Frame] = []
    offset = plain = 0
    for i in range(nframes):
        csize, dsize = ENTRY.unpack_from(raw, SKIPPABLE_HEADER.size + i * entry_size)
        frames.append(Frame(i, offset, csize, plain, dsize))
        offset += csize
        plain += dsize
    if offset != table_at:
        raise StoredSegmentError(path, f"the seek table's frames add up to {offset} bytes, "
                                 f"but the frames end at byte {table_at}", offset=table_at)
    return SeekTable(frames)


class SeekableReader:
    """Frames of one seekable file, each read and checked on its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "rb")  # noqa: SIM115 - closed in close()
        try:
            self.table = read_seek_table(self._fh, path)
        except BaseException:
            self._fh.close()
            raise
        self._dctx = zstandard.ZstdDecompressor()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> SeekableReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_frame(self, frame: Frame) -> bytes:
        """The frame's content; :class:`StoredSegmentError` when it is damaged (does not
        decompress, fails its checksum, or its size differs from the seek table's). Bytes
        after the zstd frame within its extent are not read: a seek table that is off
        makes the next frame (or the table's own check) fail instead."""
        data = os.pread(self._fh.fileno(), frame.size, frame.offset)
        if len(data) != frame.size:
            raise self._damaged(frame, f"only {len(data)} of its {frame.size} bytes could be "
                                       "read")
        try:  # one frame, into a buffer of the size the seek table gives
            out = self._dctx.decompress(data, max_output_size=frame.plain_size)
        except zstandard.ZstdError as exc:
            raise self._damaged(frame, f"does not decompress ({exc})") from None
        if len(out) != frame.plain_size:
            raise self._damaged(frame, f"decompresses to {len(out)} bytes, the seek table "
                                       f"says {frame.plain_size}")
        return out

    def _damaged(self, frame: Frame, reason: str) -> StoredSegmentError:
        return StoredSegmentError(self.path, f"{reason}; plain bytes {frame.plain_offset}-"
                                  f"{frame.plain_end} are lost", frame.index, frame.offset)


class SeekableWriter:
    """Writes frames and, at :meth:`finish`, the seek table, to an open binary file."""

    def __init__(self, fh: BinaryIO, level: int) -> None:
        self._fh = fh
        self._cctx = zstandard.ZstdCompressor(level=level, write_checksum=True,
                                              write_content_size=True)
        self._entries: list[tuple[int, int]] = []
        self.size = 0

    def add_frame(self, data: bytes | memoryview) -> bytes:
        """Compress ``data`` as one frame and write it; returns the frame's bytes."""
        plain = len(data) if isinstance(data, bytes) else data.nbytes
        if plain > MAX_FRAME_BYTES:
            raise ValueError(f"a frame of {plain} bytes is above the format's limit of "
                             f"{MAX_FRAME_BYTES}")
        if len(self._entries) >= MAX_FRAMES:
            raise ValueError(f"more than {MAX_FRAMES} frames")
        frame = self._cctx.compress(data)
        self._fh.write(frame)
        self._entries.append((len(frame), plain))
        self.size += len(frame)
        return frame

    def finish(self) -> bytes:
        """Write the seek table; returns its bytes."""
        table = b"".join(ENTRY.pack(c, d) for c, d in self._entries)
        table += FOOTER.pack(len(self._entries), 0, SEEKABLE_MAGIC)
        out = SKIPPABLE_HEADER.pack(SKIPPABLE_MAGIC, len(table)) + table
        self._fh.write(out)
        self.size += len(out)
        return out
