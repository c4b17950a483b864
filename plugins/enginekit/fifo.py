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
import os
import queue
import threading
from pathlib import Path
from typing import Any

#: Seconds :meth:`FifoOpener.abandon` waits for the released thread's ``open()`` to return.
RELEASE_WAIT_S = 5.0


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


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


#: Chunks handed to a FifoWriter's thread and not yet written (the back-pressure bound).
WRITER_PENDING_CHUNKS = 4
_CLOSE = object()


class FifoWriter:
    """Blocking writes to a pipe from a thread of its own.

    The engine reads its input in small pieces; an event-loop pipe transport would wake up
    for each of them (thousands of wake-ups per 100 MB). Here one thread does blocking
    ``write()`` calls (which release the GIL) and the loop hears back once per chunk.
    ``write`` waits while :data:`WRITER_PENDING_CHUNKS` chunks are queued: back-pressure
    from the engine reaches the caller.
    """

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self.fd: int | None = fd
        self._loop = loop
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._slots = asyncio.Semaphore(WRITER_PENDING_CHUNKS)
        self._error: OSError | None = None
        self._done: asyncio.Future[None] = loop.create_future()
        self._done.add_done_callback(_retrieve)  # an aborted writer's error is expected
        self.bytes_written = 0
        threading.Thread(target=self._run, name="fifo-write", daemon=True).start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _CLOSE:
                break
            data, fut = item
            if self._error is None:
                try:
                    view = memoryview(data)
                    while view:
                        n = os.write(self.fd, view)  # type: ignore[arg-type]
                        view = view[n:]
                        self.bytes_written += n
                except OSError as exc:
                    self._error = exc
            self._call(self._settle, fut, self._error)
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # end of input for the reader
        self._call(self._settle, self._done, self._error)

    def _call(self, fn: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may be closed by now
            self._loop.call_soon_threadsafe(fn, *args)

    def _settle(self, fut: asyncio.Future[None], error: OSError | None) -> None:
        if fut is not self._done:
            self._slots.release()
        if fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(None)

    async def write(self, data: bytes | memoryview) -> None:
        """Queue ``data``; returns once it is queued (raises the first write error)."""
        if self._error is not None:
            raise self._error
        await self._slots.acquire()
        fut = self._loop.create_future()
        fut.add_done_callback(_retrieve)  # errors surface through the next write/close
        self._queue.put((data, fut))

    async def drain(self) -> None:
        """Wait until everything queued is written (raises the first write error)."""
        for _ in range(WRITER_PENDING_CHUNKS):
            await self._slots.acquire()
        for _ in range(WRITER_PENDING_CHUNKS):
            self._slots.release()
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        """Write what is queued, then close the pipe (the reader sees the end of input)."""
        self._queue.put(_CLOSE)
        await asyncio.shield(self._done)

    def abort(self) -> None:
        """Stop: queued data is dropped once the current write returns (a write blocked on
        a reader that never reads returns when that reader is killed)."""
        self._error = self._error or BrokenPipeError("writer aborted")
        self._queue.put(_CLOSE)
