"""Packets and bytes over time from stored query results, for the dashboard's timeline
(a case's or one query's): record headers only, read in large blocks."""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pcapwire.pcapformat import HEADER_LEN, RECORD_LEN, sniff_header

TIMELINE_MAX_PACKETS = 2_000_000  # packet headers read for one timeline (then truncated)
TIMELINE_BUCKETS = 120
READ_BLOCK = 1 << 20  # bytes read at once while walking record headers


def packet_records(path: Path) -> Iterator[tuple[float, int]]:
    """(timestamp in Unix seconds, length on the wire) of each record of a classic pcap
    file. Other formats (pcapng results of mixed link types) yield nothing; a cut last
    record ends the walk."""
    with open(path, "rb") as f:
        header = sniff_header(f.read(HEADER_LEN))
        if header is None:
            return
        unpack, unit = header.record.unpack_from, 10.0 ** -header.tsprec
        buf, pos = b"", 0
        while True:
            while pos + RECORD_LEN <= len(buf):
                sec, frac, caplen, orig = unpack(buf, pos)
                if pos + RECORD_LEN + caplen > len(buf):
                    break
                yield sec + frac * unit, orig
                pos += RECORD_LEN + caplen
            need = pos + RECORD_LEN + (unpack(buf, pos)[2] if pos + RECORD_LEN <= len(buf)
                                       else 0) - len(buf)
            more = f.read(max(READ_BLOCK, need))
            if not more:
                return
            buf, pos = buf[pos:] + more, 0


def collect(paths: list[Path], limit: int = TIMELINE_MAX_PACKETS
            ) -> tuple[array[float], array[int], bool]:
    """(timestamps, wire lengths, truncated) across ``paths``, at most ``limit`` packets."""
    times, sizes = array("d"), array("q")
    for p in paths:
        for t, n in packet_records(p):
            if len(times) >= limit:
                return times, sizes, True
            times.append(t)
            sizes.append(n)
    return times, sizes, False


def histogram(times: array[float], sizes: array[int], buckets: int = TIMELINE_BUCKETS
              ) -> dict[str, Any]:
    """``start``, ``end`` (first and last packet), ``bucket_s`` (bin width) and per bin
    ``packets`` and ``bytes``; all None or empty without packets."""
    if not times:
        return {"start": None, "end": None, "bucket_s": None, "packets": [], "bytes": []}
    lo, hi = min(times), max(times)
    width = max((hi - lo) / buckets, 1e-6)
    counts, volume = [0] * buckets, [0] * buckets
    last = buckets - 1
    for t, n in zip(times, sizes, strict=True):
        i = min(int((t - lo) / width), last)
        counts[i] += 1
        volume[i] += n
    return {"start": lo, "end": hi, "bucket_s": width, "packets": counts, "bytes": volume}


def timeline(paths: list[Path], buckets: int = TIMELINE_BUCKETS) -> dict[str, Any]:
    """:func:`histogram` of the stored results ``paths`` with ``truncated`` (more than
    :data:`TIMELINE_MAX_PACKETS` packets: the rest is not counted)."""
    times, sizes, truncated = collect(paths)
    return {**histogram(times, sizes, buckets), "truncated": truncated}
