"""The connection table: segments in, ordered events out (see the package docstring)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pcapwire.reassembly.events import (
    SWEEP_INTERVAL,
    Close,
    ConnStats,
    Data,
    End,
    Event,
    Gap,
    Limits,
    Open,
)
from pcapwire.reassembly.packets import (
    DecodeStats,
    Segment,
    address,
    segments_from_chunk,
    segments_from_file,
)
from pcapwire.reassembly.tcp import (
    _HALF_SEQ,
    MAX_ACK_AHEAD,
    SEQ_MOD,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Half,
    TcpConn,
)
from pcapwire.records import FlowKey, PcapChunk

log = logging.getLogger(__name__)

#: Ports below this are taken as the service side when a flow starts without a SYN.
SERVICE_PORT_LIMIT = 1024
#: Segments processed between two hand-overs of events by the ``*_lists`` feeders.
LIST_SEGMENTS = 256
_NOT_FAST = TCP_SYN | TCP_FIN | TCP_RST


@dataclass
class ReassemblerStats:
    decode: DecodeStats = field(default_factory=DecodeStats)
    tcp_connections: int = 0
    udp_flows: int = 0
    late_packets: int = 0  # after a close, within TIME_WAIT, ignored
    evicted: int = 0  # closed because of MAX_CONNECTIONS
    forced_gaps_total: int = 0  # gaps forced by MAX_PENDING_BYTES_TOTAL
    pending_bytes: int = 0  # held out of order right now


class _Udp:
    __slots__ = ("cid", "key", "orig_ep", "first_ts", "last_ts", "next", "stats", "ckey")

    def __init__(self, cid: int, key: FlowKey, orig_ep: tuple[bytes, int], ts: float,
                 ckey: tuple) -> None:
        self.cid, self.key, self.orig_ep, self.ckey = cid, key, orig_ep, ckey
        self.first_ts = self.last_ts = ts
        self.next = {"orig": 0, "resp": 0}
        self.stats = ConnStats()


def _orient(seg: Segment) -> bool:
    """True when the sender of ``seg`` is the initiator."""
    if seg.proto == 6 and seg.flags & TCP_SYN:
        return not seg.flags & TCP_ACK
    return not (seg.sport < SERVICE_PORT_LIMIT <= seg.dport)


class Reassembler:
    """TCP and UDP reassembly over a capture; one instance per input (run, file).

    ``feed(segment)``, ``feed_chunk(chunk)``, ``feed_file(path)`` return or yield
    :data:`~pcapwire.reassembly.events.Event` objects in capture order; ``flush()`` ends
    every connection still open (end of input).
    """

    def __init__(self, limits: Limits | None = None, *, udp: bool = True) -> None:
        self.limits = limits or Limits()
        self.udp_enabled = udp
        self.tcp: OrderedDict[tuple, TcpConn] = OrderedDict()  # LRU: oldest activity first
        self.udp: OrderedDict[tuple, _Udp] = OrderedDict()
        self.closed: OrderedDict[tuple, float] = OrderedDict()  # TIME_WAIT tombstones
        self.stats = ReassemblerStats()
        self._cid = 0
        self._last_sweep: float | None = None
        #: (src, sport, dst, dport) of a live TCP connection -> (conn, sender's half,
        #: peer's half): the fast path's lookup (see :meth:`_feed_all`)
        self._fast: dict[tuple, tuple[TcpConn, Half, Half]] = {}

    # ---- input --------------------------------------------------------------------------
    def feed_chunk(self, chunk: PcapChunk) -> Iterator[Event]:
        for events in self._feed_all(segments_from_chunk(chunk, self.stats.decode)):
            yield from events

    def feed_file(self, path: str | Path) -> Iterator[Event]:
        """Every event of a capture file, ``flush()`` included."""
        for events in self.feed_file_lists(path):
            yield from events

    def feed_file_lists(self, path: str | Path) -> Iterator[list[Event]]:
        """The events of :meth:`feed_file` in lists (one per few hundred segments), for
        a consumer that hands them over in bulk (e.g. to another thread)."""
        yield from self._feed_all(segments_from_file(path, self.stats.decode))
        yield self.flush()

    def feed_segments(self, segments: Iterable[Segment]) -> Iterator[Event]:
        for events in self._feed_all(segments):
            yield from events

    async def feed_chunks(self, chunks: AsyncIterable[PcapChunk]) -> AsyncIterator[Event]:
        """Every event of a chunk stream, ``flush()`` included."""
        async for chunk in chunks:
            for ev in self.feed_chunk(chunk):
                yield ev
        for ev in self.flush():
            yield ev

    def feed(self, seg: Segment) -> list[Event]:
        out: list[Event] = []
        self._feed(seg, out)
        return out

    def _feed(self, seg: Segment, out: list[Event]) -> None:
        if self._last_sweep is None:
            self._last_sweep = seg.ts
        elif seg.ts - self._last_sweep >= SWEEP_INTERVAL:
            self._sweep(seg.ts, out)
            self._last_sweep = seg.ts
        a, b = (seg.src, seg.sport), (seg.dst, seg.dport)
        ckey = (seg.proto, *(a + b if a <= b else b + a))
        if seg.proto == 6:
            self._tcp(seg, ckey, out)
        elif self.udp_enabled:
            self._udp(seg, ckey, out)

    def _feed_all(self, segments: Iterable[Segment]) -> Iterator[list[Event]]:
        """:meth:`feed` for many segments, with a fast path for the common TCP segment
        (a live connection, no SYN/FIN/RST, nothing held out of order in the sender's
        direction, its bytes next in order and fully captured): exactly what
        :meth:`TcpConn.segment` does for it, without the general machinery. Everything
        else goes through :meth:`_feed`."""
        out: list[Event] = []
        fast = self._fast
        stats = self.stats
        move = self.tcp.move_to_end
        pending_limit = self.limits.pending_bytes_total
        n = 0
        for seg in segments:
            n += 1
            if n >= LIST_SEGMENTS:
                n = 0
                if out:
                    yield out
                    out = []
            (ts, _v, proto, src, sport, dst, dport, seq, ack, flags, payload,
             wire_len) = seg
            entry = fast.get((src, sport, dst, dport)) if proto == 6 else None
            if entry is None or flags & _NOT_FAST or ts - self._last_sweep >= SWEEP_INTERVAL:
                self._feed(seg, out)
                continue
            conn, h, peer = entry
            size = len(payload)
            if (h.starts or h.fin_off is not None or size != wire_len
                    or (size and (seq - h.base - h.next) % SEQ_MOD)):
                self._feed(seg, out)
                continue
            move(conn.lru_key)
            conn.last_ts = ts
            conn.stats.packets += 1
            if flags & TCP_ACK and peer.base is not None:
                diff = (ack - peer.base - peer.next) % SEQ_MOD
                ack_off = peer.next + (diff - SEQ_MOD if diff >= _HALF_SEQ else diff)
                if peer.fin_off is not None and peer.fin_off < ack_off:
                    ack_off = peer.fin_off
                if peer.max_acked < ack_off <= max(peer.high, peer.next) + MAX_ACK_AHEAD:
                    peer.max_acked = ack_off
                    if peer.starts:
                        stats.pending_bytes -= peer.deliver(conn, ts, out)
            if size:
                h.stats.segments += 1
                end = h.next + size
                if end > h.high:
                    h.high = end
                h.emit_data(conn, payload, ts, out)
            if stats.pending_bytes > pending_limit:
                self._relieve_memory(out)
        if out:
            yield out

    def flush(self, ts: float | None = None) -> list[Event]:
        """End of input: close every connection (reason ``eof``), oldest first."""
        out: list[Event] = []
        for conn in list(self.tcp.values()):
            self._close_tcp(conn, conn.last_ts if ts is None else ts, "eof", out)
        for flow in list(self.udp.values()):
            self._close_udp(flow, flow.last_ts if ts is None else ts, "eof", out)
        self.closed.clear()
        return out

    # ---- TCP ----------------------------------------------------------------------------
    def _new_id(self) -> int:
        self._cid += 1
        return self._cid

    def _flow_key(self, seg: Segment, sender_is_orig: bool) -> tuple[FlowKey, tuple]:
        src, dst = address(seg.src, seg.ipver), address(seg.dst, seg.ipver)
        if sender_is_orig:
            return FlowKey(seg.proto, src, seg.sport, dst, seg.dport), (seg.src, seg.sport)
        return FlowKey(seg.proto, dst, seg.dport, src, seg.sport), (seg.dst, seg.dport)

    def _tcp(self, seg: Segment, ckey: tuple, out: list[Event]) -> None:
        conn = self.tcp.get(ckey)
        syn_only = seg.flags & (TCP_SYN | TCP_ACK) == TCP_SYN
        if conn is not None and syn_only:
            h, _ = conn.halves(seg.src, seg.sport)
            reused = h is conn.resp or (h.base is not None and (seg.seq + 1) % 2**32 != h.base
                                        and (h.next or h.starts or h.ended))
            if reused:
                self._close_tcp(conn, seg.ts, "reused", out)
                conn = None
        if conn is None:
            tomb = self.closed.get(ckey)
            if tomb is not None and not syn_only and seg.ts - tomb < self.limits.time_wait:
                self.stats.late_packets += 1
                return
            self.closed.pop(ckey, None)
            if len(self.tcp) >= self.limits.max_connections:
                self._evict(seg.ts, out)
            key, orig_ep = self._flow_key(seg, _orient(seg))
            conn = TcpConn(self._new_id(), key, orig_ep, seg.ts, self.limits,
                           handshake=bool(seg.flags & TCP_SYN))
            conn.lru_key = ckey
            self.tcp[ckey] = conn
            self.stats.tcp_connections += 1
            out.append(Open(conn.cid, key, seg.ts, conn.stats.handshake))
        else:
            self.tcp.move_to_end(ckey)
        h, peer = conn.halves(seg.src, seg.sport)
        if seg.flags & TCP_RST:
            conn.last_ts = seg.ts
            conn.stats.packets += 1
            self._close_tcp(conn, seg.ts, "rst", out)
            return
        self.stats.pending_bytes += conn.segment(h, peer, seg.seq, seg.ack, seg.flags,
                                                 seg.payload, seg.wire_len, seg.ts, out)
        if conn.orig.ended and conn.resp.ended:
            self._close_tcp(conn, seg.ts, "fin", out)
            return
        if h.base is not None:  # later segments of this direction may take the fast path
            self._fast[(seg.src, seg.sport, seg.dst, seg.dport)] = (conn, h, peer)
        if self.stats.pending_bytes > self.limits.pending_bytes_total:
            self._relieve_memory(out)

    def _close_tcp(self, conn: TcpConn, ts: float, reason: str, out: list[Event]) -> None:
        if conn.closed:
            return
        self.stats.pending_bytes += conn.close(ts, reason, out)  # type: ignore[arg-type]
        self.tcp.pop(conn.lru_key, None)
        _, addr_a, port_a, addr_b, port_b = conn.lru_key
        self._fast.pop((addr_a, port_a, addr_b, port_b), None)
        self._fast.pop((addr_b, port_b, addr_a, port_a), None)
        self.closed[conn.lru_key] = ts
        self.closed.move_to_end(conn.lru_key)

    def _relieve_memory(self, out: list[Event]) -> None:
        while self.stats.pending_bytes > self.limits.pending_bytes_total:
            victim = max(self.tcp.values(), key=lambda c: c.pending_bytes, default=None)
            if victim is None or not victim.pending_bytes:
                return
            half = max((victim.orig, victim.resp), key=lambda h: h.pending_bytes)
            self.stats.pending_bytes -= half.force_gap(victim, out)
            self.stats.forced_gaps_total += 1

    def _evict(self, ts: float, out: list[Event]) -> None:
        oldest_tcp = next(iter(self.tcp.values()), None)
        if oldest_tcp is not None:
            self.stats.evicted += 1
            self._close_tcp(oldest_tcp, ts, "evicted", out)

    # ---- UDP ----------------------------------------------------------------------------
    def _udp(self, seg: Segment, ckey: tuple, out: list[Event]) -> None:
        flow = self.udp.get(ckey)
        if flow is None:
            if len(self.udp) >= self.limits.max_connections:
                oldest = next(iter(self.udp.values()))
                self.stats.evicted += 1
                self._close_udp(oldest, seg.ts, "evicted", out)
            key, orig_ep = self._flow_key(seg, _orient(seg))
            flow = _Udp(self._new_id(), key, orig_ep, seg.ts, ckey)
            self.udp[ckey] = flow
            self.stats.udp_flows += 1
            out.append(Open(flow.cid, key, seg.ts, False))
        else:
            self.udp.move_to_end(ckey)
        flow.last_ts = seg.ts
        flow.stats.packets += 1
        d = "orig" if (seg.src, seg.sport) == flow.orig_ep else "resp"
        hs = flow.stats.orig if d == "orig" else flow.stats.resp
        hs.segments += 1
        off = flow.next[d]
        if seg.payload:
            out.append(Data(flow.cid, flow.key, d, off, seg.payload, seg.ts))
            hs.delivered += len(seg.payload)
        missing = seg.wire_len - len(seg.payload)
        if missing > 0:
            hs.truncated_segments += 1
            hs.gaps += 1
            hs.gap_bytes += missing
            out.append(Gap(flow.cid, flow.key, d, off + len(seg.payload), missing, seg.ts))
        flow.next[d] = off + max(seg.wire_len, len(seg.payload))

    def _close_udp(self, flow: _Udp, ts: float, reason: str, out: list[Event]) -> None:
        if self.udp.pop(flow.ckey, None) is None:
            return
        for d in ("orig", "resp"):
            out.append(End(flow.cid, flow.key, d, ts, reason, flow.next[d]))  # type: ignore
        out.append(Close(flow.cid, flow.key, ts, reason, flow.stats,  # type: ignore[arg-type]
                         flow.first_ts))

    # ---- time ---------------------------------------------------------------------------
    def _sweep(self, now: float, out: list[Event]) -> None:
        for table, timeout in ((self.tcp, self.limits.tcp_idle_timeout),
                               (self.udp, self.limits.udp_idle_timeout)):
            while table:
                oldest = next(iter(table.values()))
                if now - oldest.last_ts < timeout:
                    break
                if isinstance(oldest, TcpConn):
                    self._close_tcp(oldest, now, "timeout", out)
                else:
                    self._close_udp(oldest, now, "timeout", out)
        while self.closed:
            ckey, when = next(iter(self.closed.items()))
            if now - when < self.limits.time_wait:
                break
            del self.closed[ckey]
