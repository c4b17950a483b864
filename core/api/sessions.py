"""A session: one flow of the index seen through a case -- what the case's queries carved
from it (HTTP transactions, files with their hashes and triage, emails), what Suricata
reported about it (EVE ``http``, ``dns``, ``tls``, ``fileinfo``, ``smtp``), what Zeek
logged about it (``conn``, ``http``, ``dns``, ``ssl``, ``files``, ``smtp``), and the
verdicts about it.

Records are tied to the flow by its endpoints, in either direction (the index's flows are
direction-independent); those with a reliable time (carved records, verdicts) must also
fall inside the flow's first..last packet, :data:`SESSION_TIME_SLACK_S` either side, so a
5-tuple reused later in the case is not mixed in. Zeek's records carry the time of their
first packet, and are matched the same way. EVE records carry no such time (a record
Suricata flushed at the end of its input is stamped with its engine clock), so they are
matched by endpoints only.

EVE and Zeek files are found where the case store says each Suricata or Zeek step of the
case's runs kept them (:mod:`pcapwire.cases.kept`): the case folder, or the step's
``keep_dir`` when that lies inside the tenant's directory (one outside is refused and
logged).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcapwire.api import artifacts
from pcapwire.cases.kept import kept_files, step_dirs
from pcapwire.extract.layout import CarveDir

if TYPE_CHECKING:
    from pcapwire.api.tenants import TenantStore

log = logging.getLogger(__name__)

SESSION_TIME_SLACK_S = 1.0  # seconds around a flow's first and last packet
#: EVE metadata files the Suricata step keeps per run (pcapwire.plugins.suricata's
#: METADATA_EVE, and one per further link type): eve-metadata[-linktype<N>].json
EVE_METADATA = "eve-metadata*.json"
EVE_TYPES = ("http", "dns", "tls", "fileinfo", "smtp")
#: Zeek's records the Zeek step keeps per run (pcapwire.plugins.zeek's METADATA_FILE), one
#: JSON line each: {"log", "flow" (the 5-tuple it was linked to), "ts", "uid", "record"}
ZEEK_METADATA = "metadata.json"
ZEEK_LOGS = ("conn", "http", "dns", "ssl", "files", "smtp")
MAX_SESSION_RECORDS = 1000  # records of one kind returned for a session (then truncated)
#: an EVE or Zeek metadata file larger than this is not read for a session
MAX_KEPT_FILE_BYTES = 64 * 2**20


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


def kept_files_of(ts: TenantStore, case: str, query_ids: list[str], analyzer: str,
                  pattern: str) -> list[Path]:
    """The files matching ``pattern`` that the ``analyzer`` steps of the case's runs for
    these queries kept, where the case store recorded them, inside the tenant's
    directory only."""
    wanted = set(query_ids)
    found: list[Path] = []
    for run in ts.cases.runs(case):
        if run.query_id not in wanted:
            continue
        for step in ts.cases.steps(run.run_id):
            if step.analyzer == analyzer:
                for folder in step_dirs(ts.root, run, step):
                    found += kept_files(ts.root, folder, pattern)
    return found


def _lines(paths: list[Path]) -> Iterator[dict[str, Any]]:
    """The JSON objects of these JSON-lines files (a file over the limit is logged and
    skipped; a line cut by a crash of the engine is skipped)."""
    for path in paths:
        if path.stat().st_size > MAX_KEPT_FILE_BYTES:
            log.warning("%s is over %d bytes: not read for a session view", path,
                        MAX_KEPT_FILE_BYTES)
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    value = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(value, dict):
                    yield value


def _eve(paths: list[Path], match: FlowMatch) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in EVE_TYPES}
    for ev in _lines(paths):
        kind = ev.get("event_type")
        if kind in out and match.endpoints(ev) and len(out[kind]) < MAX_SESSION_RECORDS:
            out[kind].append(ev)
    return out


def _zeek(paths: list[Path], match: FlowMatch) -> dict[str, list[dict[str, Any]]]:
    """Zeek's records of the flow, each as Zeek logged it."""
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in ZEEK_LOGS}
    for meta in _lines(paths):
        kind = meta.get("log")
        if kind in out and match.timed(meta.get("flow"), meta.get("ts")) and \
                len(out[kind]) < MAX_SESSION_RECORDS:
            out[kind].append(meta.get("record") or {})
    return out


def session(ts: TenantStore, case: str, flow: dict[str, Any], carved: list[str],
            all_queries: list[str], verdicts: list[dict[str, Any]]) -> dict[str, Any]:
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
            "eve": _eve(kept_files_of(ts, case, all_queries, "suricata", EVE_METADATA),
                        match),
            "zeek": _zeek(kept_files_of(ts, case, all_queries, "zeek", ZEEK_METADATA),
                          match)}
