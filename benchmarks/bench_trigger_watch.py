"""Trigger watch: arrival-to-notification latency while watching (target p99 <= 5 s).

    python benchmarks/bench_trigger_watch.py [--probes 100] [--interval 0.2]
        [--background-pps 0]

Runs as root (``ip netns``). ``pcapwire capture -i v0`` records a veth pair in a network
namespace of its own (tests/netns.py) into a store on /dev/shm, with its default commit
interval (0.5 s). In this process, the trigger service of that store
(:class:`pcapwire.triggers.service.TriggerService`) watches a trigger with an IP indicator
(198.18.77.7), a Suricata content rule (UDP payload ``pcapwire-content-probe``, run by the
segment's live engine) and a webhook target: a receiver on 127.0.0.1 that timestamps each
request's arrival. A sender inside the namespace sends probe frames on v1, IP probes and
content probes in turn (``--probes`` of each; one UDP packet each, a new source port
each: a new flow, a new match), taking the time just before each send. Latency per probe
= the receiver's arrival time of the match's webhook - the send time (both on this
machine's clock): it includes the kernel, the recorder's commit, the watch's step (for a
content probe: the hand-off to Suricata and its alert), the notifier and HTTP.
``--background-pps``: tcpreplay generated traffic on v1 meanwhile. Also reported: the
Suricata processes the watch started per segment. Results: printed, and
benchmarks/results/trigger_watch.json.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchdata import RESULTS, synth_capture

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import netns as NS  # noqa: E402
from pcapwire.testing.craft import inet_checksum  # noqa: E402
from pcapwire.triggers.db import TriggerDB  # noqa: E402
from pcapwire.triggers.model import from_dict  # noqa: E402
from pcapwire.triggers.notify import deliveries  # noqa: E402
from pcapwire.triggers.service import TriggerService  # noqa: E402
from triggerutil import Receiver  # noqa: E402

PCAPWIRE = Path(sys.executable).parent / "pcapwire"
TARGET_IP = "198.18.77.7"  # the IP indicator
CONTENT_IP, CONTENT_PORT = "198.18.88.8", 9998  # content probes: not the indicator's IP
CONTENT = b"pcapwire-content-probe"
RULE = (f'alert udp any any -> any {CONTENT_PORT} (msg:"pcapwire bench content probe"; '
        f'content:"{CONTENT.decode()}"; sid:9300001; rev:1;)\n')
SOURCE_IP = "198.18.9.1"  # generated probes: 198.18.0.0/15 only
SENDER = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("v1", 0))
for line in sys.stdin:
    frame = bytes.fromhex(line.strip())
    t = time.time()
    s.send(frame)
    print(repr(t), flush=True)
"""


def frame(ns: NS.VethNS, sport: int, content: bool) -> bytes:
    """An IP probe (to the indicator) or a content probe (the rule's payload)."""
    dst, dport = (CONTENT_IP, CONTENT_PORT) if content else (TARGET_IP, 9999)
    payload = (CONTENT if content else b"probe") + b" %d" % sport
    udp_len = 8 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, sport & 0xFFFF, 0, 64, 17, 0,
                     socket.inet_aton(SOURCE_IP), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", inet_checksum(ip)) + ip[12:]
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    return ns.mac0 + ns.mac1 + b"\x08\x00" + ip + udp


def quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def summary(latencies: list[float]) -> dict[str, float]:
    return {"count": len(latencies), "p50_s": round(quantile(latencies, 0.50), 3),
            "p99_s": round(quantile(latencies, 0.99), 3),
            "max_s": round(max(latencies), 3),
            "mean_s": round(statistics.mean(latencies), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", type=int, default=100, help="probes of each kind")
    ap.add_argument("--interval", type=float, default=0.2, help="seconds between probes")
    ap.add_argument("--background-pps", type=int, default=0)
    args = ap.parse_args()
    why = NS.available()
    if why:
        sys.exit(f"bench_trigger_watch: {why}")
    RESULTS.mkdir(exist_ok=True)
    ns = NS.create("pwtw-")
    rx = Receiver()
    tmp = Path(tempfile.mkdtemp(prefix="pcapwire-bench-tw-", dir="/dev/shm"))
    store = tmp / "store"
    service: TriggerService | None = None
    background: subprocess.Popen | None = None
    try:
        log = open(tmp / "capture.log", "wb")  # noqa: SIM115
        rec = ns.popen(str(PCAPWIRE), "--data-dir", str(store), "capture", "-i", "v0",
                       "--progress", "none", stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while not (store / "capture" / "status.json").exists():
            if rec.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / "capture.log").read_text()[-2000:])
            time.sleep(0.05)
        with TriggerDB(store) as db:
            trig, _hunt = db.create(from_dict({
                "name": "bench-watch", "indicators": {"ips": [TARGET_IP]},
                "suricata_rules": RULE,
                "notify": [{"type": "webhook", "url": rx.url("/hook"), "secret": "bench"}]}),
                "bench")
        service = TriggerService(store)
        service.start()
        if not service.started.wait(60):
            raise RuntimeError("the trigger service did not start")
        if args.background_pps:
            bg = synth_capture(64)
            rewritten = tmp / "bg.pcap"
            NS.rewrite_pcap(bg, rewritten, ns.mac1, ns.mac0)
            background = ns.popen("tcpreplay", "-i", "v1", f"--pps={args.background_pps}",
                                  "--loop=0", str(rewritten), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        sender = ns.popen(sys.executable, "-c", SENDER, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
        sent: dict[int, float] = {}
        total = 2 * args.probes
        for i in range(total):
            sport = 20000 + i
            sender.stdin.write(frame(ns, sport, content=i % 2 == 1).hex() + "\n")
            sender.stdin.flush()
            sent[sport] = float(sender.stdout.readline())
            time.sleep(args.interval)  # pacing of the probes, not synchronisation
        got = rx.wait(total, "/hook", timeout=120)
        sender.stdin.close()
        latencies: dict[str, list[float]] = {"ip": [], "content": []}
        for r in got:
            match = json.loads(r["body"])["match"]
            kind = "content" if match["rule"].startswith("suricata:") else "ip"
            latencies[kind].append(r["arrived"] - sent[match["flow"]["src_port"]])
        with TriggerDB(store) as db:  # the last ones may still be being logged
            deadline = time.monotonic() + 30
            while True:
                statuses = [d["status"] for d in deliveries(db, trig.id)]
                if statuses.count("delivered") >= total or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        assert service.watch is not None
        starts = sorted(service.watch.engines.starts().values())
        result = {
            "probes_per_kind": args.probes, "interval_s": args.interval,
            "background_pps": args.background_pps,
            "ip": summary(latencies["ip"]), "content": summary(latencies["content"]),
            "suricata_starts_per_segment": starts,
            "delivered": statuses.count("delivered"), "target_p99_s": 5.0,
            "what": "send on v1 (netns) -> pcapwire capture -i v0 (commit 0.5 s) -> watch live "
                    "step (IP indicator: BPF prefilter; content rule: the segment's live "
                    "Suricata) -> match -> signed webhook to 127.0.0.1 (arrival timestamped "
                    "by the receiver)"}
        print(json.dumps(result, indent=2))
        for kind in ("ip", "content"):
            r = result[kind]
            print(f"arrival to notification, {kind} probes: p50 {r['p50_s']} s, p99 "
                  f"{r['p99_s']} s, max {r['max_s']} s over {r['count']} probes (target p99 "
                  "<= 5 s)")
        print(f"Suricata started per live segment: {starts}")
        (RESULTS / "trigger_watch.json").write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if service is not None:
            service.stop()
        if background is not None:
            ns.stop(background)
        rx.close()
        ns.destroy()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
