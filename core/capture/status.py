"""What the recorder says about itself: counters, the latency histogram, ``status.json``.

``DATA_DIR/capture/status.json`` is rewritten every second, atomically (readers open it by
name and always see one whole document), even on a full disk: the document is written in
place into one of two files that keep their blocks (``status.json.0``/``.1``), and
``status.json`` becomes a hard link to it by a rename; no block is allocated as long as
the document stays below a file-system block (4 KiB; a few interfaces).

Document (every count cumulative since ``started``; times are Unix seconds)::

  {"pid", "started", "updated", "state": "running"|"stopped",
   "interfaces": {NAME: {"packets", "bytes", "kernel_drops", "if_drops", "backlog_drops",
                         "disk_drops", "input_errors", "pps", "mbps"}},
   "segments", "disk_bytes", "disk_free_bytes", "write_errors", "commit_backlog",
   "listening": [HOST:PORT, …], "retention": {"alarm", "when_full", "deleted_segments"},
   "latency_hist": {"buckets": [0.05, 0.1, 0.25, 0.5, 1, 2, 5], "counts": [...],
                    "sum": s, "count": n}}

``packets``/``bytes``: recorded (written to segments; bytes are captured packet bytes,
record headers not counted). ``backlog_drops``: pcapwire's own losses (its queue was full
or the disk refused them); ``disk_drops``: the part of those that could not be written.
``pps``/``mbps``: recorded, over the last interval. ``segments``: opened by this
run; ``disk_bytes``: the store's segments (catalog sizes, every source, refreshed each
second); ``disk_free_bytes``: free space on the data directory's file system;
``write_errors``: failed segment writes and catalog commits; ``commit_backlog``: commits
waiting (the catalog is busy or full). ``retention``: the last run of the store's
retention (:mod:`pcapwire.retention`), ``{"alarm", "when_full", "deleted_segments"}``
(null before the first); the alarm: usage above the high watermark and nothing left that
may be deleted. ``latency_hist``: arrival to queryable
(packet capture time, or for a stream the time it was read, to the catalog commit that
made it visible), cumulative like Prometheus' ``le`` buckets: ``counts[i]`` packets took
at most ``buckets[i]`` seconds; ``count`` is the +Inf bucket.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
LOG_EVERY = 10.0
SLOT_BYTES = 4096  # allocated for each status file slot (a document stays smaller)


class LatencyHistogram:
    """Cumulative histogram fed per batch: a batch's packets are taken as spread evenly
    between its first and last arrival (exact per bucket without a per-packet loop)."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self._cum = [0.0] * len(buckets)
        self.sum = 0.0
        self.count = 0
        self._lock = threading.Lock()

    def observe_spread(self, packets: int, low: float, high: float) -> None:
        with self._lock:
            for i, b in enumerate(self.buckets):
                if high <= low:
                    share = 1.0 if low <= b else 0.0
                else:
                    share = min(1.0, max(0.0, (b - low) / (high - low)))
                self._cum[i] += packets * share
            self.sum += packets * (low + high) / 2
            self.count += packets

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"buckets": list(self.buckets),
                    "counts": [min(self.count, round(c)) for c in self._cum],
                    "sum": round(self.sum, 6), "count": self.count}


@dataclass
class SourceCounters:
    """One source's counters; each field has a single writing thread (reader: the
    ``queue_drops``, stats snapshot; writer: the rest), so no lock is needed."""

    interface: str
    packets: int = 0
    bytes: int = 0
    queue_drops: int = 0
    disk_drops: int = 0
    kernel_drops: int = 0
    if_drops: int = 0
    input_errors: int = 0
    write_errors: int = 0
    segments: int = 0

    @property
    def backlog_drops(self) -> int:
        return self.queue_drops + self.disk_drops

    def add_stats(self, stats: dict[str, int]) -> None:
        self.kernel_drops = int(stats.get("kernel_drops", 0))
        self.if_drops = int(stats.get("if_drops", 0))
        self.input_errors = int(stats.get("input_errors", 0))


INTERFACE_KEYS = ("packets", "bytes", "kernel_drops", "if_drops", "backlog_drops",
                  "disk_drops", "input_errors")


def interface_totals(counters: list[SourceCounters]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for c in counters:
        row = out.setdefault(c.interface, dict.fromkeys(INTERFACE_KEYS, 0))
        for key in INTERFACE_KEYS:
            row[key] += getattr(c, key)
    return out


class Rates:
    """pps and Mbit/s per interface between two status documents."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int, int]] = {}

    def __call__(self, interfaces: dict[str, dict[str, Any]], now: float) -> None:
        for name, row in interfaces.items():
            at, packets, nbytes = self._last.get(name, (now, row["packets"], row["bytes"]))
            span = now - at
            row["pps"] = round((row["packets"] - packets) / span, 1) if span > 0 else 0.0
            row["mbps"] = round((row["bytes"] - nbytes) * 8 / span / 1e6, 3) if span > 0 \
                else 0.0
            self._last[name] = (now, row["packets"], row["bytes"])


class StatusFile:
    """Atomic rewrites of ``path`` that allocate no blocks (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.slots = [path.with_name(path.name + ".0"), path.with_name(path.name + ".1")]
        self.errors = 0
        self._next = 0
        self._last_log = 0.0
        try:  # never rewrite in place the file readers may have open
            if os.stat(path).st_ino == os.stat(self.slots[0]).st_ino:
                self._next = 1
        except OSError:
            pass
        for slot in self.slots:  # blocks for the full-disk days, allocated now
            try:
                fd = os.open(slot, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    if os.fstat(fd).st_size < SLOT_BYTES:
                        os.posix_fallocate(fd, 0, SLOT_BYTES)
                finally:
                    os.close(fd)
            except OSError as exc:
                log.warning("cannot prepare %s: %s", slot, exc)

    def write(self, doc: dict[str, Any]) -> bool:
        data = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
        slot = self.slots[self._next]
        tmp = self.path.with_name(self.path.name + ".new")
        try:
            fd = os.open(slot, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                offset = 0
                while view:
                    n = os.pwrite(fd, view, offset)
                    view, offset = view[n:], offset + n
                os.ftruncate(fd, len(data))
            finally:
                os.close(fd)
            tmp.unlink(missing_ok=True)
            os.link(slot, tmp)
            os.replace(tmp, self.path)
        except OSError as exc:
            self.errors += 1
            now = time.monotonic()
            if now - self._last_log >= LOG_EVERY:
                self._last_log = now
                log.error("cannot write %s: %s", self.path, exc)
            return False
        self._next ^= 1
        return True


def read_status(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def status_line(doc: dict[str, Any]) -> str:
    """One line: rates, drops by cause, segments and disk."""
    ifaces = doc.get("interfaces", {})
    pps = sum(r.get("pps", 0) for r in ifaces.values())
    mbps = sum(r.get("mbps", 0) for r in ifaces.values())
    packets = sum(r.get("packets", 0) for r in ifaces.values())

    def total(key: str) -> int:
        return int(sum(r.get(key, 0) for r in ifaces.values()))

    line = (f"{packets} pkts  {pps:,.0f} pkt/s  {mbps:,.1f} Mbit/s  drops: kernel "
            f"{total('kernel_drops')} if {total('if_drops')} backlog {total('backlog_drops')}"
            f" (disk {total('disk_drops')})  {doc.get('segments', 0)} segments  disk "
            f"{human_bytes(doc.get('disk_bytes', 0))} used, "
            f"{human_bytes(doc.get('disk_free_bytes', 0))} free")
    if doc.get("write_errors"):
        line += f"  WRITE ERRORS {doc['write_errors']}"
    retention = doc.get("retention") or {}
    if retention.get("alarm"):
        line += f"  RETENTION ALARM (store full of protected data; when_full " \
                f"{retention.get('when_full')})"
    return line
