"""IP-indicator hits on dense traffic (most flows match, several indicators per flow, flows
spanning segments): :func:`pcapwire.triggers.ip_walk.ip_hits` returns exactly the hits
of a plain reference, every flow of the segment checked against every indicator with
``ipaddress`` (one hit per (indicator, flow), the matched endpoint as evidence, oriented
initiator -> responder, the flow's first packet in the segment as time);
:func:`~pcapwire.triggers.ip_walk.ip_batches`, several segments dealt round the walkers'
threads (:data:`~pcapwire.triggers.ip_walk.WALK_THREADS`, a segment at a time, handed out
in order; one walk when the scope cuts a segment), returns exactly those hits as the
result set takes them (``HitBatch.of``)."""

from __future__ import annotations

import ipaddress
import socket
import sqlite3
import threading
from collections import Counter
from contextlib import closing, nullcontext
from pathlib import Path

import pytest
from pcapwire.store import Store
from pcapwire.synth import generate
from pcapwire.triggers.db import Hit, HitBatch, StagedRows
from pcapwire.triggers.ip_walk import (
    SPLIT_MIN_FLOWS,
    WALK_THREADS,
    IpWalkers,
    ip_batches,
    ip_hits,
)
from pcapwire.triggers.model import Scope

SEGMENT_BYTES = 2**20
# The DNS server (a fifth of all flows), the server nets (all other flows; one of them
# also as two halves), an absent host and IPv6 (absent); _indicators adds every other
# client address.
CIDRS = ["10.0.0.53", "192.0.2.0/24", "198.51.100.0/25", "198.51.100.128/25",
         "198.51.100.0/24", "198.18.0.1", "2001:db8::/32", "::1"]


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4 MiB generated capture in 1 MiB segments."""
    base = tmp_path_factory.mktemp("dense")
    cap = base / "synth.pcap"
    generate(cap, 4 * 2**20, seed=11, body_sizes=(500, 4_000))
    with Store(base / "store") as store:
        store.ingest([cap], segment_max_bytes=SEGMENT_BYTES)
    return base / "store"


def _indicators(store: Store) -> list[str]:
    """CIDRS and every other client address of the capture (a /32 each)."""
    clients = sorted({ipaddress.IPv4Address(r[0][:4]) for r in store.catalog.db.execute(
        "SELECT addr_a FROM flows WHERE ipver = 4")} - {ipaddress.IPv4Address("10.0.0.53")})
    return CIDRS + [str(a) for a in clients[::2] if a.packed[0] == 10]


def _text(ipver: int, blob: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if ipver == 4 else socket.AF_INET6,
                            blob[:4] if ipver == 4 else blob)


def _reference(store: Store, segment_id: int, ips: list[str]) -> list[Hit]:
    """Every flow of the segment against every indicator (as integer ranges)."""
    nets = [(v, n.version, int(n.network_address), int(n.broadcast_address))
            for v in ips for n in [ipaddress.ip_network(v, strict=False)]]
    hits = []
    for (fid, ipver, proto, a, pa, b, pb, init_a, first_ns) in store.catalog.db.execute(
            "SELECT f.id, f.ipver, f.proto, f.addr_a, f.port_a, f.addr_b, f.port_b, "
            "f.initiator_is_a, s.first_ns FROM flow_segments s JOIN flows f ON "
            "f.id = s.flow_id WHERE s.segment_id = ?", (segment_id,)):
        ends = [(_text(ipver, a), pa), (_text(ipver, b), pb)]
        ints = [int(ipaddress.ip_address(addr)) for addr, _ in ends]
        (src, sport), (dst, dport) = ends if init_a else ends[::-1]
        for value, version, lo, hi in nets:
            for (addr, _), n in zip(ends, ints, strict=True):
                if version == ipver and lo <= n <= hi:
                    hits.append(Hit(f"ip:{value}", proto, src, sport, dst, dport,
                                    first_ns / 1e9, {"indicator": value, "address": addr},
                                    fid))
                    break
    return hits


def _counted(hits: list[Hit]) -> Counter[tuple[object, ...]]:
    return Counter((h.rule, h.proto, h.src_ip, h.src_port, h.dest_ip, h.dest_port, h.ts,
                    tuple(sorted(h.evidence.items())), h.flow_id) for h in hits)


def test_dense_ip_hits_equal_the_reference(store_root: Path) -> None:
    with Store(store_root) as store:
        ips = _indicators(store)
        segments = store.catalog.segments()
        (spanning,) = store.catalog.db.execute(
            "SELECT count(*) FROM (SELECT flow_id FROM flow_segments GROUP BY flow_id "
            "HAVING count(*) > 1)").fetchone()
        (flows,) = store.catalog.db.execute("SELECT count(*) FROM flows").fetchone()
        found = [ip_hits(store, s, ips, Scope()) for s in segments]
        expected = [_reference(store, s.id, ips) for s in segments]
    # the generated traffic: dense (every flow matches), flows crossing segment bounds
    assert (len(ips), len(segments), flows, spanning) == (685, 4, 1692, 155)
    for got, want in zip(found, expected, strict=True):
        assert _counted(got) == _counted(want)
        assert [h.ts for h in got] == sorted(h.ts for h in got)  # first packet first
    assert [len(h) for h in found] == [944, 964, 922, 272]
    assert len({h.flow_id for hits in found for h in hits}) == flows


def test_batches_of_segments_equal_the_hits_of_each(store_root: Path) -> None:
    with Store(store_root) as store:
        ips = _indicators(store)
        segments = store.catalog.segments()
        # a time window from the middle of the first segment to that of the second
        start, end = ((s.first_ns + s.last_ns) // 2 for s in segments[:2])
        counts = []
        for scope in (Scope(), Scope(start_ns=start, end_ns=end)):
            each = {s.id: HitBatch.of(ip_hits(store, s, ips, scope)) for s in segments}
            assert ip_batches(store, segments, ips, scope) == each  # rows in the same order
            assert ip_batches(store, segments[1:3], ips, scope) == {
                s.id: each[s.id] for s in segments[1:3]}
            # not a run of ids: segment 2's flows (some of them also in 1 and 3) left out
            assert ip_batches(store, segments[::2], ips, scope) == {
                s.id: each[s.id] for s in segments[::2]}
            counts.append([(len(b.rows), b.hits) for b in each.values()])
    # the flow key from the catalog's sides is flow_key's (HitBatch.of made it)
    assert counts == [[(944, 944), (964, 964), (922, 922), (272, 272)],
                      [(545, 545), (527, 527), (0, 0), (0, 0)]]


def _in_ranges(store: Store, ips: list[str], cap: int | None = None) -> int:
    """Flows per (indicator, end) whose 16-byte address lies in the indicator's range (the
    index's order: bytes, whatever the IP version), up to ``cap`` an end."""
    ranges = [(n.network_address.packed.ljust(16, b"\0"),
               n.broadcast_address.packed.ljust(16, b"\0"))
              for n in (ipaddress.ip_network(v, strict=False) for v in ips)]
    rows = list(store.catalog.db.execute("SELECT addr_a, addr_b FROM flows"))
    counts = [sum(lo <= r[end] <= hi for lo, hi in ranges for r in rows) for end in (0, 1)]
    return sum(counts if cap is None else (min(c, cap) for c in counts))


def test_walkers_deal_a_dense_batch_round_and_hand_it_out_in_order(store_root: Path) -> None:
    with Store(store_root) as store, closing(IpWalkers(store.catalog.path)) as walkers:
        ips = _indicators(store)
        flows = walkers.flows_in_ranges(ips)
        assert flows == _in_ranges(store, ips) == 2820
        # up to 1,500 an end (the ends hold 1,805 and 1,015): what walk() asks
        assert walkers.flows_in_ranges(ips, 1500) == _in_ranges(store, ips, 1500) == 2515
        assert walkers.flows_in_ranges(ips[:1] + ["198.18.0.1"]) == _in_ranges(
            store, ips[:1]) == 338
        segments = walkers.segments_of([4, 2, 3, 1, 99])  # 99: not in the store
        start = (segments[0].first_ns + segments[0].last_ns) // 2

        def shares(n: int, scope: Scope, least: int = SPLIT_MIN_FLOWS) -> dict[int, str]:
            """Segment id -> the walker that handed its rows out, in the order handed."""
            walkers.split_min_flows = least
            dealt: dict[int, str] = {}
            walkers.walk(segments[:n], ips, scope, None, lambda: nullcontext(store), None,
                         lambda seg, rows, _: dealt.__setitem__(seg, rows.table.split(".")[0]))
            return dealt

        assert (WALK_THREADS, SPLIT_MIN_FLOWS) == (2, 2_000)
        dealt = {1: "ip_walk0", 2: "ip_walk1", 3: "ip_walk0", 4: "ip_walk1"}
        assert list(shares(4, Scope()).items()) == list(dealt.items())  # in order
        assert shares(3, Scope()) == {1: "ip_walk0", 2: "ip_walk1", 3: "ip_walk0"}
        one = {1: "ip_walk0", 2: "ip_walk0", 3: "ip_walk0", 4: "ip_walk0"}
        assert shares(1, Scope()) == {1: "ip_walk0"}
        assert shares(4, Scope(start_ns=start)) == one  # the scope cuts segment 1
        assert shares(4, Scope(), least=flows) != one
        assert shares(4, Scope(), least=flows + 1) == one


def test_an_error_handing_out_one_walkers_rows_ends_the_walk(store_root: Path) -> None:
    """The consumer fails on segment 2 (the second walker's): the walk raises its error
    in the calling thread, no later segment is handed out, and the walkers work again."""
    with Store(store_root) as store, closing(IpWalkers(store.catalog.path)) as walkers:
        ips = _indicators(store)
        segments = store.catalog.segments()
        handed: list[tuple[int, str]] = []
        threads = threading.active_count()

        def record(seg: int, rows: StagedRows, seconds: float) -> None:
            handed.append((seg, rows.table))
            if seg == 2:
                raise sqlite3.OperationalError("disk I/O error")

        with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
            walkers.walk(segments, ips, Scope(), None, lambda: nullcontext(store), None,
                         record)
        assert handed == [(1, "ip_walk0.ip_rows"), (2, "ip_walk1.ip_rows")]
        assert threading.active_count() == threads  # the walker's thread joined
        found: dict[int, HitBatch] = {}
        walkers.walk(segments, ips, Scope(), None, lambda: nullcontext(store), None,
                     lambda seg, rows, _: found.__setitem__(
                         seg, HitBatch(walkers.rows(rows), rows.hits)))
        assert found == ip_batches(store, segments, ips, Scope())


def test_walkers_keep_the_indicators_of_the_last_walk_only(store_root: Path) -> None:
    """A walker loads the indicators again when they change (each walker its own copy):
    every walk of one set of walkers finds what fresh walkers find."""
    with Store(store_root) as store, closing(IpWalkers(store.catalog.path)) as walkers:
        ips = _indicators(store)
        segments = store.catalog.segments()
        fresh = {n: ip_batches(store, segments, some, Scope())
                 for n, some in (("all", ips), ("few", ips[:3]))}
        for n, some in (("all", ips), ("few", ips[:3]), ("all", ips), ("all", ips)):
            found: dict[int, HitBatch] = {}
            walkers.walk(segments, some, Scope(), None, lambda: nullcontext(store), None,
                         lambda seg, rows, _, found=found: found.__setitem__(
                             seg, HitBatch(walkers.rows(rows), rows.hits)))
            assert found == fresh[n]
        # all: shared out (2,820 flows in the ranges); the few (the DNS server, two server
        # nets: 1,468) walked by the first walker alone, the second loading them meanwhile
        assert [walkers.flows_in_ranges(some) for some in (ips, ips[:3])] == [2820, 1468]
    assert [sum(b.hits for b in fresh[n].values()) for n in ("all", "few")] == [3102, 1590]
