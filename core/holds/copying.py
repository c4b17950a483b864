"""Copying a hold's packets into evidence, now and as segments are sealed; what retention
must keep meanwhile.

A hold copies every *sealed* segment overlapping its window once (a segment the recorder
still writes waits until it is sealed): the segments not copied yet go through the hold's
query, restricted to them, into one new part (at most :data:`MAX_PART_SEGMENTS` segments
a part; nothing matched: no part, the segments are still marked copied). A hold becomes
``complete`` once :data:`COMPLETION_GRACE_S` have passed after its end and no open
segment overlaps its window; a hold without an end stays open until released.

Copies of one store are serialised by an ``flock`` on ``evidence/.holds.lock``: a
creation waits for it, the maintenance loop's :func:`feed` skips a round while it is taken.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcapwire import custody
from pcapwire.cases import CASES_FILE
from pcapwire.errors import PcapwireError
from pcapwire.holds.evidence import EVIDENCE_DIR, part_path, write_part
from pcapwire.holds.table import Hold, HoldsDB, Part
from pcapwire.query.spec import QuerySpec
from pcapwire.records import FlowKey
from pcapwire.store.catalog import Catalog, Segment

if TYPE_CHECKING:
    from pcapwire.store import Store

log = logging.getLogger(__name__)

#: Segments copied into one part, at most (bounds a part's custody entry and its size:
#: more segments to copy make more parts).
MAX_PART_SEGMENTS = 1000
#: Seconds after a hold's end before it is complete: packets recorded just before the end
#: reach a segment about a second later (the recorder commits each second).
COMPLETION_GRACE_S = 60.0
#: Who copies in the maintenance loop, in the custody log.
FEED_ACTOR = "system:hold-feed"
LOCK_FILE = ".holds.lock"


@contextmanager
def copy_lock(root: Path, wait: bool = True) -> Iterator[bool]:
    """Hold the store's copy lock; with ``wait`` False, yields False at once when another
    copy has it."""
    path = root / EVIDENCE_DIR / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True  # closing the file releases the lock


def hold_spec(hold: Hold) -> QuerySpec:
    sel = dict(hold.selection)
    if sel.get("five_tuple"):
        sel["five_tuple"] = FlowKey.from_dict(sel["five_tuple"])
    return QuerySpec(**sel, start_ns=hold.start_ns, end_ns=hold.end_ns, case=hold.case,
                     event=f"hold-{hold.id}")


@dataclass
class Window:
    """The segments overlapping a hold's window, and which of them are still open."""

    segments: list[Segment]
    open_ids: set[int]

    def uncopied(self, copied: set[tuple[int, str]]) -> list[Segment]:
        return [s for s in self.segments if (s.id, s.path) not in copied]


def window(catalog: Catalog, hold: Hold) -> Window:
    """Read in one commit (a segment sealed meanwhile still counts as open)."""
    begun = not catalog.db.in_transaction
    if begun:
        catalog.db.execute("BEGIN")
    try:
        segments = catalog.segments(hold.start_ns, hold.end_ns)
        # the recorder's open segments (pcapwire.capture.ledger; not imported: it loads
        # the whole recorder, a fifth of a hold command's time)
        open_ids = {r[0] for r in catalog.db.execute(
            "SELECT segment_id FROM capture_segments WHERE state = 'open'")}
    finally:
        if begun:
            catalog.db.execute("COMMIT")
    return Window(segments, open_ids)


@dataclass
class Copied:
    parts: list[Part] = field(default_factory=list)
    segments: int = 0
    completed: bool = False

    @property
    def packets(self) -> int:
        return sum(p.packets for p in self.parts)


def copy_new(store: Store, db: HoldsDB, hold: Hold, now_ns: int | None = None) -> Copied:
    """Copy the sealed segments of ``hold``'s window it has not copied yet, then mark it
    complete when it is (call under :func:`copy_lock`)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    win = window(store.catalog, hold)
    todo = [s for s in win.uncopied(db.copied(hold.id)) if s.id not in win.open_ids]
    done = Copied(segments=len(todo))
    spec = hold_spec(hold)
    engine = store.query_engine()
    for i in range(0, len(todo), MAX_PART_SEGMENTS):
        batch = todo[i:i + MAX_PART_SEGMENTS]
        n = db.next_part(hold.id)
        path = part_path(store.root, hold.case, hold.id, n)
        written = write_part(engine, spec, [s.id for s in batch], path)
        part = None if written is None else Part(
            n, str(path.relative_to(store.root)), written.sha256, written.size,
            written.packets, [s.id for s in batch], time.time(), written.damage)
        if written is not None and written.damage:
            log.error("hold %d part %d lacks what could not be read: %s", hold.id, n,
                      "; ".join(written.damage))
        db.record_copy(hold.id, part, [(s.id, s.path) for s in batch])
        if part is not None:
            done.parts.append(part)
    if (hold.end_ns is not None and now_ns >= hold.end_ns + int(COMPLETION_GRACE_S * 10**9)
            and not any(s.id in win.open_ids for s in win.segments)):
        done.completed = db.complete(hold.id)
    return done


def part_object(store_root: Path, part: Part) -> dict[str, Any]:
    """The custody log's object for a part (its hash as recorded when written)."""
    return custody.file_object("evidence", store_root / part.path, store_root, part.sha256)


def part_details(hold: Hold, part: Part) -> dict[str, Any]:
    out = {"hold": hold.id, "part": part.n, "packets": part.packets, "segments": part.segments}
    if part.damage:
        out["damage"] = part.damage
    return out


def log_parts(store_root: Path, hold: Hold, parts: list[Part], actor: str) -> None:
    """One ``hold.extend`` custody entry per part."""
    for part in parts:
        custody.append(store_root, hold.case, "hold.extend", actor,
                       [part_object(store_root, part)],
                       part_details(hold, part))


def protected_segment_ids(store: Store) -> set[int]:
    """Segments retention must not delete yet: sealed or open segments overlapping an
    open hold's window that the hold has not copied yet."""
    if not (store.root / CASES_FILE).exists():
        return set()
    with HoldsDB(store.root / CASES_FILE) as db:
        out: set[int] = set()
        for hold in db.holds(states=("open",)):
            out |= {s.id for s in window(store.catalog, hold).uncopied(db.copied(hold.id))}
        return out


def feed(store: Store, now_ns: int | None = None) -> int:
    """For each open hold, copy the matching packets of newly sealed segments in its
    window into a new evidence part (custody: ``hold.extend``), and mark it complete once
    its end has passed and every segment of its window is sealed and copied (custody:
    ``hold.complete``); returns the packets copied. A hold whose copy fails is logged and
    tried again next time; a round while another copy runs does nothing."""
    if not (store.root / CASES_FILE).exists():
        return 0
    copied = 0
    with copy_lock(store.root, wait=False) as locked, HoldsDB(store.root / CASES_FILE) as db:
        if not locked:
            return 0
        for hold in db.holds(states=("open",)):
            try:
                done = copy_new(store, db, hold, now_ns)
                log_parts(store.root, hold, done.parts, FEED_ACTOR)
                if done.completed:
                    custody.append(store.root, hold.case, "hold.complete", FEED_ACTOR, [],
                                   {"hold": hold.id, "parts": len(hold.parts) +
                                    len(done.parts)})
            except (PcapwireError, OSError, ValueError) as exc:
                log.error("hold %d (case %s): copying failed, tried again next round: %s",
                          hold.id, hold.case, exc)
                continue
            copied += done.packets
    return copied
