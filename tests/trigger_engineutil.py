"""Helpers for the trigger engine tests: crafted TLS client hellos, a store whose segments
are the given captures, the chunks of one segment as a hunt unit reads them, and the
reference run of ``suricata -r`` by hand on a segment file."""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pcapwire.query import QuerySpec
from pcapwire.records import PcapChunk
from pcapwire.store import Store
from pcapwire.triggers.db import Hit
from suricatautil import by_hand

PROTO = {"TCP": 6, "UDP": 17}


def client_hello(sni: str) -> bytes:
    """A TLS 1.2 ClientHello record with one cipher suite and a server_name extension."""
    name = sni.encode()
    ext = struct.pack("!HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
    body = (b"\x03\x03" + bytes(range(32)) + b"\x00" + struct.pack("!H", 2) + b"\xc0\x2f"
            + b"\x01\x00" + struct.pack("!H", len(ext)) + ext)
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


def store_of(root: Path, captures: list[Path]) -> Store:
    """A store holding ``captures``, one segment each (the caller closes it)."""
    store = Store(root)
    store.ingest(captures)
    return store


async def segment_chunks(store: Store, segment_id: int, chunk_bytes: int = 4096
                         ) -> AsyncIterator[PcapChunk]:
    """The chunks of one sealed segment, as a hunt unit reads them."""
    engine = store.query_engine()
    spec = QuerySpec(chunk_bytes=chunk_bytes)
    async for chunk in engine.run(spec, record=False, plan=engine.plan(spec,
                                                                      segment_ids=[segment_id])):
        yield chunk


def segment_file(store: Store, segment_id: int) -> Path:
    (seg,) = store.catalog.segments(ids=[segment_id])
    path = Path(seg.path)
    return path if path.is_absolute() else store.root / path


def hand_alerts(pcap: Path, rules: Path, log_dir: Path) -> Counter[tuple[Any, ...]]:
    """``suricata -r PCAP -S RULES -k none`` by hand: alerts as (sid, proto, endpoints,
    time of a packet alert or None), endpoints as a set (either direction)."""
    out: Counter[tuple[Any, ...]] = Counter()
    for e in by_hand(pcap, rules, ["-k", "none"], log_dir):
        if e.get("event_type") != "alert":
            continue
        ends = frozenset({(e["src_ip"], e.get("src_port", 0)),
                          (e["dest_ip"], e.get("dest_port", 0))})
        ts = e["timestamp"] if e.get("pkt_src") == "wire/pcap" else None
        out[(e["alert"]["signature_id"], PROTO[e["proto"]], ends, ts)] += 1
    return out


def hit_alerts(hits: list[Hit]) -> Counter[tuple[Any, ...]]:
    """The same shape for hits of ``suricata:<sid>`` rules."""
    from datetime import UTC, datetime

    out: Counter[tuple[Any, ...]] = Counter()
    for h in hits:
        ends = frozenset({(h.src_ip, h.src_port), (h.dest_ip, h.dest_port)})
        ts = datetime.fromtimestamp(h.ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000") \
            if h.evidence.get("pkt_src") == "wire/pcap" else None
        out[(int(h.rule.removeprefix("suricata:")), h.proto, ends, ts)] += 1
    return out
