"""Calls into a thread-unsafe resource from an event loop: each call in a worker thread,
one at a time, and its closing after the last of them.

A task cancelled while its :func:`asyncio.to_thread` call runs stops waiting, but the
thread goes on; closing the resource then (a ``finally``) would close it under a running
statement (a SQLite connection closed that way crashed the process). :class:`SerialCalls`
runs every call and the close under one lock, and shields the close from cancellation: it
waits for the call still running, then closes, whatever happens to the task.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class SerialCalls:
    """The calls into one resource (a connection, a store), in worker threads, one at a
    time; :meth:`close` runs after the call in flight even when the caller is
    cancelled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            return fn(*args)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, after any other call of this resource."""
        return await asyncio.to_thread(self._locked, fn, *args)

    async def close(self, fn: Callable[[], object]) -> None:
        """``fn()`` (the resource's close) once no call runs; a cancellation of the caller
        does not stop it (the close still runs, after the call in flight)."""
        await asyncio.shield(asyncio.to_thread(self._locked, fn))
