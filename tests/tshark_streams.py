"""Per-direction TCP payloads as tshark reassembles them (``-z follow,tcp,raw``), so that
protocol-parser tests are fed by an independent tool, not by pcapwire's own reassembler."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Followed:
    client: tuple[str, int]
    server: tuple[str, int]
    #: (direction, bytes) in capture order; direction "orig" is node 0 (tshark's first
    #: endpoint, normally the client).
    chunks: list[tuple[str, bytes]] = field(default_factory=list)

    def data(self, direction: str) -> bytes:
        return b"".join(d for k, d in self.chunks if k == direction)


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    return host.strip("[]"), int(port)


def follow(pcap: Path | str, stream: int) -> Followed:
    out = subprocess.run(["tshark", "-r", str(pcap), "-q", "-z", f"follow,tcp,raw,{stream}"],
                         capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    node0 = node1 = ("", 0)
    res: Followed | None = None
    for line in lines:
        if line.startswith("Node 0:"):
            node0 = _endpoint(line[7:])
        elif line.startswith("Node 1:"):
            node1 = _endpoint(line[7:])
            res = Followed(node0, node1)
        elif res is not None and line and not line.startswith("="):
            direction = "resp" if line.startswith("\t") else "orig"
            res.chunks.append((direction, bytes.fromhex(line.strip())))
    assert res is not None, f"tshark found no stream {stream} in {pcap}"
    return res


def stream_count(pcap: Path | str) -> int:
    out = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "tcp.stream"],
                         capture_output=True, text=True, check=True).stdout
    ids = [int(x) for x in out.split() if x.strip().isdigit()]
    return max(ids) + 1 if ids else 0


def stream_records(pcap: Path | str) -> list:
    """Every TCP connection of ``pcap`` as StreamRecords, one per tshark follow chunk, in
    capture order within a connection and connections in order of their first packet.
    tshark reassembles (retransmitted bytes delivered once, first copy wins); timestamps
    are not in tshark's follow output, so ``start_ts`` counts chunks."""
    from pcapwire.records import FlowKey, StreamRecord

    out = []
    for n in range(stream_count(pcap)):
        f = follow(pcap, n)
        key = FlowKey(6, f.client[0], f.client[1], f.server[0], f.server[1])
        for i, (direction, data) in enumerate(f.chunks):
            out.append(StreamRecord(id=f"{n}-{i}", flow=key, direction=direction, data=data,
                                    start_ts=n + i / 10**6, end_ts=n + i / 10**6))
    return out
