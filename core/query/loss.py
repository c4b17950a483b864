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

What retention deleted later (:mod:`pcapwire.retention`) is the window's ``expired`` part:
the catalog's ``expired_segments`` that overlap it, as spans of time (clipped to the
window; segments deleted one after the other with nothing kept between them make one
span), with their packets and the policy's reason (``max_age``, ``high_watermark``).
Likewise a deleted segment counts whole when it reaches into the window.
"""

from __future__ import annotations

import sqlite3
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pcapwire.store.catalog import Catalog, overlap_sql

CAUSES = ("kernel", "interface", "backlog")  # they add up; "disk" is a part of "backlog"
_COUNTS = ("kernel", "interface", "backlog", "disk")
_COLUMNS = "kernel_drops, if_drops, backlog_drops, disk_drops"  # in _COUNTS' order
_NAMES = {"kernel": "kernel ring", "interface": "interface", "backlog": "own backlog"}
#: Spans of expired packets a window's answer lists, at most (the totals count all).
MAX_EXPIRED_SPANS = 100


def _zero() -> dict[str, int]:
    return dict.fromkeys(_COUNTS, 0)


@dataclass
class Expired:
    """Packets of the window that retention deleted, as spans of time."""

    packets: int = 0
    segments: int = 0
    spans: list[dict[str, Any]] = field(default_factory=list)  # first_ns, last_ns, …
    more_spans: int = 0  # spans beyond MAX_EXPIRED_SPANS, not listed

    def to_dict(self) -> dict[str, Any]:
        return {"packets": self.packets, "segments": self.segments, "spans": self.spans,
                "more_spans": self.more_spans}

    def describe(self) -> str:
        spans = "; ".join(f"{_iso(s['first_ns'])} to {_iso(s['last_ns'])}: {s['packets']} "
                          f"packets ({', '.join(s['reasons'])})" for s in self.spans)
        more = f"; and {self.more_spans} more spans" if self.more_spans else ""
        return (f"{self.packets} packets of this window ({self.segments} segments) were "
                f"deleted by the retention policy: {spans}{more}")


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Loss:
    """Packets lost by cause, in total and per interface; and those expired since."""

    counts: dict[str, int] = field(default_factory=_zero)
    by_interface: dict[str, dict[str, int]] = field(default_factory=dict)
    expired: Expired = field(default_factory=Expired)

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
                               for k, v in sorted(self.by_interface.items())},
                "expired": self.expired.to_dict()}

    def describe(self) -> str:
        """``this window had N drops: K kernel ring, I interface, B own backlog …``, and
        what retention deleted of it."""
        drops = self._describe_drops()
        if not self.expired.packets:
            return drops
        return self.expired.describe() if not self.total else \
            f"{drops}; {self.expired.describe()}"

    def _describe_drops(self) -> str:
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
    loss.expired = expired_in_window(catalog, start_ns, end_ns)
    return loss


def expired_in_window(catalog: Catalog, start_ns: int | None, end_ns: int | None) -> Expired:
    """The segments retention deleted that overlap ``[start_ns, end_ns)``, as spans."""
    where, args = overlap_sql(start_ns, end_ns)
    rows = catalog.db.execute("SELECT first_ns, last_ns, packets, reason FROM "
                              f"expired_segments WHERE 1=1{where} ORDER BY first_ns, id",
                              args).fetchall()
    out = Expired(packets=sum(r[2] for r in rows), segments=len(rows))
    if not rows:
        return out
    kept = sorted(r[0] for r in catalog.db.execute(
        f"SELECT first_ns FROM segments WHERE 1=1{where}", args))
    spans: list[dict[str, Any]] = []
    for first, last, packets, reason in rows:
        prev = spans[-1] if spans else None
        if prev is not None and not _kept_between(kept, prev["last_ns"], first):
            prev["last_ns"] = max(prev["last_ns"], last)
            prev["packets"] += packets
            prev["segments"] += 1
            if reason not in prev["reasons"]:
                prev["reasons"].append(reason)
        else:
            spans.append({"first_ns": first, "last_ns": last, "packets": packets,
                          "segments": 1, "reasons": [reason]})
    for span in spans:  # clipped to the window
        if start_ns is not None:
            span["first_ns"] = max(span["first_ns"], start_ns)
        if end_ns is not None:
            span["last_ns"] = min(span["last_ns"], end_ns - 1)
    out.spans, out.more_spans = spans[:MAX_EXPIRED_SPANS], max(0, len(spans) - MAX_EXPIRED_SPANS)
    return out


def _kept_between(kept_firsts: list[int], after: int, before: int) -> bool:
    """Whether a kept segment starts in ``[after, before]``."""
    i = bisect_left(kept_firsts, after)
    return i < len(kept_firsts) and kept_firsts[i] <= before
