"""The limits of one hash-list import, and how it is stopped: over a limit
(:class:`LimitExceeded`) or cancelled (:class:`ImportCancelled`, e.g. the API client left).

The defaults are those of ``pcapwire hashlist import`` (an operator loading a full NSRL
release); the API passes its own, smaller ones (:mod:`pcapwire.api.limits`). An import
stopped by either keeps nothing (:meth:`pcapwire.hashlist.HashListStore.import_sources`).

A :class:`Budget` is the running account of one import: its deadline, the SQLite virtual
machine steps spent reading RDSv3 files, and the cancel event another thread (or a
signal handler) sets. The RDSv3 reader (:mod:`.rds3`) checks it from an SQLite progress
handler, the store between batches.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from pcapwire.hashlist.formats import HashListError

#: Rows read from an RDSv3 ``FILE`` view or table (a full modern NSRL release has a few
#: hundred million; more is not an NSRL release). Over it, the import is refused.
RDS3_MAX_ROWS = 2_000_000_000
#: Seconds one import may run (every format; a full NSRL release loads in about an hour).
IMPORT_MAX_SECONDS = 24 * 3600.0
#: SQLite virtual-machine instructions spent reading RDSv3 files (a real ``FILE`` view
#: costs about 15 per row): bounds a query that loops or joins without producing rows.
RDS3_MAX_STEPS = 100_000_000_000
#: SQLite instructions between two calls of the progress handler that checks the budget
#: (about a millisecond of work: the reaction time to a cancel or a spent budget).
RDS3_PROGRESS_INTERVAL = 10_000

#: Flag of ``pcapwire hashlist import`` that sets each limit (named in its errors).
LIMIT_FLAGS = {"max_rows": "--max-rows", "max_seconds": "--max-seconds",
               "max_steps": "--max-steps"}


@dataclass(frozen=True)
class ImportLimits:
    """``max_rows``: RDSv3 ``FILE`` rows per file; ``max_seconds``: the whole import;
    ``max_steps``: SQLite instructions per RDSv3 file."""

    max_rows: int = RDS3_MAX_ROWS
    max_seconds: float = IMPORT_MAX_SECONDS
    max_steps: int = RDS3_MAX_STEPS

    def __post_init__(self) -> None:
        for name in LIMIT_FLAGS:
            if not getattr(self, name) > 0:
                raise HashListError(f"{name} must be positive, not {getattr(self, name)!r}")


class LimitExceeded(HashListError):
    """The import went over one of its :class:`ImportLimits` (``limit_name``, ``limit``);
    ``what`` says what happened, without naming the limit (the API names its own)."""

    code = "hashlist_limit_exceeded"

    def __init__(self, what: str, limit_name: str, limit: float) -> None:
        self.what = what
        self.limit_name = limit_name
        self.limit = limit
        super().__init__(f"{what}: over the import limit {LIMIT_FLAGS[limit_name]} "
                         f"{number(limit)}; nothing was imported")


def number(value: float) -> str:
    """``value`` as written on a command line (no exponent, no ``.0``)."""
    return str(int(value)) if float(value).is_integer() else str(value)


class ImportCancelled(HashListError):
    """The import was cancelled (its cancel event was set, e.g. on SIGTERM)."""

    code = "hashlist_import_cancelled"


@dataclass
class Budget:
    """What one import may still spend (see the module docstring)."""

    limits: ImportLimits = field(default_factory=ImportLimits)
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)

    @property
    def deadline(self) -> float:
        return self.started + self.limits.max_seconds

    def stop_reason(self) -> str | None:
        """``cancel`` or ``max_seconds`` when the import must stop now, else None."""
        if self.cancel.is_set():
            return "cancel"
        if time.monotonic() > self.deadline:
            return "max_seconds"
        return None

    def check(self, shown: str) -> None:
        """Raise when the import must stop (``shown`` names the file being read)."""
        reason = self.stop_reason()
        if reason is not None:
            raise self.error(reason, shown)

    def error(self, reason: str, shown: str) -> HashListError:
        if reason == "cancel":
            return ImportCancelled(f"{shown}: import cancelled; nothing was imported")
        if reason == "max_seconds":
            return LimitExceeded(f"{shown}: the import ran longer than "
                                 f"{number(self.limits.max_seconds)} s", "max_seconds",
                                 self.limits.max_seconds)
        if reason == "max_steps":
            return LimitExceeded(f"{shown}: reading FILE took more than "
                                 f"{self.limits.max_steps} SQLite steps", "max_steps",
                                 self.limits.max_steps)
        return LimitExceeded(f"{shown}: FILE has more than {self.limits.max_rows} rows",
                             "max_rows", self.limits.max_rows)
