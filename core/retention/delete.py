"""Deleting one segment, and the flow rows whose packets are long gone.

A segment goes in one catalog transaction: its ``segments``, ``flow_segments`` and
``capture_segments`` rows are removed, it is recorded in ``expired_segments`` and each of
its flows counts the packets it lost in ``expired_flows`` (a flow none of whose packets
remain is *packets expired*; its row, with its metadata, stays). Then its files are
unlinked and the row marked ``removed``. A crash between the commit and the unlink leaves
files the catalog no longer knows, with ``removed = 0``: :func:`sweep` (every retention run
begins with it) deletes them. Last, a store-level custody entry ``segment.delete``.

The deletion holds the legal holds' copy lock and asks the holds again under it: a hold
created by another process after the survey, or copying from the segment right now, keeps
it (the survey's answer may be a moment old).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pcapwire import custody, holds
from pcapwire.holds.copying import copy_lock
from pcapwire.retention.plan import Candidate
from pcapwire.retention.usage import stored_size
from pcapwire.store.catalog import Catalog
from pcapwire.store.segments import segment_files

if TYPE_CHECKING:
    from pcapwire.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deleted:
    segment: Candidate
    reason: str
    stored: int  # bytes it took on disk
    seconds: float  # the whole deletion: transaction, unlink, custody entry


def delete_segment(store: Store, cand: Candidate, reason: str, actor: str) -> Deleted | None:
    """Delete ``cand``; None when it is no longer there (deleted meanwhile by another
    process) or has changed since it was surveyed (a recorder reopened it)."""
    started = time.perf_counter()
    catalog = store.catalog
    with copy_lock(store.root):
        if cand.id in holds.protected_segment_ids(store):
            return None
        stored = stored_size(store.root, cand.path)
        if not _forget(catalog, cand, reason, stored):
            return None
        _unlink(store, cand.path)
    catalog.db.execute("UPDATE expired_segments SET removed = 1 WHERE id = ?", (cand.id,))
    try:
        custody.append(store.root, None, "segment.delete", actor,
                       objects=[{"kind": "segment", "path": cand.path, "size": stored}],
                       details={"reason": reason, "segment_id": cand.id,
                                "first_ns": cand.first_ns, "last_ns": cand.last_ns,
                                "packets": cand.packets})
    except OSError as exc:  # the deletion stands (it is in expired_segments); say so
        log.error("segment %s deleted (%s) but its custody entry could not be written: %s",
                  cand.path, reason, exc)
    return Deleted(cand, reason, stored, time.perf_counter() - started)


def _forget(catalog: Catalog, cand: Candidate, reason: str, stored: int) -> bool:
    db = catalog.db
    now = time.time()
    db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute("SELECT packets, last_ns FROM segments WHERE id = ?",
                         (cand.id,)).fetchone()
        state = db.execute("SELECT state FROM capture_segments WHERE segment_id = ?",
                           (cand.id,)).fetchone()
        if row is None or tuple(row) != (cand.packets, cand.last_ns) or (
                state is not None and state[0] == "open"):
            db.execute("ROLLBACK")
            return False
        db.execute("INSERT INTO expired_flows (flow_id, packets, first_ns, last_ns, "
                   "expired_at) SELECT flow_id, packets, first_ns, last_ns, ? FROM "
                   "flow_segments WHERE segment_id = ? AND true ON CONFLICT (flow_id) DO "
                   "UPDATE SET packets = packets + excluded.packets, "
                   "first_ns = min(first_ns, excluded.first_ns), "
                   "last_ns = max(last_ns, excluded.last_ns), expired_at = excluded.expired_at",
                   (now, cand.id))
        db.execute("DELETE FROM flow_segments WHERE segment_id = ?", (cand.id,))
        db.execute("DELETE FROM capture_segments WHERE segment_id = ?", (cand.id,))
        db.execute("DELETE FROM segments WHERE id = ?", (cand.id,))
        db.execute("INSERT INTO expired_segments (id, path, first_ns, last_ns, packets, size, "
                   "stored_size, reason, deleted_at) VALUES (?,?,?,?,?,?,?,?,?)",
                   (cand.id, cand.path, cand.first_ns, cand.last_ns, cand.packets, cand.size,
                    stored, reason, now))
        db.execute("COMMIT")
    except BaseException:
        catalog.abort()
        raise
    return True


def _unlink(store: Store, rel: str) -> None:
    # A source's directory stays, even empty: a writer may be about to add a file to it.
    for path in segment_files(store.root, rel):
        path.unlink(missing_ok=True)


def sweep(store: Store) -> int:
    """Delete the files of segments deleted from the catalog whose unlink did not happen
    (a crash in between); returns how many segments it completed."""
    pending = store.catalog.db.execute(
        "SELECT id, path FROM expired_segments WHERE removed = 0").fetchall()
    for seg_id, rel in pending:
        _unlink(store, rel)
        store.catalog.db.execute("UPDATE expired_segments SET removed = 1 WHERE id = ?",
                                 (seg_id,))
        log.warning("segment %s: its files were deleted now (an earlier retention run "
                    "stopped between the catalog and the disk)", rel)
    return len(pending)


def expire_flows(catalog: Catalog, cutoff_ns: int) -> int:
    """Delete the flow rows none of whose packets remain and whose last packet is older
    than ``cutoff_ns``; returns how many. The newest flow row always stays: flow ids are
    the highest plus one (:meth:`Catalog._merge_flows`), and must not be given again."""
    db = catalog.db
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TEMP TABLE IF NOT EXISTS gone_flows (id INTEGER PRIMARY KEY)")
        db.execute("DELETE FROM gone_flows")
        db.execute("INSERT INTO gone_flows SELECT e.flow_id FROM expired_flows e JOIN flows f "
                   "ON f.id = e.flow_id WHERE f.last_ns < ? AND f.id < (SELECT max(id) FROM "
                   "flows) AND NOT EXISTS (SELECT 1 FROM flow_segments s WHERE s.flow_id = "
                   "e.flow_id)", (cutoff_ns,))
        n = db.execute("DELETE FROM flows WHERE id IN (SELECT id FROM gone_flows)").rowcount
        db.execute("DELETE FROM expired_flows WHERE flow_id IN (SELECT id FROM gone_flows)")
        db.execute("COMMIT")
    except BaseException:
        catalog.abort()
        raise
    return int(n)
