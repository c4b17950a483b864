"""Small helpers for tests: read/write classic pcap records without pcapwire's own code,
so that tests do not check pcapwire against itself."""

from __future__ import annotations

import hashlib
import struct
import subprocess
from pathlib import Path


def read_records(data: bytes) -> tuple[bytes, list[bytes]]:
    """(header, [record bytes]) of a little-endian µs pcap."""
    hdr, pos, recs = data[:24], 24, []
    while pos + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        recs.append(data[pos:pos + 16 + caplen])
        pos += 16 + caplen
    assert pos == len(data), f"trailing bytes at {pos}"
    return hdr, recs


def pcapng_records(data: bytes) -> dict[int, list[bytes]]:
    """Classic µs pcap records per link type from a little-endian pcapng with µs interfaces
    (what pcapwire writes when a result mixes link types): IDB and EPB blocks only."""
    pos, ifaces, out = 0, [], {}
    while pos + 12 <= len(data):
        btype, blen = struct.unpack_from("<II", data, pos)
        if btype == 0x0A0D0D0A:
            ifaces = []
        elif btype == 1:
            ifaces.append(struct.unpack_from("<H", data, pos + 8)[0])
        elif btype == 6:
            iface, hi, lo, caplen, origlen = struct.unpack_from("<IIIII", data, pos + 8)
            us = (hi << 32) | lo
            rec = struct.pack("<IIII", us // 10**6, us % 10**6, caplen, origlen)
            out.setdefault(ifaces[iface], []).append(rec + data[pos + 28:pos + 28 + caplen])
        pos += blen
    assert pos == len(data), f"trailing bytes at {pos}"
    return out


def as_raw_ip(data: bytes) -> bytes:
    """A little-endian µs Ethernet pcap as LINKTYPE_RAW (101): the same packets without
    their 14-byte Ethernet header (IPv4/IPv6 right after the record header)."""
    header, records = read_records(data)
    out = [header[:20] + struct.pack("<I", 101)]
    for rec in records:
        sec, usec, caplen, origlen = struct.unpack_from("<IIII", rec)
        out.append(struct.pack("<IIII", sec, usec, caplen - 14, origlen - 14) + rec[30:])
    return b"".join(out)


def record_ts_ns(rec: bytes) -> int:
    sec, usec = struct.unpack_from("<II", rec)
    return sec * 10**9 + usec * 1000


def tcpdump(path: Path | str, expr: str = "") -> bytes:
    """What ``tcpdump -r PATH -w - EXPR`` writes."""
    cmd = ["tcpdump", "-r", str(path), "-w", "-"] + ([expr] if expr else [])
    return subprocess.run(cmd, capture_output=True, check=False).stdout


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zero_tcp_checksums(data: bytes) -> tuple[bytes, int]:
    """The capture (a little-endian µs Ethernet pcap) with every IPv4 TCP checksum set to
    0, as a capture taken on a host with checksum offload has them (the NIC fills them in
    after the capture point); and how many packets were changed. Headers parsed with dpkt,
    the field patched in the record bytes (dpkt computes a zero checksum anew when it
    serialises a packet)."""
    import dpkt

    header, records = read_records(data)
    out, changed = [header], 0
    for rec in records:
        frame = bytearray(rec[16:])
        if frame[12:14] == b"\x08\x00":  # IPv4 right after the Ethernet header
            ip = dpkt.ip.IP(bytes(frame[14:]))
            if ip.p == dpkt.ip.IP_PROTO_TCP and not ip.offset:
                at = 14 + ip.hl * 4 + 16  # the TCP checksum field
                frame[at:at + 2] = b"\0\0"
                changed += 1
        out.append(rec[:16] + bytes(frame))
    return b"".join(out), changed
