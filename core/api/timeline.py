"""Packet counts over time from stored query results, for the case page's plot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pcapwire.pcapformat import HEADER_LEN, RECORD_LEN, sniff_header

TIMELINE_MAX_PACKETS = 2_000_000  # packet headers read for one timeline (then truncated)
TIMELINE_BUCKETS = 120


def packet_times(path: Path) -> Iterator[float]:
    """Timestamps (Unix seconds) of a classic pcap file, reading only record headers.
    Other formats (pcapng results of mixed link types) yield nothing."""
    with open(path, "rb") as f:
        header = sniff_header(f.read(HEADER_LEN))
        if header is None:
            return
        rec, unit = header.record, 10.0 ** -header.tsprec
        while len(raw := f.read(RECORD_LEN)) == RECORD_LEN:
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
