"""Segment files: ordinary little-endian pcap files any tool can open, never rewritten.

A segment is written as ``<name>.pcap.part`` and renamed to ``<name>.pcap`` only when it is
complete; the catalog row is committed right after. On open, the store deletes ``.part``
files and completed files the catalog does not know (a crash between rename and commit),
so a re-run of the interrupted ingest writes those packets again without duplicates.

The recorder (:mod:`pcapwire.capture`) writes a segment while it is open as
``<name>.pcap.live`` (left alone here, recovered by the recorder) with its catalog row
already named ``<name>.pcap``: :func:`open_segment` opens either.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pcapwire import _native
from pcapwire.pcapformat import HEADER_LEN, pcap_header

SEGMENT_MAX_BYTES = 256 * 2**20
LIVE_SUFFIX = ".live"  # a segment the recorder is still writing (pcapwire.capture)
ZSTD_SUFFIX = ".zst"  # a sealed segment stored compressed (pcapwire.store.compression)
SEGMENT_MAX_SPAN_NS = 3600 * 10**9
assert SEGMENT_MAX_BYTES < 2**32 - 64 * 2**20  # offsets are u32, plus one read block of slack


# One thread writes segment data while the ingest thread parses the next block (both
# release the GIL); at most one write per segment is in flight. It also hashes what it
# writes (the SHA-256 of the custody log's seal entry), so no second pass reads it back.
_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pcapwire-segment-write")


def _write_all(fh: Any, data: bytes, sha: Any) -> None:
    sha.update(data)
    view = memoryview(data)
    while view:
        view = view[fh.write(view):]


@dataclass
class SegmentWriter:
    """Appends batches of records to one segment file and indexes them natively."""

    path: Path
    rel: str
    linktype: int
    snaplen: int
    tsprec: int
    size: int = 0
    packets: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    _fh: Any = field(default=None, repr=False)
    _indexer: Any = field(default=None, repr=False)
    _pending: Future[None] | None = field(default=None, repr=False)
    _sha: Any = field(default_factory=hashlib.sha256, repr=False)

    def __post_init__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.part_path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        _write_all(self._fh, pcap_header(self.linktype, self.snaplen, self.tsprec), self._sha)
        self.size = HEADER_LEN
        self._indexer = _native.SegmentIndexer()

    @property
    def part_path(self) -> Path:
        return self.path.with_name(self.path.name + ".part")

    def add(self, records: bytes, meta: bytes) -> int:
        """Append a batch (its records and their meta); returns its packet count."""
        count, first_ns, last_ns = self._indexer.add(meta, self.size)
        self._wait()
        self._pending = _WRITER.submit(_write_all, self._fh, records, self._sha)
        self.size += len(records)
        self.packets += count
        self.first_ns = first_ns if self.first_ns is None else min(self.first_ns, first_ns)
        self.last_ns = last_ns if self.last_ns is None else max(self.last_ns, last_ns)
        return count

    def close(self) -> tuple[dict[str, Any], list[tuple]]:
        """Finish the file (rename into place) and return its catalog row (with the
        file's ``sha256``) and flows."""
        self._wait()
        self._fh.close()
        os.replace(self.part_path, self.path)
        flows = self._indexer.finish()
        row = {"path": self.rel, "linktype": self.linktype, "snaplen": self.snaplen,
               "tsprec": self.tsprec, "first_ns": self.first_ns or 0,
               "last_ns": self.last_ns or 0, "packets": self.packets, "size": self.size,
               "sha256": self._sha.hexdigest()}
        return row, flows

    def _wait(self) -> None:
        """Wait for the write in flight; a write error (disk full …) is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def abort(self) -> None:
        try:
            self._wait()
        except OSError:
            pass  # the file is discarded anyway
        self._fh.close()
        self.part_path.unlink(missing_ok=True)


def open_segment(path: Path) -> BinaryIO:
    """Open a segment file for reading: ``path``, or while the recorder still writes it,
    ``path`` + LIVE_SUFFIX (tried again under ``path``: it may be sealed meanwhile)."""
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        pass
    try:
        return open(path.with_name(path.name + LIVE_SUFFIX), "rb")  # noqa: SIM115
    except FileNotFoundError:
        return open(path, "rb")  # noqa: SIM115


def segment_files(root: Path, rel: str) -> list[Path]:
    """Every file on disk that holds segment ``rel`` (catalog path, relative to ``root``
    or absolute when indexed in place): the plain file, the recorder's ``.live`` file and
    the compressed form (:mod:`pcapwire.store.compression`), those that exist."""
    base = root / rel
    names = [base, base.with_name(base.name + LIVE_SUFFIX),
             base.with_name(base.name + ZSTD_SUFFIX)]
    return [p for p in names if p.exists()]


def remove_orphans(segment_dir: Path, known: set[str], root: Path) -> list[Path]:
    """Delete ``.part`` files and segment files the catalog does not know. Compressed
    files (``.zst``, ``.zst.part``) are left to :func:`pcapwire.store.compression.recover`:
    a compressor may be writing one right now, under its own lock."""
    removed: list[Path] = []
    if not segment_dir.exists():
        return removed
    for p in segment_dir.rglob("*"):
        if not p.is_file() or p.name.endswith(ZSTD_SUFFIX + ".part"):
            continue
        if p.name.endswith(".part") or (p.suffix == ".pcap" and
                                         str(p.relative_to(root)) not in known):
            p.unlink()
            removed.append(p)
    return removed
