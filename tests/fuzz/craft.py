"""Build capture files and packets byte by byte (struct only), for tests/test_native.py and
the fuzz harness's seeds. Deliberately independent of pcapwire's own code."""

from __future__ import annotations

import ipaddress
import struct

from pcapwire.testing.craft import inet_checksum

PCAPNG_BOM = 0x1A2B3C4D


# -- packets -------------------------------------------------------------------------------
def ip4(a: str) -> bytes:
    return ipaddress.IPv4Address(a).packed


def ip6(a: str) -> bytes:
    return ipaddress.IPv6Address(a).packed


def tcp(sport: int, dport: int, flags: int = 0x18, payload: bytes = b"", seq: int = 1,
        ack: int = 0, options: bytes = b"") -> bytes:
    doff = (20 + len(options)) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, 65535, 0,
                       0) + options + payload


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def sctp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHII", sport, dport, 0x11223344, 0) + payload


def icmp(typ: int = 8, code: int = 0, payload: bytes = b"") -> bytes:
    return struct.pack("!BBHHH", typ, code, 0, 1, 1) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 1, frag: int = 0,
         options: bytes = b"", total_len: int | None = None) -> bytes:
    """``frag`` is the 16-bit flags/offset field (0x2000 = MF, low 13 bits = offset/8)."""
    ihl = (20 + len(options)) // 4
    tot = 20 + len(options) + len(payload) if total_len is None else total_len
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, tot, ident, frag, 64, proto, 0,
                      ip4(src), ip4(dst)) + options
    hdr = hdr[:10] + struct.pack("!H", inet_checksum(hdr)) + hdr[12:]
    return hdr + payload


def ipv6(src: str, dst: str, nh: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nh, 64, ip6(src),
                       ip6(dst)) + payload


def ext6(nh: int, body: bytes = b"\0" * 6) -> bytes:
    """A generic (8-byte-unit) IPv6 extension header: hop-by-hop, routing, dest opts."""
    assert (len(body) + 2) % 8 == 0
    return bytes([nh, (len(body) + 2) // 8 - 1]) + body


def frag6(nh: int, offset: int, more: bool, ident: int) -> bytes:
    return struct.pack("!BBHI", nh, 0, (offset & 0xFFF8) | int(more), ident)


def eth(payload: bytes, ethertype: int = 0x0800, vlans: tuple[tuple[int, int], ...] = ()
        ) -> bytes:
    """Ethernet II; ``vlans`` = ((tpid, vid), ...) outermost first."""
    out = bytes.fromhex("000000000002000000000001")
    for tpid, vid in vlans:
        out += struct.pack("!HH", tpid, vid)
    return out + struct.pack("!H", ethertype) + payload


def sll2(payload: bytes, proto: int = 0x0800) -> bytes:
    return struct.pack("!HHIHBB8s", proto, 0, 1, 1, 0, 6, b"\0\0\0\0\0\1\0\0") + payload


def sll(payload: bytes, proto: int = 0x0800) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, b"\0\0\0\0\0\1\0\0", proto) + payload


# -- classic pcap ----------------------------------------------------------------------------
def pcap_header(linktype: int = 1, snaplen: int = 65535, ns: bool = False, big: bool = False,
                version: tuple[int, int] = (2, 4)) -> bytes:
    e = ">" if big else "<"
    return struct.pack(e + "IHHiIII", 0xA1B23C4D if ns else 0xA1B2C3D4, *version, 0, 0, snaplen,
                       linktype)


def record(sec: int, frac: int, data: bytes, caplen: int | None = None,
           origlen: int | None = None, big: bool = False) -> bytes:
    e = ">" if big else "<"
    caplen = len(data) if caplen is None else caplen
    return struct.pack(e + "IIII", sec, frac, caplen,
                       len(data) if origlen is None else origlen) + data


def pcap_file(packets: list[bytes], linktype: int = 1, snaplen: int = 65535, ns: bool = False,
              big: bool = False, start: int = 1_700_000_000) -> bytes:
    out = [pcap_header(linktype, snaplen, ns, big)]
    for i, p in enumerate(packets):
        out.append(record(start + i, 1000 * i, p, big=big))
    return b"".join(out)


# -- pcapng ----------------------------------------------------------------------------------
def block(btype: int, body: bytes, big: bool = False) -> bytes:
    e = ">" if big else "<"
    body += b"\0" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def option(code: int, value: bytes, big: bool = False) -> bytes:
    e = ">" if big else "<"
    return struct.pack(e + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(big: bool = False) -> bytes:
    e = ">" if big else "<"
    return block(0x0A0D0D0A, struct.pack(e + "IHHq", PCAPNG_BOM, 1, 0, -1), big)


def idb(linktype: int = 1, snaplen: int = 262144, tsresol: int | None = None,
        tsoffset: int | None = None, big: bool = False) -> bytes:
    e = ">" if big else "<"
    opts = b""
    if tsresol is not None:
        opts += option(9, bytes([tsresol]), big)
    if tsoffset is not None:
        opts += option(14, struct.pack(e + "q", tsoffset), big)
    if opts:
        opts += option(0, b"", big)
    return block(1, struct.pack(e + "HHI", linktype, 0, snaplen) + opts, big)


def epb(iface: int, ts: int, data: bytes, origlen: int | None = None, big: bool = False,
        caplen: int | None = None) -> bytes:
    e = ">" if big else "<"
    body = struct.pack(e + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF,
                       len(data) if caplen is None else caplen,
                       len(data) if origlen is None else origlen) + data
    return block(6, body, big)


def spb(data: bytes, origlen: int | None = None, big: bool = False) -> bytes:
    e = ">" if big else "<"
    return block(3, struct.pack(e + "I", len(data) if origlen is None else origlen) + data, big)


def opb(iface: int, ts: int, data: bytes, big: bool = False) -> bytes:
    e = ">" if big else "<"
    return block(2, struct.pack(e + "HHIIII", iface, 0, ts >> 32, ts & 0xFFFFFFFF, len(data),
                                len(data)) + data, big)
