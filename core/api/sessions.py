"""A session: one flow of the index seen through a case -- what the case's queries carved
from it (HTTP transactions, files with their hashes and triage, emails), what Suricata
reported about it (EVE ``http``, ``dns``, ``tls``, ``fileinfo``, ``smtp`` kept with the
case), and the verdicts about it.

Records are tied to the flow by its endpoints, in either direction (the index's flows are
direction-independent); those with a reliable time (carved records, verdicts) must also
fall inside the flow's first..last packet, :data:`SESSION_TIME_SLACK_S` either side, so a
5-tuple reused later in the case is not mixed in. EVE records carry no such time (a record
Suricata flushed at the end of its input is stamped with its engine clock), so they are
matched by endpoints only. Zeek logs are not read here.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcapwire.api import artifacts
from pcapwire.extract.layout import CarveDir

if TYPE_CHECKING:
    from pcapwire.api.tenants import TenantStore

log = logging.getLogger(__name__)

SESSION_TIME_SLACK_S = 1.0  # seconds around a flow's first and last packet
#: EVE metadata the Suricata step keeps per query (pcapwire.plugins.suricata's METADATA_EVE)
#: under <tenant>/cases/<case>/suricata/<query id>-<step>/.
EVE_METADATA = "eve-metadata.json"
EVE_TYPES = ("http", "dns", "tls", "fileinfo", "smtp")
MAX_SESSION_RECORDS = 1000  # records of one kind returned for a session (then truncated)
MAX_EVE_BYTES = 64 * 2**20  # an EVE metadata file larger than this is not read for a session


def _ends(d: dict[str, Any]) -> frozenset[tuple[str, int]]:
    return frozenset({(str(d.get("src_ip", "")), int(d.get("src_port") or 0)),
                      (str(d.get("dest_ip", "")), int(d.get("dest_port") or 0))})


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class FlowMatch:
    """Whether a record (an EVE event, a carved record's ``flow``, a verdict's ``flow``)
    belongs to the flow ``flow`` (an index flow, :func:`pcapwire.query.flows.flow_dict`)."""

    def __init__(self, flow: dict[str, Any]) -> None:
        self.proto = str(flow["proto"]).lower()
        self.ends = _ends(flow)
        self.first = _epoch(flow["start"]) - SESSION_TIME_SLACK_S
        self.last = _epoch(flow["end"]) + SESSION_TIME_SLACK_S

    def endpoints(self, d: dict[str, Any] | None) -> bool:
        return (isinstance(d, dict) and str(d.get("proto", "")).lower() == self.proto
                and _ends(d) == self.ends)

    def timed(self, d: dict[str, Any] | None, ts: Any) -> bool:
        return self.endpoints(d) and isinstance(ts, int | float) and \
            self.first <= ts <= self.last


def eve_files(ts: TenantStore, query_ids: list[str]) -> list[Path]:
    """The EVE metadata files the Suricata steps of these queries kept in the tenant's
    case folders (query ids are the server's own hex names: safe in a pattern)."""
    found: list[Path] = []
    for qid in query_ids:
        found += sorted((ts.root / "cases").glob(f"*/suricata/{qid}-*/{EVE_METADATA}"))
    return found


def _eve(paths: list[Path], match: FlowMatch) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in EVE_TYPES}
    for path in paths:
        if path.stat().st_size > MAX_EVE_BYTES:
            log.warning("%s is over %d bytes: not read for a session view", path,
                        MAX_EVE_BYTES)
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    ev = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash of the engine
                kind = ev.get("event_type") if isinstance(ev, dict) else None
                if kind in out and match.endpoints(ev) and len(out[kind]) < MAX_SESSION_RECORDS:
                    out[kind].append(ev)
    return out


def session(ts: TenantStore, flow: dict[str, Any], carved: list[str], all_queries: list[str],
            verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    """The session view of ``flow``: ``carved`` are the queries whose results were carved
    (a case's originals), ``all_queries`` every query of the case (reruns ran Suricata
    too), ``verdicts`` the case's verdicts (native form)."""
    match = FlowMatch(flow)
    http = [h for q in carved for h in CarveDir(artifacts.carve_dir(ts, q)).http()
            if match.timed(h.get("flow"), (h.get("request") or h.get("response") or {})
                           .get("ts"))]
    files = [f for q in carved for f in artifacts.files(ts, q, verdicts)
             if match.timed(f.get("flow"), f.get("ts"))]
    emails = [e for q in carved for e in artifacts.emails(ts, q)
              if match.timed(e.get("flow"), e.get("ts"))]
    mine = [v for v in verdicts if match.timed(v.get("flow"), v.get("ts"))]
    return {"flow": flow, "http": http[:MAX_SESSION_RECORDS],
            "files": files[:MAX_SESSION_RECORDS], "emails": emails[:MAX_SESSION_RECORDS],
            "verdicts": mine[:MAX_SESSION_RECORDS],
            "eve": _eve(eve_files(ts, all_queries), match)}
