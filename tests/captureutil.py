"""Helpers for the recorder tests: a source the test feeds, batches of a capture file,
bounded waits (never sleeps as synchronisation), pcap files with chosen timestamps."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pcaputil import read_records
from pcapwire import _native

WAIT = 30.0  # seconds any wait may take before the test fails


def wait_for(cond: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def batches_of(path: Path | bytes, batch_bytes: int = 64 * 1024) -> list[tuple]:
    """The batches ``_native.Reader`` makes of a capture (contract 1)."""
    data = path if isinstance(path, bytes) else path.read_bytes()
    reader = _native.Reader("test", max_batch_bytes=batch_bytes)
    return [b for b in reader.feed(data) + reader.finish() if b[4]]


def packets_in(batches: list[tuple]) -> int:
    return sum(len(b[4]) // _native.META_SIZE for b in batches)


class ManualSource:
    """A Source whose batches the test pushes; ``end()`` ends it."""

    live_timestamps = True

    def __init__(self, name: str = "test0", interface: str | None = None) -> None:
        self.name = name
        self.interface = interface or name
        self.exhausted = False
        self.closed = False
        self._items: list[tuple] = []
        self._ended = False
        self._cond = threading.Condition()
        self.kernel_drops = 0

    def push(self, *batches: tuple) -> None:
        with self._cond:
            self._items += batches
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def batches(self, timeout: float) -> list[tuple]:
        with self._cond:
            if not self._items and not self._ended:
                self._cond.wait(timeout)
            out, self._items = self._items, []
            if self._ended and not out:
                self.exhausted = True
            return out

    def stats(self) -> dict[str, int]:
        return {"kernel_drops": self.kernel_drops}

    def close(self) -> None:
        self.closed = True


def with_times(src: Path, dst: Path, start_ns: int, step_ns: int, count: int | None = None
               ) -> list[int]:
    """``src``'s records (µs pcap) rewritten at ``start_ns + i * step_ns``, as a
    nanosecond pcap; returns the timestamps."""
    header, records = read_records(src.read_bytes())
    records = records[:count] if count else records
    out = [struct.pack("<I", 0xA1B23C4D) + header[4:]]
    times = []
    for i, rec in enumerate(records):
        ts = start_ns + i * step_ns
        times.append(ts)
        out.append(struct.pack("<II", ts // 10**9, ts % 10**9) + rec[8:])
    dst.write_bytes(b"".join(out))
    return times


def ns_records(data: bytes) -> list[bytes]:
    """Records of a little-endian pcap (either precision) without pcapwire's code."""
    pos, out = 24, []
    while pos + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        out.append(data[pos:pos + 16 + caplen])
        pos += 16 + caplen
    assert pos == len(data), f"trailing bytes at {pos}"
    return out
