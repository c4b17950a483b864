"""From a match to its packets: the query of its flow (what a notification carries, what
the trigger's workflows run on) and the API paths of its trigger and case."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pcapwire.query.spec import QuerySpec
from pcapwire.records import FlowKey

#: Without a catalog flow id, a match's query is its 5-tuple from this long before the
#: match's time to this long after it (a 5-tuple may be reused days later).
PIVOT_BEFORE_S = 60
PIVOT_AFTER_S = 3600


def case_name(trigger_name: str) -> str:
    """The case of a trigger's workflow runs (and of the queries its pivots name)."""
    return f"trigger-{trigger_name}"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="microseconds"
                                                        ).replace("+00:00", "Z")


def match_spec(trigger_name: str, match: dict[str, Any]) -> QuerySpec:
    """The query of a match's flow (a row of :meth:`~.db.TriggerDB.matches`): its catalog
    flow when known (the whole flow, every segment), else its 5-tuple around its time."""
    case = case_name(trigger_name)
    event = f"match-{match['id']}"
    if match.get("flow_id") is not None:
        return QuerySpec(flow_ids=[int(match["flow_id"])], case=case, event=event)
    ts_ns = int(match["ts"] * 1e9)
    return QuerySpec(five_tuple=FlowKey(int(match["proto"]), match["src_ip"],
                                        int(match["src_port"]), match["dest_ip"],
                                        int(match["dest_port"])),
                     start_ns=ts_ns - PIVOT_BEFORE_S * 10**9,
                     end_ns=ts_ns + PIVOT_AFTER_S * 10**9, case=case, event=event)


def flow(match: dict[str, Any]) -> dict[str, Any]:
    return FlowKey(int(match["proto"]), match["src_ip"], int(match["src_port"]),
                   match["dest_ip"], int(match["dest_port"])).to_dict()


def pivots(trigger_id: int, trigger_name: str, match: dict[str, Any]) -> dict[str, Any]:
    """What a notification names to get from the match to its evidence."""
    spec = match_spec(trigger_name, match).to_dict()
    query = {k: v for k, v in spec.items() if k in ("five_tuple", "flow_ids", "start_ns",
                                                     "end_ns", "case", "event") and v}
    return {"query": query, "flow_id": match.get("flow_id"),
            "bpf": FlowKey(int(match["proto"]), match["src_ip"], int(match["src_port"]),
                           match["dest_ip"], int(match["dest_port"])).bpf(),
            "trigger_path": f"/api/v1/triggers/{trigger_id}",
            "case_path": f"/api/v1/cases/{case_name(trigger_name)}"}
