"""Limits on what one ingest may add to a store, and the report of an ingest they stopped.

- ``max_decompressed_bytes``: bytes one gzip'd input may decompress to;
- ``max_decompression_ratio``: decompressed bytes per compressed byte consumed, checked
  once :data:`RATIO_GRACE_BYTES` are out (a bomb is caught after its first MiB, not after
  gigabytes);
- ``quota_bytes``: bytes of all files under the store directory (segments, catalog and its
  WAL, and whatever else lives there), inputs being ingested that lie inside it excepted.
  A file indexed in place (``--in-place``) is not copied; its index is not checked.

``pcapwire ingest`` applies none unless asked (the operator's files on the operator's disk);
``pcapwire serve`` passes its own (:mod:`pcapwire.api.limits`) to the ingest it runs for each
upload. A limit stops an ingest between two batches of packets: those before it stay stored
and committed, the report says where it stopped (file, byte offset of the decompressed
stream) and how many packets were kept, and the source is left unfinished, so ingesting the
same file again under a higher limit resumes after the packets already stored.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: The ratio limit applies once this many bytes are decompressed (headers and the first
#: packets of a capture compress far better than its average).
RATIO_GRACE_BYTES = 1 * 2**20
#: Catalog bytes (SQLite pages and their WAL copies) one stored packet may add, at most:
#: measured 510 on a capture of one-packet flows (every packet a new flow row and index
#: entries), about 20 on ordinary traffic. The quota reserves this until it re-measures.
INDEX_RESERVE_PER_PACKET = 640
#: Bytes one checkpoint commit may add whatever its size (SQLite pages of the source and
#: segment rows, index roots, WAL frame headers).
COMMIT_RESERVE_BYTES = 1 * 2**20
#: Under a quota, a batch with its index reserve fits an eighth of the room left when the
#: ingest starts, even if all its records are bare 16-byte headers (so that an ingest stops
#: close to the quota, not a whole batch before it); and it is at least this.
QUOTA_MIN_BATCH_BYTES = 64 * 2**10

DECOMPRESSED = "max_decompressed_bytes"
RATIO = "max_decompression_ratio"
QUOTA = "quota_bytes"


@dataclass(frozen=True)
class IngestLimits:
    """None (or 0) is no limit."""

    max_decompressed_bytes: int | None = None  # per gzip'd input
    max_decompression_ratio: float | None = None  # per gzip'd input
    quota_bytes: int | None = None  # the whole store directory


@dataclass
class LimitStop:
    """Where a limit stopped the ingest of one input, and what of it is stored."""

    limit_name: str  # DECOMPRESSED, RATIO or QUOTA
    limit: float
    path: str
    offset: int  # byte of the decompressed stream (of the file, for plain input)
    compressed_offset: int | None = None  # compressed bytes read, when a limit on them hit
    decompressed: bool = False  # offset is in the decompressed stream of a gzip'd input
    packets_kept: int = 0  # packets of this input stored by this ingest …
    bytes_kept: int = 0
    segments_kept: int = 0
    packets_before: int = 0  # … and by earlier ones (a resumed ingest)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def reason(self) -> str:
        """What was exceeded, without the remedy (which the CLI and the API word apart)."""
        if self.limit_name == DECOMPRESSED:
            return f"it decompresses to more than {int(self.limit)} bytes"
        if self.limit_name == RATIO:
            ratio = self.offset / max(1, self.compressed_offset or 0)
            return (f"its first {self.offset} decompressed bytes are {ratio:.0f} times the "
                    f"{self.compressed_offset} compressed bytes they came from, more than "
                    f"{_num(self.limit)}")
        return f"storing more would exceed the store's quota of {int(self.limit)} bytes"

    def where(self, name: str | None = None) -> str:
        """Where it stopped and what was kept, as one sentence (``name``: the limit's name
        where the caller names it differently)."""
        stream = "of its decompressed stream" if self.decompressed else "of the file"
        comp = (f" (compressed byte {self.compressed_offset})"
                if self.compressed_offset is not None else "")
        before = (f", after the {self.packets_before} stored by an earlier ingest"
                  if self.packets_before else "")
        return (f"stopped at byte {self.offset} {stream}{comp} ({name or self.limit_name} = "
                f"{_num(self.limit)}): {self.reason()}; the {self.packets_kept} packet(s) "
                f"({self.bytes_kept} bytes) before that byte were stored{before}, nothing "
                "after it")


def _num(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def tree_bytes(root: Path, skip: Collection[str] = ()) -> int:
    """Bytes of the regular files under ``root`` (symlinks not followed), except the
    paths in ``skip``; files that vanish during the walk count 0."""
    total, stack = 0, [str(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.is_file(follow_symlinks=False) and e.path not in skip:
                    total += e.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
    return total


class Quota:
    """The store directory's bytes against ``limit``: measured when created and after each
    checkpoint, estimated in between as the segment bytes written plus
    :data:`INDEX_RESERVE_PER_PACKET` per packet and one :data:`COMMIT_RESERVE_BYTES`."""

    def __init__(self, limit: int, root: Path, inputs: Collection[Path] = ()) -> None:
        self.limit = limit
        self.root = root.resolve()
        self.skip = {str(p.resolve()) for p in inputs}
        self.used = 0
        self.pending = 0
        self.measure()

    def measure(self) -> None:
        self.used = tree_bytes(self.root, self.skip)
        self.pending = 0

    def batch_bytes(self, default: int) -> int:
        """The batch size to use under this quota (see QUOTA_MIN_BATCH_BYTES)."""
        room = self.limit - self.used - COMMIT_RESERVE_BYTES
        worst = 1 + INDEX_RESERVE_PER_PACKET // 16  # bytes reserved per record byte, at most
        return max(QUOTA_MIN_BATCH_BYTES, min(default, room // (8 * worst)))

    def fits(self, nbytes: int, packets: int) -> bool:
        need = nbytes + packets * INDEX_RESERVE_PER_PACKET + COMMIT_RESERVE_BYTES
        return self.used + self.pending + need <= self.limit

    def charge(self, nbytes: int, packets: int) -> None:
        self.pending += nbytes + packets * INDEX_RESERVE_PER_PACKET
