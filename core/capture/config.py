"""The recorder's settings (``pcapwire capture`` flags) and its test hooks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pcapwire.errors import ConfigError
from pcapwire.store.segments import SEGMENT_MAX_BYTES

COMMIT_INTERVAL = 0.5  # seconds: packets are queryable at most this long after they are written
ROTATE_SECONDS = 3600  # default: a segment per full hour (UTC)
ROTATE_GRACE = 1.0  # seconds a window's segment stays open for its late packets (see writer)
QUEUE_BYTES = 128 * 2**20
MAX_SEGMENT_BYTES = 3 * 2**30  # record offsets are u32: stay well below 4 GiB
DISK_RESERVE = 64 * 2**20  # free space segment data leaves to the catalog and status file


@dataclass
class RecorderConfig:
    segment_bytes: int = SEGMENT_MAX_BYTES
    rotate_seconds: int = ROTATE_SECONDS  # 0: by size only
    commit_interval: float = COMMIT_INTERVAL
    queue_bytes: int = QUEUE_BYTES  # per source
    backlog_policy: str = "drop"  # "wait": streams only (see backlog.py)
    fsync: bool = True  # fdatasync a segment before each commit that covers it
    #: segment writes that would leave less free space than this are refused (counted as
    #: disk drops): the catalog and the status file can still be written on a full disk
    disk_reserve: int = DISK_RESERVE
    status_interval: float = 1.0
    read_timeout: float = 0.1  # seconds a reading thread waits in Source.batches
    clock: Callable[[], float] = time.time  # wall clock of aligned rotation
    writer_gate: threading.Event | None = None  # test hook: writers wait while it is clear

    def check(self) -> None:
        if not 1 <= self.segment_bytes <= MAX_SEGMENT_BYTES:
            raise ConfigError(f"--segment-size: between 1 byte and {MAX_SEGMENT_BYTES // 2**20} "
                              "MiB (record offsets are 32-bit)")
        if self.rotate_seconds < 0:
            raise ConfigError("--rotate: seconds, 0 (off) or more")
        if not 0.01 <= self.commit_interval <= 60:
            raise ConfigError("--commit-interval: between 0.01 and 60 seconds")
        if self.disk_reserve < 0:
            raise ConfigError("--disk-reserve-mb: 0 or more")
        if self.queue_bytes < 1:
            raise ConfigError("--queue-mb: more than 0")
        if self.backlog_policy not in ("drop", "wait"):
            raise ConfigError("--backlog-full: drop or wait")
