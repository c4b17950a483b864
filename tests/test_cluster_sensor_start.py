"""What a sensor does before its first chunk, made cheaper so that a central's slowest
sensor answers sooner: planning reads packet counts, not every candidate's offsets, for a
segment it reads whole; a repeated BPF expression is not compiled again in a thread; the
scan thread lowers its priority once its first chunk is out (``SCAN_NICE``); a query
streamed to one reader spools at most ``SPOOL_AHEAD_BYTES`` ahead of what was sent; and a
query's answer reports the sensor's stored range (``X-Pcapwire-Kept-Range``), which the
central keeps instead of reading ``GET /api/v1/retention`` beside its queries.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from apiutil import Tokens, bearer, upload
from pcapwire.api import ApiConfig, create_app
from pcapwire.api.jobs import SPOOL_AHEAD_BYTES, Pace
from pcapwire.api.keys import QUERIES
from pcapwire.api.routes_results import KEPT_RANGE_HEADER, QUERY_PCAP_PATH
from pcapwire.cluster.config import load_cluster
from pcapwire.cluster.sensors import Caller, Sensors
from pcapwire.pcapformat import iter_records
from pcapwire.query import QuerySpec
from pcapwire.query.bpfcache import is_compiled, precompile
from pcapwire.query.engine import DENSE_FRACTION, SCAN_NICE
from pcapwire.store import Store
from pcapwire.synth import generate
from pcapwire.testing.cluster import Cluster

CALLER = Caller("acme", "tester@central", "analyst")
DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    path = tmp_path_factory.mktemp("sensor-start") / "in.pcap"
    generate(path, 3 * 2**20, seed=11)
    return path


def ends_ns(path) -> tuple[int, int]:
    """The first and last packet times of a µs capture, in ns."""
    data = path.read_bytes()
    times = [(sec * 10**6 + usec) * 1000 for sec, usec, *_ in iter_records(data)]
    return times[0], times[-1]


def test_a_plan_reads_offsets_only_for_segments_it_does_not_read_whole(tmp_path, capture):
    store = Store(tmp_path / "store")
    store.ingest([capture], segment_max_bytes=2**20)
    engine, catalog = store.query_engine(), store.catalog
    segments = catalog.segments()
    assert len(segments) == 3
    ids = [r[0] for r in catalog.db.execute("SELECT id FROM flows WHERE proto = 6")]
    counted: dict[int, int] = {}
    for seg_id, _flow, packets, _offsets in catalog.flow_offsets(ids):
        counted[seg_id] = counted.get(seg_id, 0) + packets
    assert catalog.flow_packets(ids) == counted
    assert catalog.flow_packets(ids, [segments[1].id]) == {segments[1].id: counted[
        segments[1].id]}

    dense = engine.plan(QuerySpec(bpf="tcp"))  # most of every segment: read whole
    assert all(counted[s.id] > DENSE_FRACTION * s.packets for s in segments)
    assert [(p.segment.id, p.offsets) for p in dense.segments] == [
        (s.id, None) for s in segments]
    assert dense.candidate_flows == len(ids)

    one = ids[0]  # one flow: read at its offsets, exactly those flow_offsets lists
    narrow = engine.plan(QuerySpec(flow_ids=[one]))
    offsets = {seg: o for seg, _f, _p, o in catalog.flow_offsets([one])}
    assert [(p.segment.id, p.offsets) for p in narrow.segments] == sorted(offsets.items())
    store.close()


def test_a_compiled_expression_needs_no_thread():
    keys = [(1, 65535), (1, 262144)]
    expr = "tcp port 4242 and host 10.9.8.7"
    assert not is_compiled(expr, keys)
    precompile(expr, keys)
    assert is_compiled(expr, keys)
    assert not is_compiled(expr, [*keys, (101, 65535)])
    precompile("tcp port", keys)  # a syntax error is kept, so it counts as compiled
    assert is_compiled("tcp port", keys[:1])


async def test_a_scan_lowers_its_priority_after_its_first_chunk(tmp_path, capture):
    store = Store(tmp_path / "store")
    store.ingest([capture])
    engine = store.query_engine()
    ours = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    spec = QuerySpec(bpf="tcp", chunk_bytes=2**16)
    chunks = engine.run(spec, "feedc0de" * 4, record=False)
    try:
        await anext(chunks)
        await anext(chunks)  # the thread lowered itself before it made this one
        scan = next(t for t in threading.enumerate() if t.name == "query-feedc0de")
        assert scan.native_id is not None
        assert os.getpriority(os.PRIO_PROCESS, scan.native_id) == min(19, ours + SCAN_NICE)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == ours
    finally:
        await chunks.aclose()
        store.close()
    assert SCAN_NICE == 10


async def test_pace_holds_the_first_chunk_until_sent_then_spool_ahead_bytes_beyond():
    pace = Pace()
    first = asyncio.create_task(pace.wait(100))  # the first chunk waits until it is sent
    await asyncio.sleep(0)  # the task runs up to its wait
    assert not first.done() and pace.held
    pace.advance(100)
    await asyncio.wait_for(first, DEADLINE_S)
    assert not pace.held
    await asyncio.wait_for(pace.wait(100 + SPOOL_AHEAD_BYTES), DEADLINE_S)  # the limit
    held = asyncio.create_task(pace.wait(100 + SPOOL_AHEAD_BYTES + 2))
    await asyncio.sleep(0)
    assert not held.done()
    pace.advance(101)
    await asyncio.sleep(0)
    assert not held.done()  # still one byte too far ahead
    pace.advance(102)
    await asyncio.wait_for(held, DEADLINE_S)
    pace.advance(1)  # a reader that is behind does not move it back
    assert pace.sent == 102
    assert SPOOL_AHEAD_BYTES == 2**20


async def test_a_streamed_query_waits_for_its_reader(aiohttp_client, tmp_path):
    """The reader takes the first bytes and waits: the spool gets SPOOL_AHEAD_BYTES (and
    the chunk that crossed it) beyond what was sent (into the socket) and waits too; read
    on, the reader gets the whole result, and the query ends done."""
    capture = tmp_path / "big.pcap"
    generate(capture, 24 * 2**20, seed=12)
    tok = Tokens(tmp_path / "srv")["acme", "analyst"]
    app = create_app(ApiConfig(data_dir=tmp_path / "srv"))
    client = await aiohttp_client(app)
    await upload(client, capture, tok)
    resp = await client.post(QUERY_PCAP_PATH, json={"case": "pace", "workflows": []},
                             headers=bearer(tok))
    assert resp.status == 200
    first = await resp.content.readexactly(100)
    (job,) = app[QUERIES].jobs.values()
    assert job.pace is not None
    end = time.monotonic() + DEADLINE_S
    while not job.pace.held:
        assert time.monotonic() < end and not job.final, "the spool never waited"
        await job.wait_change(0.05)
    ahead = job.written - job.pace.sent
    assert SPOOL_AHEAD_BYTES < ahead <= SPOOL_AHEAD_BYTES + job.spec.chunk_bytes
    assert job.status == "running" and job.written < capture.stat().st_size
    got = first + await resp.read()
    assert job.task is not None
    await asyncio.wait_for(asyncio.shield(job.task), DEADLINE_S)
    assert job.status == "done"
    assert got == capture.read_bytes()  # no filter: every packet, in order


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, capture):
    root = tmp_path_factory.mktemp("kept-range")
    with Cluster(root / "nodes", {"a": {"acme": [capture], "globex": []}}) as started:
        yield started


async def test_an_answer_reports_the_kept_range_and_the_central_keeps_it(cluster, capture):
    config = load_cluster(cluster.root / "cluster.toml")
    sensors = Sensors(config.sensors, config.central.ssl_context(), config.central.timeout_s)
    await sensors.start()
    try:
        sensor = sensors.sensors["a"]
        kept = {}
        for caller in (CALLER, Caller("globex", "tester@central", "analyst")):
            async with sensors.request(sensor, caller, "POST", QUERY_PCAP_PATH,
                                       json={"bpf": "tcp", "workflows": []}) as resp:
                assert resp.status == 200
                kept[caller.tenant] = resp.headers[KEPT_RANGE_HEADER]
                await resp.read()
            sensors.note_range(sensor, caller, kept[caller.tenant])
        oldest, newest = ends_ns(capture)
        assert kept == {"acme": f"{oldest} {newest}", "globex": ""}

        before = time.monotonic()
        found = await sensors.time_range(sensor, CALLER)  # kept: no reading of its own
        assert (found.oldest_ns, found.newest_ns) == (oldest, newest)
        assert found.fetched <= before and not sensors._refreshing
        read = await sensors.time_range(sensor, CALLER, fresh=True)  # what retention says
        assert (read.oldest_ns, read.newest_ns) == (oldest, newest)
        empty = await sensors.time_range(sensor, Caller("globex", "x", "analyst"))
        assert (empty.oldest_ns, empty.newest_ns) == (None, None)

        for odd in (None, "1", "1 2 3", "a b"):  # absent or not a range: nothing changes
            sensors.note_range(sensor, CALLER, odd)
            assert await sensors.time_range(sensor, CALLER) is read
    finally:
        await sensors.close()
