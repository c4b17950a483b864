"""Live capture: pcapwire against tcpdump and dumpcap, on a veth pair in a network namespace.

    python benchmarks/bench_capture.py [--packets 1000000] [--rounds 3]
        [--rates 50000,100000,150000] [--rate-packets 300000] [--tools ...]

Runs as root (``ip netns``). The namespace (tests/netns.py) holds both ends of a veth pair;
generated traffic (``pcapwire.synth`` sessions rewritten to 198.18.0.0/15 and the veth MACs,
1 M packets, cached as benchmarks/data/capture-1m.pcap) is sent on v1 with tcpreplay, at
--topspeed and at fixed rates (--limit'ed to --rate-packets), while ONE tool records v0:

- ``pcapwire``: the recorder, ``pcapwire --data-dir D capture -i v0`` (segments, in-line
  index, commits; core/capture/);
- ``pcapwire-core``: the native capture core alone (``_native.Capture`` with its defaults, a
  64 MiB ring) in tests/capture_child.py: records to a file, indexed in-line with
  ``SegmentIndexer``, no store;
- ``tcpdump``: ``tcpdump -i v0 -w F`` (libpcap 1.10, TPACKET_V3, its default 2 MiB buffer);
- ``tcpdump-64M``: the same with ``-B 65536`` (the ring pcapwire uses);
- ``dumpcap``: ``dumpcap -i v0 -w F -P`` (pcap output; default 2 MiB buffer).

Tools alternate (A B C A B C ...) within each round and rate. Per trial: packets sent,
recorded, drops as the tool reports them, CPU seconds of the tool's process from the moment
it is capturing to the end of the drain (``/proc/PID/stat``), RSS every 0.25 s. Outputs go to
a tmpfs (/dev/shm) so disk writeback does not add noise. The machine has 2 cores, shared by
tcpreplay, the kernel's receive path and the tool: figures move between runs; medians and
ranges are reported. Results: printed, and benchmarks/results/capture.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchdata import DATA, RESULTS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import netns as NS  # noqa: E402

CHILD = REPO / "tests" / "capture_child.py"
PCAPWIRE = Path(sys.executable).parent / "pcapwire"
TOOLS = ("pcapwire", "pcapwire-core", "tcpdump", "tcpdump-64M", "dumpcap")
CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.t0 = pid, every, time.monotonic()
        self.samples: list[tuple[float, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            kb = rss_kb(self.pid)
            if kb:
                self.samples.append((round(time.monotonic() - self.t0, 2), kb))
            self.halt.wait(self.every)


def hist_quantile(hist: dict[str, Any], q: float) -> float | None:
    """The upper bound of the first bucket whose cumulative count reaches q of the total
    (Prometheus-style ``le`` buckets); None when the quantile lies above the last bucket."""
    total = hist.get("count", 0)
    if not total:
        return None
    for bound, cum in zip(hist["buckets"], hist["counts"], strict=True):
        if cum >= q * total:
            return float(bound)
    return None


def quantile(xs: list[float], q: float) -> float | None:
    """Nearest-rank quantile."""
    if not xs:
        return None
    ys = sorted(xs)
    return ys[min(len(ys) - 1, max(0, int(q * len(ys) + 0.5) - 1))]


#: the follow's sample: TCP SYN and SYN-ACK packets (17 % of the generated traffic, spread
#: over the whole replay, unlike its DNS-like UDP, all in the first fifth)
FOLLOW_BPF = "tcp[tcpflags] & tcp-syn != 0"


class FollowProbe(threading.Thread):
    """``pcapwire query --follow --bpf FOLLOW_BPF -w -`` on the recorder's data dir (a plain
    process: it only reads the store's files), its pcap stream parsed as it arrives: for
    each packet, wall clock at delivery minus the packet's capture timestamp (both this
    machine's CLOCK_REALTIME), and the first TCP/UDP 5-tuples seen (flows recorded and
    committed, for the 5-tuple queries). At most ``max_samples`` latencies are kept."""

    def __init__(self, store: Path, logs: Path, max_samples: int = 2_000_000) -> None:
        super().__init__(daemon=True)
        self.max_samples = max_samples
        self.latencies: list[float] = []
        self.tuples: list[str] = []
        self.err = open(logs / "follow.stderr", "wb")  # noqa: SIM115
        self.p = subprocess.Popen([str(PCAPWIRE), "--data-dir", str(store), "query",
                                   "--follow", "--bpf", FOLLOW_BPF, "-w", "-"],
                                  stdout=subprocess.PIPE, stderr=self.err,
                                  start_new_session=True)

    def run(self) -> None:
        import struct
        assert self.p.stdout is not None
        fd, buf, div, pos = self.p.stdout.fileno(), b"", 0, 0
        seen: set[str] = set()
        while True:
            chunk = os.read(fd, 1 << 20)
            now = time.time()
            if not chunk:
                break
            buf = buf[pos:] + chunk
            pos = 0
            if not div:
                if len(buf) < 24:
                    continue
                magic = struct.unpack_from("<I", buf)[0]
                div = {NS.PCAP_US: 1e6, NS.PCAP_NS: 1e9}.get(magic, 0)
                if not div:
                    raise RuntimeError(f"follow: unexpected output format {magic:#x}")
                pos = 24
            while pos + 16 <= len(buf):
                sec, frac, caplen = struct.unpack_from("<III", buf, pos)
                if pos + 16 + caplen > len(buf):
                    break
                if len(self.latencies) < self.max_samples:
                    self.latencies.append(now - (sec + frac / div))
                if len(self.tuples) < 64:
                    t = five_tuple(buf[pos + 16:pos + 16 + caplen])
                    if t and t not in seen:
                        seen.add(t)
                        self.tuples.append(t)
                pos += 16 + caplen

    def stop(self) -> None:
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGINT)
        try:
            self.p.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(10)
        self.join(30)
        self.err.close()


def five_tuple(frame: bytes) -> str | None:
    """PROTO:SRC:SPORT:DST:DPORT of an untagged Ethernet/IPv4 TCP or UDP frame."""
    if len(frame) < 38 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    proto = {6: "tcp", 17: "udp"}.get(frame[23])
    l4 = 14 + ihl
    if proto is None or len(frame) < l4 + 4:
        return None
    src, dst = ".".join(map(str, frame[26:30])), ".".join(map(str, frame[30:34]))
    sport, dport = int.from_bytes(frame[l4:l4 + 2], "big"), int.from_bytes(frame[l4 + 2:l4 + 4],
                                                                              "big")
    return f"{proto}:{src}:{sport}:{dst}:{dport}"


class QueryProbe(threading.Thread):
    """Up to ``count`` whole ``pcapwire query --five-tuple T -w /dev/null`` processes, one
    after another, each for a flow the follow has already delivered (so recorded and
    committed), while the replay runs; wall time per process, and whether it ended before
    the replay did. Starts once a flow is known; gives up after ``max_s``."""

    def __init__(self, store: Path, follow: FollowProbe, count: int, max_s: float) -> None:
        super().__init__(daemon=True)
        self.store, self.follow, self.count, self.max_s = store, follow, count, max_s
        self.results: list[dict[str, Any]] = []
        self.replay_done = threading.Event()
        self.halt = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.max_s
        i = 0
        while (i < self.count and not self.halt.is_set() and not self.replay_done.is_set()
               and time.monotonic() < deadline):
            if len(self.follow.tuples) <= i:
                time.sleep(0.05)
                continue
            tup = self.follow.tuples[i]
            t0 = time.monotonic()
            r = subprocess.run([str(PCAPWIRE), "--data-dir", str(self.store), "query",
                                "--five-tuple", tup, "--stats", "-w", "/dev/null"],
                               capture_output=True, text=True, timeout=120, check=False)
            wall = time.monotonic() - t0
            self.results.append({"five_tuple": tup, "wall_s": round(wall, 3), "rc": r.returncode,
                                 "during_replay": not self.replay_done.is_set(),
                                 "stats": r.stderr.strip()[-300:]})
            i += 1


def wait_for(path: Path, marker: bytes, p: subprocess.Popen, timeout: float = 60) -> None:
    """Until the tool's log holds marker (the tools write their logs to files: a pipe
    nobody reads could fill up and stall them)."""
    deadline = time.monotonic() + timeout
    while marker not in (path.read_bytes() if path.exists() else b""):
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"tool did not start: {path.read_bytes()[-2000:]!r}")
        time.sleep(0.05)


def start(ns: NS.VethNS, tool: str, out: Path, logs: Path, pin: list[str]) -> subprocess.Popen:
    """The tool capturing on v0 (under ``pin``, e.g. taskset), returned once it captures."""
    so, se = open(logs / "stdout", "wb"), open(logs / "stderr", "wb")  # noqa: SIM115
    pipes: dict[str, Any] = {"stdout": so, "stderr": se}
    try:
        if tool == "pcapwire":
            p = ns.popen(*pin, str(PCAPWIRE), "--data-dir", str(out), "capture", "-i", "v0",
                         **pipes)
            status = out / "capture" / "status.json"
            deadline = time.monotonic() + 60
            while not status.exists():
                if p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("recorder did not start: "
                                       f"{(logs / 'stderr').read_bytes()[-2000:]!r}")
                time.sleep(0.05)
        elif tool == "pcapwire-core":
            p = ns.popen(*pin, sys.executable, str(CHILD), "--out", str(out), "--no-meta", **pipes)
            wait_for(logs / "stdout", b'"ready"', p)
        elif tool.startswith("tcpdump"):
            extra = ["-B", "65536"] if tool == "tcpdump-64M" else []
            p = ns.popen(*pin, "tcpdump", "-i", "v0", "-w", str(out), "-n", *extra, **pipes)
            wait_for(logs / "stderr", b"listening on", p)
        elif tool == "dumpcap":
            p = ns.popen(*pin, "dumpcap", "-i", "v0", "-w", str(out), "-P", "-q", **pipes)
            wait_for(logs / "stderr", b"Capturing on", p)
        else:
            raise ValueError(tool)
    finally:
        so.close()
        se.close()
    return p


def finish(ns: NS.VethNS, tool: str, p: subprocess.Popen, logs: Path) -> dict[str, int]:
    """Stop the tool; (recorded, drops) as it reports them."""
    ns.stop(p, signal.SIGTERM if tool == "pcapwire-core" else signal.SIGINT, timeout=300)
    out = (logs / "stdout").read_text(errors="replace")
    text = out + (logs / "stderr").read_text(errors="replace")
    if tool == "pcapwire-core":
        res = json.loads(out.strip().splitlines()[-1])
        st = res["stats"][0]
        return {"recorded": res["packets"], "drops": st["kernel_drops"]}
    if tool == "pcapwire":
        m = re.search(r"v0: (\d+) packets recorded, drops: kernel (\d+), interface (\d+), "
                      r"backlog (\d+)", text)
        if not m:
            raise RuntimeError(f"unexpected recorder output: {text[-2000:]}")
        return {"recorded": int(m.group(1)),
                "drops": int(m.group(2)) + int(m.group(3)) + int(m.group(4))}
    if tool.startswith("tcpdump"):
        c = re.search(r"(\d+) packets captured", text)
        d = re.search(r"(\d+) packets dropped by kernel", text)
        if not c or not d:
            raise RuntimeError(f"unexpected tcpdump output: {text[-2000:]}")
        return {"recorded": int(c.group(1)), "drops": int(d.group(1))}
    c = re.search(r"Packets captured: (\d+)", text)
    d = re.search(r"Packets received/dropped on interface '[^']+': (\d+)/(\d+)", text)
    if not c or not d:
        raise RuntimeError(f"unexpected dumpcap output: {text[-2000:]}")
    return {"recorded": int(c.group(1)), "drops": int(d.group(2))}


def trial(ns: NS.VethNS, tool: str, traffic: Path, rate: int | str, packets: int,
          work: Path, probe: bool = False, queries: int = 10) -> dict[str, Any]:
    """One tool recording one replay. rate: pps, "topspeed", or "topspeed-1cpu" (the tool
    and tcpreplay pinned to the same CPU: capacity when the recorder must share a core).
    probe (pcapwire only): also arrival-to-queryable latency (status.json's histogram, and a
    ``query --follow`` measuring delivery time minus capture time), 5-tuple queries while
    recording (:class:`QueryProbe`) and RSS once a second."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out = work / ("store" if tool == "pcapwire" else "out.pcap")
    before = {i: ns.link_stats(i) for i in ("v0", "v1")}
    logs = work / "logs"
    logs.mkdir()
    pin = ["taskset", "-c", "0"] if rate == "topspeed-1cpu" else []
    p = start(ns, tool, out, logs, pin)
    sampler = RssSampler(p.pid)
    sampler.start()
    cpu0 = cpu_seconds(p.pid)
    follow = qprobe = None
    if probe and tool == "pcapwire":
        follow = FollowProbe(out, logs)
        follow.start()
        qprobe = QueryProbe(out, follow, queries, max_s=300)
        qprobe.start()
    limit = ["--limit", str(packets)] if packets else []
    # topspeed: the file preloaded in memory (-K), else tcpreplay's reads limit the rate
    rate_arg = [f"--pps={rate}"] if isinstance(rate, int) else ["--topspeed", "-K"]
    r = ns.run(*pin, "tcpreplay", "-i", "v1", *rate_arg, *limit, str(traffic), timeout=900)
    rep = NS.parse_tcpreplay(r.stdout + r.stderr)
    rated = re.search(r"Rated: [\d.]+ Bps, ([\d.]+) Mbps, ([\d.]+) pps", r.stdout)
    if qprobe:
        qprobe.replay_done.set()
    time.sleep(2.0)  # drain: the tools' ring blocks retire within 1 s
    cpu = cpu_seconds(p.pid) - cpu0
    sampler.halt.set()
    if follow and qprobe:
        qprobe.halt.set()
        qprobe.join(150)
        follow.stop()
    counts = finish(ns, tool, p, logs)
    sampler.join()
    extra: dict[str, Any] = {}
    if follow and qprobe:
        extra = probe_figures(out, follow, qprobe, sampler, logs)
    after = {i: ns.link_stats(i) for i in ("v0", "v1")}
    if_drops = (after["v0"]["rx_dropped"] - before["v0"]["rx_dropped"]
                + after["v1"]["tx_dropped"] - before["v1"]["tx_dropped"])
    rss = [kb for _, kb in sampler.samples]
    shutil.rmtree(work, ignore_errors=True)
    lost = rep.sent - counts["recorded"]
    return {"tool": tool, "rate": rate, "sent": rep.sent,
            "recorded": counts["recorded"], "drops_reported": counts["drops"],
            "lost": lost, "if_drops": if_drops,
            "pps": float(rated.group(2)) if rated else None,
            "mbps": float(rated.group(1)) if rated else None,
            "cpu_s": round(cpu, 3),
            "cpu_s_per_mpkt": round(cpu / (counts["recorded"] / 1e6), 3)
            if counts["recorded"] else None,
            "rss_kb_max": max(rss, default=0), "rss_kb_first": rss[0] if rss else 0,
            "rss_kb_last": rss[-1] if rss else 0, "rss_samples": sampler.samples[::4],
            **extra}


PROBE_METHOD = {
    "short": "latency: hist = status.json histogram, bucket bound where the cumulative count "
             "reaches 50 %/99 %; follow = query --follow delivery wall time - capture "
             "timestamp, TCP SYN/SYN-ACK packets; q5 = whole `query --five-tuple -w "
             "/dev/null` processes during the replay, median/max; rss = VmRSS once a "
             "second, first/max/last",
    "latency_hist": "final status.json latency_hist (arrival to catalog commit); p50/p99 = "
                    "upper bound of the first bucket whose cumulative count >= 0.5/0.99 of "
                    "count (None: above the last bucket, 5 s)",
    "follow_latency": f"pcapwire query --follow --bpf '{FOLLOW_BPF}' -w - on the recorder's "
                      "data dir, started once it records; per packet: time.time() when the "
                      "read that completed its record returned minus its pcap timestamp "
                      "(kernel capture time, same clock); includes the follow's 0.1 s poll "
                      "and the pipe; nearest-rank p50/p99",
    "five_tuple_query": "sequential whole processes `pcapwire --data-dir D query --five-tuple "
                        "T --stats -w /dev/null`, T a flow the follow had delivered, started "
                        "while tcpreplay runs (none started after it ends), wall time each",
    "rss": "VmRSS of the recorder from /proc/PID/status every 0.25 s; rss_1s_kb = every "
           "4th sample (1 s apart): first, max, last",
}


def probe_line(t: dict[str, Any]) -> str:
    def s(x: float | None, fmt: str = ".3f") -> str:
        return "n/a" if x is None else f"{x:{fmt}}"
    r = t["rss_1s_kb"]
    return (f"latency hist p50 <= {s(t['latency_hist_p50_le_s'], 'g')} s "
            f"p99 <= {s(t['latency_hist_p99_le_s'], 'g')} s | follow p50 "
            f"{s(t['follow_latency_p50_s'])} s p99 {s(t['follow_latency_p99_s'])} s "
            f"(n {t['follow_samples']}) | q5 median {s(t['five_tuple_query_median_s'])} s max "
            f"{s(t['five_tuple_query_max_s'])} s (n {t['five_tuple_query_n']}, "
            f"{t['five_tuple_query_during_replay']} during replay) | rss first/max/last "
            f"{r['first'] // 1024}/{r['max'] // 1024}/{r['last'] // 1024} MiB")


def probe_figures(store: Path, follow: FollowProbe, qprobe: QueryProbe, sampler: RssSampler,
                  logs: Path) -> dict[str, Any]:
    """The probe trial's figures (see :func:`trial`)."""
    status = json.loads((store / "capture" / "status.json").read_bytes())
    hist = status["latency_hist"]
    lat = follow.latencies
    ok = [q for q in qprobe.results if q["rc"] == 0]
    walls = [q["wall_s"] for q in ok]
    per_s = sampler.samples[::4]  # the 0.25 s samples, one a second
    return {
        "latency_hist": hist,
        "latency_hist_p50_le_s": hist_quantile(hist, 0.50),
        "latency_hist_p99_le_s": hist_quantile(hist, 0.99),
        "latency_hist_mean_s": round(hist["sum"] / hist["count"], 4) if hist["count"] else None,
        "follow_samples": len(lat),
        "follow_latency_p50_s": round(quantile(lat, 0.50) or 0, 4) if lat else None,
        "follow_latency_p99_s": round(quantile(lat, 0.99) or 0, 4) if lat else None,
        "follow_latency_max_s": round(max(lat), 4) if lat else None,
        "follow_stderr": (logs / "follow.stderr").read_text(errors="replace")[-500:],
        "five_tuple_queries": qprobe.results,
        "five_tuple_query_n": len(walls),
        "five_tuple_query_during_replay": sum(q["during_replay"] for q in ok),
        "five_tuple_query_median_s": round(statistics.median(walls), 3) if walls else None,
        "five_tuple_query_max_s": round(max(walls), 3) if walls else None,
        "rss_1s_kb": {"first": per_s[0][1] if per_s else 0,
                      "max": max((kb for _, kb in per_s), default=0),
                      "last": per_s[-1][1] if per_s else 0, "samples": len(per_s)},
    }


def med_range(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3),
            "max": round(max(xs), 3)}


def summarise(trials: list[dict[str, Any]], tools: list[str],
              rates: list[int | str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for tool in tools:
        mine = [t for t in trials if t["tool"] == tool]
        by_rate: dict[str, Any] = {}
        best: dict[str, Any] | None = None
        for rate in rates:
            key = rate
            ts = [t for t in mine if t["rate"] == key]
            if not ts:
                continue
            zero = all(t["lost"] == 0 for t in ts)
            row = {"rounds": len(ts), "zero_loss_every_round": zero,
                   "lost": med_range([t["lost"] for t in ts]),
                   "pps": med_range([t["pps"] or 0 for t in ts]),
                   "mbps": med_range([t["mbps"] or 0 for t in ts]),
                   "cpu_s_per_mpkt": med_range([t["cpu_s_per_mpkt"] or 0 for t in ts]),
                   "rss_kb_max": max(t["rss_kb_max"] for t in ts)}
            by_rate[str(key)] = row
            if zero and rate != "topspeed-1cpu" and (
                    best is None or row["pps"]["median"] > best["pps"]["median"]):
                best = {"rate": key, **row}
        summary[tool] = {"highest_zero_loss": best and {
            "rate": best["rate"], "pps_median": best["pps"]["median"],
            "mbps_median": best["mbps"]["median"]}, "by_rate": by_rate}
    return summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--rate-packets", type=int, default=300_000,
                    help="packets sent per fixed-rate trial (tcpreplay --limit)")
    ap.add_argument("--rates", default="50000,100000,150000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--no-pinned", action="store_true",
                    help="skip the topspeed-1cpu trials (tool and tcpreplay on one CPU)")
    ap.add_argument("--probe-rates", default="100000,topspeed",
                    help="rates of the pcapwire probe trials (latency, 5-tuple queries while "
                         "recording, RSS each second); empty: none")
    ap.add_argument("--probe-packets", type=int, default=1_000_000,
                    help="packets sent per fixed-rate probe trial (topspeed: all of them)")
    ap.add_argument("--probe-queries", type=int, default=10,
                    help="5-tuple query processes per probe trial (while the replay runs)")
    ap.add_argument("--probe-only", action="store_true",
                    help="only the probe trials (no tool comparison)")
    args = ap.parse_args()
    why = NS.available()
    if why:
        raise SystemExit(f"bench_capture: {why}")
    tools = [t for t in args.tools.split(",") if t]
    if "dumpcap" in tools and shutil.which("dumpcap") is None:
        tools.remove("dumpcap")
    if "pcapwire" in tools and not PCAPWIRE.exists():
        tools.remove("pcapwire")
    rates: list[int | str] = [int(x) for x in args.rates.split(",") if x] + ["topspeed"]
    if not args.no_pinned:
        rates.append("topspeed-1cpu")
    probe_rates: list[int | str] = [x if x.startswith("topspeed") else int(x)
                                    for x in args.probe_rates.split(",") if x]
    if "pcapwire" not in tools:
        probe_rates = []
    if args.probe_only:
        tools, rates = [], []
    DATA.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else DATA
    work = shm / f"pcapwire-bench-capture-{os.getpid()}"
    ns = NS.create()
    trials: list[dict[str, Any]] = []
    probes: list[dict[str, Any]] = []
    try:
        traffic = DATA / f"capture-{args.packets // 1000}k.pcap"
        if not traffic.exists():
            print(f"generating {traffic} ...", file=sys.stderr)
            tmp = traffic.with_suffix(".tmp")
            NS.write_traffic(tmp, ns, args.packets, seed=11)
            tmp.rename(traffic)
        size = traffic.stat().st_size
        print(f"traffic: {args.packets} packets, {size / 2**20:.0f} MiB "
              f"({(size - 24) / args.packets - 16:.0f} bytes per frame on average)")
        for rnd in range(args.rounds):
            for rate in rates:
                for tool in tools:
                    n = 0 if isinstance(rate, str) else args.rate_packets
                    t = trial(ns, tool, traffic, rate, n, work)
                    t["round"] = rnd
                    trials.append(t)
                    print(f"round {rnd} {str(t['rate']):>9} {tool:14} sent {t['sent']:8} "
                          f"recorded {t['recorded']:8} lost {t['lost']:7} "
                          f"(reported {t['drops_reported']}, if {t['if_drops']}) "
                          f"{t['pps'] or 0:9.0f} pps {t['mbps'] or 0:7.1f} Mbit/s "
                          f"cpu {t['cpu_s']:6.2f} s = {t['cpu_s_per_mpkt'] or 0:5.2f} s/Mpkt "
                          f"rss max {t['rss_kb_max'] // 1024} MiB", flush=True)
            for rate in probe_rates:
                n = 0 if isinstance(rate, str) else args.probe_packets
                t = trial(ns, "pcapwire", traffic, rate, n, work, probe=True,
                          queries=args.probe_queries)
                t["round"] = rnd
                probes.append(t)
                print(f"round {rnd} {str(t['rate']):>9} pcapwire-probe sent {t['sent']:8} "
                      f"recorded {t['recorded']:8} lost {t['lost']:7} {t['pps'] or 0:9.0f} pps"
                      f" | {probe_line(t)}", flush=True)
    finally:
        ns.destroy()
        shutil.rmtree(work, ignore_errors=True)
    summary = summarise(trials, tools, rates)
    load = Path("/proc/loadavg").read_text().split()[:3]
    doc = {"packets": args.packets, "rate_packets": args.rate_packets, "rounds": args.rounds,
           "cpus": os.cpu_count(), "loadavg_at_end": load, "summary": summary,
           "trials": trials, "probe_packets": args.probe_packets,
           "probe": {"method": PROBE_METHOD, "trials": probes}}
    result = RESULTS / "capture.json"
    if args.probe_only and result.exists():  # keep the comparison of the last full run
        old = json.loads(result.read_text())
        doc = {**old, "probe_packets": doc["probe_packets"], "probe": doc["probe"],
               "probe_loadavg_at_end": load}
    result.write_text(json.dumps(doc, indent=1) + "\n")
    if summary:
        print("\nhighest rate with 0 loss in every round (median achieved rate); at topspeed: "
              "packets lost, CPU s per million packets (median [range]), peak RSS; "
              "topspeed-1cpu: packets lost")
    for tool, s in summary.items():
        hz = s["highest_zero_loss"]
        top = s["by_rate"].get("topspeed", {})
        one = s["by_rate"].get("topspeed-1cpu", {}).get("lost", {})
        cpu = top.get("cpu_s_per_mpkt", {})
        lost = top.get("lost", {})

        def mr(d: dict[str, float], fmt: str = ".0f") -> str:
            return (f"{d.get('median', 0):{fmt}} [{d.get('min', 0):{fmt}}.."
                    f"{d.get('max', 0):{fmt}}]")
        print(f"  {tool:14} "
              + (f"{hz['rate']!s:>9}: {hz['pps_median']:7.0f} pps {hz['mbps_median']:6.1f} "
                 f"Mbit/s" if hz else "   (none)")
              + f" | lost {mr(lost)} | cpu {mr(cpu, '.2f')} s/Mpkt"
              + f" | rss {top.get('rss_kb_max', 0) // 1024} MiB | 1cpu lost {mr(one)}")
    if probes:
        print("\npcapwire recorder probes (" + PROBE_METHOD["short"] + ")")
        for t in probes:
            print(f"  round {t['round']} {str(t['rate']):>9} {t['pps'] or 0:8.0f} pps "
                  f"lost {t['lost']:6} | {probe_line(t)}")


if __name__ == "__main__":
    main()
