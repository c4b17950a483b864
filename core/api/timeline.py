"""Packet counts over time from stored query results, for the case page's plot."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

TIMELINE_MAX_PACKETS = 2_000_000  # packet headers read for one timeline (then truncated)
TIMELINE_BUCKETS = 120
_MAGIC = {b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
          b"\xa1\xb2\xc3\xd4": (">", 1e-6), b"\xa1\xb2\x3c\x4d": (">", 1e-9)}


def packet_times(path: Path) -> Iterator[float]:
    """Timestamps (Unix seconds) of a classic pcap file, reading only record headers.
    Other formats (pcapng results of mixed link types) yield nothing."""
    with open(path, "rb") as f:
        header = f.read(24)
        if len(header) < 24 or header[:4] not in _MAGIC:
            return
        order, unit = _MAGIC[header[:4]]
        rec = struct.Struct(order + "IIII")
        while len(raw := f.read(16)) == 16:
            sec, frac, caplen, _orig = rec.unpack(raw)
            yield sec + frac * unit
            f.seek(caplen, 1)


def collect(paths: list[Path], limit: int = TIMELINE_MAX_PACKETS) -> tuple[list[float], bool]:
    """(timestamps, truncated) across ``paths``, at most ``limit`` of them."""
    times: list[float] = []
    for p in paths:
        for t in packet_times(p):
            if len(times) >= limit:
                return times, True
            times.append(t)
    return times, False


def histogram(times: list[float], buckets: int = TIMELINE_BUCKETS
              ) -> tuple[float | None, float | None, float | None, list[int]]:
    """(start, end, bucket width, counts)."""
    if not times:
        return None, None, None, []
    lo, hi = min(times), max(times)
    width = max((hi - lo) / buckets, 1e-6)
    counts = [0] * buckets
    for t in times:
        counts[min(int((t - lo) / width), buckets - 1)] += 1
    return lo, hi, width, counts
