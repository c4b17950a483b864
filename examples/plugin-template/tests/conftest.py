"""Test captures built with dpkt (a pcapwire dependency): one TCP session per call, with
handshake, the client's lines, the server's reply and FINs -- enough for pcapwire's
reassembler to hand the analyzer a complete client stream."""

from __future__ import annotations

from pathlib import Path

import dpkt

CLIENT, SERVER = "10.1.1.10", "10.1.1.20"


def _ip(addr: str) -> bytes:
    return bytes(int(x) for x in addr.split("."))


def tcp_session(client_port: int, server_port: int, client: bytes, server: bytes,
                start: float) -> list[tuple[float, bytes]]:
    """(timestamp, Ethernet frame) of one TCP session."""
    frames: list[tuple[float, bytes]] = []
    seq = {"c": 1000, "s": 5000}
    t = [start]

    def send(side: str, flags: int, data: bytes = b"") -> None:
        src, dst = (CLIENT, SERVER) if side == "c" else (SERVER, CLIENT)
        sport, dport = (client_port, server_port) if side == "c" else (server_port,
                                                                        client_port)
        other = "s" if side == "c" else "c"
        tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq[side], ack=seq[other],
                           flags=flags, win=65535, data=data)
        ip = dpkt.ip.IP(src=_ip(src), dst=_ip(dst), p=dpkt.ip.IP_PROTO_TCP, data=tcp, ttl=64)
        eth = dpkt.ethernet.Ethernet(src=b"\x02\0\0\0\0\x01", dst=b"\x02\0\0\0\0\x02",
                                     data=ip)
        frames.append((t[0], bytes(eth)))
        t[0] += 0.001
        seq[side] += len(data) + (1 if flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_FIN) else 0)

    send("c", dpkt.tcp.TH_SYN)
    seq["c"] -= 1
    send("s", dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)
    seq["c"] += 1
    send("c", dpkt.tcp.TH_ACK)
    if client:
        send("c", dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK, client)
    if server:
        send("s", dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK, server)
    send("c", dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)
    send("s", dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)
    send("c", dpkt.tcp.TH_ACK)
    return frames


def write_pcap(path: Path, sessions: list[list[tuple[float, bytes]]]) -> Path:
    with path.open("wb") as fh:
        writer = dpkt.pcap.Writer(fh)
        for ts, frame in sorted(f for s in sessions for f in s):
            writer.writepkt(frame, ts=ts)
    return path
