"""EVE JSON -> verdicts (``alert``) and case metadata (``http``, ``dns``, ``tls``,
``fileinfo``, ``anomaly``, ``smtp``).

Severity mapping (tested in test_suricata_eve.py; scores are the workflow's common
:data:`pcapwire.workflow.severity.SCORE_BY_SEVERITY`).
Suricata's ``alert.severity`` is the rule's *priority* (``priority:`` keyword, else the
classtype's priority from classification.config; 1 is the most urgent):

=========================  ==========  =====
priority                   severity    score
=========================  ==========  =====
1                          high        80
2                          medium      60
3                          low         40
4 and above, or missing    info        20
=========================  ==========  =====

A rule whose metadata says ``signature_severity Critical`` (the Emerging Threats
convention, carried in EVE when ``alert.metadata`` is on) is raised to critical / 95.
Nothing is ever lowered, and an unknown value is never coerced: it keeps the priority
mapping.

Time (``Verdict.ts``, the pivot back to PCAP): the time of the packet the alert was
raised on (EVE ``timestamp``), or, for an alert raised on a pseudo packet (EVE
``pkt_src`` "stream (flow timeout)", the flushes at the end of the input), the flow's
start (``flow.start``): Suricata stamps pseudo packets with its engine clock, which at
the end of a run can be the run's first packet (:func:`event_ts`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pcapwire.records import FlowKey, Severity, Verdict
from pcapwire.workflow.severity import grade

log = logging.getLogger(__name__)

ANALYZER = "suricata"
#: priority -> (severity, score); priorities >= 4 (and none) map to SEVERITY_DEFAULT.
SEVERITY_BY_PRIORITY: dict[int, tuple[Severity, int]] = {
    1: grade("high"), 2: grade("medium"), 3: grade("low")}
SEVERITY_DEFAULT: tuple[Severity, int] = grade("info")
SEVERITY_CRITICAL: tuple[Severity, int] = grade("critical")
#: EVE event types kept as case metadata (everything else but alerts is ignored).
METADATA_TYPES = frozenset({"http", "dns", "tls", "fileinfo", "anomaly", "smtp"})
#: Protocol objects an alert event may carry, kept as the verdict's evidence.
_EVIDENCE_OBJECTS = (*sorted(METADATA_TYPES), "smb", "ftp", "ssh", "http2", "quic")
_PROTO_NUMBERS = {"TCP": 6, "UDP": 17, "ICMP": 1, "IPV6-ICMP": 58, "ICMPV6": 58, "SCTP": 132}
_PROTO_BY_NAME = {**_PROTO_NUMBERS, "IPv6-ICMP": 58}
#: EVE ``pkt_src`` of a packet that came off the capture (Suricata's ``PktSrcToString``):
#: the wire, or one decoded from it (tunnel, reassembled fragments). Every other source
#: is a pseudo packet Suricata makes itself ("stream (flow timeout)" and the flushes at
#: the end of input) whose ``timestamp`` is the engine's clock, not the flow's.
PACKET_SOURCES = frozenset({"wire/pcap", "gre tunnel", "ipv4 tunnel", "ipv6 tunnel",
                            "teredo tunnel", "defrag", "geneve encapsulation",
                            "vxlan encapsulation"})


def severity_for(priority: Any, metadata: dict[str, Any] | None = None) -> tuple[Severity, int]:
    """(severity, score) for a Suricata priority and optional rule metadata."""
    if isinstance(metadata, dict):
        values = metadata.get("signature_severity") or []
        if any(str(v).lower() == "critical" for v in values):
            return SEVERITY_CRITICAL
    if isinstance(priority, int) and not isinstance(priority, bool):
        return SEVERITY_BY_PRIORITY.get(priority, SEVERITY_DEFAULT)
    return SEVERITY_DEFAULT


def parse_ts(value: Any) -> float:
    """EVE ``timestamp`` (``2013-03-07T21:42:07.009855+0000``) as Unix seconds."""
    if not isinstance(value, str):
        return 0.0
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        log.warning("suricata: unparseable EVE timestamp %r", value)
        return 0.0


def from_packet(event: dict[str, Any]) -> bool:
    """Whether the event was raised on a packet of the capture (not a pseudo packet)."""
    src = event.get("pkt_src")
    if isinstance(src, str):
        return src in PACKET_SOURCES
    return isinstance(event.get("pcap_cnt"), int)  # pseudo packets have no pcap_cnt


def event_ts(event: dict[str, Any]) -> float:
    """The time of the packet or flow an event is about, as Unix seconds.

    Raised on a packet of the capture: EVE's ``timestamp``, that packet's own time. Raised
    on a pseudo packet (a flow timing out, the flush at the end of the input): the flow's
    ``flow.start``. Suricata stamps pseudo packets with its engine clock, not the flow's
    time: offline, an alert on a flow flushed at the end of a run was seen to carry the
    run's first packet time, years away from the flow when a query spans captures, and
    its pivot found nothing (test_an_alert_raised_when_the_input_ends_has_its_flows_time)."""
    flow = event.get("flow")
    if from_packet(event) or not isinstance(flow, dict) or not flow.get("start"):
        return parse_ts(event.get("timestamp"))
    return parse_ts(flow["start"]) or parse_ts(event.get("timestamp"))


def proto_number(value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value in _PROTO_BY_NAME:  # as Suricata writes it
        return _PROTO_BY_NAME[value]
    text = str(value or "").upper()
    if text.isascii() and text.isdigit():
        return int(text)
    return _PROTO_NUMBERS.get(text, 0)


def _port(value: Any) -> int:
    return value if isinstance(value, int) and 0 <= value <= 65535 else 0


def flow_key(event: dict[str, Any]) -> FlowKey:
    """The flow's 5-tuple, initiator first.

    Alerts carry a ``flow`` object with the flow's own orientation; other events give the
    packet's addresses and, for ``to_client`` packets, ``direction`` says to swap them.
    """
    proto = proto_number(event.get("proto"))
    flow = event.get("flow")
    if isinstance(flow, dict) and "src_ip" in flow and "dest_ip" in flow:
        return FlowKey(proto, str(flow["src_ip"]), _port(flow.get("src_port")),
                       str(flow["dest_ip"]), _port(flow.get("dest_port")))
    key = FlowKey(proto, str(event.get("src_ip", "")), _port(event.get("src_port")),
                  str(event.get("dest_ip", "")), _port(event.get("dest_port")))
    return key.reversed() if event.get("direction") == "to_client" else key


def flow_subject(event: dict[str, Any]) -> str:
    fid = event.get("flow_id")
    return f"suricata-flow:{fid}" if fid is not None else f"flow:{flow_key(event).bpf()}"


def _alert_metadata(alert: dict[str, Any]) -> dict[str, Any] | None:
    metadata = alert.get("metadata")
    return metadata if isinstance(metadata, dict) else None


def alert_evidence(event: dict[str, Any]) -> dict[str, Any]:
    """An ``alert`` event's evidence (a verdict's, :func:`alert_verdict`): the alert's
    ids, the packet it was raised on, its rule metadata and app-layer records. For a
    caller that takes alerts without verdicts (a trigger hunt's file mode)."""
    get = event.get
    alert = get("alert") or {}
    evidence: dict[str, Any] = {
        "gid": alert.get("gid"), "sid": alert.get("signature_id"), "rev": alert.get("rev"),
        "priority": alert.get("severity"), "action": alert.get("action"),
        "flow_id": get("flow_id"), "pcap_cnt": get("pcap_cnt"), "pkt_src": get("pkt_src"),
        "app_proto": get("app_proto"), "direction": get("direction"),
        "packet": {"src_ip": get("src_ip"), "src_port": get("src_port"),
                   "dest_ip": get("dest_ip"), "dest_port": get("dest_port")},
    }
    metadata = _alert_metadata(alert)
    if metadata:
        evidence["metadata"] = metadata
    for proto in _EVIDENCE_OBJECTS:
        sub = get(proto)
        if isinstance(sub, dict):
            evidence[proto] = sub
    return evidence


def alert_verdict(event: dict[str, Any], *, step: str = "", case: str = "",
                  query_id: str = "") -> Verdict:
    """One ``alert`` event as a verdict (see the module docstring for severity)."""
    alert = event.get("alert") or {}
    severity, score = severity_for(alert.get("severity"), _alert_metadata(alert))
    sid = alert.get("signature_id")
    app_proto = event.get("app_proto")
    tags = ["suricata", str(app_proto)] if app_proto else ["suricata"]
    return Verdict(
        analyzer=ANALYZER, subject_kind="flow", subject_id=flow_subject(event),
        flow=flow_key(event), ts=event_ts(event), severity=severity,
        score=score, signature_id=str(sid if sid is not None else ""),
        signature=str(alert.get("signature", "")), category=str(alert.get("category", "")),
        tags=tags, evidence=alert_evidence(event), step=step, case=case, query_id=query_id)


def sid_counts(verdicts: Iterable[Verdict]) -> dict[int, int]:
    """Alerts per signature id among ``verdicts`` (what Suricata's fidelity is judged on)."""
    out: dict[int, int] = {}
    for v in verdicts:
        sid = v.evidence.get("sid")
        if isinstance(sid, int):
            out[sid] = out.get(sid, 0) + 1
    return out


@dataclass
class EveMetadata:
    """A non-alert EVE record kept with the case, linked to its flow by 5-tuple."""

    event_type: str
    flow: FlowKey
    ts: float
    flow_id: int | None
    app_proto: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"source": ANALYZER, "event_type": self.event_type, "flow": self.flow.to_dict(),
                "ts": self.ts, "flow_id": self.flow_id, "app_proto": self.app_proto,
                "data": self.data}


def metadata_record(event: dict[str, Any]) -> EveMetadata | None:
    etype = event.get("event_type")
    if etype not in METADATA_TYPES:
        return None
    body = event.get(etype)
    data: dict[str, Any] = dict(body) if isinstance(body, dict) else {}
    if etype == "fileinfo" and isinstance(event.get("http"), dict):
        data["http"] = event["http"]
    return EveMetadata(str(etype), flow_key(event), event_ts(event),
                       event.get("flow_id"), str(event.get("app_proto", "")), data)


@dataclass
class EveSummary:
    """What one run's EVE stream produced."""

    verdicts: list[Verdict] = field(default_factory=list)
    metadata: list[EveMetadata] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, event: dict[str, Any], **ctx: str) -> Verdict | EveMetadata | None:
        etype = str(event.get("event_type", ""))
        self.counts[etype] = self.counts.get(etype, 0) + 1
        if etype == "alert":
            verdict = alert_verdict(event, **ctx)
            self.verdicts.append(verdict)
            return verdict
        meta = metadata_record(event)
        if meta is not None:
            self.metadata.append(meta)
        return meta

    def sid_counts(self) -> dict[int, int]:
        return sid_counts(self.verdicts)
