"""Event-to-PCAP: turn an event as other tools emit it into a query.

Accepted shapes (detected by their fields):

* Suricata EVE (``event_type`` present): ``src_ip``, ``src_port``, ``dest_ip``,
  ``dest_port``, ``proto``, ``timestamp``; ``flow.start``/``flow.end`` widen the window;
* Zeek ``conn.log`` as JSON (``id.orig_h`` present, flat or nested ``id`` object): ``ts``
  (epoch or ISO 8601), ``duration``, ``proto``;
* ECS (``source.ip`` present, nested or as a dotted key), as SIEMs store events and as
  pcapwire itself exports verdicts (``pcapwire run --json``, the API's verdicts):
  ``source.ip``/``source.port``, ``destination.ip``/``destination.port`` (or ``client.*``
  and ``server.*``), ``network.iana_number`` or ``network.transport``, ``@timestamp``;
  ``event.start``/``event.end`` and ``event.duration`` (nanoseconds) widen the window;
* plain: ``{"five_tuple": {...} | "tcp:SRC:SPORT:DST:DPORT", "timestamp": T,
  "duration": S?}``.

The query selects the flow (either direction) in ``[start - margin, end + margin)``. For
protocols without ports (ICMP...) it selects the two hosts and the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pcapwire.errors import QueryError
from pcapwire.query import QuerySpec, parse_proto, parse_time_ns
from pcapwire.query.spec import parse_five_tuple
from pcapwire.records import FlowKey

PORT_PROTOS = (6, 17, 132)


@dataclass
class ParsedEvent:
    format: str  # suricata-eve | zeek-conn | ecs | five-tuple
    flow: FlowKey
    start_ns: int
    end_ns: int
    name: str  # a default event name for the history


def _get(d: dict[str, Any], key: str, fmt: str) -> Any:
    if key not in d or d[key] is None:
        raise QueryError(f"{fmt} event has no {key!r} field")
    return d[key]


def _port(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise QueryError(f"{what} must be a port number")
    try:
        port = int(value)
    except ValueError:
        raise QueryError(f"{what} {value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise QueryError(f"{what} {port} is outside 0..65535")
    return port


def _key(proto: Any, src: Any, sport: Any, dst: Any, dport: Any) -> FlowKey:
    if not isinstance(proto, str | int) or isinstance(proto, bool):
        raise QueryError("proto must be a protocol name or number")
    p = parse_proto(proto)
    QuerySpec(hosts=[str(src), str(dst)])  # validates both addresses
    if p not in PORT_PROTOS:
        return FlowKey(p, str(src), 0, str(dst), 0)
    return FlowKey(p, str(src), _port(sport, "source port"), str(dst),
                   _port(dport, "destination port"))


def _time(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise QueryError(f"{what} must be ISO 8601 or Unix seconds")
    try:
        return parse_time_ns(value)
    except (OverflowError, ValueError):
        raise QueryError(f"{what} {value!r} is not a usable time") from None


def _duration_ns(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
        raise QueryError("duration must be a number of seconds >= 0")
    return int(value * 1e9)


def _ecs(ev: dict[str, Any], path: str) -> Any:
    """An ECS field, nested (``{"source": {"ip": ..}}``) or flat (``{"source.ip": ..}``)."""
    if path in ev:
        return ev[path]
    head, _, rest = path.partition(".")
    inner = ev.get(head)
    return _ecs(inner, rest) if rest and isinstance(inner, dict) else None


#: ECS ``network.transport`` names (IANA keywords, lowercase) pcapwire's names lack.
_ECS_TRANSPORTS = {"ipv6-icmp": 58}


def _ecs_event(ev: dict[str, Any]) -> ParsedEvent:
    fmt = "ecs"
    src, dst = ("source", "destination") if _ecs(ev, "source.ip") is not None \
        else ("client", "server")
    proto = _ecs(ev, "network.iana_number")
    if proto is None:
        proto = _ecs(ev, "network.transport")
        if isinstance(proto, str):
            proto = _ECS_TRANSPORTS.get(proto.lower(), proto)
    if proto is None:
        raise QueryError("ecs event has no 'network.iana_number' or 'network.transport' "
                         "field")
    if isinstance(proto, str) and proto.isascii() and proto.isdigit():
        proto = int(proto)
    fields = {name: _ecs(ev, name) for name in (f"{src}.ip", f"{src}.port", f"{dst}.ip",
                                                f"{dst}.port", "@timestamp")}
    key = _key(proto, _get(fields, f"{src}.ip", fmt), fields[f"{src}.port"] or 0,
               _get(fields, f"{dst}.ip", fmt), fields[f"{dst}.port"] or 0)
    t = _time(_get(fields, "@timestamp", fmt), "@timestamp")
    start = _ecs(ev, "event.start")
    end = _ecs(ev, "event.end")
    start_ns = _time(start, "event.start") if start else t
    end_ns = _time(end, "event.end") if end else t
    duration = _ecs(ev, "event.duration")  # ECS: nanoseconds
    if duration is not None:
        end_ns = max(end_ns, start_ns + _duration_ns(duration / 1e9 if isinstance(
            duration, int | float) and not isinstance(duration, bool) else duration))
    label = next((str(v) for v in (_ecs(ev, "rule.id"), _ecs(ev, "event.id"),
                                   _ecs(ev, "event.dataset")) if v), "event")
    return ParsedEvent(fmt, key, min(start_ns, t), max(end_ns, t), f"ecs:{label}"[:200])


def parse_event(ev: dict[str, Any]) -> ParsedEvent:
    if "event_type" in ev:
        fmt = "suricata-eve"
        key = _key(_get(ev, "proto", fmt), _get(ev, "src_ip", fmt), ev.get("src_port", 0),
                   _get(ev, "dest_ip", fmt), ev.get("dest_port", 0))
        t = _time(_get(ev, "timestamp", fmt), "timestamp")
        flow: dict[str, Any] = ev["flow"] if isinstance(ev.get("flow"), dict) else {}
        start = _time(flow["start"], "flow.start") if flow.get("start") else t
        end = _time(flow["end"], "flow.end") if flow.get("end") else t
        alert: dict[str, Any] = ev["alert"] if isinstance(ev.get("alert"), dict) else {}
        name = f"suricata:{alert.get('signature_id', ev['event_type'])}"
        return ParsedEvent(fmt, key, min(start, t), max(end, t), name)
    if "id.orig_h" in ev or isinstance(ev.get("id"), dict):
        fmt = "zeek-conn"
        ids = ev["id"] if isinstance(ev.get("id"), dict) else {
            k[3:]: v for k, v in ev.items() if k.startswith("id.")}
        key = _key(_get(ev, "proto", fmt), _get(ids, "orig_h", fmt), ids.get("orig_p", 0),
                   _get(ids, "resp_h", fmt), ids.get("resp_p", 0))
        t = _time(_get(ev, "ts", fmt), "ts")
        return ParsedEvent(fmt, key, t, t + _duration_ns(ev.get("duration")),
                           f"zeek:{ev.get('uid', 'conn')}")
    if _ecs(ev, "source.ip") is not None or _ecs(ev, "client.ip") is not None:
        return _ecs_event(ev)
    if "five_tuple" in ev:
        fmt = "five-tuple"
        ft = ev["five_tuple"]
        if isinstance(ft, str):
            k = parse_five_tuple(ft)
            key = _key(k.proto, k.src, k.sport, k.dst, k.dport)
        elif isinstance(ft, dict):
            key = _key(_get(ft, "proto", fmt), _get(ft, "src_ip", fmt), ft.get("src_port", 0),
                       _get(ft, "dest_ip", fmt), ft.get("dest_port", 0))
        else:
            raise QueryError("five_tuple must be an object or 'proto:src:sport:dst:dport'")
        t = _time(_get(ev, "timestamp", fmt), "timestamp")
        return ParsedEvent(fmt, key, t, t + _duration_ns(ev.get("duration")), "")
    raise QueryError("unrecognised event: expected a Suricata EVE record (event_type, src_ip "
                     "...), a Zeek conn.log JSON record (id.orig_h ...), an ECS document "
                     "(source.ip, destination.ip, network.transport, @timestamp ...) or "
                     "{five_tuple, timestamp}")


def event_spec(ev: dict[str, Any], margin_s: float, case: str, event: str | None,
               max_bytes: int) -> tuple[QuerySpec, ParsedEvent]:
    parsed = parse_event(ev)
    margin = int(margin_s * 1e9)
    k = parsed.flow
    if parsed.end_ns + margin + 1 >= 2**63:
        raise QueryError("the event time is after 2262-04-11")
    common: dict[str, Any] = {"start_ns": max(0, parsed.start_ns - margin),
                              "end_ns": parsed.end_ns + margin + 1, "case": case,
                              "event": parsed.name if event is None else event,
                              "max_bytes": max_bytes}
    if k.proto in PORT_PROTOS:
        return QuerySpec(five_tuple=k, **common), parsed
    return QuerySpec(hosts=sorted({k.src, k.dst}), protos=[k.proto], **common), parsed
