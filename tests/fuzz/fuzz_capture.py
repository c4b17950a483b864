"""Fuzz the live capture's ring walker (core/native/capture_ring.c) with atheris: the code
that turns TPACKET_V3 blocks into pcap records + meta, fed blocks of arbitrary bytes through
``_native.walk_tpacket_block`` (the same functions ``Capture.poll`` runs on the kernel's
ring). Beyond "no crash, no read past the block" (ASan), it checks for ANY input:

- every record's caplen <= snaplen; records are back to back and agree with their meta;
- the meta is what the Reader (ingest) computes for the same records: one dissector;
- every frame the block header announces is accounted for: packets + userland_filtered +
  bad_frames == num_pkts (when the header itself is readable);
- spreading the block over small batches gives the same records as one big batch.

Input: byte 0 chooses the link type / cooked mode / snaplen / filter / batch size, the rest
is the block. Half of the inputs are instead decoded as a list of frame descriptions and
built into a well-formed block (tests/fuzz/tpacket.py), so valid frames are common.

Usage (exit status 0 when nothing was found), like fuzz_native.py:
    .venv/bin/python tests/fuzz/fuzz_capture.py -max_total_time=60 [CORPUS_DIR]
    PCAPWIRE_FUZZ_ASAN=1 .venv/bin/python tests/fuzz/fuzz_capture.py -max_total_time=60
It shares fuzz_native.py's instrumented build (build/fuzz/<flavour>/_native.so).
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import atheris  # noqa: E402
import fuzz_native  # noqa: E402
import sanitizers  # noqa: E402
import tpacket as T  # noqa: E402

N = None
META: struct.Struct
#: (linktype, cooked) the capture produces
LINKS = ((1, False), (101, False), (113, True), (1, False))
SNAPLENS = (262144, 1514, 100, 14, 13, 1, 64, 65535)
FILTERS = ("", "", "udp", "vlan and ip", "tcp[13] & 2 != 0", "")
BATCHES = (1 << 20, 64, 1, 300)


def _init() -> None:
    global N, META
    if os.environ.get("PCAPWIRE_FUZZ_BUILD", "1") != "0":
        fuzz_native._point_hook_at_libfuzzer()
    N = fuzz_native.load_native()
    META = struct.Struct(N.META_STRUCT)


def structured(body: bytes) -> bytes:
    """Frames described by the input, laid out as the kernel does (damage included)."""
    fdp = atheris.FuzzedDataProvider(body)
    frames = []
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        f = T.Frame(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300)))
        flags = fdp.ConsumeUInt(1)
        if flags & 1:
            f.vlan_tci = fdp.ConsumeUInt(2)
            f.status |= T.TP_STATUS_VLAN_VALID
        if flags & 2:
            f.vlan_tpid = fdp.ConsumeUInt(2)
            f.status |= T.TP_STATUS_VLAN_TPID_VALID
        if flags & 4:
            f.pkttype = T.PACKET_OUTGOING
            f.ifindex = 1
        if flags & 8:
            f.wire = fdp.ConsumeUInt(4)
        if flags & 16:
            f.snaplen = fdp.ConsumeUInt(4)
        if flags & 32:
            f.mac = fdp.ConsumeIntInRange(0, 0xFFFF)
            f.place = 82
        if flags & 64:
            f.next_offset = fdp.ConsumeUInt(4)
        frames.append(f)
    kw = {}
    if fdp.ConsumeBool():
        kw["num_pkts"] = fdp.ConsumeUInt(4)
    if fdp.ConsumeBool():
        kw["blk_len"] = fdp.ConsumeUInt(4)
    if fdp.ConsumeBool():
        kw["first"] = fdp.ConsumeIntInRange(0, 5000)
    size = fdp.ConsumeIntInRange(0, 6000)
    try:
        return T.block(frames, size=size or None, **kw)
    except (struct.error, ValueError):
        return b""


def check(batches: list, lt: int, snap: int) -> int:
    n = 0
    for blt, bsnap, prec, records, meta, off in batches:
        assert (blt, bsnap, prec, off) == (lt, snap, 9, -1)
        assert meta and len(meta) % N.META_SIZE == 0
        pos = 0
        for m in META.iter_unpack(meta):
            ts, rec_off, caplen, origlen = m[:4]
            assert rec_off == pos and caplen <= snap
            sec, frac, c, o = struct.unpack_from("<IIII", records, pos)
            assert (c, o) == (caplen, origlen) and ts == sec * 10**9 + frac
            pos += 16 + caplen
            n += 1
        assert pos == len(records)
        # the Reader computes the same meta for these records
        hdr = struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, snap, lt)
        r = N.Reader("fuzz")
        rb = r.feed(hdr + records) + r.finish()
        assert not r.errors
        assert [x[:1] + x[2:] for b in rb for x in META.iter_unpack(b[4])] == \
            [x[:1] + x[2:] for x in META.iter_unpack(meta)]
    return n


def TestOneInput(data: bytes) -> None:
    if N is None:
        _init()
    if len(data) < 2:
        return
    mode, body = data[0], data[1:]
    lt, cooked = LINKS[mode & 3]
    snap = SNAPLENS[(mode >> 2) & 7]
    bpf = FILTERS[(mode >> 5) % len(FILTERS)] if mode & 0x80 else ""
    blk = structured(body) if data[1] & 1 else body
    try:
        batches, counts = N.walk_tpacket_block(blk, lt, snap, cooked=cooked, bpf=bpf,
                                               lo_ifindex=1 if mode & 0x40 else -1)
    except ValueError:
        if bpf:
            return  # libpcap refused the filter for this link type (e.g. vlan on raw IP)
        raise
    n = check(batches, lt, snap)
    assert n == counts["packets"]
    if len(blk) >= T.BD_SIZE:
        num_pkts = struct.unpack_from("<I", blk, 12)[0]
        assert counts["packets"] + counts["userland_filtered"] + counts["bad_frames"] == num_pkts
    small, counts2 = N.walk_tpacket_block(blk, lt, snap, cooked=cooked, bpf=bpf,
                                          lo_ifindex=1 if mode & 0x40 else -1,
                                          max_batch=BATCHES[data[-1] & 3])
    assert counts2 == counts
    assert b"".join(b[3] for b in small) == b"".join(b[3] for b in batches)


def seeds(directory: Path) -> None:
    eth = bytes.fromhex("020000000001020000000002")
    ip = bytes.fromhex("4500002800010000401100000a0000010a000002") + struct.pack(
        "!HHHH", 1000, 53, 20, 0) + b"x" * 12
    frames = [T.Frame(eth + b"\x08\x00" + ip), T.Frame(eth + b"\x08\x00" + ip, vlan_tci=7,
                                                       status=1 | T.TP_STATUS_VLAN_VALID),
              T.Frame(ip, pkttype=T.PACKET_OUTGOING, ifindex=1)]
    for i, mode in enumerate((0x00, 0x01, 0x02, 0x80 | 0x40, 0x0C)):
        (directory / f"block-{i}").write_bytes(bytes([mode, 0]) + T.block(frames))
    (directory / "damaged").write_bytes(b"\x00\x00" + T.block(frames, blk_len=10**6,
                                                                num_pkts=9))


def main() -> None:
    if fuzz_native.ASAN and os.environ.get("PCAPWIRE_FUZZ_BUILD", "1") != "0":
        sanitizers.ensure_runtime()
    args = list(sys.argv)
    dirs = [a for a in args[1:] if not a.startswith("-")]
    if not dirs:
        dirs = [str(Path(tempfile.gettempdir()) / "pcapwire-fuzz-capture-corpus")]
        args.append(dirs[0])
    if not Path(dirs[0]).is_file():
        Path(dirs[0]).mkdir(parents=True, exist_ok=True)
        seeds(Path(dirs[0]))
    if os.environ.get("PCAPWIRE_FUZZ_BUILD", "1") != "0":
        fuzz_native.build_instrumented()
    atheris.Setup(args, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
