"""The native capture core (``_native.Capture``, core/native/capture*.c).

Part 1 feeds crafted TPACKET_V3 blocks to the ring walker (``walk_tpacket_block``): records,
VLAN tags put back, cooked headers, loopback duplicates, damage counted and never read past.

Part 2 captures real traffic in a network namespace of the test's own (tests/netns.py: both
ends of a veth pair inside it, 198.18.0.0/15 addresses, generated traffic sent with tcpreplay
on v1 while the capture runs on v0 in a child process), and compares with what was sent and
with what ``tcpdump -i v0 -w`` records at the same time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from netns import VethNS, frames_only, netns_fixture, read_pcap, write_pcap, write_traffic
from pcapwire import _native as N

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
import craft  # noqa: E402
import tpacket as T  # noqa: E402

_ = netns_fixture  # the ``netns`` fixture
HERE = Path(__file__).resolve().parent
CHILD = str(HERE / "capture_child.py")
META = struct.Struct(N.META_STRUCT)
ETH_A, ETH_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


# -- helpers -------------------------------------------------------------------------------
def eth(payload: bytes, et: int = 0x0800, src: bytes = ETH_A, dst: bytes = ETH_B) -> bytes:
    return dst + src + struct.pack("!H", et) + payload


def udp4(src: str, dst: str, sport: int, dport: int, payload: bytes = b"x" * 20,
         **kw: Any) -> bytes:
    return craft.ipv4(src, dst, 17, craft.udp(sport, dport, payload), **kw)


def tcp4(src: str, dst: str, sport: int, dport: int, payload: bytes = b"") -> bytes:
    return craft.ipv4(src, dst, 6, craft.tcp(sport, dport, 0x18, payload))


def records_of(batches: list[tuple]) -> list[tuple[int, bytes, int]]:
    out = []
    for _lt, _snap, prec, records, meta, off in batches:
        assert prec == 9 and off == -1
        pos = 0
        for m in META.iter_unpack(meta):
            sec, frac, caplen, origlen = struct.unpack_from("<IIII", records, pos)
            assert (m[1], m[2], m[3]) == (pos, caplen, origlen)
            assert m[0] == sec * 10**9 + frac
            out.append((m[0], records[pos + 16:pos + 16 + caplen], origlen))
            pos += 16 + caplen
        assert pos == len(records)
    return out


def metas(batches: list[tuple]) -> list[tuple]:
    """Meta tuples with rec_off aside (it is relative to each batch)."""
    return [m[:1] + m[2:] for b in batches for m in META.iter_unpack(b[4])]


def reader_meta(linktype: int, snaplen: int, recs: bytes) -> list[tuple]:
    """What the Reader (ingest) computes for the same records."""
    hdr = struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, snaplen, linktype)
    r = N.Reader("check")
    batches = r.feed(hdr + recs) + r.finish()
    assert not r.errors
    return metas(batches)


def walk(block: bytes, linktype: int = 1, snaplen: int = 262144,
         **kw: Any) -> tuple[list[tuple[int, bytes, int]], dict[str, int], list[tuple]]:
    batches, counts = N.walk_tpacket_block(block, linktype, snaplen, **kw)
    for b in batches:
        assert b[:3] == (linktype, snaplen, 9)
    return records_of(batches), counts, batches


# == part 1: the ring walker on crafted blocks ==============================================
FR1 = eth(udp4("198.18.1.1", "198.18.2.2", 1000, 53))
FR2 = eth(tcp4("198.18.1.1", "198.18.2.2", 40000, 80, b"GET / HTTP/1.1\r\n\r\n"))


def test_walker_records_and_meta_match_reader() -> None:
    frames = [T.Frame(FR1, sec=1_700_000_001, nsec=5), T.Frame(FR2, nsec=999_999_999),
              T.Frame(FR1[:30], wire=len(FR1))]
    recs, counts, batches = walk(T.block(frames))
    assert counts == {"packets": 3, "userland_filtered": 0, "bad_frames": 0, "bad_blocks": 0}
    assert recs == [(1_700_000_001 * 10**9 + 5, FR1, len(FR1)),
                    (1_700_000_000 * 10**9 + 999_999_999, FR2, len(FR2)),
                    (1_700_000_000 * 10**9 + 123_456_789, FR1[:30], len(FR1))]
    assert metas(batches) == reader_meta(1, 262144, batches[0][3])
    m = META.unpack_from(batches[0][4], N.META_SIZE)
    assert m[N.META_FIELDS.index("dport")] == 80
    # snaplen: records are cut, origlen kept
    recs, _, batches = walk(T.block(frames), snaplen=40)
    assert [(len(f), o) for _, f, o in recs] == [(40, len(FR1)), (40, len(FR2)), (30, len(FR1))]
    assert metas(batches) == reader_meta(1, 40, batches[0][3])


def test_walker_puts_vlan_tags_back_like_libpcap() -> None:
    untagged = FR1
    frames = [T.Frame(untagged, vlan_tci=0x2007, status=T.TP_STATUS_USER | T.TP_STATUS_VLAN_VALID),
              T.Frame(untagged, vlan_tci=5),  # a non-zero TCI counts even without the flag
              T.Frame(untagged, vlan_tci=9, vlan_tpid=0x88A8,
                      status=T.TP_STATUS_VLAN_VALID | T.TP_STATUS_VLAN_TPID_VALID),
              T.Frame(untagged, status=T.TP_STATUS_VLAN_VALID)]  # priority tag, VID 0
    recs, _, batches = walk(T.block(frames))
    tag = [b"\x81\x00\x20\x07", b"\x81\x00\x00\x05", b"\x88\xa8\x00\x09", b"\x81\x00\x00\x00"]
    assert [f for _, f, _ in recs] == [untagged[:12] + t + untagged[12:] for t in tag]
    assert all(o == len(untagged) + 4 for _, _, o in recs)
    mv = [META.unpack(m) for m in (batches[0][4][i:i + 88] for i in range(0, 4 * 88, 88))]
    vid = N.META_FIELDS.index("vlan_id")
    assert [m[vid] for m in mv] == [7, 5, 9, 0]
    # cut by the snaplen after the tag went back in; raw IP has no place for a tag
    recs, _, _ = walk(T.block(frames[:1]), snaplen=14)
    assert recs[0][1] == untagged[:12] + b"\x81\x00"
    recs, _, _ = walk(T.block([T.Frame(FR1[14:], vlan_tci=7)]), linktype=101)
    assert recs[0][1] == FR1[14:]


def test_walker_cooked_frames_get_an_sll_header() -> None:
    ip = FR1[14:]
    f = T.Frame(ip, pkttype=T.PACKET_OUTGOING, hatype=1, halen=6, addr=ETH_A, protocol=0x0800)
    recs, _, batches = walk(T.block([f, T.Frame(ip, vlan_tci=3, pkttype=0, addr=ETH_B)]),
                            linktype=113, cooked=True)
    sll = struct.pack("!HHH8sH", 4, 1, 6, ETH_A + b"\0\0", 0x0800)
    assert recs[0] == (recs[0][0], sll + ip, len(ip) + 16)
    sll_vlan = struct.pack("!HHH8s", 0, 1, 6, ETH_B + b"\0\0") + b"\x81\x00\x00\x03\x08\x00"
    assert recs[1][1] == sll_vlan + ip and recs[1][2] == len(ip) + 20
    assert metas(batches) == reader_meta(113, 262144, batches[0][3])


def test_walker_skips_loopback_duplicates_and_runs_userland_bpf() -> None:
    frames = [T.Frame(FR1, pkttype=T.PACKET_OUTGOING, ifindex=1), T.Frame(FR1, ifindex=1),
              T.Frame(FR2, pkttype=T.PACKET_OUTGOING, ifindex=3)]
    recs, counts, _ = walk(T.block(frames), lo_ifindex=1)
    assert len(recs) == 2 and counts["userland_filtered"] == 1
    recs, counts, _ = walk(T.block(frames), bpf="tcp port 80")
    assert [f for _, f, _ in recs] == [FR2] and counts["userland_filtered"] == 2
    with pytest.raises(ValueError, match="syntax error"):
        N.walk_tpacket_block(T.block(frames), 1, 65535, bpf="tcp port")


def test_walker_spreads_a_block_over_batches() -> None:
    frames = [T.Frame(eth(udp4("198.18.1.1", "198.18.2.2", i, 53, b"y" * i))) for i in range(60)]
    blk = T.block(frames, size=65536)
    whole, _, _ = walk(blk, snaplen=100)
    for max_batch in (1, 200, 1000, 5000):
        # a batch holds max_batch bytes, or one record when that is more
        _, _, batches = walk(blk, snaplen=100, max_batch=max_batch)
        assert records_of(batches) == whole
        assert len(batches) > 1
        assert all(len(b[3]) <= max(max_batch, 16 + 100 + 36) for b in batches)


@pytest.mark.parametrize("damage, bad_frames, good", [
    ({"mac": 2000, "place": 82}, 1, 2),        # tp_mac + tp_snaplen past the block end
    ({"snaplen": 10**6}, 1, 2),                # tp_snaplen past the block end
    ({"snaplen": 2**32 - 1}, 1, 2),            # ... and overflowing 32 bits
    ({"mac": 20, "place": 82}, 1, 2),          # data inside the frame header
    ({"next_offset": 0}, 1, 2),                # no next frame: the rest is lost, counted
    ({"next_offset": 40}, 1, 2),               # next frame inside this one
    ({"next_offset": 10**6}, 1, 2),            # next frame past the block
])
def test_walker_counts_damaged_frames(damage: dict, bad_frames: int, good: int) -> None:
    frames = [T.Frame(FR1, **damage), T.Frame(FR2), T.Frame(FR1)]
    if "next_offset" in damage:
        frames[0] = T.Frame(FR1)
        frames[1] = T.Frame(FR2, **damage)
    recs, counts, _ = walk(T.block(frames, size=4096))
    assert counts["bad_frames"] == bad_frames, counts
    assert counts["packets"] == len(recs) == good


def test_walker_counts_damaged_blocks() -> None:
    frames = [T.Frame(FR1), T.Frame(FR2)]
    # blk_len beyond the block: one bad block, frames still walked inside the block
    recs, counts, _ = walk(T.block(frames, size=4096, blk_len=10**6))
    assert (len(recs), counts["bad_blocks"], counts["bad_frames"]) == (2, 1, 0)
    # blk_len shorter than the frames: those past it are not read
    recs, counts, _ = walk(T.block(frames, size=4096, blk_len=48 + 200))
    assert (len(recs), counts["bad_frames"]) == (1, 1)
    # first frame offset outside the block: every announced frame counted as lost
    recs, counts, _ = walk(T.block(frames, size=4096, first=8000))
    assert (recs, counts["bad_blocks"], counts["bad_frames"]) == ([], 1, 2)
    # more frames announced than present; a block shorter than its header
    recs, counts, _ = walk(T.block(frames, size=4096, num_pkts=1000))
    assert len(recs) == 2 and counts["bad_frames"] == 998
    assert walk(b"\0" * 47)[1]["bad_blocks"] == 1
    assert walk(b"")[1] == {"packets": 0, "userland_filtered": 0, "bad_frames": 0,
                            "bad_blocks": 1}


# == part 2: real captures in a namespace ===================================================
def start_capture(ns: VethNS, outs: list[Path], *args: str) -> tuple[subprocess.Popen, dict]:
    argv = [CHILD]
    for o in outs:
        argv += ["--out", str(o)]
    p = ns.python(*argv, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stderr is not None
    line = p.stdout.readline()
    if not line:
        raise AssertionError(f"capture child failed: {p.stderr.read()}")
    return p, json.loads(line)


def finish_capture(ns: VethNS, p: subprocess.Popen) -> dict:
    if p.poll() is None:
        ns.stop(p, signal.SIGTERM, timeout=60)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def stop_tcpdump(ns: VethNS, p: subprocess.Popen) -> dict[str, int]:
    ns.stop(p, signal.SIGINT)
    assert p.stderr is not None
    err = p.stderr.read()
    got = {k: int(v) for v, k in re.findall(r"(\d+) packets? (captured|dropped by kernel)", err)}
    assert "captured" in got, err
    return got


def delivered(ns: VethNS, sent: int, before: dict[str, dict[str, int]]) -> int:
    """Packets that reached v0 (tcpreplay's successful sends minus the veth's own drops)."""
    v0, v1 = ns.link_stats("v0"), ns.link_stats("v1")
    lost = (v0["rx_dropped"] - before["v0"]["rx_dropped"]
            + v1["tx_dropped"] - before["v1"]["tx_dropped"])
    return sent - lost


def link_snapshot(ns: VethNS) -> dict[str, dict[str, int]]:
    return {"v0": ns.link_stats("v0"), "v1": ns.link_stats("v1")}


def check_child_meta(out: Path, linktype: int = 1, snaplen: int = 262144) -> None:
    """The meta the capture computed equals the Reader's for the records it wrote."""
    data = out.read_bytes()
    got = [m[:1] + m[2:] for m in META.iter_unpack(out.with_suffix(".pcap.meta").read_bytes())]
    assert got == reader_meta(linktype, snaplen, data[24:])


def test_capture_at_fixed_rate_equals_sent_and_tcpdump(netns: VethNS, tmp_path: Path) -> None:
    sent_pcap = tmp_path / "sent.pcap"
    n = write_traffic(sent_pcap, netns, 20_000, seed=3)
    cap, td_out = tmp_path / "cap.pcap", tmp_path / "td.pcap"
    child, ready = start_capture(netns, [cap])
    assert ready["linktype"] == 1 and ready["ring"] == [64, 1 << 20]
    td = netns.tcpdump("v0", td_out)
    before = link_snapshot(netns)
    r = netns.replay(sent_pcap, pps=20_000)
    assert r.sent == n and r.failed == 0
    time.sleep(1.5)  # tcpdump's libpcap retires blocks after 1 s
    res = finish_capture(netns, child)
    td_stats = stop_tcpdump(netns, td)
    st = res["stats"][0]
    assert delivered(netns, r.sent, before) == n
    assert st["packets"] + st["kernel_drops"] == n
    assert st["kernel_drops"] == 0 and st["bad_frames"] == st["bad_blocks"] == 0
    assert st["kernel_packets"] == n  # the kernel's tp_packets, accumulated over reads
    _, sent = read_pcap(sent_pcap)
    lt, got = read_pcap(cap)
    assert lt == 1
    assert frames_only(got) == frames_only(sent)
    assert td_stats == {"captured": n, "dropped by kernel": 0}
    assert frames_only(read_pcap(td_out)[1]) == frames_only(got)
    # capture timestamps are the kernel's, in order, at the sending pace
    ts = [t for t, _, _ in got]
    assert ts == sorted(ts) and 0.5e9 < ts[-1] - ts[0] < 5e9
    check_child_meta(cap)
    assert res["flows"][0] > 1000  # SegmentIndexer.add took the batches as they came


def test_capture_topspeed_accounts_for_every_packet(netns: VethNS, tmp_path: Path) -> None:
    sent_pcap = tmp_path / "sent.pcap"
    n = write_traffic(sent_pcap, netns, 100_000, seed=4)
    cap, td_out = tmp_path / "cap.pcap", tmp_path / "td.pcap"
    child, _ = start_capture(netns, [cap], "--no-meta")
    td = netns.tcpdump("v0", td_out)
    before = link_snapshot(netns)
    r = netns.replay(sent_pcap, topspeed=True)
    time.sleep(1.5)
    res = finish_capture(netns, child)
    td_stats = stop_tcpdump(netns, td)
    reached = delivered(netns, r.sent, before)
    st = res["stats"][0]
    assert st["packets"] + st["kernel_drops"] == reached, (st, r.sent, reached)
    assert td_stats["captured"] + td_stats["dropped by kernel"] == reached
    _, got = read_pcap(cap)
    assert len(got) == st["packets"]
    if st["kernel_drops"] == 0 and reached == n:
        assert frames_only(got) == frames_only(read_pcap(sent_pcap)[1])
    if st["kernel_drops"] == 0 and td_stats["dropped by kernel"] == 0:
        assert frames_only(read_pcap(td_out)[1]) == frames_only(got)


def test_capture_bpf_runs_in_the_kernel(netns: VethNS, tmp_path: Path) -> None:
    sent_pcap = tmp_path / "sent.pcap"
    n = write_traffic(sent_pcap, netns, 5_000, seed=5)
    expected_pcap = tmp_path / "expected.pcap"
    subprocess.run(["tcpdump", "-r", str(sent_pcap), "-w", str(expected_pcap), "udp or "
                    "(tcp port 443 and tcp[tcpflags] & tcp-syn != 0)"], check=True,
                   capture_output=True)
    _, expected = read_pcap(expected_pcap)
    assert 0 < len(expected) < n
    cap = tmp_path / "cap.pcap"
    child, ready = start_capture(netns, [cap], "--bpf",
                                 "udp or (tcp port 443 and tcp[tcpflags] & tcp-syn != 0)")
    assert ready["userland_filter"] is False
    r = netns.replay(sent_pcap, pps=10_000)
    assert r.sent == n
    st = finish_capture(netns, child)["stats"][0]
    # rejected packets never reached the socket: the kernel counted only the matching ones
    assert st["packets"] == st["kernel_packets"] == len(expected)
    assert st["userland_filtered"] == 0
    assert frames_only(read_pcap(cap)[1]) == frames_only(expected)
    check_child_meta(cap)


def test_capture_vlan_frames_and_vlan_filter(netns: VethNS, tmp_path: Path) -> None:
    """The kernel strips VLAN tags before packet sockets see a frame: they are put back (as
    libpcap does), and a filter naming VLANs runs on the records, where the tags are."""
    frames = []
    for i in range(300):
        ip = udp4("198.18.3.1", "198.18.4.1", 2000 + i % 7, 53)
        vid = (7, 8, None)[i % 3]
        tags = ((0x8100, vid),) if vid else ()
        frames.append(craft.eth(ip, vlans=tags))
    frames = [netns.mac0 + netns.mac1 + f[12:] for f in frames]
    sent_pcap = tmp_path / "vlan.pcap"
    write_pcap(sent_pcap, frames)
    cap, cap7, td_out = tmp_path / "cap.pcap", tmp_path / "cap7.pcap", tmp_path / "td.pcap"
    child, _ = start_capture(netns, [cap])
    child7, ready7 = start_capture(netns, [cap7], "--bpf", "vlan 7 and udp")
    assert ready7["userland_filter"] is True
    td = netns.tcpdump("v0", td_out)
    netns.replay(sent_pcap, pps=2_000)
    time.sleep(1.5)
    st = finish_capture(netns, child)["stats"][0]
    st7 = finish_capture(netns, child7)["stats"][0]
    stop_tcpdump(netns, td)
    got = frames_only(read_pcap(cap)[1])
    assert got == [(f, len(f)) for f in frames]
    assert frames_only(read_pcap(td_out)[1]) == got
    assert st["packets"] == 300
    assert frames_only(read_pcap(cap7)[1]) == [(f, len(f)) for f in frames[::3]]
    assert (st7["packets"], st7["userland_filtered"]) == (100, 200)
    check_child_meta(cap)


def test_forced_drops_are_counted(netns: VethNS, tmp_path: Path) -> None:
    """A tiny ring and a stopped recorder: the kernel drops, and says how many."""
    sent_pcap = tmp_path / "sent.pcap"
    n = write_traffic(sent_pcap, netns, 3_000, seed=6)
    cap = tmp_path / "cap.pcap"
    child, ready = start_capture(netns, [cap], "--snaplen", "2048", "--block-bytes", "8192",
                                 "--ring-bytes", str(4 * 8192))
    assert ready["ring"] == [4, 8192]
    os.kill(child.pid, signal.SIGSTOP)
    try:
        before = link_snapshot(netns)
        r = netns.replay(sent_pcap, pps=20_000)
        reached = delivered(netns, r.sent, before)
    finally:
        os.kill(child.pid, signal.SIGCONT)
    res = finish_capture(netns, child)
    st = res["stats"][0]
    assert reached == n
    assert st["kernel_drops"] > 0 and st["freeze_q"] > 0
    assert st["packets"] + st["kernel_drops"] == n
    assert st["kernel_packets"] == n
    # what was kept is what came first, uncut (snaplen 2048 > any frame here)
    _, got = read_pcap(cap)
    assert frames_only(got) == frames_only(read_pcap(sent_pcap)[1])[:len(got)]


def _flow_key(frame: bytes) -> tuple:
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    a, b = (ip[12:16], struct.unpack_from("!H", ip, ihl)[0]), (ip[16:20],
                                                                 struct.unpack_from("!H", ip,
                                                                                    ihl + 2)[0])
    return (ip[9], *min(a, b), *max(a, b))


@pytest.mark.parametrize("mode", ["hash", "hash-nodefrag"])
def test_fanout_two_sockets_every_packet_once_each_flow_on_one(netns: VethNS, tmp_path: Path,
                                                               mode: str) -> None:
    sent_pcap = tmp_path / "sent.pcap"
    n = write_traffic(sent_pcap, netns, 20_000, seed=7)
    outs = [tmp_path / "s0.pcap", tmp_path / "s1.pcap"]
    child, _ = start_capture(netns, outs, "--fanout-group", "4242", "--fanout-mode", mode)
    netns.replay(sent_pcap, pps=20_000)
    res = finish_capture(netns, child)
    parts = [frames_only(read_pcap(o)[1]) for o in outs]
    assert all(parts), [len(p) for p in parts]  # both sockets got traffic
    sent = frames_only(read_pcap(sent_pcap)[1])
    assert Counter(parts[0]) + Counter(parts[1]) == Counter(sent)
    assert sum(s["packets"] for s in res["stats"]) == n
    flows = [{_flow_key(f) for f, _ in p} for p in parts]
    assert not flows[0] & flows[1]
    for o in outs:
        check_child_meta(o)


def test_fanout_hash_defragments(netns: VethNS, tmp_path: Path) -> None:
    """PACKET_FANOUT_FLAG_DEFRAG (mode 'hash') hands the socket the REASSEMBLED datagram,
    not the fragments on the wire; 'hash-nodefrag' keeps the fragments (all of a datagram on
    one socket: the kernel hashes fragments on their addresses)."""
    udp = craft.udp(1111, 2222, bytes(range(256)) * 8)
    frames = []
    for ident in range(1, 41):
        src = f"198.18.5.{ident}"
        for i, off in enumerate((0, 800, 1600)):
            chunk = udp[off:off + 800]
            mf = 0x2000 if i < 2 else 0
            frames.append(eth(craft.ipv4(src, "198.18.6.1", 17, chunk, ident=ident,
                                         frag=mf | off // 8), src=netns.mac1, dst=netns.mac0))
    sent_pcap = tmp_path / "frags.pcap"
    write_pcap(sent_pcap, frames)
    got = {}
    for mode in ("hash", "hash-nodefrag"):
        outs = [tmp_path / f"{mode}0.pcap", tmp_path / f"{mode}1.pcap"]
        child, _ = start_capture(netns, outs, "--fanout-group", "77", "--fanout-mode", mode)
        netns.replay(sent_pcap, pps=1_000)
        finish_capture(netns, child)
        got[mode] = [frames_only(read_pcap(o)[1]) for o in outs]
    reassembled = [f for part in got["hash"] for f, _ in part]
    assert len(reassembled) == 40 and {len(f) for f in reassembled} == {14 + 20 + len(udp)}
    kept = got["hash-nodefrag"]
    assert Counter(kept[0]) + Counter(kept[1]) == Counter((f, len(f)) for f in frames)
    for part in kept:  # the three fragments of a datagram stay together
        ids = Counter(struct.unpack_from("!H", f, 18)[0] for f, _ in part)
        assert set(ids.values()) <= {3}


def run_in_ns(ns: VethNS, code: str, timeout: float = 60) -> dict:
    p = ns.python("-c", code, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_linktypes_loopback_tun_and_any(netns: VethNS, tmp_path: Path) -> None:
    code = r"""
import fcntl, json, os, struct, subprocess, sys, time
sys.path.insert(0, FUZZ_DIR)
import craft
from pcapwire import _native as N
out = {}
out["lo"] = N.Capture("lo").linktype
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", b"pwtun0", 0x0001 | 0x1000))  # TUNSETIFF
subprocess.run(["ip", "link", "set", "pwtun0", "up"], check=True)
c = N.Capture("pwtun0", block_timeout_ms=10)
out["tun"] = c.linktype
pkt = craft.ipv4("198.18.9.2", "198.18.9.3", 17, craft.udp(5, 6, b"tun"))
os.write(fd, pkt)
recs = []
deadline = time.time() + 5
while not recs and time.time() < deadline:
    for b in c.poll(100):
        recs.append(b[3][16:].hex())
out["tun_record"] = recs
print(json.dumps(out))
""".replace("FUZZ_DIR", repr(str(HERE / "fuzz")))
    res = run_in_ns(netns, code)
    assert res["lo"] == 1 and res["tun"] == 101
    pkt = craft.ipv4("198.18.9.2", "198.18.9.3", 17, craft.udp(5, 6, b"tun"))
    assert res["tun_record"] == [pkt.hex()]
    # "any": cooked (LINUX_SLL), each packet seen leaving v1 and arriving on v0; the same
    # bytes as tcpdump -i any -y LINUX_SLL
    sent_pcap = tmp_path / "sent.pcap"
    n = write_traffic(sent_pcap, netns, 500, seed=8)
    cap, td_out = tmp_path / "any.pcap", tmp_path / "td-any.pcap"
    child, ready = start_capture(netns, [cap], "--iface", "any")
    assert ready["linktype"] == 113
    td = netns.tcpdump("any", td_out, "-y", "LINUX_SLL")
    netns.replay(sent_pcap, pps=2_000)
    time.sleep(1.5)
    st = finish_capture(netns, child)["stats"][0]
    stop_tcpdump(netns, td)
    lt, got = read_pcap(cap)
    assert lt == 113 and st["packets"] == len(got) == 2 * n
    assert frames_only(read_pcap(td_out)[1]) == frames_only(got)
    pkttypes = Counter(struct.unpack_from("!H", f)[0] for _, f, _ in got)
    assert pkttypes == {0: n, 4: n}  # to us (v0), outgoing (v1)
    check_child_meta(cap, linktype=113)


def test_errors_name_the_interface_and_the_cause(netns: VethNS) -> None:
    code = r"""
import errno, json, threading, time
from pcapwire import _native as N
out = {}
def err(f):
    try:
        f()
    except Exception as e:
        return [type(e).__name__, getattr(e, "errno", None), getattr(e, "filename", None), str(e)]
    return None
out["nodev"] = err(lambda: N.Capture("pw-nosuch0"))
out["snaplen"] = err(lambda: N.Capture("v0", snaplen=0))
out["block"] = err(lambda: N.Capture("v0", block_bytes=5000))
out["block_small"] = err(lambda: N.Capture("v0", block_bytes=4096))
out["ring"] = err(lambda: N.Capture("v0", ring_bytes=1 << 19))
out["mode"] = err(lambda: N.Capture("v0", fanout_group=1, fanout_mode="rr"))
out["bpf"] = err(lambda: N.Capture("v0", bpf="tcp port"))
out["name"] = err(lambda: N.Capture("x" * 40))
c = N.Capture("v0", ring_bytes=1 << 20)
fd = c.fileno()
t0 = time.monotonic()
threading.Timer(0.3, c.close).start()
out["poll_woken"] = [c.poll(10000), round(time.monotonic() - t0, 1)]
out["closed"] = c.closed
out["after_close"] = err(lambda: c.poll(0))
out["stats_after_close"] = c.stats()["packets"]
with N.Capture("v0", ring_bytes=1 << 20) as c2:
    out["ctx"] = c2.linktype
out["ctx_closed"] = c2.closed
out["nul"] = err(lambda: N.Capture("v0\0x"))
import subprocess
c3 = N.Capture("v1", ring_bytes=1 << 20)
subprocess.run(["ip", "link", "set", "v1", "down"], check=True)
out["down"] = err(lambda: c3.poll(2000))
subprocess.run(["ip", "link", "set", "v1", "up"], check=True)
out["up_again"] = c3.poll(50)
c3.close()
print(json.dumps(out))
"""
    res = run_in_ns(netns, code)
    assert res["nodev"][:3] == ["OSError", 19, "pw-nosuch0"]
    assert "no such interface" in res["nodev"][3]
    for k in ("snaplen", "block", "block_small", "ring", "mode", "bpf", "name"):
        assert res[k][0] == "ValueError", (k, res[k])
    assert "syntax error" in res["bpf"][3] and "v0" in res["bpf"][3]
    assert res["poll_woken"][0] == [] and res["poll_woken"][1] < 5
    assert res["closed"] is True and res["after_close"][0] == "ValueError"
    assert res["stats_after_close"] == 0
    assert res["ctx"] == 1 and res["ctx_closed"] is True
    assert res["nul"][0] == "ValueError"
    # the interface going down is an error naming it; the capture goes on when it is back
    assert res["down"][:3] == ["OSError", 100, "v1"] and "went down" in res["down"][3]
    assert res["up_again"] == []
    # without CAP_NET_RAW
    p = netns.popen("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                    "--inh-caps=-all", sys.executable, "-c",
                    "from pcapwire import _native as N\n"
                    "try:\n    N.Capture('v0')\n"
                    "except PermissionError as e:\n    print(e.errno, e.filename, e)\n",
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out.startswith("1 v0 ") and "CAP_NET_RAW" in out
    # ... and CAP_NET_RAW alone is enough (promiscuous mode, fanout and the filter included)
    p = netns.popen("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                    "--inh-caps=+net_raw", "--ambient-caps=+net_raw", sys.executable, "-c",
                    "from pcapwire import _native as N\n"
                    "c = N.Capture('v0', fanout_group=9, bpf='udp', ring_bytes=1 << 20)\n"
                    "print(c.linktype, c.poll(10))\n",
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out.strip() == "1 []"
