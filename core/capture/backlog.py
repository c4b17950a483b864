"""The bounded queue between a source's reading thread and its writer.

The reading side never waits for the writer (a kernel ring must be emptied whatever the
disk does): :meth:`Backlog.put` refuses a batch when the queue holds ``max_bytes`` of
records already, and the caller counts that batch's packets as backlog drops. A stream
source may instead be told to wait (``policy="wait"``): the stream's sender is then slowed
down by TCP or the pipe, and nothing is dropped here.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from pcapwire.capture.sources import Batch

POLICIES = ("drop", "wait")


@dataclass(slots=True)
class Queued:
    """A batch on its way to the writer, with its packet count and arrival times (ns; the
    packets' own timestamps for a live capture, the time it was read for a stream)."""

    batch: Batch
    packets: int
    arrival_first: int
    arrival_last: int


class Backlog:
    def __init__(self, max_bytes: int, policy: str = "drop") -> None:
        if policy not in POLICIES:
            raise ValueError(f"backlog policy {policy!r}: expected one of {POLICIES}")
        self.max_bytes = max(1, max_bytes)
        self.policy = policy
        self.bytes = 0
        self._items: deque[Queued] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: Queued, abort: threading.Event | None = None) -> bool:
        """Queue ``item``; False when it was refused (full, or closed). A batch bigger
        than the whole backlog is still taken when the backlog is empty."""
        size = len(item.batch[3])
        with self._cond:
            while (self._items and self.bytes + size > self.max_bytes and not self._closed
                   and self.policy == "wait" and not (abort is not None and abort.is_set())):
                self._cond.wait(0.1)
            if self._closed or (self._items and self.bytes + size > self.max_bytes):
                return False
            self._items.append(item)
            self.bytes += size
            self._cond.notify_all()
            return True

    def get(self, timeout: float) -> Queued | None:
        """The oldest batch, or None after ``timeout`` seconds (or at once when the backlog
        is closed and empty: see :attr:`drained`)."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            self.bytes -= len(item.batch[3])
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """No more puts; the writer drains what is queued."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def drained(self) -> bool:
        with self._cond:
            return self._closed and not self._items

    def __len__(self) -> int:
        return len(self._items)
