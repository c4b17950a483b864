"""Zeek logs -> verdicts (``notice``, ``intel``, ``weird``) and case metadata (``conn``,
``http``, ``dns``, ``ssl``, ``files``, ``smtp``), each linked to its flow by 5-tuple.

Severity (Zeek itself grades nothing; this table is the plugin's, documented and tested;
scores from :data:`pcapwire.workflow.severity.SCORE_BY_SEVERITY`):

===========================================  ==========  =====
log record                                   severity    score
===========================================  ==========  =====
intel.log (an IoC from the step's intel      high        80
files was seen)
notice.log, the step's ``notice_severity``   as set      table
for that ``note``
notice.log with ``Notice::ACTION_ALARM``     high        80
notice.log, any other                        medium      60
weird.log                                    info        20
===========================================  ==========  =====

Records link to flows through their ``id.*`` columns (protocol from conn.log by ``uid``,
else from the record's ``proto``, else the log's transport); files.log records without
``id.*`` link through ``uid``/``conn_uids`` to conn.log.

A verdict's time (the pivot back to PCAP) is the record's ``ts`` when it lies within its
connection (conn.log ``ts`` to ``ts + duration``), else the connection's start: Zeek
stamps a record with its network time when it is raised, and what it raises as a
connection is removed (inactivity timeout, the end of the input) carries a later
packet's time -- at the end of a run, the run's last packet, possibly years away from
the connection. Records about hosts, not connections (scans), keep their ``ts``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pcapwire.plugins.zeek.logs import ZeekLogs
from pcapwire.records import FlowKey, Severity, Verdict
from pcapwire.workflow.severity import grade

ANALYZER = "zeek"
VERDICT_LOGS = ("notice", "intel", "weird")
METADATA_LOGS = ("conn", "http", "dns", "ssl", "files", "smtp")
#: Metadata records kept in memory per log and run; the log files on disk stay complete.
MAX_METADATA_PER_LOG = 50_000
INTEL_SEVERITY: Severity = "high"
ALARM_SEVERITY: Severity = "high"
NOTICE_SEVERITY: Severity = "medium"
WEIRD_SEVERITY: Severity = "info"
_PROTO = {"tcp": 6, "udp": 17, "icmp": 1, "icmp6": 58, "sctp": 132}
_LOG_TRANSPORT = {"http": 6, "ssl": 6, "smtp": 6, "ftp": 6, "dns": 17}
#: Seconds a record's ``ts`` may lie outside its connection's span and still count as
#: inside it (conn.log rounds times to microseconds).
SPAN_SLACK_S = 1e-3


def _ts(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0


def _port(value: Any) -> int:
    return value if isinstance(value, int) and 0 <= value <= 65535 else 0


@dataclass
class FlowIndex:
    """uid -> 5-tuple (Zeek's orientation: originator first) and uid -> (first, last
    packet time), from conn.log."""

    by_uid: dict[str, FlowKey] = field(default_factory=dict)
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def from_conn(cls, rows: Iterable[Mapping[str, Any]]) -> FlowIndex:
        index = cls()
        for row in rows:
            key = flow_of(row, "conn")
            uid = row.get("uid")
            if key is not None and isinstance(uid, str):
                index.by_uid[uid] = key
                start = _ts(row.get("ts"))
                if start:
                    index.spans[uid] = (start, start + max(_ts(row.get("duration")), 0.0))
        return index

    def time_of(self, row: Mapping[str, Any]) -> float:
        """The record's ``ts`` if it lies within its connection, else the connection's
        start (see the module docstring); ``ts`` for a record without a known one."""
        ts = _ts(row.get("ts"))
        uid = row.get("uid")
        span = self.spans.get(uid) if isinstance(uid, str) else None
        if span is None or span[0] - SPAN_SLACK_S <= ts <= span[1] + SPAN_SLACK_S:
            return ts
        return span[0]

    def link(self, row: Mapping[str, Any], log: str) -> FlowKey | None:
        uid = row.get("uid")
        if isinstance(uid, str) and uid in self.by_uid:
            return self.by_uid[uid]
        key = flow_of(row, log)
        if key is not None:
            return key
        for uid in row.get("conn_uids") or []:
            if uid in self.by_uid:
                return self.by_uid[uid]
        return None


def flow_of(row: Mapping[str, Any], log: str) -> FlowKey | None:
    """The record's own 5-tuple, or None when it has no ``id.*`` columns."""
    src, dst = row.get("id.orig_h"), row.get("id.resp_h")
    if not isinstance(src, str) or not isinstance(dst, str):
        return None
    proto = _PROTO.get(str(row.get("proto") or "").lower(), _LOG_TRANSPORT.get(log, 0))
    return FlowKey(proto, src, _port(row.get("id.orig_p")), dst, _port(row.get("id.resp_p")))


@dataclass
class ZeekMetadata:
    """A conn/http/dns/ssl/files/smtp record kept with the case."""

    log: str
    flow: FlowKey | None
    ts: float
    uid: str
    record: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"source": ANALYZER, "log": self.log,
                "flow": self.flow.to_dict() if self.flow else None, "ts": self.ts,
                "uid": self.uid, "record": self.record}


@dataclass
class ZeekFindings:
    verdicts: list[Verdict] = field(default_factory=list)
    metadata: list[ZeekMetadata] = field(default_factory=list)
    truncated: dict[str, int] = field(default_factory=dict)
    unlinked: int = 0


def _notice_grade(row: Mapping[str, Any], overrides: Mapping[str, str]) -> tuple[Severity, int]:
    note = str(row.get("note") or "")
    if note in overrides:
        return grade(overrides[note])
    actions = row.get("actions") or []
    if "Notice::ACTION_ALARM" in actions:
        return grade(ALARM_SEVERITY)
    return grade(NOTICE_SEVERITY)


def _verdict(log: str, row: Mapping[str, Any], flow: FlowKey, ts: float,
             ctx: Mapping[str, str], notice_severity: Mapping[str, str]) -> Verdict:
    uid = str(row.get("uid") or "")
    subject = f"zeek-conn:{uid}" if uid else f"flow:{flow.bpf()}"
    if log == "notice":
        severity, score = _notice_grade(row, notice_severity)
        sig_id, sig = str(row.get("note") or ""), str(row.get("msg") or row.get("note") or "")
        category = "notice"
    elif log == "intel":
        severity, score = grade(INTEL_SEVERITY)
        indicator = row.get("seen.indicator")
        itype = row.get("seen.indicator_type")
        sig_id = f"{itype}:{indicator}"
        sig = f"Intel match: {indicator} ({itype}) seen in {row.get('seen.where')}"
        category = "intel"
    else:
        severity, score = grade(WEIRD_SEVERITY)
        sig_id = str(row.get("name") or "")
        sig = f"weird: {sig_id}" + (f" ({row['addl']})" if row.get("addl") else "")
        category = "weird"
    evidence = {"log": log, "record": dict(row)}
    return Verdict(analyzer=ANALYZER, subject_kind="flow", subject_id=subject, flow=flow,
                   ts=ts, severity=severity, score=score, signature_id=sig_id,
                   signature=sig, category=category, tags=["zeek", log], evidence=evidence,
                   step=ctx.get("step", ""), case=ctx.get("case", ""),
                   query_id=ctx.get("query_id", ""))


def _unlinked_flow(row: Mapping[str, Any]) -> FlowKey:
    """Notices about hosts (scans) name ``src``/``dst``/``p`` instead of a connection."""
    src, dst = str(row.get("src") or ""), str(row.get("dst") or "")
    port = row.get("p")
    return FlowKey(_PROTO.get(str(row.get("proto") or "").lower(), 0), src, 0, dst,
                   _port(port))


def findings(logs: ZeekLogs, *, notice_severity: Mapping[str, str] | None = None,
             step: str = "", case: str = "", query_id: str = "") -> ZeekFindings:
    """Verdicts and metadata from one run's logs."""
    ctx = {"step": step, "case": case, "query_id": query_id}
    out = ZeekFindings()
    index = FlowIndex.from_conn(logs["conn"].readrows() if "conn" in logs else [])
    for log in VERDICT_LOGS:
        if log not in logs:
            continue
        for row in logs[log].readrows():
            flow = index.link(row, log)
            if flow is None:
                out.unlinked += 1
                flow = _unlinked_flow(row)
            out.verdicts.append(_verdict(log, row, flow, index.time_of(row), ctx,
                                         notice_severity or {}))
    for log in METADATA_LOGS:
        if log not in logs:
            continue
        for n, row in enumerate(logs[log].readrows()):
            if n >= MAX_METADATA_PER_LOG:
                out.truncated[log] = out.truncated.get(log, 0) + 1
                continue
            out.metadata.append(ZeekMetadata(log, index.link(row, log), _ts(row.get("ts")),
                                             str(row.get("uid") or ""), dict(row)))
    return out
