"""Synthetic traffic for the demo and the benchmarks: a valid Ethernet/IPv4 pcap with many
interleaved TCP (HTTP-like) sessions and UDP (DNS-like) exchanges, correct IP checksums,
written fast enough to make gigabytes.

Deterministic for a given seed. Not used by the store itself.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pcapwire.pcapformat import RECORD, pcap_header

ETH_HDR = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
MSS = 1400


def _ip_checksum(hdr: bytes) -> int:
    s = sum(struct.unpack("!10H", hdr))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ipv4_header(src: bytes, dst: bytes, proto: int, payload_len: int, ident: int) -> bytes:
    """A 20-byte IPv4 header (DF set, TTL 64) with its checksum."""
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, ident & 0xFFFF, 0x4000, 64,
                      proto, 0, src, dst)
    return hdr[:10] + struct.pack("!H", _ip_checksum(hdr)) + hdr[12:]


@dataclass
class _Session:
    packets: Iterator[tuple[bytes, int]]  # (frame, delay in µs before it)


def _tcp_session(rng: random.Random, cli: bytes, srv: bytes, sport: int, dport: int,
                 body_len: int, marker: bytes) -> Iterator[tuple[bytes, int]]:
    seq_c, seq_s = rng.getrandbits(32), rng.getrandbits(32)
    ident = rng.getrandbits(16)

    def seg(src: bytes, dst: bytes, sp: int, dp: int, seq: int, ack: int, flags: int,
            data: bytes = b"") -> bytes:
        nonlocal ident
        ident += 1
        tcp = struct.pack("!HHIIBBHHH", sp, dp, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags,
                          65535, 0, 0) + data
        return ETH_HDR + ipv4_header(src, dst, 6, len(tcp), ident) + tcp

    yield seg(cli, srv, sport, dport, seq_c, 0, 0x02), 0
    yield seg(srv, cli, dport, sport, seq_s, seq_c + 1, 0x12), 80
    seq_c += 1
    seq_s += 1
    yield seg(cli, srv, sport, dport, seq_c, seq_s, 0x10), 60
    req = (b"GET /files/" + marker + b".bin HTTP/1.1\r\nHost: demo.example\r\n"
           b"User-Agent: pcapwire-synth\r\n\r\n")
    yield seg(cli, srv, sport, dport, seq_c, seq_s, 0x18, req), 40
    seq_c += len(req)
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {body_len}\r\n\r\n").encode()
    body = (marker * (body_len // len(marker) + 1))[:body_len]
    stream = head + body
    for off in range(0, len(stream), MSS):
        data = stream[off:off + MSS]
        yield seg(srv, cli, dport, sport, seq_s, seq_c, 0x18 if off + MSS >= len(stream) else 0x10,
                  data), 30
        seq_s += len(data)
        if (off // MSS) % 2 == 1:
            yield seg(cli, srv, sport, dport, seq_c, seq_s, 0x10), 20
    yield seg(cli, srv, sport, dport, seq_c, seq_s, 0x11), 50
    yield seg(srv, cli, dport, sport, seq_s, seq_c + 1, 0x11), 40
    yield seg(cli, srv, sport, dport, seq_c + 1, seq_s + 1, 0x10), 30


def _dns_exchange(rng: random.Random, cli: bytes, srv: bytes, sport: int
                  ) -> Iterator[tuple[bytes, int]]:
    qid = rng.getrandbits(16)
    name = b"".join(bytes([len(p)]) + p for p in (b"host%d" % rng.randrange(10**6), b"example",
                                                  b"com")) + b"\0"
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + name + b"\x00\x01\x00\x01"
    a = (struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + name + b"\x00\x01\x00\x01"
         + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04" + bytes(rng.getrandbits(8)
                                                                      for _ in range(4)))
    for src, dst, sp, dp, payload, delay in ((cli, srv, sport, 53, q, 0),
                                             (srv, cli, 53, sport, a, 900)):
        udp = struct.pack("!HHHH", sp, dp, 8 + len(payload), 0) + payload
        yield ETH_HDR + ipv4_header(src, dst, 17, len(udp), rng.getrandbits(16)) + udp, delay


def generate(path: str | Path, target_bytes: int, seed: int = 1, start_s: int = 1_700_000_000,
             concurrency: int = 64, body_sizes: tuple[int, int] = (2_000, 60_000)) -> dict:
    """Write a pcap of about ``target_bytes``; returns counts (packets, tcp and udp flows)."""
    rng = random.Random(seed)
    out = open(path, "wb")  # noqa: SIM115 - closed below
    out.write(pcap_header(1, 65535))
    size, packets, tcp_flows, udp_flows = 24, 0, 0, 0
    ts_us = start_s * 1_000_000
    active: list[Iterator[tuple[bytes, int]]] = []
    buf: list[bytes] = []
    n = 0

    def new_session() -> Iterator[tuple[bytes, int]]:
        nonlocal n, tcp_flows, udp_flows
        n += 1
        cli = bytes([10, rng.randrange(256), rng.randrange(256), rng.randrange(1, 255)])
        srv = bytes([192, 0, 2, rng.randrange(1, 255)]) if n % 3 else bytes(
            [198, 51, 100, rng.randrange(1, 255)])
        sport = rng.randrange(1024, 65535)
        if n % 5 == 0:
            udp_flows += 1
            return _dns_exchange(rng, cli, bytes([10, 0, 0, 53]), sport)
        tcp_flows += 1
        marker = b"PCAPWIRE-DEMO-%08d-" % n
        if n % 97 == 0:
            marker = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
        return _tcp_session(rng, cli, srv, sport, rng.choice((80, 8080, 443, 25)),
                            rng.randrange(*body_sizes), marker)

    while size < target_bytes:
        while len(active) < concurrency:
            active.append(new_session())
        i = rng.randrange(len(active))
        try:
            frame, delay = next(active[i])
        except StopIteration:
            active.pop(i)
            continue
        ts_us += max(1, delay)
        buf.append(RECORD.pack(ts_us // 1_000_000, ts_us % 1_000_000, len(frame), len(frame))
                   + frame)
        size += 16 + len(frame)
        packets += 1
        if len(buf) >= 4096:
            out.write(b"".join(buf))
            buf.clear()
    out.write(b"".join(buf))
    out.close()
    return {"bytes": size, "packets": packets, "tcp_sessions": tcp_flows, "udp_flows": udp_flows}
