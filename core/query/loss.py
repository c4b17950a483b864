"""What a time window lost while it was recorded, by cause: the answer to "is this result
all there was?".

The recorder (:mod:`pcapwire.capture.ledger`) keeps, per run, interface and segment, the
packets it lost by cause in the catalog's ``capture_loss`` table, with the wall-clock
span they were counted over (``first_ns``..``last_ns``; segment 0: while no segment was
open):

- ``kernel``: the kernel's capture ring was full (``PACKET_STATISTICS`` drops);
- ``interface``: the interface dropped them before capture (``/sys/class/net`` counters);
- ``backlog``: pcapwire's own (its queue between capture and disk was full, or the disk
  refused them), of which ``disk``: received but could not be written.

A window's loss is the sum of the rows whose span overlaps it: drops are counted per
segment and commit, not per packet, so a row counts whole when its span reaches into the
window (the answer may name drops just outside it, never miss one inside). A store that
was only ever ingested has no such rows: its loss is 0.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from pcapwire.store.catalog import Catalog, overlap_sql

CAUSES = ("kernel", "interface", "backlog")  # they add up; "disk" is a part of "backlog"
_COUNTS = ("kernel", "interface", "backlog", "disk")
_COLUMNS = "kernel_drops, if_drops, backlog_drops, disk_drops"  # in _COUNTS' order
_NAMES = {"kernel": "kernel ring", "interface": "interface", "backlog": "own backlog"}


def _zero() -> dict[str, int]:
    return dict.fromkeys(_COUNTS, 0)


@dataclass
class Loss:
    """Packets lost by cause, in total and per interface."""

    counts: dict[str, int] = field(default_factory=_zero)
    by_interface: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts[c] for c in CAUSES)

    def add(self, interface: str, counts: tuple[int, ...]) -> None:
        mine = self.by_interface.setdefault(interface, _zero())
        for key, n in zip(_COUNTS, counts, strict=True):
            self.counts[key] += n
            mine[key] += n

    def to_dict(self) -> dict[str, Any]:
        """``{"packets": N, "kernel", "interface", "backlog", "disk", "interfaces":
        {name: the same}}``."""
        return {"packets": self.total, **self.counts,
                "interfaces": {k: {"packets": sum(v[c] for c in CAUSES), **v}
                               for k, v in sorted(self.by_interface.items())}}

    def describe(self) -> str:
        """``this window had N drops: K kernel ring, I interface, B own backlog …``."""
        if not self.total:
            return "this window had no drops"
        causes = ", ".join(f"{self.counts[c]} {_NAMES[c]}" for c in CAUSES if self.counts[c])
        if self.counts["disk"]:
            causes += f" ({self.counts['disk']} of them not written: disk)"
        where = ", ".join(f"{k} {sum(v[c] for c in CAUSES)}"
                          for k, v in sorted(self.by_interface.items())
                          if any(v[c] for c in CAUSES))
        return f"this window had {self.total} drops: {causes}; by interface: {where}"


def loss_in_window(catalog: Catalog, start_ns: int | None, end_ns: int | None) -> Loss:
    """The drops recorded over ``[start_ns, end_ns)`` (None: unbounded)."""
    where, args = overlap_sql(start_ns, end_ns)
    sql = f"SELECT interface, {_COLUMNS} FROM capture_loss WHERE 1=1{where}"
    loss = Loss()
    try:
        rows = catalog.db.execute(sql + " ORDER BY interface", args).fetchall()
    except sqlite3.OperationalError:  # a catalog no recorder has opened yet
        return loss
    for interface, *counts in rows:
        if any(counts):
            loss.add(interface, tuple(counts))
    return loss
