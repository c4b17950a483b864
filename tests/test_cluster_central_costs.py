"""What a central saves per query: the connection to a sensor is kept and reused (no TCP
and TLS handshake per request), a sensor's stored range is read again in the background
before its cache runs out (planning does not wait for it while the central is queried
steadily), and the export entry of a result sent whole reuses the SHA-256 the spool took
(one hash of the result, not two; a rerun's linked file is hashed as it is sent), and the
merged result's pieces may reach ``MERGE_PIECE_BYTES`` whatever the query's chunk size.

One real sensor (``pcapwire serve`` with mutual TLS, :mod:`pcapwire.testing.cluster`) for
the client tests; a single server through the API for the export entries.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from apiutil import Tokens, bearer, upload, wait_done
from pcapwire.api import ApiConfig, create_app
from pcapwire.cluster.config import load_cluster
from pcapwire.cluster.fanout import MERGE_PIECE_BYTES, piece_bytes
from pcapwire.cluster.sensors import (
    KEEPALIVE_S,
    RANGE_CACHE_S,
    RANGE_REFRESH_S,
    Caller,
    Sensors,
)
from pcapwire.query.spec import DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES, MIN_CHUNK_BYTES, QuerySpec
from pcapwire.synth import generate
from pcapwire.testing.cluster import Cluster

CASE = "IR-9"
CARVE_WORKFLOW = """\
name: carve-http
steps:
  - id: carve
    uses: carve
    input: pcap
    with: {protocols: [http]}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("costs")
    capture = root / "a.pcap"
    generate(capture, 2**18, seed=3)
    with Cluster(root / "nodes", {"a": {"acme": [capture]}}) as started:
        yield started


@pytest.fixture
async def sensors(cluster):
    config = load_cluster(cluster.root / "cluster.toml")
    out = Sensors(config.sensors, config.central.ssl_context(), config.central.timeout_s)
    await out.start()
    yield out
    await out.close()


CALLER = Caller("acme", "tester@central", "analyst")


async def test_one_connection_serves_query_after_query(sensors):
    """What the fan-out does for each query: POST it, stream its PCAP."""
    sensor = sensors.sensors["a"]
    ends, sizes = [], []
    for _ in range(3):
        status, query = await sensors.json(sensor, CALLER, "POST", "/api/v1/queries",
                                           ok=(202,), json={"bpf": "tcp", "workflows": []})
        assert status == 202
        async with sensors.request(sensor, CALLER, "GET",
                                   f"/api/v1/queries/{query['id']}/pcap") as resp:
            assert resp.status == 200
            assert resp.connection is not None and resp.connection.transport is not None
            ends.append(resp.connection.transport.get_extra_info("sockname"))
            sizes.append(len(await resp.read()))
    assert ends[0] == ends[1] == ends[2]  # the same local port: the same TLS connection
    assert sizes[0] == sizes[1] == sizes[2] > 24
    assert KEEPALIVE_S == 60.0


async def test_a_range_is_read_again_in_the_background_before_it_runs_out(sensors):
    sensor = sensors.sensors["a"]
    first = await sensors.time_range(sensor, CALLER)
    assert first.oldest_ns is not None and first.newest_ns is not None
    assert await sensors.time_range(sensor, CALLER) is first  # fresh: no refresh
    assert not sensors._refreshing

    first.fetched -= RANGE_REFRESH_S  # as old as a refresh wants: used, and read again
    assert await sensors.time_range(sensor, CALLER) is first
    refresh = sensors._refreshing[("a", "acme")]
    assert await sensors.time_range(sensor, CALLER) is first  # one refresh at a time
    again = await asyncio.shield(refresh)
    assert again is not first
    assert (again.oldest_ns, again.newest_ns) == (first.oldest_ns, first.newest_ns)
    assert await sensors.time_range(sensor, CALLER) is again
    assert not sensors._refreshing

    again.fetched -= RANGE_CACHE_S  # run out: the query waits for a new reading
    third = await sensors.time_range(sensor, CALLER)
    assert third is not again and (third.oldest_ns, third.newest_ns) == (
        first.oldest_ns, first.newest_ns)
    assert not sensors._refreshing
    assert (RANGE_REFRESH_S, RANGE_CACHE_S) == (2.5, 5.0)


async def test_an_export_entry_is_the_hash_of_the_bytes_sent(aiohttp_client, tmp_path):
    """A query's result is hashed once, as it is spooled (here in several pieces); its
    custody entry and its export entry are that hash. A rerun's result (its original's
    file, linked) is hashed as it is sent."""
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "carve-http.yaml").write_text(CARVE_WORKFLOW)
    tok = Tokens(tmp_path / "srv")["acme", "analyst"]
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path / "srv",
                                                       workflow_dirs=[workflows])))
    capture = tmp_path / "in.pcap"
    generate(capture, 2**20, seed=5)
    await upload(client, capture, tok)
    q = await (await client.post("/api/v1/queries", json={"bpf": "tcp", "case": CASE},
                                 headers=bearer(tok))).json()
    await wait_done(client, q["id"], tok)
    pcap = await (await client.get(q["links"]["pcap"], headers=bearer(tok))).read()
    resp = await client.post(f"/api/v1/queries/{q['id']}/run",
                             json={"workflows": ["carve-http"]}, headers=bearer(tok))
    rerun = await resp.json()
    assert resp.status == 202, rerun
    await wait_done(client, rerun["id"], tok)
    again = await (await client.get(rerun["links"]["pcap"], headers=bearer(tok))).read()
    assert again == pcap and len(pcap) > 2 * DEFAULT_CHUNK_BYTES  # spooled in pieces

    log = await (await client.get(f"/api/v1/cases/{CASE}/custody",
                                  headers=bearer(tok))).json()
    exports = [e for e in log["entries"] if e["action"] == "export"]
    digest = hashlib.sha256(pcap).hexdigest()
    assert log["entries"][0]["action"] == "query"
    assert log["entries"][0]["objects"][0]["sha256"] == digest  # the spool's own hash
    assert [(e["details"]["query_id"], e["objects"][0]["sha256"], e["objects"][0]["size"])
            for e in exports] == [(q["id"], digest, len(pcap)), (rerun["id"], digest, len(pcap))]


def test_the_merged_pieces_may_reach_a_mebibyte():
    """The central pays its per-piece cost (merge call, spool, wake-ups) per MiB at most,
    not per 256 KiB chunk; a query asking for larger chunks gets them."""
    assert MERGE_PIECE_BYTES == 2**20
    assert piece_bytes(QuerySpec()) == 2**20 == 4 * DEFAULT_CHUNK_BYTES
    assert piece_bytes(QuerySpec(chunk_bytes=MIN_CHUNK_BYTES)) == 2**20
    assert piece_bytes(QuerySpec(chunk_bytes=2**20 + 1)) == 2**20 + 1
    assert piece_bytes(QuerySpec(chunk_bytes=MAX_CHUNK_BYTES)) == MAX_CHUNK_BYTES
