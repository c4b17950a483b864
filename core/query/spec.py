"""What a query asks for, in one serialisable record, and the parsing of user input into it.

Explicit filters are flow-level and exact through the index: ``hosts`` (every one must be
an endpoint of the flow), ``nets`` (every one must contain an endpoint), ``ports`` (any of
them is an endpoint port, like ``port A or port B``), ``protos`` (any of them),
``five_tuple`` (either direction), ``flow_ids``. They select whole flows, so IP fragments
and VLAN-tagged frames of a flow come with it. ``bpf`` is applied per packet by libpcap
with tcpdump's semantics. All terms combine with AND; the time window is
``start <= ts < end``.
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pcapwire.errors import QueryError
from pcapwire.query.bpfplan import check_nesting
from pcapwire.records import IP_PROTO_NAMES, FlowKey

DEFAULT_CHUNK_BYTES = 256 * 1024
MIN_CHUNK_BYTES = 4096
MAX_CHUNK_BYTES = 64 * 2**20
PROTO_BY_NAME = {v: k for k, v in IP_PROTO_NAMES.items()} | {"igmp": 2, "gre": 47, "esp": 50}
#: Values of one explicit filter (hosts, nets, ports). Hosts and nets must all match, so a
#: flow with its two endpoints never needs many; ports match any. The API's schema allows
#: as many; more would make the index query deeper than SQLite parses.
MAX_FILTER_VALUES = 64
MAX_TIME_NS = 2**63 - 1  # timestamps are int64 ns in the index and the native scan


@dataclass
class QuerySpec:
    bpf: str = ""
    hosts: list[str] = field(default_factory=list)
    nets: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    protos: list[int] = field(default_factory=list)
    five_tuple: FlowKey | None = None
    flow_ids: list[int] = field(default_factory=list)
    start_ns: int | None = None
    end_ns: int | None = None
    case: str = "default"
    event: str = ""
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    max_bytes: int | None = None
    follow: bool = False  # then keep streaming what is recorded, until stopped (.follow)

    def __post_init__(self) -> None:
        for what, values in (("host", self.hosts), ("net", self.nets), ("port", self.ports)):
            if len(values) > MAX_FILTER_VALUES:
                raise QueryError(f"{len(values)} {what} filters are more than the limit of "
                                 f"{MAX_FILTER_VALUES} (max_filter_values); every one must "
                                 f"match, so give those of one flow, and for alternatives a "
                                 f"BPF expression ('{what} A or {what} B ...')")
        for h in self.hosts:
            _parse(ipaddress.ip_address, h, "host")
        for n in self.nets:
            _parse(lambda v: ipaddress.ip_network(v, strict=False), n, "net")
        for p in self.ports:
            if not 0 <= int(p) <= 65535:
                raise QueryError(f"port {p} is outside 0..65535")
        if self.five_tuple is not None:
            _check_five_tuple(self.five_tuple)
        for ns in (self.start_ns, self.end_ns):
            if ns is not None and not -MAX_TIME_NS - 1 <= ns <= MAX_TIME_NS:
                raise QueryError(f"time {ns // 10**9} (Unix seconds) is outside "
                                 "1677-09-21..2262-04-11")
        if self.bpf and (why := check_nesting(self.bpf)) is not None:
            raise QueryError(why)
        if not MIN_CHUNK_BYTES <= self.chunk_bytes <= MAX_CHUNK_BYTES:
            raise QueryError(f"chunk size {self.chunk_bytes} is outside "
                             f"{MIN_CHUNK_BYTES}..{MAX_CHUNK_BYTES} bytes")
        if (self.start_ns is not None and self.end_ns is not None
                and self.end_ns <= self.start_ns):
            raise QueryError("the time window is empty: end must be after start")
        if self.follow and self.end_ns is not None:
            raise QueryError("a follow has no end time: it streams what is recorded until "
                             "it is cancelled; drop the end, or the follow")

    @property
    def indexed(self) -> bool:
        return bool(self.hosts or self.nets or self.ports or self.protos or self.five_tuple
                    or self.flow_ids)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["five_tuple"] = self.five_tuple.to_dict() if self.five_tuple else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuerySpec:
        d = dict(d)
        if d.get("five_tuple"):
            d["five_tuple"] = FlowKey.from_dict(d["five_tuple"])
        return cls(**d)


def _check_five_tuple(key: FlowKey) -> None:
    for ip in (key.src, key.dst):
        _parse(ipaddress.ip_address, ip, "five-tuple address")
    for port in (key.sport, key.dport):
        if not 0 <= int(port) <= 65535:
            raise QueryError(f"five-tuple port {port} is outside 0..65535")
    if not 0 <= int(key.proto) <= 255:
        raise QueryError(f"five-tuple IP protocol {key.proto} is outside 0..255")


def _parse(fn: Any, value: str, what: str) -> Any:
    try:
        return fn(value)
    except ValueError as exc:
        raise QueryError(f"invalid {what} {value!r}: {exc}") from None


def parse_proto(value: str | int) -> int:
    """``tcp``, ``udp``, ``icmp``, ``icmp6``, ``sctp``... or an IP protocol number."""
    if isinstance(value, int) or (str(value).isascii() and str(value).isdigit()):
        num = int(value)
        if not 0 <= num <= 255:
            raise QueryError(f"IP protocol {num} is outside 0..255")
        return num
    try:
        return PROTO_BY_NAME[str(value).lower()]
    except KeyError:
        raise QueryError(f"unknown protocol {value!r}; use one of "
                         f"{', '.join(sorted(PROTO_BY_NAME))} or a number") from None


def parse_five_tuple(text: str) -> FlowKey:
    """``tcp:10.0.0.1:1234:10.0.0.2:80`` or ``tcp:[2001:db8::1]:1234:[2001:db8::2]:80``."""
    m = re.fullmatch(r"(\w+):(\[[^\]]+\]|[^:\[\]]+):(\d+):(\[[^\]]+\]|[^:\[\]]+):(\d+)", text)
    if m is None:
        raise QueryError(f"invalid five-tuple {text!r}; use PROTO:SRC:SPORT:DST:DPORT, e.g. "
                         "tcp:10.0.0.1:51000:10.0.0.2:80")
    proto, src, sport, dst, dport = m.groups()
    return FlowKey(parse_proto(proto), src.strip("[]"), int(sport), dst.strip("[]"), int(dport))


def parse_time_ns(value: str | float | int) -> int:
    """ISO 8601 (naive means UTC), Unix seconds (fractions allowed) or ``now`` (say, a
    follow of what is recorded from now on) -> ns since epoch."""
    if isinstance(value, int | float):
        return int(round(float(value) * 1e9))
    text = str(value).strip()
    if text.lower() == "now":
        return time.time_ns()
    try:
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return int(Decimal(text) * 10**9)
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"invalid time {value!r}: use ISO 8601 (2024-05-01T12:00:00Z), "
                         "Unix seconds (1714564800.5) or now") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000
