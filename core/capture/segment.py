"""A segment the recorder is writing: ``<name>.pcap.live`` on disk until it is sealed.

Records are appended with ``pwrite`` at the segment's size, whole batches at a time; a
write that fails (disk full …) is cut off again (``ftruncate``), so the file is always the
header and whole records, plus at most the part of one batch a crash interrupted. Each
batch is indexed natively right after it is written (no second pass), and hashed (the
SHA-256 of the sealed file, for the custody log's seal entry). :meth:`cut` makes
what was written durable (``fdatasync``) and hands out the index since the previous cut:
the recorder commits it, with the segment's size, to the catalog.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcapwire import _native
from pcapwire.pcapformat import HEADER_LEN, pcap_header
from pcapwire.store.segments import LIVE_SUFFIX

META_SIZE: int = _native.META_SIZE
_TS = struct.Struct("<q")  # ts_ns, the first field of a META_STRUCT
_REC_OFF = struct.Struct("<I")  # rec_off, at byte 8 of a META_STRUCT


def meta_ts(meta: bytes, index: int) -> int:
    return int(_TS.unpack_from(meta, index * META_SIZE)[0])


def split_batch(records: bytes, meta: bytes, index: int) -> tuple[tuple[bytes, bytes],
                                                                  tuple[bytes, bytes]]:
    """A batch cut before its record ``index``: two (records, meta) pairs, the second
    one's record offsets rebased to its own records."""
    count = len(meta) // META_SIZE
    if index >= count:
        return (records, meta), (b"", b"")
    cut = int(_REC_OFF.unpack_from(meta, index * META_SIZE + 8)[0])
    tail = bytearray(meta[index * META_SIZE:])
    for i in range(count - index):
        at = i * META_SIZE + 8
        _REC_OFF.pack_into(tail, at, _REC_OFF.unpack_from(tail, at)[0] - cut)
    return (records[:cut], meta[:index * META_SIZE]), (records[cut:], bytes(tail))


class SegmentWriteError(OSError):
    """Records that could not be written (they are not in the segment)."""


@dataclass
class Cut:
    """What one cut of a segment hands to the catalog."""

    first_ns: int
    last_ns: int
    packets: int
    size: int
    flows: list[tuple]
    arrivals: list[tuple[int, int, int]]  # (packets, first, last arrival ns) per batch
    sha256: str = ""  # of the file up to ``size``


@dataclass
class LiveSegment:
    root: Path
    rel: str  # the catalog path: segments/…/<name>.pcap
    linktype: int
    snaplen: int
    tsprec: int
    opened: float = field(default_factory=time.time)
    fsync: bool = True
    size: int = HEADER_LEN
    packets: int = 0
    data_bytes: int = 0  # captured packet bytes (records without their headers)
    first_ns: int | None = None
    last_ns: int | None = None
    cuts: int = 0
    lost: tuple[int, int] = (0, 0)  # (packets, bytes) the last failed cut took back
    _fd: int = -1
    _indexer: Any = None
    _cut: tuple[int, int, int, int | None, int | None] = (HEADER_LEN, 0, 0, None, None)
    _arrivals: list[tuple[int, int, int]] = field(default_factory=list)
    _sha: Any = field(default_factory=hashlib.sha256)  # of the file so far
    _cut_sha: Any = None  # the hash at the last cut (a failed cut goes back to it)

    @property
    def final_path(self) -> Path:
        return self.root / self.rel

    @property
    def live_path(self) -> Path:
        return self.final_path.with_name(self.final_path.name + LIVE_SUFFIX)

    def open(self) -> None:
        """Create the file with its header (raises OSError, nothing left behind)."""
        self.live_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.live_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        header = pcap_header(self.linktype, self.snaplen, self.tsprec)
        try:
            _pwrite_all(fd, header, 0)
        except OSError:
            os.close(fd)
            self.live_path.unlink(missing_ok=True)
            raise
        self._fd = fd
        self._indexer = _native.SegmentIndexer()
        self._sha.update(header)
        self._cut_sha = self._sha.copy()

    def append(self, records: bytes, meta: bytes, arrival: tuple[int, int] | None = None
               ) -> int:
        """Write and index a batch; returns its packet count. A failed write leaves the
        segment as it was and raises SegmentWriteError."""
        count = len(meta) // META_SIZE
        if not count:
            return 0
        base = self.size
        try:
            _pwrite_all(self._fd, records, base)
        except OSError as exc:
            self._truncate(base)
            raise SegmentWriteError(exc.errno, exc.strerror) from None
        n, first, last = self._indexer.add(meta, base)
        self._sha.update(records)
        self.size += len(records)
        self.packets += n
        self.data_bytes += len(records) - 16 * n
        self.first_ns = first if self.first_ns is None else min(self.first_ns, first)
        self.last_ns = last if self.last_ns is None else max(self.last_ns, last)
        if arrival is not None:
            self._arrivals.append((n, arrival[0], arrival[1]))
        return int(n)

    @property
    def dirty(self) -> bool:
        """Records written since the last cut (or the segment was never cut)."""
        return self.size != self._cut[0] or self.cuts == 0

    def cut(self) -> Cut:
        """Make what was written durable and return the index since the previous cut.
        When that fails, the records since the previous cut are taken back (the file is
        truncated, their index dropped) and SegmentWriteError says how many: see
        :attr:`lost`."""
        if self.fsync:
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                self._rollback()
                raise SegmentWriteError(exc.errno, exc.strerror) from None
        flows = self._indexer.finish()
        arrivals, self._arrivals = self._arrivals, []
        self._cut = (self.size, self.packets, self.data_bytes, self.first_ns, self.last_ns)
        self._cut_sha = self._sha.copy()
        self.cuts += 1
        return Cut(self.first_ns or 0, self.last_ns or 0, self.packets, self.size, flows,
                   arrivals, self._sha.hexdigest())

    @property
    def sha256(self) -> str:
        """The SHA-256 of the file as it is (header and whole records up to ``size``)."""
        return str(self._sha.hexdigest())

    def _rollback(self) -> None:
        size, packets, nbytes, first, last = self._cut
        self.lost = (self.packets - packets, self.data_bytes - nbytes)
        self._truncate(size)
        self._indexer.finish()  # the index of what is gone
        self._arrivals = []
        self._sha = self._cut_sha.copy()
        self.size, self.packets, self.data_bytes, self.first_ns, self.last_ns = self._cut

    def _truncate(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
        except OSError:
            pass  # pwrite writes at self.size anyway; recovery cuts at the last whole record

    def close(self) -> None:
        if self._fd >= 0:
            self._truncate(self.size)
            os.close(self._fd)
            self._fd = -1


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
