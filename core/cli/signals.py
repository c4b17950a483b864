"""SIGINT/SIGTERM that stop a command cleanly, without a lock in the signal handler.

A Python signal handler runs in the main thread between two bytecodes, possibly while that
thread holds a lock: ``threading.Event.set()`` called there deadlocks when the main thread
was inside the same event's ``wait()`` (its condition's lock is not reentrant), and the
command then never ends. So the handler does nothing but what the C level already did:
write the signal number to a wakeup pipe (:func:`signal.set_wakeup_fd`). A watcher thread
reads the pipe and calls ``stop`` from outside the main thread.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stopped_by_signals(stop: Callable[[], None], signals: tuple[int, ...] = STOP_SIGNALS,
                       second_kills: bool = False) -> Iterator[None]:
    """While inside, ``signals`` call ``stop()`` (once per signal, from a watcher thread)
    instead of ending the process; with ``second_kills``, a second signal of the same kind
    ends it the default way at once. Outside the main thread (where handlers cannot be
    set) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)
    old_fd = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)

    def handler(signum: int, _frame: object) -> None:
        if second_kills:
            signal.signal(signum, signal.SIG_DFL)  # lock-free: the next one is the default

    def watch() -> None:
        while os.read(rfd, 64):  # b"": the write end closed, we are done
            stop()

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    watcher = threading.Thread(target=watch, name="signal-watcher", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(old_fd)
        os.close(wfd)
        watcher.join()
        os.close(rfd)
