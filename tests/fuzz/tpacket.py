"""Build TPACKET_V3 receive-ring blocks byte by byte (struct only), as the Linux kernel lays
them out (<linux/if_packet.h>), for the walker tests (tests/test_capture_native.py) and the
fuzz harness (tests/fuzz/fuzz_capture.py). Every field can be overridden, to craft damage."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

BD_SIZE = 48  # struct tpacket_block_desc
T3_SIZE = 48  # struct tpacket3_hdr
T3_HDRLEN = 68  # TPACKET3_HDRLEN: + struct sockaddr_ll
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
PACKET_HOST, PACKET_OUTGOING = 0, 4


def align16(n: int) -> int:
    return (n + 15) & ~15


@dataclass
class Frame:
    data: bytes
    sec: int = 1_700_000_000
    nsec: int = 123_456_789
    wire: int | None = None  # tp_len (default len(data))
    status: int = TP_STATUS_USER
    vlan_tci: int = 0
    vlan_tpid: int = 0
    # struct sockaddr_ll
    protocol: int = 0x0800
    ifindex: int = 2
    hatype: int = 1
    pkttype: int = PACKET_HOST
    halen: int = 6
    addr: bytes = field(default=b"\x02\x00\x00\x00\x00\x01")
    # layout overrides (damage)
    mac: int = 82  # tp_mac: where the kernel puts an Ethernet frame (netoff 96 - 14)
    snaplen: int | None = None  # tp_snaplen (default len(data))
    next_offset: int | None = None  # tp_next_offset (default: just after the data, aligned)
    place: int | None = None  # where the data bytes really go (default: at tp_mac)

    @property
    def at(self) -> int:
        return self.mac if self.place is None else self.place

    def header(self, next_offset: int) -> bytes:
        snap = len(self.data) if self.snaplen is None else self.snaplen
        wire = len(self.data) if self.wire is None else self.wire
        t3 = struct.pack("<IIIIIIHHIIHH8x", next_offset, self.sec, self.nsec, snap, wire,
                         self.status, self.mac, (self.mac + 14) & 0xFFFF, 0, self.vlan_tci,
                         self.vlan_tpid, 0)
        ll = struct.pack("<HHiHBB8s", 17, 0, self.ifindex, self.hatype, self.pkttype,
                         self.halen, self.addr.ljust(8, b"\0")[:8])
        ll = ll[:2] + struct.pack("!H", self.protocol) + ll[4:]
        return t3 + ll

    def natural_size(self) -> int:
        return align16(self.at + len(self.data))


def block(frames: list[Frame], size: int | None = None, *, blk_len: int | None = None,
          first: int = BD_SIZE, num_pkts: int | None = None,
          status: int = TP_STATUS_USER) -> bytes:
    """One block: its descriptor, then the frames back to back (each 16-byte aligned)."""
    body = bytearray()
    for i, f in enumerate(frames):
        last = i == len(frames) - 1
        nxt = f.next_offset if f.next_offset is not None else (0 if last else f.natural_size())
        start = len(body)
        body += bytes(f.natural_size())
        hdr = f.header(nxt)
        body[start:start + len(hdr)] = hdr
        body[start + f.at:start + f.at + len(f.data)] = f.data
    used = first + len(body)
    total = size if size is not None else max(4096, align16(used))
    out = bytearray(total)
    n = len(frames) if num_pkts is None else num_pkts
    length = used if blk_len is None else blk_len
    ts0 = (frames[0].sec, frames[0].nsec) if frames else (0, 0)
    ts1 = (frames[-1].sec, frames[-1].nsec) if frames else (0, 0)
    desc = struct.pack("<IIIIIIQIIII", 3, BD_SIZE, status, n, first, length, 1, *ts0, *ts1)
    out[:len(desc)] = desc
    tail = body[:max(0, total - first)]
    out[first:first + len(tail)] = tail
    return bytes(out)
