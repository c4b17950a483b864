"""Helpers for the compressed-segment tests: compress a store's segments, the queries
that compare a compressed store with its plain twin, records by file offset."""

from __future__ import annotations

import struct
from pathlib import Path

from pcapwire.query import QuerySpec
from pcapwire.query.flows import flow_dict
from pcapwire.records import FlowKey
from pcapwire.store import Store
from pcapwire.store.compression import Compressed, compress_eligible

#: Non-indexable BPF expressions (every record is scanned) compared on every store.
SCAN_EXPRESSIONS = ("tcp[13] & 2 != 0", "greater 600", "udp or icmp or ip6",
                    "ip[8] = 64 and not tcp")
PROTO = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "ipv6-icmp": 58}


def compress_all(root: Path, frame_bytes: int, level: int = 3) -> list[Compressed]:
    """Compress every sealed segment of the store at ``root`` now."""
    return compress_eligible(root, level=level, frame_bytes=frame_bytes)


def query_specs(store: Store, max_flows: int = 400) -> list[QuerySpec]:
    """The whole store; every flow by 5-tuple (IP flows) and by id; hosts and ports of
    some flows; time windows cutting each segment; the non-indexable expressions."""
    specs = [QuerySpec()]
    flows = list(store.catalog.flows())[:max_flows]
    for row in flows:
        f = flow_dict(row)
        specs.append(QuerySpec(flow_ids=[row.id]))
        if row.ipver and f["proto"] in PROTO:
            specs.append(QuerySpec(five_tuple=FlowKey(PROTO[f["proto"]], f["src_ip"],
                                                      f["src_port"], f["dest_ip"],
                                                      f["dest_port"])))
    for row in flows[::7]:
        f = flow_dict(row)
        if row.ipver:
            specs.append(QuerySpec(hosts=[f["src_ip"]]))
        if f["dest_port"]:
            specs.append(QuerySpec(ports=[f["dest_port"]]))
    for seg in store.catalog.segments():
        mid = (seg.first_ns + seg.last_ns) // 2
        specs += [QuerySpec(start_ns=seg.first_ns, end_ns=mid + 1),
                  QuerySpec(start_ns=mid, end_ns=seg.last_ns + 1)]
    specs += [QuerySpec(bpf=e) for e in SCAN_EXPRESSIONS]
    return specs


def records_at(data: bytes) -> dict[int, bytes]:
    """Every record of a little-endian µs pcap by its file offset."""
    out, pos = {}, 24
    while pos + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        out[pos] = data[pos:pos + 16 + caplen]
        pos += 16 + caplen
    assert pos == len(data)
    return out
