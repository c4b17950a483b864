"""One TCP connection: two directions of sequence space turned into ordered bytes.

Policy (documented in the package docstring): first-seen bytes win on overlap and
retransmission (what tshark's ``follow,tcp`` and Zeek deliver; differing copies are
counted as ``inconsistent``); holes become gaps only when the peer acknowledged past them,
when a memory limit forces it, or when the direction ends; bytes are never invented.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from typing import Any

from pcapwire.reassembly.events import (
    Close,
    ConnStats,
    Data,
    End,
    EndReason,
    Event,
    Gap,
    HalfStats,
    Limits,
)
from pcapwire.records import Direction, FlowKey

SEQ_MOD = 1 << 32
_HALF_SEQ = 1 << 31
#: An ACK further than this beyond the highest byte seen is ignored (not a real ACK).
MAX_ACK_AHEAD = 1 << 30
#: Inconsistent-retransmission locations kept per direction (the counters keep counting).
MAX_INCONSISTENT_RECORDED = 16
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10


class Half:
    """One direction: sequence numbers -> stream offsets, held segments, delivery."""

    __slots__ = ("direction", "base", "next", "starts", "segs", "pending_bytes", "fin_off",
                 "ended", "max_acked", "recent", "recent_base", "recent_start", "stats",
                 "high")

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.base: int | None = None  # sequence number of stream offset 0
        self.next = 0  # next stream offset to deliver
        self.starts: list[int] = []  # held segments, sorted, non-overlapping, > next
        self.segs: list[tuple[bytes, float]] = []
        self.pending_bytes = 0
        self.fin_off: int | None = None
        self.ended = False
        self.max_acked = 0  # highest offset the peer acknowledged
        # Last delivered bytes, for retransmission checks: the delivered chunks themselves
        # (no copy), the first starting at stream offset recent_base; bytes from
        # recent_start (>= recent_base) to next are compared.
        self.recent: deque[bytes] = deque()
        self.recent_base = 0
        self.recent_start = 0
        self.stats = HalfStats()
        self.high = 0  # highest offset seen (end of any segment)

    def offset(self, seq: int) -> int:
        """Stream offset of ``seq``, unwrapped around ``next`` (handles wraparound and
        streams beyond 4 GiB)."""
        assert self.base is not None
        rel = (seq - self.base) % SEQ_MOD
        diff = (rel - self.next) % SEQ_MOD
        if diff >= _HALF_SEQ:
            diff -= SEQ_MOD
        return self.next + diff

    # ---- incoming bytes -----------------------------------------------------------------
    def _compare_delivered(self, off: int, data: bytes) -> None:
        """Compare bytes at ``off`` (< next) with what was delivered."""
        st = self.stats
        st.retransmitted += len(data)
        st.overlaps += 1
        lo = max(off, self.recent_start)
        hi = min(off + len(data), self.next)
        if hi <= lo:
            return
        old = self._delivered(lo, hi)
        new = data[lo - off:hi - off]
        if old != new:
            self._inconsistent(lo, old, new)

    def _delivered(self, lo: int, hi: int) -> bytes:
        """Delivered bytes ``[lo, hi)`` (within ``[recent_start, next)``)."""
        pieces = []
        pos = self.recent_base
        for chunk in self.recent:
            end = pos + len(chunk)
            if end > lo:
                pieces.append(chunk[max(lo - pos, 0):hi - pos])
            if end >= hi:
                break
            pos = end
        return b"".join(pieces)

    def _inconsistent(self, off: int, old: bytes | bytearray, new: bytes) -> None:
        st = self.stats
        st.inconsistent += sum(1 for a, b in zip(old, new, strict=True) if a != b)
        if len(st.inconsistent_at) < MAX_INCONSISTENT_RECORDED:
            st.inconsistent_at.append((off, len(new)))

    def add(self, off: int, data: bytes, ts: float) -> int:
        """Hold ``data`` at ``off`` (first seen wins); returns bytes newly held."""
        end = off + len(data)
        self.high = max(self.high, end)
        self.stats.segments += 1
        if off < 0:
            cut = min(-off, len(data))
            self.stats.before_start += cut
            data, off = data[cut:], off + cut
        if off < self.next:
            cut = min(self.next - off, len(data))
            self._compare_delivered(off, data[:cut])
            data, off = data[cut:], off + cut
        if not data:
            return 0
        pieces: list[tuple[int, bytes]] = []
        cur = off
        i = max(bisect_right(self.starts, off) - 1, 0)
        while i < len(self.starts) and self.starts[i] < end:
            s = self.starts[i]
            held = self.segs[i][0]
            e = s + len(held)
            i += 1
            if e <= cur:
                continue
            if s > cur:
                pieces.append((cur, data[cur - off:s - off]))
            lo, hi = max(cur, s), min(end, e)
            new = data[lo - off:hi - off]
            old = held[lo - s:hi - s]
            self.stats.overlaps += 1
            self.stats.retransmitted += hi - lo
            if old != new:
                self._inconsistent(lo, old, new)
            cur = e
            if cur >= end:
                break
        if cur < end:
            pieces.append((cur, data[cur - off:]))
        added = 0
        for start, piece in pieces:
            j = bisect_right(self.starts, start)
            self.starts.insert(j, start)
            self.segs.insert(j, (piece, ts))
            added += len(piece)
        self.pending_bytes += added
        return added

    # ---- delivery -----------------------------------------------------------------------
    def emit_data(self, conn: TcpConn, data: bytes, ts: float, out: list[Event]) -> None:
        out.append(Data(conn.cid, conn.key, self.direction, self.next, data, ts))
        self.next += len(data)
        self.stats.delivered += len(data)
        keep = conn.limits.retransmit_check_bytes
        if not keep:
            self.recent_start = self.recent_base = self.next
            return
        recent = self.recent
        recent.append(data)
        if self.next - self.recent_start > 2 * keep:  # keep the last `keep` bytes
            self.recent_start = self.next - keep
            while self.recent_base + len(recent[0]) <= self.recent_start:
                self.recent_base += len(recent.popleft())

    def _emit_gap(self, conn: TcpConn, upto: int, ts: float, out: list[Event],
                  forced: bool = False) -> None:
        length = upto - self.next
        if length <= 0:
            return
        out.append(Gap(conn.cid, conn.key, self.direction, self.next, length, ts))
        self.next = upto
        self.stats.gaps += 1
        self.stats.gap_bytes += length
        if forced:
            self.stats.forced_gaps += 1
        self.recent.clear()
        self.recent_start = self.recent_base = self.next

    def deliver(self, conn: TcpConn, ts: float, out: list[Event]) -> int:
        """Deliver what is in order; turn acknowledged holes into gaps. Returns the
        number of held bytes released."""
        released = 0
        while self.starts:
            start = self.starts[0]
            if start == self.next:
                data, seg_ts = self.segs[0]
                del self.starts[0], self.segs[0]
                released += len(data)
                self.emit_data(conn, data, seg_ts, out)
            elif self.max_acked > self.next:
                self._emit_gap(conn, min(start, self.max_acked), self.segs[0][1], out)
            else:
                break
        self.pending_bytes -= released
        return released

    def force_gap(self, conn: TcpConn, out: list[Event]) -> int:
        """A memory limit was reached: skip to the first held segment and deliver."""
        if not self.starts:
            return 0
        self._emit_gap(conn, self.starts[0], self.segs[0][1], out, forced=True)
        return self.deliver(conn, self.segs[0][1] if self.segs else 0.0, out)

    def finish(self, conn: TcpConn, ts: float, reason: EndReason, out: list[Event]) -> int:
        """End this direction: remaining holes become gaps, then :class:`End`."""
        if self.ended:
            return 0
        released = 0
        while self.starts:
            self._emit_gap(conn, self.starts[0], self.segs[0][1], out)
            released += self.deliver(conn, ts, out)
        tail = self.fin_off if self.fin_off is not None else self.max_acked
        if tail > self.next:
            self._emit_gap(conn, tail, ts, out)
        self.ended = True
        out.append(End(conn.cid, conn.key, self.direction, ts, reason, self.next))
        return released


class TcpConn:
    """Both directions of one TCP connection (``key`` oriented initiator -> responder)."""

    __slots__ = ("cid", "key", "orig_ep", "limits", "orig", "resp", "stats", "first_ts",
                 "last_ts", "closed", "lru_key")

    def __init__(self, cid: int, key: FlowKey, orig_ep: tuple[bytes, int], ts: float,
                 limits: Limits, handshake: bool) -> None:
        self.cid = cid
        self.key = key
        self.orig_ep = orig_ep
        self.limits = limits
        self.orig = Half("orig")
        self.resp = Half("resp")
        self.stats = ConnStats(handshake=handshake)
        self.stats.orig = self.orig.stats
        self.stats.resp = self.resp.stats
        self.first_ts = ts
        self.last_ts = ts
        self.closed = False
        self.lru_key: Any = None

    def halves(self, src: bytes, sport: int) -> tuple[Half, Half]:
        if (src, sport) == self.orig_ep:
            return self.orig, self.resp
        return self.resp, self.orig

    @property
    def pending_bytes(self) -> int:
        return self.orig.pending_bytes + self.resp.pending_bytes

    def segment(self, h: Half, peer: Half, seq: int, ack: int, flags: int, payload: bytes,
                wire_len: int, ts: float, out: list[Event]) -> int:
        """Process one segment sent in ``h``'s direction. Returns the change in held
        (out-of-order) bytes, for the reassembler's total."""
        self.last_ts = ts
        self.stats.packets += 1
        data_seq = seq
        if flags & TCP_SYN:
            data_seq = (seq + 1) % SEQ_MOD
            if h.base is None or (h.next == 0 and not h.starts):
                h.base = data_seq
        if h.base is None:  # mid-stream: the first sequence number seen is offset 0
            h.base = data_seq
        delta = 0
        if flags & TCP_ACK and peer.base is not None:
            ack_off = peer.offset(ack)
            if peer.fin_off is not None:
                ack_off = min(ack_off, peer.fin_off)
            if peer.max_acked < ack_off <= max(peer.high, peer.next) + MAX_ACK_AHEAD:
                peer.max_acked = ack_off
                if peer.starts:
                    delta -= peer.deliver(self, ts, out)
        if wire_len or payload:
            off = h.offset(data_seq)
            if len(payload) < wire_len:
                h.stats.truncated_segments += 1
            delta += h.add(off, payload, ts)
            h.high = max(h.high, off + wire_len)
            if flags & TCP_FIN:
                h.fin_off = off + wire_len
        elif flags & TCP_FIN:
            h.fin_off = h.offset(data_seq)
        delta -= h.deliver(self, ts, out)
        if h.starts and (h.pending_bytes > self.limits.pending_bytes_per_direction
                         or len(h.starts) > self.limits.pending_segments_per_direction):
            delta -= h.force_gap(self, out)
        if h.fin_off is not None and not h.ended and h.next >= h.fin_off and not h.starts:
            h.finish(self, ts, "fin", out)
        return delta

    def close(self, ts: float, reason: EndReason, out: list[Event]) -> int:
        """End both directions (if not yet) and emit :class:`Close`; returns the change
        in held bytes."""
        released = self.orig.finish(self, ts, reason, out)
        released += self.resp.finish(self, ts, reason, out)
        self.closed = True
        out.append(Close(self.cid, self.key, ts, reason, self.stats, self.first_ts))
        return -released
