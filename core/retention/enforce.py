"""One retention run: age limit, then watermarks, one segment at a time.

1. :func:`~.delete.sweep` completes deletions a crash interrupted.
2. ``max_age``: every deletable segment whose last packet is older goes, whatever the
   space.
3. Watermarks: when usage is above the high mark, the oldest deletable segment goes, the
   usage is measured again, and so on until it is at or below the low mark (no
   over-deletion: one segment past the mark at most; no stall: segments sealed meanwhile
   are surveyed again when the first list runs out).
4. ``flow_max_age``: flow rows whose packets are all gone and whose last packet is older.
5. The state file (:mod:`.state`): usage, totals and the alarm, raised when usage stays
   above the high mark with nothing deletable left (only protected data, or a file system
   full of other files).

Runs of one store are serialised by ``<data-dir>/retention/lock`` (a flock): a background
loop skips its turn while another process runs one, ingest and explicit runs wait.
"""

from __future__ import annotations

import fcntl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pcapwire.retention.delete import Deleted, delete_segment, expire_flows, sweep
from pcapwire.retention.plan import Planned, by_age, dry_run, survey
from pcapwire.retention.state import STATE_DIR, write_state
from pcapwire.retention.usage import Usage, measure
from pcapwire.store.config import RetentionPolicy

if TYPE_CHECKING:
    from pcapwire.store import Store

LOCK_FILE = "lock"
ACTOR = "retention"  # the custody actor of background runs (a CLI or API run names its own)


@dataclass
class RunReport:
    dry_run: bool = False
    skipped: bool = False  # another process was running retention on this store
    deleted: list[Deleted] = field(default_factory=list)
    planned: list[Planned] = field(default_factory=list)  # dry run: what would go
    swept: int = 0
    flows_deleted: int = 0
    usage_before: Usage | None = None
    usage_after: Usage | None = None
    alarm: bool = False
    alarm_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        rows = ([_row(d.segment, d.reason, d.stored) | {"ms": round(d.seconds * 1e3, 3)}
                 for d in self.deleted] if not self.dry_run
                else [_row(p.segment, p.reason, p.stored) for p in self.planned])
        return {"dry_run": self.dry_run, "skipped": self.skipped, "segments": rows,
                "deleted_segments": len(rows), "deleted_bytes": sum(r["bytes"] for r in rows),
                "swept": self.swept, "flows_deleted": self.flows_deleted,
                "usage_before": self.usage_before.to_dict() if self.usage_before else None,
                "usage_after": self.usage_after.to_dict() if self.usage_after else None,
                "alarm": self.alarm, "alarm_reason": self.alarm_reason or None}


def _row(seg: Any, reason: str, stored: int) -> dict[str, Any]:
    return {"id": seg.id, "path": seg.path, "first_ns": seg.first_ns, "last_ns": seg.last_ns,
            "packets": seg.packets, "bytes": stored, "reason": reason}


def has_policy(policy: RetentionPolicy) -> bool:
    return (policy.high_watermark is not None or policy.max_age_s is not None
            or policy.flow_max_age_s is not None)


@contextmanager
def run_lock(store: Store, wait: bool) -> Iterator[bool]:
    """Whether this process runs retention on the store now (False: another one does)."""
    directory = store.root / STATE_DIR
    directory.mkdir(exist_ok=True)
    with open(directory / LOCK_FILE, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def enforce(store: Store, policy: RetentionPolicy, *, now_ns: int | None = None,
            dry: bool = False, actor: str = ACTOR, wait: bool = False,
            stop: threading.Event | None = None) -> RunReport:
    """Apply ``policy`` to ``store`` once (``dry``: only say what would go). ``now_ns``:
    the time ages count from (default now); ``stop`` ends the run between deletions."""
    report = RunReport(dry_run=dry)
    if not has_policy(policy):
        return report
    now_ns = time.time_ns() if now_ns is None else now_ns
    cutoff = None if policy.max_age_s is None else now_ns - int(policy.max_age_s * 1e9)
    with run_lock(store, wait or dry) as mine:
        if not mine:
            report.skipped = True
            return report
        catalog = store.catalog
        report.usage_before = usage = measure(store.root, catalog, policy)
        found = survey(store)
        if dry:
            report.planned = dry_run(store, found, usage, cutoff)
            report.usage_after = usage
            return report
        report.swept = sweep(store)

        def delete(cands: list[Any], reason: str, until_low: bool) -> Usage | None:
            nonlocal usage
            for cand in cands:
                if stop is not None and stop.is_set():
                    break
                done = delete_segment(store, cand, reason, actor)
                if done is not None:
                    report.deleted.append(done)
                if until_low:
                    usage = measure(store.root, catalog, policy)
                    if usage is None or not usage.above_low:
                        break
            return usage

        aged = by_age(found.deletable, cutoff)
        delete(aged, "max_age", until_low=False)
        usage = measure(store.root, catalog, policy) if aged else usage
        gone = {c.id for c in aged}
        rest = [c for c in found.deletable if c.id not in gone]
        if usage is not None and usage.above_high:
            while rest and not (stop is not None and stop.is_set()):
                before = len(report.deleted)
                usage = delete(rest, "high_watermark", until_low=True)
                if usage is None or not usage.above_low or len(report.deleted) == before:
                    break
                done = {d.segment.id for d in report.deleted}
                rest = [c for c in survey(store).deletable if c.id not in done]
        if policy.flow_max_age_s is not None:
            report.flows_deleted = expire_flows(
                catalog, now_ns - int(policy.flow_max_age_s * 1e9))
        report.usage_after = usage
        if usage is not None and usage.above_high:
            report.alarm = True
            report.alarm_reason = (
                f"usage stays above the high watermark ({usage.describe()}) and nothing "
                "left may be deleted (held, open or indexed in place, or the file system "
                f"is full of other files); when_full={policy.when_full}")
        write_state(store.root, report.alarm, _state(store, report, policy),
                    report.alarm_reason)
    return report


def _state(store: Store, report: RunReport, policy: RetentionPolicy) -> dict[str, Any]:
    segs, nbytes, packets = store.catalog.db.execute(
        "SELECT count(*), coalesce(sum(stored_size), 0), coalesce(sum(packets), 0) FROM "
        "expired_segments").fetchone()
    return {"when_full": policy.when_full,
            "usage": report.usage_after.to_dict() if report.usage_after else None,
            "last_run": {"deleted_segments": len(report.deleted),
                         "deleted_bytes": sum(d.stored for d in report.deleted),
                         "flows_deleted": report.flows_deleted},
            "expired": {"segments": segs, "bytes": nbytes, "packets": packets}}
