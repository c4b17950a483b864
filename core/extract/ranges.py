"""Join HTTP 206 parts (possibly from several connections) into the file they cut.

Parts are grouped by (Host, URI, total length, ETag); a part is a single-part 206 body or
one part of a ``multipart/byteranges`` 206 (:mod:`.byteranges`), alike. Every part stays
a file of its own with its Content-Range; when a group has more than one part, or one part
that covers the whole file, the joined file is produced as well: covered bytes in order,
uncovered ranges listed as missing (never invented), overlaps checked for agreement
(disagreements are counted on the file and reported in ``notes``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from pcapwire.extract.buffer import CarvedFile

log = logging.getLogger(__name__)

#: Largest file rebuilt from ranges (a forged total length must not allocate gigabytes).
MAX_RANGE_TOTAL = 512 * 1024 * 1024
#: Most parts joined into one file.
MAX_RANGE_PARTS = 10_000

#: Extras that describe one part (its range, its place in its response), not the file.
_PART_ONLY = frozenset(("content_range", "range_key", "transferred", "byteranges_part",
                        "container"))
_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.I)


def parse_content_range(value: str) -> tuple[int, int, int | None] | None:
    """(first, last, total or None for ``*``) of a ``Content-Range: bytes A-B/T`` value;
    None when it is not one (or says last < first, or last >= total)."""
    m = _RANGE.match(value or "")
    if m is None:
        return None
    first, last = int(m.group(1)), int(m.group(2))
    total = None if m.group(3) == "*" else int(m.group(3))
    if last < first or (total is not None and last >= total):
        return None
    return first, last, total


@dataclass
class _Group:
    total: int | None
    parts: list[tuple[int, CarvedFile, str]] = field(default_factory=list)  # first, file, id


class RangeAssembler:
    def __init__(self) -> None:
        self.groups: dict[tuple[Any, ...], _Group] = {}
        #: what went wrong while joining (overlaps that disagree), for the report
        self.notes: list[str] = []

    def add(self, part: CarvedFile, part_id: str) -> None:
        """Take a part (a CarvedFile with ``content_range`` and ``range_key`` extras).
        A part with missing bytes is taken only when they are its tail (its data is then
        a prefix of its range); a hole inside would shift the bytes after it."""
        rng = part.extra.get("content_range")
        key = part.extra.get("range_key")
        if not rng or not key or not _prefix_only(part):
            return
        group = self.groups.setdefault(tuple(key), _Group(rng["total"]))
        if len(group.parts) < MAX_RANGE_PARTS:
            group.parts.append((rng["first"], part, part_id))

    def finish(self) -> list[CarvedFile]:
        out = []
        for key, group in self.groups.items():
            joined = self._join(key, group)
            if joined is not None:
                out.append(joined)
        self.groups.clear()
        return out

    def _join(self, key: tuple[Any, ...], group: _Group) -> CarvedFile | None:
        total = group.total
        parts = sorted(group.parts, key=lambda p: p[0])
        if total is None or total > MAX_RANGE_TOTAL:
            return None
        covered_end = 0
        pieces: list[bytes] = []
        missing: list[tuple[int, int]] = []
        conflicts = 0
        for first, part, _ in parts:
            data = part.data
            last = min(first + len(data), total)
            if first > covered_end:
                missing.append((covered_end, first - covered_end))
                covered_end = first
            if last <= covered_end:
                continue
            if first < covered_end:  # overlap: the bytes must agree
                overlap = covered_end - first
                if data[:overlap] != _tail(pieces, overlap):
                    conflicts += 1
                data = data[overlap:]
            pieces.append(data[:last - covered_end])
            covered_end = last
        if covered_end < total:
            missing.append((covered_end, total - covered_end))
        if len(parts) < 2 and missing:
            return None
        if conflicts:
            self.notes.append(
                f"range join of {key[0]}{key[1]} (total {total}): {conflicts} overlapping "
                "range(s) disagree with bytes already placed; the bytes of the part that "
                "starts first are kept (every part is a file of its own), file marked "
                "incomplete")
        head = parts[0][1]
        extra = {k: v for k, v in head.extra.items() if k not in _PART_ONLY}
        extra["assembled_from_ranges"] = {
            "total": total, "conflicting_overlaps": conflicts,
            "parts": [{"first": f, "size": len(p.data), "file_id": pid,
                       "flow": p.flow.to_dict() if p.flow else None} for f, p, pid in parts]}
        return CarvedFile(data=b"".join(pieces), protocol=head.protocol,
                          direction=head.direction, ts=head.ts, filename=head.filename,
                          incomplete=bool(missing) or conflicts > 0, missing_ranges=missing,
                          extra=extra, flow=head.flow)


def _prefix_only(part: CarvedFile) -> bool:
    """No missing bytes, or only after the last byte of ``data``."""
    missing = part.missing_ranges
    return not missing or (len(missing) == 1 and missing[0][0] == len(part.data))


def _tail(pieces: list[bytes], n: int) -> bytes:
    out = b""
    for p in reversed(pieces):
        out = p + out
        if len(out) >= n:
            break
    return out[-n:] if n else b""
