"""FIFO plumbing for engines: open the write end without blocking the event loop (and
without leaving a thread stuck in ``open()`` whatever happens to the caller), and write to
it from a thread (:class:`FifoWriter`).

``open(fifo, O_WRONLY)`` blocks until a reader opens the other end (for Suricata: once its
rules are loaded). It runs in a daemon thread of its own, not in the loop's default
executor, so a cancelled caller or a closing loop never waits for it. :meth:`abandon`
releases a thread still blocked (by opening the read end itself for a moment) and closes
whatever it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

#: Seconds :meth:`FifoOpener.abandon` waits for the released thread's ``open()`` to return.
RELEASE_WAIT_S = 5.0
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


class FifoOpener:
    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop) -> None:
        self.path = path
        self.future: asyncio.Future[int] = loop.create_future()
        self._loop = loop
        self._lock = threading.Lock()
        self._returned = threading.Event()
        self._abandoned = False
        self._fd: int | None = None
        threading.Thread(target=self._open, name="fifo-open", daemon=True).start()

    def _open(self) -> None:
        fd: int | None = None
        error: OSError | None = None
        try:
            fd = os.open(self.path, os.O_WRONLY)
        except OSError as exc:
            error = exc
        with self._lock:
            if self._abandoned and fd is not None:
                os.close(fd)
                fd = None
            self._fd = fd
        self._returned.set()
        with contextlib.suppress(RuntimeError):  # the loop may be closed by now
            self._loop.call_soon_threadsafe(self._resolve, fd, error)

    def _resolve(self, fd: int | None, error: OSError | None) -> None:
        if self.future.done():
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(fd if fd is not None else -1)

    def take(self) -> int | None:
        """The opened descriptor, now owned by the caller (None if not opened)."""
        with self._lock:
            fd, self._fd = self._fd, None
            self._abandoned = True
        return fd

    def abandon(self) -> None:
        """Give up: close what was opened, or release a thread still blocked in open()."""
        fd = self.take()
        if fd is not None:
            os.close(fd)
            return
        if self._returned.is_set():
            return
        try:
            rfd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return  # the FIFO is gone: the thread's open() has failed or will
        try:
            self._returned.wait(RELEASE_WAIT_S)
        finally:
            os.close(rfd)


def _take(pending: deque[memoryview], limit: int) -> list[memoryview]:
    """The first ``limit`` bytes of ``pending`` (views, not copies)."""
    out: list[memoryview] = []
    for view in pending:
        if len(view) >= limit:
            out.append(view[:limit])
            break
        out.append(view)
        limit -= len(view)
    return out


def _skip(views: list[memoryview], n: int) -> list[memoryview]:
    """``views`` without their first ``n`` bytes."""
    out = list(views)
    while n:
        if n < len(out[0]):
            out[0] = out[0][n:]
            break
        n -= len(out.pop(0))
    return out


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


#: Bytes queued in a :class:`FifoWriter` beyond which ``write`` waits (back-pressure) ...
WRITER_HIGH_BYTES = 8 * 2**20
#: ... until the writer thread has brought the queue down to this many bytes: the event
#: loop hears from the thread once per (HIGH - LOW) bytes written, not once per chunk.
WRITER_LOW_BYTES = 4 * 2**20
#: Seconds the writer thread lets the reader drain a full pipe, per MiB of pipe capacity,
#: before writing again (see :class:`FifoWriter`).
PACE_S_PER_MIB = 0.001
#: Seconds a writer waits for a reader that takes nothing before it checks for abort.
STALL_POLL_S = 0.1
#: Bytes handed to one ``writev`` call (the queue's level is updated after each call, so
#: a waiting ``write`` resumes in time even when the writes block).
WRITE_MAX_BYTES = 2**20


class FifoWriter:
    """Writes to a pipe from a thread of its own; the event loop never blocks on it.

    ``write`` queues the bytes and returns at once while fewer than
    :data:`WRITER_HIGH_BYTES` are queued; beyond that it waits until the thread has brought
    the queue down to :data:`WRITER_LOW_BYTES` (back-pressure from the reader reaches the
    caller, with one loop wake-up per few MiB instead of one per chunk).

    Pacing: a reader like libpcap takes 4 KiB per ``read()``, and a writer blocked on a
    full pipe is woken by every one of them (53,000 wake-ups per 210 MiB, each one
    preempting a thread of the reader's on a busy machine). The descriptor is made
    non-blocking instead: the thread writes what fits, then sleeps :data:`PACE_S_PER_MIB`
    per MiB of pipe capacity (the reader drains a slice of the pipe meanwhile) and writes
    again; a reader that takes nothing is waited for with ``poll()``. When the thread comes
    back late (the pipe was more than half drained: CPU or GIL contention), it writes the
    rest of its buffers blocking, which keeps the pipe full without needing the GIL.
    Writing to something that is not a pipe is plain blocking writes.
    """

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop, *,
                 high: int = WRITER_HIGH_BYTES, low: int = WRITER_LOW_BYTES) -> None:
        self.fd: int | None = fd
        self._loop = loop
        self._high, self._low = high, min(low, high)
        self._cond = threading.Condition()
        self._pending: deque[memoryview] = deque()
        self._pending_bytes = 0
        self._closing = False
        self._aborted = False
        self._waiter: tuple[asyncio.Future[None], int] | None = None
        self._error: OSError | None = None
        self._done: asyncio.Future[None] = loop.create_future()
        self._done.add_done_callback(_retrieve)  # an aborted writer's error is expected
        self.bytes_written = 0
        self.waits = 0  # times write() had to wait for the thread (stats, tests)
        try:
            capacity = fcntl.fcntl(fd, F_GETPIPE_SZ)
        except OSError:
            capacity = 0  # not a pipe (tests write to files): no pacing
        self.pace = PACE_S_PER_MIB * capacity / 2**20
        self._capacity = capacity
        self._full = False  # the last paced write found the pipe full
        self._poller: select.poll | None = None
        self.late_writes = 0  # paced writes that found the pipe nearly drained (stats)
        os.set_blocking(fd, not self.pace)
        threading.Thread(target=self._run, name="fifo-write", daemon=True).start()

    # -- event-loop side ---------------------------------------------------------------
    async def write(self, data: bytes | memoryview) -> None:
        """Queue ``data``; waits only while too much is queued (raises the first write
        error). ``data`` must not change until written (bytes, or a view of bytes)."""
        if self._error is not None:
            raise self._error
        view = memoryview(data).cast("B")
        if not view:
            return
        with self._cond:
            if self._closing:
                raise BrokenPipeError("writer closed")
            self._pending.append(view)
            self._pending_bytes += len(view)
            self._cond.notify()
            if self._pending_bytes <= self._high:
                return
        await self._wait_until(self._low)

    async def drain(self) -> None:
        """Wait until everything queued is written (raises the first write error)."""
        await self._wait_until(0)

    async def _wait_until(self, level: int) -> None:
        fut = self._loop.create_future()
        with self._cond:
            if self._pending_bytes > level and self._error is None and not self._aborted:
                self._waiter = (fut, level)
                self.waits += 1
            else:
                fut.set_result(None)
        try:
            await fut
        finally:
            with self._cond:
                if self._waiter is not None and self._waiter[0] is fut:
                    self._waiter = None
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        """Write what is queued, then close the pipe (the reader sees the end of input)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        await asyncio.shield(self._done)

    def abort(self) -> None:
        """Stop: what is queued is dropped, the pipe closed within :data:`STALL_POLL_S`."""
        with self._cond:
            self._error = self._error or BrokenPipeError("writer aborted")
            self._aborted = self._closing = True
            self._cond.notify()

    # -- the thread --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closing:
                        self._cond.wait()
                    if self._aborted or not self._pending:
                        break
                    views = _take(self._pending, WRITE_MAX_BYTES)
                n = self._write(views)
                with self._cond:
                    self._pending_bytes -= n
                    self.bytes_written += n
                    while n:
                        head = self._pending[0]
                        if n < len(head):
                            self._pending[0] = head[n:]
                            break
                        n -= len(head)
                        self._pending.popleft()
                    self._wake(self._pending_bytes)
        except OSError as exc:
            with self._cond:
                self._error = self._error or exc
        finally:
            with self._cond:
                self._pending.clear()
                self._pending_bytes = 0
                self._closing = True
                fd, self.fd = self.fd, None
                self._wake(0)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)  # end of input for the reader
            self._call(self._settle, self._done, self._error)

    def _write(self, views: list[memoryview]) -> int:
        """One write of ``views`` (in order); returns the bytes written."""
        fd = self.fd
        assert fd is not None
        if not self.pace:
            return os.writev(fd, views)  # blocking: the GIL is released for all of it
        try:
            n = os.writev(fd, views)
        except BlockingIOError:
            n = 0
        total = sum(len(v) for v in views)
        was_full, self._full = self._full, n < total
        if not self._full:
            return n
        if was_full and n > self._capacity // 2:
            # The reader drained most of the pipe since the last write: this thread came
            # back late (CPU or GIL contention). Let the kernel keep the pipe full for the
            # rest of these buffers (a blocking write needs no GIL until it is done).
            self.late_writes += 1
            os.set_blocking(fd, True)
            try:
                n += os.writev(fd, _skip(views, n))
            finally:
                os.set_blocking(fd, False)
            self._full = False
            return n
        if n == 0:  # the reader took nothing since the last write: wait until it does
            if self._poller is None:
                self._poller = select.poll()
                self._poller.register(fd, select.POLLOUT)
            self._poller.poll(STALL_POLL_S * 1000)
        time.sleep(self.pace)
        return n

    def _wake(self, level: int) -> None:
        """With the lock held: resume a waiting ``write``/``drain`` once the queue is down
        to its level (or the writer has stopped)."""
        waiter = self._waiter
        if waiter is not None and (level <= waiter[1] or self.fd is None):
            self._waiter = None
            self._call(self._settle, waiter[0], None)

    def _call(self, fn: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may be closed by now
            self._loop.call_soon_threadsafe(fn, *args)

    @staticmethod
    def _settle(fut: asyncio.Future[None], error: OSError | None) -> None:
        if fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(None)
