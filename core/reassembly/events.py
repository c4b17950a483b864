"""What the reassembler hands out: connection events in capture order, its limits and
its per-connection counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pcapwire.records import Direction, FlowKey

EndReason = Literal["fin", "rst", "timeout", "eof", "evicted", "reused"]

#: Most bytes held out of order (waiting for a hole to fill) in one direction; beyond it
#: the oldest hole is declared a gap.
MAX_PENDING_BYTES_PER_DIRECTION = 4 * 2**20
#: Most out-of-order bytes held across all connections; beyond it the direction holding
#: the most is forced past its first hole.
MAX_PENDING_BYTES_TOTAL = 256 * 2**20
#: Most out-of-order segments held in one direction (bounds the per-segment overhead).
MAX_PENDING_SEGMENTS_PER_DIRECTION = 4096
#: Delivered bytes kept per direction to compare retransmissions against (inconsistent
#: retransmissions are counted, first-seen data wins).
RETRANSMIT_CHECK_BYTES = 64 * 1024
#: Most connections tracked at once; the least recently active one is evicted (closed).
MAX_CONNECTIONS = 1_000_000
#: A TCP connection idle this long (capture time, seconds) is closed (reason timeout).
TCP_IDLE_TIMEOUT = 3600.0
#: A UDP "connection" (both directions of a 5-tuple) idle this long is closed.
UDP_IDLE_TIMEOUT = 120.0
#: After a close, segments without SYN on the same 5-tuple within this time are late
#: packets of the old connection (final ACKs, retransmitted FINs) and are ignored.
TIME_WAIT = 120.0
#: How often (capture time, seconds) idle connections are looked for.
SWEEP_INTERVAL = 10.0


@dataclass(frozen=True)
class Limits:
    """Every memory and time limit of one :class:`~pcapwire.reassembly.Reassembler`."""

    pending_bytes_per_direction: int = MAX_PENDING_BYTES_PER_DIRECTION
    pending_bytes_total: int = MAX_PENDING_BYTES_TOTAL
    pending_segments_per_direction: int = MAX_PENDING_SEGMENTS_PER_DIRECTION
    retransmit_check_bytes: int = RETRANSMIT_CHECK_BYTES
    max_connections: int = MAX_CONNECTIONS
    tcp_idle_timeout: float = TCP_IDLE_TIMEOUT
    udp_idle_timeout: float = UDP_IDLE_TIMEOUT
    time_wait: float = TIME_WAIT


@dataclass
class HalfStats:
    """Counters of one direction (all in bytes unless named otherwise)."""

    delivered: int = 0
    gap_bytes: int = 0
    gaps: int = 0
    retransmitted: int = 0  # bytes seen again (identical or not)
    inconsistent: int = 0  # retransmitted/overlapping bytes that differed (first kept)
    overlaps: int = 0  # segments that overlapped data already held or delivered
    before_start: int = 0  # bytes before offset 0 (mid-stream start, stale packets)
    truncated_segments: int = 0  # segments whose capture was shorter than the IP length
    forced_gaps: int = 0  # gaps declared because a memory limit was reached
    segments: int = 0
    #: first few (offset, length) where inconsistent retransmissions were seen
    inconsistent_at: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class ConnStats:
    packets: int = 0
    handshake: bool = False  # SYN seen from the initiator (not mid-stream)
    orig: HalfStats = field(default_factory=HalfStats)
    resp: HalfStats = field(default_factory=HalfStats)
    late_packets: int = 0


@dataclass(frozen=True, slots=True)
class Open:
    """A connection starts. ``key`` is oriented initiator -> responder (see the package
    docstring for how the initiator is chosen when no SYN was seen)."""

    type: ClassVar[str] = "open"
    conn: int
    key: FlowKey
    ts: float
    handshake: bool


@dataclass(frozen=True, slots=True)
class Data:
    """In-order bytes of one direction, starting at stream ``offset``; ``ts`` is the
    capture time of the segment that carried them."""

    type: ClassVar[str] = "data"
    conn: int
    key: FlowKey
    direction: Direction
    offset: int
    data: bytes
    ts: float


@dataclass(frozen=True, slots=True)
class Gap:
    """``length`` bytes at stream ``offset`` were never seen (not invented: no bytes)."""

    type: ClassVar[str] = "gap"
    conn: int
    key: FlowKey
    direction: Direction
    offset: int
    length: int
    ts: float


@dataclass(frozen=True, slots=True)
class End:
    """No more bytes in this direction (``length`` is its final stream length)."""

    type: ClassVar[str] = "end"
    conn: int
    key: FlowKey
    direction: Direction
    ts: float
    reason: EndReason
    length: int


@dataclass(frozen=True, slots=True)
class Close:
    """The connection is over; both directions have had their :class:`End`."""

    type: ClassVar[str] = "close"
    conn: int
    key: FlowKey
    ts: float
    reason: EndReason
    stats: ConnStats
    first_ts: float


Event = Open | Data | Gap | End | Close
