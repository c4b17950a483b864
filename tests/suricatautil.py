"""Helpers for the Suricata tests: the reference run (``suricata -r`` by hand, as a user
would type it, with the distribution's suricata.yaml) and chunks from a real store query."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from pcaputil import read_records
from pcapwire.query import QuerySpec
from pcapwire.records import PcapChunk
from pcapwire.store import Store

SURICATA = "suricata"
BASE_CONFIG = "/etc/suricata/suricata.yaml"


def suricata_version() -> tuple[int, ...]:
    out = subprocess.run([SURICATA, "-V"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"version (\d+)\.(\d+)\.(\d+)", out)
    assert m, out
    return tuple(int(x) for x in m.groups())


def split_args(args: list[str]) -> list[str]:
    """The manifest keeps suricata-verify's args as shell words ("-k none --set a=b")."""
    return [word for arg in args for word in shlex.split(arg)]


def by_hand(pcap: Path, rules: Path, args: list[str], log_dir: Path) -> list[dict[str, Any]]:
    """EVE events of ``suricata -c /etc/suricata/suricata.yaml -S RULES -r PCAP -l DIR ARGS``.

    ``unix-command.enabled=no`` only stops the by-hand run from opening the shared command
    socket in /var/run (parallel test runs would collide there); it does not change
    detection.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = [SURICATA, "-c", BASE_CONFIG, "-S", str(rules), "-r", str(pcap), "-l", str(log_dir),
           "--set", "unix-command.enabled=no", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    eve = log_dir / "eve.json"
    return [json.loads(line) for line in eve.read_text().splitlines() if line.strip()]


def sid_counts(events: list[dict[str, Any]]) -> Counter[int]:
    return Counter(e["alert"]["signature_id"] for e in events if e.get("event_type") == "alert")


def rechunk(chunks: list[PcapChunk], packets: int = 1) -> list[PcapChunk]:
    """The same records, ``packets`` per chunk, every chunk a complete pcap (the worst case
    for an engine that must keep flows across chunk boundaries)."""
    out: list[PcapChunk] = []
    for chunk in chunks:
        header, records = read_records(chunk.data)
        for i in range(0, len(records), packets):
            part = records[i:i + packets]
            out.append(PcapChunk(chunk.query_id, len(out), chunk.linktype, chunk.snaplen,
                                 header + b"".join(part), len(part), 0.0, 0.0))
    return out


def store_chunks(pcap: Path, root: Path, chunk_bytes: int = 4096, **spec: Any
                 ) -> list[PcapChunk]:
    """Ingest ``pcap`` into a fresh store and return the chunks of one query over it."""
    with Store(root) as store:
        store.ingest([pcap])
        return list(store.query_engine().iter_chunks(
            QuerySpec(chunk_bytes=chunk_bytes, **spec), query_id="q-test"))


def proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a live or zombie process, None once it is reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def assert_reaped(pid: int | None) -> None:
    """The engine process is gone and reaped: no zombie of ours left with that pid."""
    import os

    assert pid is not None
    state = proc_state(pid)
    assert state is None or state[1] != os.getpid(), f"pid {pid} is still our child: {state}"


def our_zombies() -> list[int]:
    import os

    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            state = proc_state(int(entry.name))
            if state and state[0] == "Z" and state[1] == os.getpid():
                out.append(int(entry.name))
    return out


def eicar_at_the_end(path: Path) -> None:
    """A capture of three TCP flows years apart (2010, 2020, 2020-09); the middle one's
    server sends the EICAR test string, never ACKed and never closed: Suricata inspects
    it only when the input ends, on a pseudo packet ("stream (flow timeout)") stamped with
    its engine clock -- the capture's first packet time, 2010. The shipped demo rule
    9100001 fires on it. (Packet by packet with :mod:`pcapwire.testing`.)"""
    import dpkt
    from pcapwire.testing import Capture, TcpConn

    eicar = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    cap = Capture()
    push = dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK
    for t0, sport, reply, close in ((1262304000.0, 40001, b"nothing", True),
                                    (1577836800.0, 40002, eicar, False),
                                    (1600000000.0, 40003, b"later", True)):
        cap.at(t0)
        conn = TcpConn(cap, "10.0.0.1", sport, "10.0.0.2", 80)
        conn.seg("c", push, b"hello\r\n")  # segments no one acknowledges
        conn.seg("s", push, reply)
        if close:
            conn.close()
    path.write_bytes(cap.pcap())
