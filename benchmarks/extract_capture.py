"""A generated capture for the carving benchmark: HTTP downloads (plain, gzip, chunked,
gzip+chunked, several per keep-alive connection) and SMTP messages with base64
attachments, over Ethernet/IPv4/TCP with 1448-byte segments, ACKs, and several
connections interleaved packet by packet. Deterministic for a seed.

Also returns what was sent, so a benchmark can check the carved hashes.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pcapwire.pcapformat import RECORD, pcap_header
from pcapwire.synth import ETH_HDR, ipv4_header

MSS = 1448


class _Tcp:
    def __init__(self, rng: random.Random, cli: bytes, srv: bytes, sport: int, dport: int):
        self.cli, self.srv, self.sport, self.dport = cli, srv, sport, dport
        self.seq = {"c": rng.getrandbits(32), "s": rng.getrandbits(32)}
        self.ident = rng.getrandbits(16)

    def seg(self, side: str, flags: int, data: bytes = b"") -> bytes:
        src, dst = (self.cli, self.srv) if side == "c" else (self.srv, self.cli)
        sp, dp = (self.sport, self.dport) if side == "c" else (self.dport, self.sport)
        other = "s" if side == "c" else "c"
        tcp = struct.pack("!HHIIBBHHH", sp, dp, self.seq[side] & 0xFFFFFFFF,
                          self.seq[other] & 0xFFFFFFFF, 0x50, flags, 65535, 0, 0) + data
        self.ident = (self.ident + 1) & 0xFFFF
        self.seq[side] += len(data) + (1 if flags & 0x03 else 0)
        return ETH_HDR + ipv4_header(src, dst, 6, len(tcp), self.ident) + tcp

    def handshake(self) -> Iterator[bytes]:
        yield self.seg("c", 0x02)
        yield self.seg("s", 0x12)
        yield self.seg("c", 0x10)

    def send(self, side: str, data: bytes) -> Iterator[bytes]:
        other = "s" if side == "c" else "c"
        for i, off in enumerate(range(0, len(data), MSS)):
            yield self.seg(side, 0x18 if off + MSS >= len(data) else 0x10, data[off:off + MSS])
            if i % 2:
                yield self.seg(other, 0x10)

    def close(self) -> Iterator[bytes]:
        yield self.seg("c", 0x11)
        yield self.seg("s", 0x11)
        yield self.seg("c", 0x10)


@dataclass
class Sent:
    http_bodies: list[str] = field(default_factory=list)  # sha256 of decoded bodies
    attachments: list[str] = field(default_factory=list)
    messages: int = 0


def _text(rng: random.Random, n: int) -> bytes:
    words = [b"alpha", b"packet", b"carve", b"forensics", b"stream", b"segment", b"zeek"]
    out = bytearray()
    while len(out) < n:
        out += b" ".join(rng.choice(words) for _ in range(12)) + b"\n"
    return bytes(out[:n])


def _chunk(body: bytes, rng: random.Random) -> bytes:
    out = bytearray()
    pos = 0
    while pos < len(body):
        n = rng.randint(500, 20000)
        piece = body[pos:pos + n]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
        pos += n
    return bytes(out + b"0\r\n\r\n")


def _http(rng: random.Random, tcp: _Tcp, sent: Sent, k: int) -> Iterator[bytes]:
    yield from tcp.handshake()
    for j in range(rng.randint(1, 4)):
        kind = rng.choice(["plain", "plain", "gzip", "chunked", "gzip-chunked"])
        size = rng.randint(20_000, 1_500_000)
        body = _text(rng, size) if "gzip" in kind else rng.randbytes(size)
        sent.http_bodies.append(hashlib.sha256(body).hexdigest())
        path = f"/files/{k}-{j}.{'txt' if 'gzip' in kind else 'bin'}"
        yield from tcp.send("c", f"GET {path} HTTP/1.1\r\nHost: bench.example\r\n"
                                 "Accept-Encoding: gzip\r\n\r\n".encode())
        wire = gzip.compress(body, 6, mtime=0) if "gzip" in kind else body
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        if "gzip" in kind:
            head += "Content-Encoding: gzip\r\n"
        if "chunked" in kind:
            head += "Transfer-Encoding: chunked\r\n\r\n"
            wire = _chunk(wire, rng)
        else:
            head += f"Content-Length: {len(wire)}\r\n\r\n"
        yield from tcp.send("s", head.encode() + wire)
    yield from tcp.close()


def _smtp(rng: random.Random, tcp: _Tcp, sent: Sent, k: int) -> Iterator[bytes]:
    yield from tcp.handshake()
    yield from tcp.send("s", b"220 mx.bench.example ESMTP\r\n")
    yield from tcp.send("c", b"EHLO client.bench.example\r\n")
    yield from tcp.send("s", b"250-mx.bench.example\r\n250 8BITMIME\r\n")
    for j in range(rng.randint(1, 2)):
        att = rng.randbytes(rng.randint(50_000, 500_000))
        sent.attachments.append(hashlib.sha256(att).hexdigest())
        sent.messages += 1
        b64 = base64.encodebytes(att).replace(b"\n", b"\r\n")
        msg = (f"From: Sender {k} <s{k}@bench.example>\r\nTo: r{j}@bench.example\r\n"
               f"Subject: report {k}-{j}\r\nMessage-ID: <{k}.{j}@bench.example>\r\n"
               "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n"
               "--b0\r\nContent-Type: text/plain\r\n\r\n.see attached\r\n--b0\r\n"
               "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
               f"Content-Disposition: attachment; filename=\"data{k}-{j}.bin\"\r\n\r\n"
               ).encode() + b64 + b"--b0--\r\n"
        stuffed = msg.replace(b"\r\n.", b"\r\n..")
        yield from tcp.send("c", f"MAIL FROM:<s{k}@bench.example>\r\n"
                                 f"RCPT TO:<r{j}@bench.example>\r\n".encode())
        yield from tcp.send("s", b"250 ok\r\n250 ok\r\n")
        yield from tcp.send("c", b"DATA\r\n")
        yield from tcp.send("s", b"354 go ahead\r\n")
        yield from tcp.send("c", stuffed + b".\r\n")
        yield from tcp.send("s", b"250 queued\r\n")
    yield from tcp.send("c", b"QUIT\r\n")
    yield from tcp.send("s", b"221 bye\r\n")
    yield from tcp.close()


def write_capture(path: Path, target_bytes: int, seed: int = 7, concurrent: int = 8) -> Sent:
    """Write the capture (about ``target_bytes``) and return what it carries."""
    rng = random.Random(seed)
    sent = Sent()
    ts = 1_700_000_000.0
    k = 0
    written = 24
    with open(path, "wb") as out:
        out.write(pcap_header(1, 262144))
        live: list[Iterator[bytes]] = []
        while live or written < target_bytes:
            while len(live) < concurrent and written < target_bytes:
                k += 1
                tcp = _Tcp(rng, bytes([10, 1, k >> 8 & 255, k & 255]), bytes([10, 2, 0, 1]),
                           20000 + k % 40000, 80 if k % 4 else 25)
                live.append(_http(rng, tcp, sent, k) if k % 4 else _smtp(rng, tcp, sent, k))
            i = rng.randrange(len(live))
            burst = rng.randint(1, 6)
            for _ in range(burst):
                frame = next(live[i], None)
                if frame is None:
                    live.pop(i)
                    break
                ts += 0.00005
                sec = int(ts)
                out.write(RECORD.pack(sec, int((ts - sec) * 1e6), len(frame), len(frame))
                          + frame)
                written += 16 + len(frame)
    return sent
