"""Small helpers for tests: read/write classic pcap records without pcapwire's own code,
so that tests do not check pcapwire against itself."""

from __future__ import annotations

import hashlib
import struct
import subprocess
from pathlib import Path


def read_records(data: bytes) -> tuple[bytes, list[bytes]]:
    """(header, [record bytes]) of a little-endian µs pcap."""
    hdr, pos, recs = data[:24], 24, []
    while pos + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        recs.append(data[pos:pos + 16 + caplen])
        pos += 16 + caplen
    assert pos == len(data), f"trailing bytes at {pos}"
    return hdr, recs


def record_ts_ns(rec: bytes) -> int:
    sec, usec = struct.unpack_from("<II", rec)
    return sec * 10**9 + usec * 1000


def tcpdump(path: Path | str, expr: str = "") -> bytes:
    """What ``tcpdump -r PATH -w - EXPR`` writes."""
    cmd = ["tcpdump", "-r", str(path), "-w", "-"] + ([expr] if expr else [])
    return subprocess.run(cmd, capture_output=True, check=False).stdout


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
