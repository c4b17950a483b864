"""The recorder's side of the catalog (tables in :data:`pcapwire.store.catalog.SCHEMA`).

* ``capture_runs``: one row per recorder run (pid, started, stopped, its inputs as JSON);
* ``capture_segments``: one row per segment the recorder wrote: its run, interface and
  ``state``: ``open`` while written (the file is ``<path>.live``), ``sealed`` when
  complete (renamed to ``<path>``), ``recovered`` when a restart completed it after a
  crash, ``missing`` when a restart found its file gone;
* ``capture_loss``: packets lost per run, interface and segment (``segment_id`` 0: while
  no segment was open), by cause: ``kernel_drops`` (the ring was full), ``if_drops`` (the
  interface dropped them), ``backlog_drops`` (pcapwire's own: its queue was full or the
  disk refused them) of which ``disk_drops`` (could not be written), and the wall-clock
  window (``first_ns``, ``last_ns``) the counts were taken in.

A segment's ``segments`` row exists from the recorder's first commit of it and is
updated at every commit (packets, size, first_ns, last_ns); its flows' offsets are
appended per commit (:meth:`pcapwire.store.catalog.Catalog.add_flows`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pcapwire.store.catalog import Catalog
from pcapwire.store.compression import stored_total

SOURCE_PREFIX = "capture:"  # fingerprint of a recorder source: capture:<run>:<name>
LOSS_CAUSES = ("kernel_drops", "if_drops", "backlog_drops", "disk_drops")


@dataclass
class LossDelta:
    interface: str
    first_ns: int
    last_ns: int
    kernel_drops: int = 0
    if_drops: int = 0
    backlog_drops: int = 0
    disk_drops: int = 0

    def __bool__(self) -> bool:
        return any((self.kernel_drops, self.if_drops, self.backlog_drops, self.disk_drops))


@dataclass
class SegmentCommit:
    """One commit of one segment (or, with ``rel`` None, only loss counted while no
    segment was open)."""

    run_id: int
    source_id: int
    interface: str
    rel: str | None
    linktype: int = 0
    snaplen: int = 0
    tsprec: int = 0
    opened: float = 0.0
    first_ns: int = 0
    last_ns: int = 0
    packets: int = 0
    size: int = 0
    flows: list[tuple] = field(default_factory=list)
    arrivals: list[tuple[int, int, int]] = field(default_factory=list)
    loss: LossDelta | None = None
    sealed: bool = False
    sha256: str = ""  # of the sealed file (custody log), set when ``sealed``


def start_run(catalog: Catalog, inputs: Sequence[str]) -> int:
    cur = catalog.db.execute("INSERT INTO capture_runs (pid, started, inputs) VALUES (?,?,?)",
                             (os.getpid(), time.time(), json.dumps(list(inputs))))
    return int(cur.lastrowid or 0)


def stop_run(catalog: Catalog, run_id: int) -> None:
    catalog.db.execute("UPDATE capture_runs SET stopped=? WHERE id=?", (time.time(), run_id))


def add_source(catalog: Catalog, run_id: int, name: str) -> int:
    return catalog.add_source(f"{SOURCE_PREFIX}{run_id}:{name}", name, 0)


def finish_source(catalog: Catalog, source_id: int, packets: int) -> None:
    catalog.db.execute("UPDATE sources SET packets_done=? WHERE id=?", (packets, source_id))
    catalog.finish_source(source_id, [])


def source_run(catalog: Catalog, source_id: int) -> tuple[int, str] | None:
    """(run id, source name) of a recorder source."""
    row = catalog.db.execute("SELECT fingerprint, path FROM sources WHERE id=?",
                             (source_id,)).fetchone()
    if row is None or not row[0].startswith(SOURCE_PREFIX):
        return None
    run = row[0][len(SOURCE_PREFIX):].split(":", 1)[0]
    return (int(run), row[1]) if run.isdigit() else None


def apply(catalog: Catalog, items: Sequence[SegmentCommit], ids: dict[str, int]) -> None:
    """Apply commits in one transaction; ``ids`` (catalog path -> segment id) learns the
    segments inserted, but only once the transaction has committed."""
    db = catalog.db
    new: dict[str, int] = {}
    db.execute("BEGIN IMMEDIATE")
    try:
        for c in items:
            seg_id = 0
            if c.rel is not None:
                seg_id = ids.get(c.rel) or new.get(c.rel) or 0
                if not seg_id:
                    cur = db.execute(
                        "INSERT INTO segments (path, linktype, snaplen, tsprec, first_ns, "
                        "last_ns, packets, size, source_id) VALUES (?,?,?,?,?,?,?,?,?)",
                        (c.rel, c.linktype, c.snaplen, c.tsprec, c.first_ns, c.last_ns,
                         c.packets, c.size, c.source_id))
                    seg_id = new[c.rel] = int(cur.lastrowid or 0)
                    db.execute("INSERT INTO capture_segments (segment_id, run_id, interface, "
                               "state, opened) VALUES (?,?,?,'open',?)",
                               (seg_id, c.run_id, c.interface, c.opened))
                else:
                    db.execute("UPDATE segments SET first_ns=?, last_ns=?, packets=?, size=? "
                               "WHERE id=?", (c.first_ns, c.last_ns, c.packets, c.size, seg_id))
                if c.flows:
                    catalog.add_flows(seg_id, c.flows)
                if c.sealed:
                    db.execute("UPDATE capture_segments SET state='sealed', sealed=? "
                               "WHERE segment_id=?", (time.time(), seg_id))
            if c.loss:
                add_loss(catalog, c.run_id, seg_id, c.loss)
        db.execute("COMMIT")
    except BaseException:
        catalog.abort()
        raise
    ids.update(new)


def add_loss(catalog: Catalog, run_id: int, segment_id: int, loss: LossDelta) -> None:
    catalog.db.execute(
        "INSERT INTO capture_loss (run_id, interface, segment_id, first_ns, last_ns, "
        "kernel_drops, if_drops, backlog_drops, disk_drops) VALUES (?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT (run_id, interface, segment_id) DO UPDATE SET "
        "first_ns = min(first_ns, excluded.first_ns), last_ns = max(last_ns, excluded.last_ns), "
        "kernel_drops = kernel_drops + excluded.kernel_drops, "
        "if_drops = if_drops + excluded.if_drops, "
        "backlog_drops = backlog_drops + excluded.backlog_drops, "
        "disk_drops = disk_drops + excluded.disk_drops",
        (run_id, loss.interface, segment_id, loss.first_ns, loss.last_ns, loss.kernel_drops,
         loss.if_drops, loss.backlog_drops, loss.disk_drops))


def store_bytes(catalog: Catalog) -> int:
    """Bytes the segments take as stored (a compressed one at its compressed size)."""
    return stored_total(catalog)


# -- reading (capture status) ------------------------------------------------------------------
def loss_by_interface(catalog: Catalog) -> dict[str, dict[str, int]]:
    """Every cause summed per interface over all runs, with the packets and bytes of the
    interface's segments."""
    out: dict[str, dict[str, int]] = {}
    for iface, *counts in catalog.db.execute(
            "SELECT interface, sum(kernel_drops), sum(if_drops), sum(backlog_drops), "
            "sum(disk_drops) FROM capture_loss GROUP BY interface"):
        out[iface] = dict(zip(LOSS_CAUSES, map(int, counts), strict=True))
    for iface, segs, packets, size in catalog.db.execute(
            "SELECT c.interface, count(*), sum(s.packets), sum(s.size) FROM capture_segments c "
            "JOIN segments s ON s.id = c.segment_id GROUP BY c.interface"):
        row = out.setdefault(iface, dict.fromkeys(LOSS_CAUSES, 0))
        row.update(segments=int(segs), packets=int(packets), bytes=int(size))
    return out


def loss_by_segment(catalog: Catalog, limit: int = 50) -> list[dict[str, Any]]:
    """The latest segments (and periods without one) that lost packets, newest first."""
    rows = catalog.db.execute(
        "SELECT l.run_id, l.interface, l.segment_id, s.path, c.state, l.first_ns, l.last_ns, "
        "l.kernel_drops, l.if_drops, l.backlog_drops, l.disk_drops, s.packets "
        "FROM capture_loss l LEFT JOIN segments s ON s.id = l.segment_id "
        "LEFT JOIN capture_segments c ON c.segment_id = l.segment_id "
        "ORDER BY l.last_ns DESC LIMIT ?", (limit,)).fetchall()
    keys = ("run", "interface", "segment_id", "path", "state", "first_ns", "last_ns",
            *LOSS_CAUSES, "packets")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def open_segments(catalog: Catalog) -> list[tuple[int, str, str]]:
    """(segment id, catalog path, state) of segments not known to be complete."""
    return [(int(r[0]), str(r[1]), str(r[2])) for r in catalog.db.execute(
        "SELECT c.segment_id, s.path, c.state FROM capture_segments c JOIN segments s "
        "ON s.id = c.segment_id WHERE c.state = 'open' ORDER BY c.segment_id")]
