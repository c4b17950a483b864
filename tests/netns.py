"""Network namespaces for live-capture tests and benchmarks (shared by the capture core, the
recorder and the follow/metrics tests).

Every capture test gets its OWN namespace ``pw-<random>`` holding BOTH ends of a veth pair,
``v0`` (198.18.0.1/24) and ``v1`` (198.18.0.2/24), IPv6 off (so the kernel itself sends
nothing: no router solicitations, no MLD) and forwarding off. Traffic is generated for the
benchmarking range 198.18.0.0/15 only (:func:`write_traffic`: ``pcapwire.synth`` sessions or
crafted frames, rewritten to 198.18/15 addresses and the veth MACs) and sent with
``tcpreplay`` on ``v1`` inside the namespace; capture runs inside it too (a child process
started with ``ip netns exec``). The namespace, its links and every process started through
it are removed at teardown, also when the test fails.

Use::

    from netns import netns_fixture  # noqa: F401  (provides the ``netns`` fixture)

    def test_x(netns: VethNS, tmp_path): ...

Needs root (``ip netns``) and tcpreplay; the fixture skips otherwise.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pcapwire.testing.craft import inet_checksum

#: the benchmarking range (RFC 2544) every generated packet is rewritten into
NET = ipaddress.IPv4Network("198.18.0.0/15")
ADDR0, ADDR1 = "198.18.0.1", "198.18.0.2"
#: fixed, locally administered MACs (each namespace is its own segment), so generated traffic
#: files can be reused across namespaces (the benchmark caches its million packets)
MAC0, MAC1 = "02:00:c6:12:00:01", "02:00:c6:12:00:02"
#: addresses given to generated hosts: 198.18.1.0 and up (198.18.0.0/24 is the veth subnet)
_HOST_BASE = int(ipaddress.IPv4Address("198.18.1.0"))
_HOST_COUNT = NET.num_addresses - 256

PCAP_US, PCAP_NS = 0xA1B2C3D4, 0xA1B23C4D


def available() -> str | None:
    """Why namespace tests cannot run here, or None."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns)"
    for tool in ("ip", "tcpreplay"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (scripts/setup.sh installs it)"
    return None


@dataclass
class Replay:
    """What tcpreplay reported."""

    sent: int
    failed: int
    seconds: float
    output: str


@dataclass
class VethNS:
    """A namespace with the veth pair v0 <-> v1 (both ends inside)."""

    name: str
    mac0: bytes = b""
    mac1: bytes = b""
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    # -- commands inside the namespace ---------------------------------------------------
    def cmd(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, check: bool = True, timeout: float = 120,
            **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(*argv), check=check, text=True, capture_output=True,
                              timeout=timeout, **kw)

    def popen(self, *argv: str, **kw: Any) -> subprocess.Popen[Any]:
        """Start a process in the namespace (its own session); killed at teardown."""
        kw.setdefault("start_new_session", True)
        p = subprocess.Popen(self.cmd(*argv), **kw)
        self.procs.append(p)
        return p

    def python(self, *args: str, **kw: Any) -> subprocess.Popen[Any]:
        """This interpreter (the venv's) in the namespace."""
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        kw.setdefault("env", env)
        return self.popen(sys.executable, *args, **kw)

    # -- interfaces ----------------------------------------------------------------------
    def link(self, ifname: str) -> dict[str, Any]:
        out = subprocess.run(["ip", "-n", self.name, "-j", "-s", "link", "show", "dev", ifname],
                             check=True, text=True, capture_output=True).stdout
        return json.loads(out)[0]

    def link_stats(self, ifname: str) -> dict[str, int]:
        """rx/tx packets and drops of an interface (the kernel's 64-bit counters)."""
        st = self.link(ifname)["stats64"]
        return {"rx_packets": st["rx"]["packets"], "rx_dropped": st["rx"]["dropped"],
                "tx_packets": st["tx"]["packets"], "tx_dropped": st["tx"]["dropped"]}

    # -- traffic -------------------------------------------------------------------------
    def replay(self, pcap: Path, iface: str = "v1", *, pps: float | None = None,
               mbps: float | None = None, topspeed: bool = False, loop: int = 1,
               timeout: float = 600) -> Replay:
        """Send ``pcap`` on ``iface`` with tcpreplay (exactly one of pps/mbps/topspeed)."""
        if sum(x is not None and x is not False for x in (pps, mbps, topspeed or None)) != 1:
            raise ValueError("replay: give exactly one of pps, mbps, topspeed")
        rate = (["--topspeed"] if topspeed else [f"--pps={pps}"] if pps is not None
                else [f"--mbps={mbps}"])
        p = self.run("tcpreplay", "-i", iface, *rate, f"--loop={loop}", str(pcap),
                     timeout=timeout)
        return parse_tcpreplay(p.stdout + p.stderr)

    def tcpdump(self, iface: str, out: Path, *extra: str,
                timeout: float = 30) -> subprocess.Popen[Any]:
        """``tcpdump -i IFACE -w OUT`` in the namespace, returned once it is listening (its
        stderr then holds the rest: the statistics when it is stopped with SIGINT)."""
        p = self.popen("tcpdump", "-i", iface, "-w", str(out), "-n", *extra,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert p.stderr is not None
        # raw reads (a text readline could buffer past the line select() was woken for)
        fd, seen = p.stderr.fileno(), b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and b"listening on" not in seen:
            if select.select([fd], [], [], 0.5)[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                seen += chunk
        if b"listening on" in seen:
            return p
        self.stop(p, signal.SIGKILL)
        raise RuntimeError(f"tcpdump did not start: {seen.decode(errors='replace')}")

    # -- lifecycle -----------------------------------------------------------------------
    def stop(self, p: subprocess.Popen[Any], sig: int = signal.SIGTERM,
             timeout: float = 30) -> None:
        """Signal a process started here, by its id; kill it if it does not exit."""
        if p.poll() is None:
            try:
                os.kill(p.pid, sig)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
            except ProcessLookupError:
                pass

    def destroy(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGCONT)  # a stopped child cannot die of SIGTERM
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
            for s in (p.stdout, p.stderr, p.stdin):
                if s is not None:
                    s.close()
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)


def create(prefix: str = "pw-") -> VethNS:
    """A fresh namespace with v0/v1 up and addressed (see the module docstring)."""
    ns = VethNS(prefix + secrets.token_hex(4))
    subprocess.run(["ip", "netns", "add", ns.name], check=True, capture_output=True)
    try:
        ns.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
               "net.ipv6.conf.default.disable_ipv6=1", "net.ipv4.ip_forward=0")
        ip = ["ip", "-n", ns.name]
        for argv in (["link", "add", "v0", "address", MAC0, "type", "veth", "peer", "name", "v1",
                      "address", MAC1],
                     ["addr", "add", f"{ADDR0}/24", "dev", "v0"],
                     ["addr", "add", f"{ADDR1}/24", "dev", "v1"],
                     ["link", "set", "lo", "up"], ["link", "set", "v0", "up"],
                     ["link", "set", "v1", "up"]):
            subprocess.run(ip + argv, check=True, capture_output=True)
        deadline = time.monotonic() + 10
        while any(ns.link(i).get("operstate") != "UP" for i in ("v0", "v1")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{ns.name}: veth pair did not come up")
            time.sleep(0.05)
        ns.mac0 = bytes.fromhex(ns.link("v0")["address"].replace(":", ""))
        ns.mac1 = bytes.fromhex(ns.link("v1")["address"].replace(":", ""))
    except BaseException:
        ns.destroy()
        raise
    return ns


@pytest.fixture(name="netns")
def netns_fixture() -> Iterator[VethNS]:
    """A namespace of this test's own, removed afterwards (also on failure)."""
    why = available()
    if why:
        pytest.skip(why)
    ns = create()
    try:
        yield ns
    finally:
        ns.destroy()


def parse_tcpreplay(out: str) -> Replay:
    sent = re.search(r"Successful packets:\s+(\d+)", out)
    failed = re.search(r"Failed packets:\s+(\d+)", out)
    secs = re.search(r"Actual: \d+ packets \(\d+ bytes\) sent in ([\d.]+) seconds", out)
    if not sent:
        raise RuntimeError(f"unexpected tcpreplay output:\n{out}")
    return Replay(int(sent.group(1)), int(failed.group(1)) if failed else 0,
                  float(secs.group(1)) if secs else 0.0, out)


# -- capture files (independent of pcapwire's own readers) ---------------------------------
def read_pcap(path: Path | bytes) -> tuple[int, list[tuple[int, bytes, int]]]:
    """(linktype, [(ts_ns, frame, origlen)]) of a little-endian classic pcap (µs or ns)."""
    data = path if isinstance(path, bytes) else Path(path).read_bytes()
    magic, _, _, _, _, _, linktype = struct.unpack_from("<IHHiIII", data, 0)
    if magic not in (PCAP_US, PCAP_NS):
        raise ValueError(f"not a little-endian classic pcap (magic {magic:#x})")
    mult = 1000 if magic == PCAP_US else 1
    pos, out = 24, []
    while pos + 16 <= len(data):
        sec, frac, caplen, origlen = struct.unpack_from("<IIII", data, pos)
        out.append((sec * 10**9 + frac * mult, data[pos + 16:pos + 16 + caplen], origlen))
        pos += 16 + caplen
    if pos != len(data):
        raise ValueError(f"truncated record at byte {pos}")
    return linktype & 0x03FFFFFF, out


def write_pcap(path: Path, frames: Iterable[bytes], linktype: int = 1,
               start_ns: int = 1_700_000_000 * 10**9, step_ns: int = 10_000) -> int:
    """A µs pcap of ``frames`` (one every step_ns); returns the packet count."""
    recs, ts = [], start_ns
    for f in frames:
        recs.append(struct.pack("<IIII", ts // 10**9, ts % 10**9 // 1000, len(f), len(f)) + f)
        ts += step_ns
    Path(path).write_bytes(struct.pack("<IHHiIII", PCAP_US, 2, 4, 0, 0, 262144, linktype)
                           + b"".join(recs))
    return len(recs)


# -- generated traffic ---------------------------------------------------------------------
class _AddressMap:
    """Gives every address met a distinct one in 198.18.1.0 .. 198.19.255.255."""

    def __init__(self) -> None:
        self.map: dict[bytes, bytes] = {}

    def __call__(self, a: bytes) -> bytes:
        b = self.map.get(a)
        if b is None:
            b = struct.pack("!I", _HOST_BASE + len(self.map) % _HOST_COUNT)
            self.map[a] = b
        return b


def rewrite_frame(frame: bytes, src_mac: bytes, dst_mac: bytes, amap: _AddressMap) -> bytes:
    """Ethernet MACs replaced; IPv4 addresses (after up to 2 VLAN tags) mapped into
    198.18/15, header checksum recomputed. Non-IPv4 frames keep their payload."""
    b = bytearray(frame)
    b[0:6], b[6:12] = dst_mac, src_mac
    off = 12
    et = struct.unpack_from("!H", b, off)[0] if len(b) >= 14 else 0
    while et in (0x8100, 0x88A8) and len(b) >= off + 8:
        off += 4
        et = struct.unpack_from("!H", b, off)[0]
    ip = off + 2
    if et == 0x0800 and len(b) >= ip + 20:
        ihl = (b[ip] & 0x0F) * 4
        b[ip + 12:ip + 16] = amap(bytes(b[ip + 12:ip + 16]))
        b[ip + 16:ip + 20] = amap(bytes(b[ip + 16:ip + 20]))
        b[ip + 10:ip + 12] = b"\0\0"
        b[ip + 10:ip + 12] = struct.pack("!H", inet_checksum(bytes(b[ip:ip + ihl])))
    elif et == 0x86DD:
        raise ValueError("IPv6 frames are not rewritten: craft them with 2001:db8:: addresses")
    return bytes(b)


def rewrite_pcap(src: Path, dst: Path, src_mac: bytes, dst_mac: bytes,
                 max_packets: int | None = None) -> int:
    """Copy a µs Ethernet pcap, every frame rewritten by :func:`rewrite_frame`."""
    amap = _AddressMap()
    data = Path(src).read_bytes()
    out = [data[:24]]
    pos, n = 24, 0
    while pos + 16 <= len(data) and (max_packets is None or n < max_packets):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        frame = data[pos + 16:pos + 16 + caplen]
        new = rewrite_frame(frame, src_mac, dst_mac, amap)
        out.append(data[pos:pos + 16] + new)
        pos += 16 + caplen
        n += 1
    Path(dst).write_bytes(b"".join(out))
    return n


def write_traffic(dst: Path, ns: VethNS, packets: int, seed: int = 1,
                  body_sizes: tuple[int, int] = (300, 6000), concurrency: int = 64) -> int:
    """``packets`` frames of ``pcapwire.synth`` sessions (TCP and DNS-like UDP), rewritten to
    198.18/15 addresses, from v1's MAC to v0's (so they are sent on v1 and received on v0)."""
    from pcapwire.synth import generate

    raw = Path(dst).with_suffix(".synth.pcap")
    target = 2 * packets * (sum(body_sizes) // 2 // 10 + 60)
    while True:
        info = generate(raw, target, seed=seed, concurrency=concurrency, body_sizes=body_sizes)
        if info["packets"] >= packets:
            break
        target = target * 2
    n = rewrite_pcap(raw, dst, ns.mac1, ns.mac0, max_packets=packets)
    raw.unlink()
    return n


def frames_only(records: list[tuple[int, bytes, int]]) -> list[tuple[bytes, int]]:
    """Records with timestamps aside: (frame bytes, origlen)."""
    return [(f, o) for _ts, f, o in records]
