"""``retention status``: the policy, usage against the marks, what is kept and what is
deletable, what has expired, and the alarm (``pcapwire retention status``, ``GET
/api/v1/retention``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pcapwire.retention.plan import protected_summary, survey
from pcapwire.retention.state import read_state
from pcapwire.retention.usage import measure
from pcapwire.store.config import StoreConfig, describe
from pcapwire.store.segments import SEGMENT_MAX_BYTES

if TYPE_CHECKING:
    from pcapwire.store import Store


def status(store: Store, config: StoreConfig) -> dict[str, Any]:
    policy = config.retention
    db = store.catalog.db
    usage = measure(store.root, store.catalog, policy)
    kept = db.execute("SELECT count(*), coalesce(sum(packets), 0), min(first_ns), "
                      "max(last_ns) FROM segments").fetchone()
    expired = db.execute("SELECT count(*), coalesce(sum(packets), 0), "
                         "coalesce(sum(stored_size), 0), min(first_ns), max(last_ns) FROM "
                         "expired_segments").fetchone()
    by_reason = dict(db.execute("SELECT reason, count(*) FROM expired_segments GROUP BY "
                                "reason").fetchall())
    flows = db.execute("SELECT count(*), coalesce(sum(NOT EXISTS (SELECT 1 FROM flow_segments "
                       "s WHERE s.flow_id = e.flow_id)), 0) FROM expired_flows e").fetchone()
    state = read_state(store.root) or {}
    out: dict[str, Any] = {
        "policy": describe(config)["retention"],
        "usage": usage.to_dict() if usage is not None else None,
        "kept": {"segments": kept[0], "packets": kept[1], "oldest_ns": kept[2],
                 "newest_ns": kept[3]},
        **protected_summary(store.root, survey(store)),
        "expired": {"segments": expired[0], "packets": expired[1], "bytes": expired[2],
                    "oldest_ns": expired[3], "newest_ns": expired[4],
                    "by_reason": by_reason, "flows_partly": flows[0] - flows[1],
                    "flows_all": flows[1]},
        "alarm": bool(state.get("alarm")), "alarm_since": state.get("alarm_since"),
        "alarm_reason": state.get("alarm_reason"), "last_run": state.get("updated"),
        "warnings": warnings(usage)}
    return out


def warnings(usage: Any) -> list[str]:
    """A percent policy whose high mark leaves less than a segment free: a writer can hit
    a full disk between two checks."""
    if usage is None or usage.kind != "percent":
        return []
    room = usage.capacity - usage.high
    if room >= SEGMENT_MAX_BYTES:
        return []
    return [f"the high watermark leaves {room} bytes free, less than one segment "
            f"({SEGMENT_MAX_BYTES} bytes): ingest and capture need room for at least one "
            "segment (and its index) above the high mark; lower it, or use smaller segments"]
