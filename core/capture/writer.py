"""One writer thread per source: batches from its backlog into live segments.

Rotation: by size (a segment is sealed once it reaches ``segment_bytes``) and by wall-clock
time aligned to the clock: with ``rotate_seconds`` R, a segment's window ends at the next
multiple of R seconds since the epoch (UTC: ``--rotate 60`` seals at every full minute),
not R seconds after its first packet. When the clock has passed the window's end, a batch
whose packets straddle it is split there (the packets before it close the old segment,
the rest open the next); a batch entirely before it is still the old window's (late in
the ring) until ROTATE_GRACE has passed too; after that, or at the first packet of the
new window, the old segment is sealed, even without traffic.

Commits: every ``commit_interval`` each segment written since the last one is cut
(``fdatasync``, index so far) and handed to the committer with the loss counted since
the previous commit (attributed to the source's first open segment, or to "no segment").
"""

from __future__ import annotations

import errno
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pcapwire.capture.backlog import Backlog, Queued
from pcapwire.capture.committer import Committer
from pcapwire.capture.config import ROTATE_GRACE, RecorderConfig
from pcapwire.capture.ledger import LossDelta, SegmentCommit
from pcapwire.capture.segment import (
    META_SIZE,
    Cut,
    LiveSegment,
    SegmentWriteError,
    meta_ts,
    split_batch,
)
from pcapwire.capture.sources import slug
from pcapwire.capture.status import SourceCounters, human_bytes

log = logging.getLogger(__name__)

LOG_EVERY = 10.0
Key = tuple[int, int, int]  # linktype, snaplen, tsprec


@dataclass
class SourceInfo:
    run_id: int
    source_id: int
    name: str
    interface: str


class SourceWriter(threading.Thread):
    def __init__(self, root: Path, info: SourceInfo, backlog: Backlog,
                 counters: SourceCounters, committer: Committer, config: RecorderConfig
                 ) -> None:
        super().__init__(name=f"pcapwire-capture-write-{info.name}", daemon=True)
        self.root, self.info, self.backlog = root, info, backlog
        self.counters, self.committer, self.config = counters, committer, config
        self.segments: dict[Key, LiveSegment] = {}
        self.window_end: float | None = None
        self._reported = (0, 0, 0, 0)  # kernel, if, queue, disk drops already committed
        self._loss_since = time.time_ns()
        self._last_log = 0.0
        self.error: BaseException | None = None

    # -- the thread ----------------------------------------------------------------------------
    def run(self) -> None:
        cfg = self.config
        next_cut = time.monotonic() + cfg.commit_interval
        try:
            while True:
                if cfg.writer_gate is not None:
                    cfg.writer_gate.wait()
                item = self.backlog.get(max(0.0, next_cut - time.monotonic()))
                if item is not None:
                    self.handle(item)
                elif self.backlog.drained:
                    break
                self.tick()
                if time.monotonic() >= next_cut:
                    self.commit()
                    next_cut = time.monotonic() + cfg.commit_interval
        except BaseException as exc:  # reported by the recorder; what was written is kept
            self.error = exc
            log.exception("%s: writer failed", self.info.name)
        finally:
            self.finish()

    # -- steps (called by the thread; tests call them directly) --------------------------------
    def handle(self, item: Queued) -> None:
        lt, snaplen, tsprec, records, meta, _off = item.batch
        key = (lt, snaplen, tsprec)
        arrival = (item.arrival_first, item.arrival_last)
        now = self.config.clock()
        if self.segments and self.window_end is not None and now >= self.window_end:
            end_ns = round(self.window_end * 1e9)
            count = len(meta) // META_SIZE
            first, last = meta_ts(meta, 0), meta_ts(meta, count - 1)
            if last < end_ns and now < self.window_end + ROTATE_GRACE:
                pass  # late packets of the window that ends
            elif first >= end_ns or last < end_ns:
                self.seal_all()
            else:
                index = next(i for i in range(count) if meta_ts(meta, i) >= end_ns)
                (head, head_meta), (records, meta) = split_batch(records, meta, index)
                self._append(key, head, head_meta, arrival)
                self.seal_all()
        self._append(key, records, meta, arrival)

    def tick(self) -> None:
        """Seal a window's segments once its end and the grace period have passed."""
        if (self.segments and self.window_end is not None
                and self.config.clock() >= self.window_end + ROTATE_GRACE):
            self.seal_all()

    def commit(self) -> None:
        """Hand the committer every segment written since the last commit, and the loss."""
        loss = self._loss()
        for seg in list(self.segments.values()):
            if seg.dirty or loss:
                item = self._cut(seg, sealed=False)
                if item is not None:
                    item.loss, loss = loss, None
                    self.committer.submit(item)
        if loss:
            self.committer.submit(SegmentCommit(self.info.run_id, self.info.source_id,
                                                self.info.interface, None, loss=loss))

    def seal_all(self) -> None:
        for key in list(self.segments):
            self.seal(key)
        self.window_end = None

    def seal(self, key: Key) -> None:
        seg = self.segments.pop(key)
        item = self._cut(seg, sealed=True)
        if item is not None:
            item.loss = self._loss() or None
            self.committer.submit(item)
        if not self.segments:
            self.window_end = None

    def finish(self) -> None:
        """Seal everything (the source has ended or the recorder stops)."""
        try:
            self.seal_all()
            self.commit()  # loss counted after the last segment was sealed
        except BaseException as exc:
            self.error = self.error or exc
            log.exception("%s: sealing failed", self.info.name)

    # -- internals -----------------------------------------------------------------------------
    def _append(self, key: Key, records: bytes, meta: bytes, arrival: tuple[int, int]) -> None:
        count = len(meta) // META_SIZE
        if not count:
            return
        seg = self.segments.get(key)
        try:
            self._check_room(len(records))
            if seg is None:
                seg = self._open(key)
            seg.append(records, meta, arrival)
        except OSError as exc:
            self._disk_drop(count, exc)
            if seg is not None and seg.cuts == 0 and seg.packets == 0:
                self._discard(key, seg)
            return
        self.counters.packets += count
        self.counters.bytes += len(records) - 16 * count
        if seg.size >= self.config.segment_bytes:
            self.seal(key)

    def _check_room(self, nbytes: int) -> None:
        """Refuse a write that would leave less than the disk reserve free."""
        reserve = self.config.disk_reserve
        if not reserve:
            return
        st = os.statvfs(self.root)
        if st.f_bavail * st.f_frsize - nbytes < reserve:
            raise OSError(errno.ENOSPC, f"no space left above the disk reserve "
                          f"({human_bytes(reserve)})")

    def _open(self, key: Key) -> LiveSegment:
        cfg = self.config
        now = cfg.clock()
        start = now
        if cfg.rotate_seconds:
            if self.window_end is None or not self.segments:
                self.window_end = (math.floor(now / cfg.rotate_seconds) + 1) * cfg.rotate_seconds
            start = self.window_end - cfg.rotate_seconds
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start))
        lt, snaplen, tsprec = key
        rel = (f"segments/capture/{self.info.source_id:06d}-{slug(self.info.name)}/"
               f"{stamp}-{time.time_ns():x}-lt{lt}-{tsprec}.pcap")
        seg = LiveSegment(self.root, rel, lt, snaplen, tsprec, opened=now, fsync=cfg.fsync)
        seg.open()
        self.segments[key] = seg
        self.counters.segments += 1
        return seg

    def _discard(self, key: Key, seg: LiveSegment) -> None:
        """A segment that never held a packet (its first write failed): no trace left."""
        self.segments.pop(key, None)
        self.counters.segments -= 1
        seg.close()
        seg.live_path.unlink(missing_ok=True)
        if not self.segments:
            self.window_end = None

    def _cut(self, seg: LiveSegment, sealed: bool) -> SegmentCommit | None:
        try:
            cut = seg.cut()
        except SegmentWriteError as exc:
            packets, nbytes = seg.lost
            self.counters.packets -= packets
            self.counters.bytes -= nbytes
            self._disk_drop(packets, exc)
            cut = Cut(seg.first_ns or 0, seg.last_ns or 0, seg.packets, seg.size, [], [],
                      seg.sha256)
            if seg.cuts == 0:  # nothing of it was ever committed, nothing is left
                if sealed:
                    seg.close()
                    seg.live_path.unlink(missing_ok=True)
                return None
        if sealed:
            seg.close()
        return SegmentCommit(
            self.info.run_id, self.info.source_id, self.info.interface, seg.rel, seg.linktype,
            seg.snaplen, seg.tsprec, seg.opened, cut.first_ns, cut.last_ns, cut.packets,
            cut.size, cut.flows, cut.arrivals, sealed=sealed,
            sha256=cut.sha256 if sealed else "")

    def _loss(self) -> LossDelta | None:
        c = self.counters
        now = (c.kernel_drops, c.if_drops, c.queue_drops, c.disk_drops)
        kernel, if_, queue, disk = (a - b for a, b in zip(now, self._reported, strict=True))
        if not (kernel or if_ or queue or disk):
            return None
        self._reported = now
        t = time.time_ns()
        delta = LossDelta(self.info.interface, self._loss_since, t, kernel, if_, queue + disk,
                          disk)
        self._loss_since = t
        return delta

    def _disk_drop(self, packets: int, exc: OSError) -> None:
        self.counters.disk_drops += packets
        self.counters.write_errors += 1
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY:
            self._last_log = now
            log.error("%s: cannot write to the store (%s): %d packets not recorded so far "
                      "(%d write errors); recording goes on", self.info.name, exc.strerror or exc,
                      self.counters.disk_drops, self.counters.write_errors)
