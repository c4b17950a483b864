"""How full a store is, in the terms of its policy's watermarks.

- A percent watermark measures the data directory's file system as ``df`` does: used
  blocks over used plus available (blocks reserved for root count as neither), so 100 %
  is where an unprivileged writer gets ENOSPC.
- A byte budget measures what the store holds: every segment as stored on disk (plain,
  ``.live`` or compressed, :func:`pcapwire.store.segments.segment_files`; a file indexed in
  place is the user's, not the store's, and does not count) and the evidence holds copied
  under ``<data-dir>/evidence/``. The catalog is not counted (it shrinks only by a vacuum).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcapwire.store.catalog import Catalog
from pcapwire.store.config import RetentionPolicy, Watermark
from pcapwire.store.segments import segment_files

EVIDENCE_DIR = "evidence"


@dataclass(frozen=True)
class Usage:
    """``used`` against the marks, all in bytes: for a percent policy ``capacity`` is the
    file system's size (used + available), for a byte budget the high mark."""

    kind: str  # "percent" or "bytes"
    used: int
    capacity: int
    high: int
    low: int

    @property
    def above_high(self) -> bool:
        return self.used > self.high

    @property
    def above_low(self) -> bool:
        return self.used > self.low

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "used_bytes": self.used,
                               "capacity_bytes": self.capacity, "high_bytes": self.high,
                               "low_bytes": self.low}
        if self.kind == "percent":
            out["used_percent"] = round(100 * self.used / max(self.capacity, 1), 3)
        return out

    def describe(self) -> str:
        if self.kind == "percent":
            pct = 100 * self.used / max(self.capacity, 1)
            return (f"file system {pct:.1f}% used ({self.used} of {self.capacity} bytes); "
                    f"high mark {self.high} bytes, low mark {self.low} bytes")
        return (f"store holds {self.used} bytes; budget: high mark {self.high} bytes, low "
                f"mark {self.low} bytes")


def filesystem(root: Path) -> tuple[int, int]:
    """(used, used + available) bytes of the file system holding ``root``."""
    st = os.statvfs(root)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    return used, used + st.f_bavail * st.f_frsize


def stored_size(root: Path, rel: str) -> int:
    """Bytes segment ``rel`` takes on disk as stored (0 for a file indexed in place)."""
    if Path(rel).is_absolute():
        return 0
    total = 0
    for path in segment_files(root, rel):
        try:
            total += path.stat().st_size
        except FileNotFoundError:  # sealed or compressed meanwhile
            continue
    return total


def evidence_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root / EVIDENCE_DIR):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                continue
    return total


def store_bytes(root: Path, catalog: Catalog) -> int:
    """Segments as stored plus evidence (what a byte budget counts)."""
    paths = [r[0] for r in catalog.db.execute("SELECT path FROM segments")]
    return sum(stored_size(root, p) for p in paths) + evidence_bytes(root)


def _mark(mark: Watermark, capacity: int) -> int:
    if mark.percent is not None:
        return int(capacity * mark.percent / 100)
    assert mark.bytes is not None
    return mark.bytes


def measure(root: Path, catalog: Catalog, policy: RetentionPolicy) -> Usage | None:
    """The usage the policy's watermarks speak of; None when it has none."""
    high, low = policy.high_watermark, policy.low_watermark
    if high is None or low is None:
        return None
    if high.percent is not None:
        used, capacity = filesystem(root)
        return Usage("percent", used, capacity, _mark(high, capacity), _mark(low, capacity))
    budget = _mark(high, 0)
    return Usage("bytes", store_bytes(root, catalog), budget, budget, _mark(low, 0))
