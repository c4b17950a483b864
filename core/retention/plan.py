"""Which segments retention may delete, in which order, and which it must keep.

Order: oldest first by the time of their last packet, then by id. A segment is kept
(protected) while

- ``open``: the recorder still writes it (``capture_segments.state``, see
  :mod:`pcapwire.capture.ledger`);
- ``sealing``: sealed in the catalog, its ``.live`` file not yet renamed into place;
- ``in_place``: a user's own file indexed where it lies (an absolute catalog path):
  retention never deletes it, and reports it as not deletable;
- ``hold``: a legal hold still needs it (:func:`pcapwire.holds.protected_segment_ids`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcapwire import holds
from pcapwire.retention.usage import Usage, stored_size
from pcapwire.store.segments import LIVE_SUFFIX

if TYPE_CHECKING:
    from pcapwire.store import Store

PROTECTIONS = ("open", "sealing", "in_place", "hold")


@dataclass(frozen=True)
class Candidate:
    id: int
    path: str
    first_ns: int
    last_ns: int
    packets: int
    size: int


@dataclass
class Survey:
    deletable: list[Candidate]  # oldest first
    protected: list[tuple[Candidate, str]]  # with the reason, one of PROTECTIONS


def survey(store: Store) -> Survey:
    """Every segment of the store, deletable (oldest first) or protected."""
    held = holds.protected_segment_ids(store)
    rows = store.catalog.db.execute(
        "SELECT s.id, s.path, s.first_ns, s.last_ns, s.packets, s.size, c.state "
        "FROM segments s LEFT JOIN capture_segments c ON c.segment_id = s.id "
        "ORDER BY s.last_ns, s.id").fetchall()
    out = Survey([], [])
    for *fields, state in rows:
        cand = Candidate(*fields)
        reason = protection(store.root, cand, state, held)
        if reason is None:
            out.deletable.append(cand)
        else:
            out.protected.append((cand, reason))
    return out


def protection(root: Path, cand: Candidate, state: str | None, held: set[int]) -> str | None:
    if state == "open":
        return "open"
    if Path(cand.path).is_absolute():
        return "in_place"
    if cand.id in held:
        return "hold"
    live = root / cand.path
    if state is not None and live.with_name(live.name + LIVE_SUFFIX).exists():
        return "sealing"
    return None


@dataclass(frozen=True)
class Planned:
    segment: Candidate
    reason: str  # "max_age" or "high_watermark"
    stored: int  # bytes on disk it frees


def by_age(deletable: list[Candidate], cutoff_ns: int | None) -> list[Candidate]:
    """The segments whose last packet is older than ``cutoff_ns`` (None: none)."""
    if cutoff_ns is None:
        return []
    return [c for c in deletable if c.last_ns < cutoff_ns]


def dry_run(store: Store, found: Survey, usage: Usage | None, cutoff_ns: int | None
            ) -> list[Planned]:
    """What a run would delete now: everything older than the age limit, then oldest
    first while the usage (less what each deletion frees) is above the low mark, when it
    starts above the high mark."""
    plan = [Planned(c, "max_age", stored_size(store.root, c.path))
            for c in by_age(found.deletable, cutoff_ns)]
    if usage is None:
        return plan
    used = usage.used - sum(p.stored for p in plan)
    if used <= usage.high:
        return plan
    aged = {p.segment.id for p in plan}
    for cand in found.deletable:
        if used <= usage.low:
            break
        if cand.id in aged:
            continue
        size = stored_size(store.root, cand.path)
        plan.append(Planned(cand, "high_watermark", size))
        used -= size
    return plan


def protected_summary(root: Path, found: Survey) -> dict[str, Any]:
    """Bytes and segments kept, per reason; and those deletable."""
    out: dict[str, Any] = {r: {"segments": 0, "bytes": 0} for r in PROTECTIONS}
    for cand, reason in found.protected:
        out[reason]["segments"] += 1
        out[reason]["bytes"] += stored_size(root, cand.path) if reason != "in_place" \
            else cand.size
    deletable = {"segments": len(found.deletable),
                 "bytes": sum(stored_size(root, c.path) for c in found.deletable)}
    return {"protected": out, "deletable": deletable}
