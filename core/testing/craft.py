"""Captures for tests, written from a few lines (crafted with dpkt, a pcapwire dependency)::

    from pcapwire.testing import capture, http_download, tcp_session, udp_exchange

    pcap = capture([
        tcp_session("10.0.0.1:1234 > 10.0.0.2:21", client=b"USER a\\r\\nPASS b\\r\\n",
                    server=b"220 ready\\r\\n"),
        http_download("10.0.0.1:40000 > 10.0.0.2:80", "/files/x.exe", b"MZ..."),
        udp_exchange("10.0.0.1:5353 > 10.0.0.9:53", client=dns_query(7, "example.org")),
    ])                                   # bytes of a classic pcap; write_capture(path, ...)

Sessions are written one after the other, each packet ``step_us`` after the previous one
from ``start`` (so a session's packets and times are a pure function of the call: the
golden tests' ``make_input.py`` scripts rewrite their committed captures byte for byte).
A TCP session is a handshake, then each turn in MSS-sized segments, each acknowledged by
the peer, then FIN/ACK both ways; for anything else drive :class:`Capture` and
:class:`TcpConn` packet by packet (a segment never acknowledged, a connection never
closed, a clock that jumps years). The capture is little-endian, microsecond timestamps,
Ethernet, snaplen 65535 -- what tcpdump writes. IPv4 only.

Headers come from :mod:`pcapwire.pcapformat` (the one place Python writes them). Large
synthetic captures (gigabytes, for benchmarks and the demo): :func:`pcapwire.synth.generate`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import dpkt
from pcapwire.pcapformat import RECORD, pcap_header

MSS = 1460
#: Where a capture starts by default (2023-11-14T22:13:20Z).
T0 = 1_700_000_000


def inet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``: IPv4 headers, TCP/UDP with their
    pseudo-header, for hand-written packets."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ip(addr: str) -> bytes:
    return bytes(int(x) for x in addr.split("."))


class Capture:
    """Packets in the order written, each ``step_us`` after the previous one."""

    def __init__(self, start_s: float = T0, step_us: int = 1000) -> None:
        self.t_us = round(start_s * 1_000_000)
        self.step_us = step_us
        self.records: list[bytes] = []
        self._ident = 0x1000

    def wait(self, us: int) -> None:
        self.t_us += us

    def at(self, seconds: float) -> None:
        """Set the clock: the next packet is ``step_us`` after ``seconds``."""
        self.t_us = round(seconds * 1_000_000)

    def ip_packet(self, src: str, dst: str, proto: int, l4: dpkt.Packet) -> None:
        self._ident += 1
        ip = dpkt.ip.IP(src=_ip(src), dst=_ip(dst), p=proto, ttl=64, id=self._ident, df=1,
                        data=l4)
        eth = dpkt.ethernet.Ethernet(src=b"\x02\x00" + _ip(src), dst=b"\x02\x00" + _ip(dst),
                                     type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
        self.frame(bytes(eth))

    def frame(self, data: bytes) -> None:
        self.t_us += self.step_us
        sec, usec = divmod(self.t_us, 1_000_000)
        self.records.append(RECORD.pack(sec, usec, len(data), len(data)) + data)

    def udp(self, src: str, sport: int, dst: str, dport: int, payload: bytes) -> None:
        self.ip_packet(src, dst, dpkt.ip.IP_PROTO_UDP,
                       dpkt.udp.UDP(sport=sport, dport=dport, ulen=8 + len(payload),
                                    data=payload))

    def icmp_echo(self, src: str, dst: str, ident: int, seq: int, payload: bytes,
                  reply: bool = True) -> None:
        for a, b, typ in ((src, dst, dpkt.icmp.ICMP_ECHO), (dst, src, dpkt.icmp.ICMP_ECHOREPLY)
                          )[:2 if reply else 1]:
            echo = dpkt.icmp.ICMP.Echo(id=ident, seq=seq, data=payload)
            self.ip_packet(a, b, dpkt.ip.IP_PROTO_ICMP,
                           dpkt.icmp.ICMP(type=typ, code=0, data=echo))

    def tcp(self, cli: str, sport: int, srv: str, dport: int,
            turns: Iterable[tuple[str, bytes]], isn: tuple[int, int] = (1000, 5000)) -> None:
        """One TCP connection: handshake, then each turn ("c" client or "s" server, bytes)
        in MSS-sized segments, each acknowledged by the peer, then FIN/ACK both ways."""
        conn = TcpConn(self, cli, sport, srv, dport, isn)
        for side, data in turns:
            conn.send(side, data)
        conn.close()

    def add(self, sessions: Iterable[Traffic]) -> Capture:
        """Write each session (:func:`tcp_session`, :func:`udp_exchange`...), in order."""
        for session in sessions:
            session.write(self)
        return self

    def pcap(self) -> bytes:
        return pcap_header(dpkt.pcap.DLT_EN10MB, 65535) + b"".join(self.records)


class TcpConn:
    """A TCP connection written packet by packet (for connections that interleave, such
    as FTP's control and data connections): the handshake when made, :meth:`send` for
    each turn, :meth:`close` for the FIN/ACK exchange; :meth:`seg` for one segment."""

    def __init__(self, cap: Capture, cli: str, sport: int, srv: str, dport: int,
                 isn: tuple[int, int] = (1000, 5000)) -> None:
        self.cap = cap
        self.seq = {"c": isn[0], "s": isn[1]}
        self.ends = {"c": (cli, sport, srv, dport), "s": (srv, dport, cli, sport)}
        self.seg("c", dpkt.tcp.TH_SYN)
        self.seg("s", dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)
        self.seg("c", dpkt.tcp.TH_ACK)

    def seg(self, side: str, flags: int, data: bytes = b"") -> None:
        other = "s" if side == "c" else "c"
        src, sp, dst, dp = self.ends[side]
        ack = self.seq[other] if flags & dpkt.tcp.TH_ACK else 0
        self.cap.ip_packet(src, dst, dpkt.ip.IP_PROTO_TCP,
                           dpkt.tcp.TCP(sport=sp, dport=dp, seq=self.seq[side], ack=ack,
                                        flags=flags, win=65535, data=data))
        grow = len(data) + (1 if flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_FIN) else 0)
        self.seq[side] = (self.seq[side] + grow) % 2**32

    def send(self, side: str, data: bytes) -> None:
        """``data`` from ``side`` ("c" or "s") in MSS-sized segments, each acknowledged."""
        other = "s" if side == "c" else "c"
        for off in range(0, len(data), MSS):
            self.seg(side, dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK, data[off:off + MSS])
            self.seg(other, dpkt.tcp.TH_ACK)

    def close(self, first: str = "c") -> None:
        other = "s" if first == "c" else "c"
        self.seg(first, dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)
        self.seg(other, dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)
        self.seg(first, dpkt.tcp.TH_ACK)


def dns_query(qid: int, name: str, answer: str | None = None) -> bytes:
    """A DNS query for an A record, or (with ``answer``) the response to it."""
    q = dpkt.dns.DNS(id=qid, op=dpkt.dns.DNS_RD | (dpkt.dns.DNS_RA if answer else 0),
                     qd=[dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A)])
    if answer is not None:
        q.qr = dpkt.dns.DNS_R
        q.an = [dpkt.dns.DNS.RR(name=name, type=dpkt.dns.DNS_A, ttl=300, rdata=_ip(answer))]
    return bytes(q)


# ---- sessions from a line each ------------------------------------------------------------
class Traffic(Protocol):
    """Anything :meth:`Capture.add` writes: ``write(capture)``."""

    def write(self, cap: Capture) -> None: ...


def endpoints(text: str) -> tuple[str, int, str, int]:
    """``"10.0.0.1:1234 > 10.0.0.2:80"`` as (client, client port, server, server port)."""
    try:
        left, right = (part.strip() for part in text.split(">"))
        (cli, cport), (srv, sport) = (side.rsplit(":", 1) for side in (left, right))
        out = (cli, int(cport), srv, int(sport))
        for addr in (cli, srv):
            if len(_ip(addr)) != 4:
                raise ValueError(addr)
    except ValueError:
        raise ValueError(f"endpoints {text!r}: expected 'A.B.C.D:PORT > A.B.C.D:PORT' "
                         "(client first)") from None
    return out


@dataclass(frozen=True)
class TcpSession:
    """A TCP connection from :func:`tcp_session`."""

    endpoints: str
    turns: tuple[tuple[str, bytes], ...]
    close: bool = True
    isn: tuple[int, int] = (1000, 5000)

    def write(self, cap: Capture) -> None:
        cli, cport, srv, sport = endpoints(self.endpoints)
        conn = TcpConn(cap, cli, cport, srv, sport, self.isn)
        for side, data in self.turns:
            conn.send(side, data)
        if self.close:
            conn.close()


def tcp_session(ends: str, client: bytes = b"", server: bytes = b"", *,
                turns: Sequence[tuple[str, bytes]] | None = None, close: bool = True,
                isn: tuple[int, int] = (1000, 5000)) -> TcpSession:
    """A TCP connection ``"CLIENT:PORT > SERVER:PORT"``: the client sends ``client``, the
    server answers ``server``; or ``turns``, a list of ``("c" | "s", bytes)`` for longer
    conversations (keep-alive requests, say). ``close=False`` leaves it open."""
    if turns is None:
        turns = [(side, data) for side, data in (("c", client), ("s", server)) if data]
    for side, _data in turns:
        if side not in ("c", "s"):
            raise ValueError(f"turn side {side!r}: 'c' (client) or 's' (server)")
    endpoints(ends)  # checked now, not when written
    return TcpSession(ends, tuple((s, bytes(d)) for s, d in turns), close, isn)


@dataclass(frozen=True)
class UdpExchange:
    """Datagrams between two endpoints, from :func:`udp_exchange`."""

    endpoints: str
    datagrams: tuple[tuple[str, bytes], ...]

    def write(self, cap: Capture) -> None:
        cli, cport, srv, sport = endpoints(self.endpoints)
        for side, payload in self.datagrams:
            if side == "c":
                cap.udp(cli, cport, srv, sport, payload)
            else:
                cap.udp(srv, sport, cli, cport, payload)


def udp_exchange(ends: str, client: bytes = b"", server: bytes = b"", *,
                 datagrams: Sequence[tuple[str, bytes]] | None = None) -> UdpExchange:
    """UDP datagrams ``"CLIENT:PORT > SERVER:PORT"``: ``client`` then ``server`` (or
    ``datagrams``, a list of ``("c" | "s", bytes)``); an empty payload is no datagram."""
    if datagrams is None:
        datagrams = [(side, data) for side, data in (("c", client), ("s", server)) if data]
    endpoints(ends)
    return UdpExchange(ends, tuple((s, bytes(d)) for s, d in datagrams))


def http_request(path: str, host: str = "files.example", method: str = "GET",
                 headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    """An HTTP/1.1 request (``Content-Length`` added for a body)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def http_response(body: bytes, status: str = "200 OK",
                  content_type: str = "application/octet-stream",
                  headers: dict[str, str] | None = None) -> bytes:
    """An HTTP/1.1 response with ``Content-Length``."""
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}",
             *(f"{k}: {v}" for k, v in (headers or {}).items()),
             f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def http_download(ends: str, path: str, body: bytes, *, host: str = "files.example",
                  content_type: str = "application/octet-stream") -> TcpSession:
    """``GET path`` and its ``200 OK`` with ``body``, on one TCP connection."""
    return tcp_session(ends, http_request(path, host),
                       http_response(body, content_type=content_type))


def capture(sessions: Iterable[Traffic], *, start: float = T0, step_us: int = 1000) -> bytes:
    """The sessions, one after the other, as the bytes of a classic pcap."""
    return Capture(start, step_us).add(sessions).pcap()


def write_capture(path: str | Path, sessions: Iterable[Traffic], *, start: float = T0,
                  step_us: int = 1000) -> Path:
    """:func:`capture` written to ``path``; returns the path."""
    out = Path(path)
    out.write_bytes(capture(sessions, start=start, step_us=step_us))
    return out
