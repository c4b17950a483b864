"""Serialisable records that cross every seam: query -> chunks -> steps -> verdicts.

Nothing here holds a live object (no file handles, no sockets): every record turns into a
plain dict with ``to_dict()`` and back with ``from_dict()``, so a chunk, a stream, a carved
file or a verdict can travel through a queue, a process boundary or a distributed engine.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field, fields
from typing import Annotated, Any, ClassVar, Literal


@dataclass(frozen=True, slots=True)
class OneOf:
    """``Annotated`` metadata of a ``str`` field: the values it takes. ``other`` (a regular
    expression, whole match) admits more, described by ``other_doc``. Conditions (``if:``)
    are checked against these when a workflow is validated."""

    values: tuple[str, ...]
    other: str = ""
    other_doc: str = ""


IP_PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6", 132: "sctp"}
_PROTO_NUMBERS = {name: number for number, name in IP_PROTO_NAMES.items()}
SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")
Severity = Literal["info", "low", "medium", "high", "critical"]
Direction = Literal["orig", "resp"]
#: A protocol as flows name it: its name when it has one, else its number as a string.
ProtoName = Annotated[str, OneOf(tuple(IP_PROTO_NAMES.values()), r"[0-9]{1,3}",
                                 "another IP protocol's number, e.g. '47'")]
#: What a verdict is about.
SUBJECT_KINDS: tuple[str, ...] = ("flow", "pcap", "stream", "file", "email")
SubjectKind = Annotated[str, OneOf(SUBJECT_KINDS)]
#: The direction a carved file travelled in (empty when unknown).
FileDirection = Annotated[str, OneOf(("orig", "resp", ""))]


@dataclass(frozen=True, slots=True)
class FlowKey:
    """A 5-tuple oriented initiator -> responder when known (``src`` opened the flow).

    ``proto`` is the IP protocol number; ports are 0 for protocols without ports. As plain
    data (``to_dict``, JSON, ``if:`` conditions) the names are those of
    :data:`DICT_FIELDS` and ``proto`` is the protocol's name.
    """

    #: The flow as plain data: each name and the attribute its value comes from.
    DICT_FIELDS: ClassVar[dict[str, str]] = {
        "proto": "proto_name", "src_ip": "src", "src_port": "sport", "dest_ip": "dst",
        "dest_port": "dport"}

    proto: int
    src: str
    sport: int
    dst: str
    dport: int

    @property
    def proto_name(self) -> ProtoName:
        return IP_PROTO_NAMES.get(self.proto, str(self.proto))

    def reversed(self) -> FlowKey:
        return FlowKey(self.proto, self.dst, self.dport, self.src, self.sport)

    def bpf(self) -> str:
        """A BPF expression selecting this flow in both directions (the pivot back to PCAP)."""
        parts = [f"host {self.src}", f"host {self.dst}"]
        if self.proto in (6, 17, 132):
            parts.insert(0, self.proto_name)
            parts += [f"port {self.sport}", f"port {self.dport}"]
        elif self.proto:
            family = "ip6" if ":" in self.src else "ip"
            parts.insert(0, f"{family} proto {self.proto}")
        return " and ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, attr) for name, attr in self.DICT_FIELDS.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlowKey:
        proto = d["proto"]
        if isinstance(proto, str):
            proto = _PROTO_NUMBERS.get(proto.lower()) or int(proto)
        return cls(int(proto), d["src_ip"], int(d["src_port"]), d["dest_ip"], int(d["dest_port"]))


class _Record:
    """to_dict/from_dict for the dataclasses below (bytes travel as base64)."""

    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, FlowKey):
                value = value.to_dict()
            elif isinstance(value, bytes):
                value = base64.b64encode(value).decode("ascii")
            elif f.name != "flow" and hasattr(value, "__dataclass_fields__"):
                value = asdict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        names = _FIELD_NAMES.get(cls)
        if names is None:  # made once a class: fields() per record cost a verdict ~3 µs
            names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
        kwargs = {name: d[name] for name in names if name in d}
        if isinstance(kwargs.get("flow"), dict):
            kwargs["flow"] = FlowKey.from_dict(kwargs["flow"])
        if isinstance(kwargs.get("data"), str):
            kwargs["data"] = base64.b64decode(kwargs["data"])
        for name in ("gaps", "missing_ranges"):
            if isinstance(kwargs.get(name), list):
                kwargs[name] = [tuple(x) for x in kwargs[name]]
        return cls(**kwargs)


#: Each record class's field names, in order (:meth:`_Record.from_dict`).
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


@dataclass(slots=True)
class PcapChunk(_Record):
    """A piece of a query result: ``data`` is a complete, valid pcap file on its own."""

    kind: ClassVar[str] = "pcap"
    query_id: str
    seq: int
    linktype: int
    snaplen: int
    data: bytes
    packets: int
    first_ts: float
    last_ts: float

    @property
    def size(self) -> int:
        """Bytes of ``data``."""
        return len(self.data)


@dataclass(slots=True)
class StreamRecord(_Record):
    """Reassembled payload of one direction of a TCP/UDP flow.

    ``gaps`` lists ``(offset, length)`` in stream coordinates where bytes were never seen;
    those bytes are absent from ``data`` (never invented), so ``len(data)`` plus the gap
    lengths is the stream length.
    """

    kind: ClassVar[str] = "stream"
    id: str
    flow: FlowKey
    direction: Direction
    data: bytes
    start_ts: float
    end_ts: float
    gaps: list[tuple[int, int]] = field(default_factory=list)
    complete: bool = True

    @property
    def size(self) -> int:
        """Bytes of ``data`` (the gaps not counted)."""
        return len(self.data)


@dataclass(slots=True)
class FileRecord(_Record):
    """A carved artifact, stored once by SHA-256 under ``path`` (content-addressed)."""

    kind: ClassVar[str] = "file"
    id: str
    sha256: str
    md5: str
    sha1: str
    size: int
    path: str
    flow: FlowKey
    ts: float
    protocol: str
    direction: FileDirection = ""
    mime_type: str = ""
    magic: str = ""
    filename: str = ""
    incomplete: bool = False
    missing_ranges: list[tuple[int, int]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class EmailRecord(_Record):
    """A message rebuilt byte for byte (``path`` holds the ``.eml``)."""

    kind: ClassVar[str] = "email"
    id: str
    path: str
    flow: FlowKey
    ts: float
    protocol: str
    mail_from: str = ""
    rcpt_to: list[str] = field(default_factory=list)
    from_: str = ""
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    subject: str = ""
    date: str = ""
    message_id: str = ""
    attachments: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    #: SHA-256 and size of the ``.eml`` (the message exactly as carried).
    sha256: str = ""
    size: int = 0
    text_body: str = ""
    html_body: str = ""
    incomplete: bool = False
    missing_ranges: list[tuple[int, int]] = field(default_factory=list)


@dataclass(slots=True)
class Verdict(_Record):
    """One analyzer's opinion about one subject, always pivotable back to PCAP."""

    kind: ClassVar[str] = "verdict"
    analyzer: str
    subject_kind: SubjectKind
    subject_id: str
    flow: FlowKey
    ts: float
    severity: Severity
    score: int
    signature_id: str = ""
    signature: str = ""
    category: str = ""
    tags: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    step: str = ""
    case: str = ""
    query_id: str = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is not one of {', '.join(SEVERITIES)}")
        if self.subject_kind not in SUBJECT_KINDS:
            raise ValueError(f"subject_kind {self.subject_kind!r} is not one of "
                             f"{', '.join(SUBJECT_KINDS)}")
        if not 0 <= int(self.score) <= 100:
            raise ValueError(f"score {self.score} is outside 0..100")


RECORD_TYPES: dict[str, type[_Record]] = {
    cls.kind: cls for cls in (PcapChunk, StreamRecord, FileRecord, EmailRecord, Verdict)
}


def record_from_dict(d: dict[str, Any]) -> Any:
    """Rebuild any record from its ``to_dict()`` form (dispatch on ``kind``)."""
    return RECORD_TYPES[d["kind"]].from_dict(d)
