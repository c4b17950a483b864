"""Logging of the HTTP layer that a flood of requests cannot turn into a flood of disk writes.

:class:`LogThrottle` is a ``logging.Filter`` with a token bucket per kind of message (logger,
level and message template; messages formatted before logging, like access-log lines, are
one kind per logger and level): ``burst`` lines pass at once, then ``rate`` per second; the
rest are counted, and the next line of that kind that passes says how many were left out
(``[N similar messages suppressed]``), as does :meth:`LogThrottle.flush` at shutdown.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

#: Loggers of the HTTP layer: access log, aiohttp's server and handler errors, asyncio's
#: transport errors, and pcapwire's own per-request and per-connection messages.
HTTP_LOGGERS = ("pcapwire.api.access", "pcapwire.api.errors", "pcapwire.api.connections",
                "aiohttp.access", "aiohttp.server", "aiohttp.web", "aiohttp.internal",
                "asyncio")
MAX_KINDS = 1024  # buckets kept (least recently used dropped beyond this)


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    suppressed: int = 0


class LogThrottle(logging.Filter):
    """Token bucket per kind of message; ``burst`` or ``rate`` 0 lets everything through."""

    def __init__(self, burst: int, rate: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst, self.rate, self.clock = burst, rate, clock
        self.buckets: OrderedDict[tuple[str, int, str], _Bucket] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.rate or not self.burst:
            return True
        key = (record.name, record.levelno, str(record.msg) if record.args else "")
        now = self.clock()
        bucket = self.buckets.pop(key, None) or _Bucket(float(self.burst), now)
        self.buckets[key] = bucket  # most recently used last
        if len(self.buckets) > MAX_KINDS:
            self.buckets.popitem(last=False)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens < 1:
            bucket.suppressed += 1
            return False
        bucket.tokens -= 1
        if bucket.suppressed:
            record.msg = f"{record.getMessage()} [{bucket.suppressed} similar messages " \
                "suppressed]"
            record.args = None
            bucket.suppressed = 0
        return True

    def flush(self) -> None:
        """Report what is still counted but not written (at shutdown)."""
        for (name, level, _), bucket in list(self.buckets.items()):
            if bucket.suppressed:
                logging.getLogger(name).log(level, "[%d similar messages suppressed]",
                                            bucket.suppressed)
                bucket.suppressed = 0


def install(burst: int, rate: float) -> Callable[[], None]:
    """Throttle :data:`HTTP_LOGGERS`; returns the function that undoes it (and flushes)."""
    throttle = LogThrottle(burst, rate)
    loggers = [logging.getLogger(name) for name in HTTP_LOGGERS]
    for logger in loggers:
        logger.addFilter(throttle)

    def uninstall() -> None:
        for logger in loggers:
            logger.removeFilter(throttle)
        throttle.flush()
    return uninstall
