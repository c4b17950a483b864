"""Step timeouts for calls into analyzers, and their pause while an output waits.

Two forms, one contract (:class:`CallTimer`): the call runs under the step's timeout;
``emit`` stops the clock while it waits on a full downstream queue or a slow sink
(:func:`paused`), so back-pressure never counts against an analyzer.

* :class:`CallTimeout` -- ``async with CallTimeout(seconds)``, on ``asyncio.timeout``;
  for the rare calls (a session's ``start`` and ``finish``).
* :class:`Watchdog` -- one per reader task of a step, for the per-record ``feed`` calls.
  Starting and stopping a call is two attribute writes; the task's single timer handle is
  moved only when it fires before the current deadline. ``asyncio.timeout`` per record
  costs about 10 µs (a timer handle created and cancelled each time), a tenth of the
  engine's whole per-record budget (benchmarks/bench_workflow.py).

Both raise :class:`TimeoutError` in the task when the time is up, and leave any other
cancellation (the run being cancelled) alone, as ``asyncio.timeout`` does.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable
from typing import Any, Protocol


class CallTimer(Protocol):
    def pause(self) -> float | None:
        """Stop the clock; returns what to give :meth:`resume` (None: nothing to do)."""

    def resume(self, remaining: float | None) -> None:
        """Start the clock again with ``remaining`` seconds."""


#: The timer of the analyzer call the current task is in (None between calls).
current_call: contextvars.ContextVar[CallTimer | None] = contextvars.ContextVar(
    "pcapwire_call_timer", default=None)


async def paused(aw: Awaitable[Any]) -> Any:
    """Await ``aw`` with the current analyzer call's clock stopped meanwhile."""
    timer = current_call.get()
    remaining = timer.pause() if timer is not None else None
    if remaining is None:
        return await aw
    try:
        return await aw
    finally:
        timer.resume(remaining)  # type: ignore[union-attr]


class CallTimeout:
    """``async with CallTimeout(seconds)``: one call under ``asyncio.timeout``."""

    __slots__ = ("cm", "active", "seconds", "token")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.active = False

    async def __aenter__(self) -> CallTimeout:
        self.cm = asyncio.timeout(self.seconds)
        await self.cm.__aenter__()
        self.active = True
        self.token = current_call.set(self)
        return self

    async def __aexit__(self, et: Any, exc: Any, tb: Any) -> None:
        self.active = False
        current_call.reset(self.token)
        await self.cm.__aexit__(et, exc, tb)

    def pause(self) -> float | None:
        when = self.cm.when() if self.active else None
        if when is None:
            return None
        self.cm.reschedule(None)
        return when - asyncio.get_running_loop().time()

    def resume(self, remaining: float | None) -> None:
        if self.active and remaining is not None:
            self.cm.reschedule(asyncio.get_running_loop().time() + remaining)


class Watchdog:
    """The timeout of the calls one task makes, one after the other::

        dog = Watchdog(seconds)            # in the task that will make the calls
        try:
            for item in ...:
                dog.start()
                try:
                    await session.feed(item)
                except asyncio.CancelledError:
                    if not dog.timed_out():
                        raise              # a real cancellation
                    ...                    # the call took too long
                finally:
                    dog.stop()
        finally:
            dog.close()
    """

    __slots__ = ("loop", "task", "seconds", "deadline", "handle", "expired", "cancelling",
                 "active")

    def __init__(self, seconds: float) -> None:
        self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "a Watchdog belongs to a task"
        self.task = task
        self.seconds = seconds
        self.deadline: float | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.expired = False
        self.cancelling = 0
        self.active = False

    def start(self) -> None:
        self.expired = False
        self.active = True
        self.cancelling = self.task.cancelling()
        self.deadline = self.loop.time() + self.seconds
        if self.handle is None:
            self.handle = self.loop.call_at(self.deadline, self._fire)
        current_call.set(self)

    def stop(self) -> None:
        self.active = False
        self.deadline = None
        current_call.set(None)

    def timed_out(self) -> bool:
        """After a CancelledError in the call: was it this timeout's? (Then the
        cancellation is withdrawn, as ``asyncio.timeout`` does.)"""
        return self.expired and self.task.uncancel() <= self.cancelling

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def pause(self) -> float | None:
        if asyncio.current_task() is not self.task or self.deadline is None:
            return None  # another task (a session's reader) emitting: not this call
        remaining = self.deadline - self.loop.time()
        self.deadline = None
        return remaining

    def resume(self, remaining: float | None) -> None:
        if self.active and remaining is not None:
            self.deadline = self.loop.time() + remaining
            if self.handle is None:
                self.handle = self.loop.call_at(self.deadline, self._fire)

    def _fire(self) -> None:
        self.handle = None
        if self.deadline is None:  # between calls, or paused
            return
        if self.loop.time() < self.deadline:  # a later call: fire at its deadline
            self.handle = self.loop.call_at(self.deadline, self._fire)
            return
        self.expired = True
        self.deadline = None
        self.task.cancel()
