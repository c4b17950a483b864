"""Helpers for the hash-list tests: a capture of HTTP downloads (one TCP connection per
file, crafted with dpkt) and the step context of an analyzer outside the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dpkt
from pcapwire.workflow import RunInfo, StepContext

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"
T0 = 1_700_000_000.0


def http_pcap(path: Path, files: list[tuple[str, bytes]], first_port: int = 40000) -> None:
    """One HTTP/1.1 GET per file, each on its own connection from port ``first_port + i``
    to port 80, 1 ms between packets from :data:`T0`."""
    cli, srv = bytes(map(int, CLIENT.split("."))), bytes(map(int, SERVER.split(".")))
    ts = T0
    with path.open("wb") as fh:
        w = dpkt.pcap.Writer(fh)

        def seg(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int,
                flags: int, data: bytes = b"") -> None:
            nonlocal ts
            ts += 0.001
            tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags,
                               win=65535, data=data)
            ip = dpkt.ip.IP(src=src, dst=dst, p=6, data=tcp, ttl=64)
            w.writepkt(bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6,
                                                    data=ip)), ts)

        for i, (name, body) in enumerate(files):
            sp, c, s = first_port + i, 1000, 5000
            seg(cli, srv, sp, 80, c, 0, dpkt.tcp.TH_SYN)
            seg(srv, cli, 80, sp, s, c + 1, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)
            c, s = c + 1, s + 1
            req = f"GET /files/{name} HTTP/1.1\r\nHost: files.example\r\n\r\n".encode()
            seg(cli, srv, sp, 80, c, s, dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK, req)
            c += len(req)
            resp = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body)) + body
            for off in range(0, len(resp), 1400):
                part = resp[off:off + 1400]
                seg(srv, cli, 80, sp, s, c, dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK, part)
                s += len(part)
            seg(cli, srv, sp, 80, c, s, dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)
            seg(srv, cli, 80, sp, s, c + 1, dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)
            seg(cli, srv, sp, 80, c + 1, s + 1, dpkt.tcp.TH_ACK)


def step_context(tmp_path: Path, config: Any, out: list[Any], *, data_dir: Path | None,
                 case: str = "IR-9", outputs: tuple[str, ...] = ("verdict", "file"),
                 analyzer: str = "hashlist") -> StepContext:
    async def emit(item: Any) -> None:
        out.append(item)

    return StepContext(run=RunInfo("run-1", "wf", case=case, query_id="q-1"), step="triage",
                       analyzer=analyzer, config=config, workdir=tmp_path / "work",
                       outputs=outputs, emit_fn=emit, data_dir=data_dir)
