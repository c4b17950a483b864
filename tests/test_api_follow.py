"""The API's follow queries (``follow: true``), the loss a query's window had, the tenant's
capture status and the Prometheus metrics of ``serve --metrics-listen``."""

from __future__ import annotations

import asyncio
import json
import os
import time

import aiohttp
import pytest
from apiutil import Tokens, bearer
from liveutil import FakeRecorder, packets
from pcaputil import read_records, tcpdump
from pcapwire.api import ApiConfig, create_app
from pcapwire.api.keys import QUERIES
from pcapwire.api.metrics import create_metrics_app
from pcapwire.api.server import start_metrics
from pcapwire.capture.config import RecorderConfig
from pcapwire.capture.ledger import LossDelta, add_loss
from pcapwire.capture.recorder import Recorder
from pcapwire.capture.sources import StreamSource
from pcapwire.store.catalog import Catalog
from pcapwire.synth import generate
from prometheus_client.parser import text_string_to_metric_families

TIMEOUT_S = 30


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    path = tmp_path_factory.mktemp("traffic") / "t.pcap"
    generate(path, 200_000, seed=11)
    return path, packets(path)


@pytest.fixture
def tokens(tmp_path):
    return Tokens(tmp_path)


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))


def capture_of(src, pkts, out):
    out.write_bytes(src.read_bytes()[:24] + b"".join(p[0] for p in pkts))
    return out


async def read_exactly(resp: aiohttp.ClientResponse, n: int) -> bytes:
    return await asyncio.wait_for(resp.content.readexactly(n), TIMEOUT_S)


async def test_follow_query_streams_what_is_recorded_until_cancelled(client, tokens, tmp_path,
                                                                     traffic):
    """The tenant's recorder (a pcap stream on a pipe) records while the query follows."""
    src, pkts = traffic
    tok = tokens["acme", "analyst"]
    read_end, write_end = os.pipe()
    recorder = Recorder(tmp_path / "tenants" / "acme",
                        RecorderConfig(commit_interval=0.05, fsync=False))
    recorder.start([StreamSource("feed", read_end)])
    half = len(pkts) // 2
    try:
        os.write(write_end, src.read_bytes()[:24] + b"".join(p[0] for p in pkts[:half]))
        resp = await client.post("/api/v1/queries", json={"bpf": "tcp", "follow": True,
                                                          "case": "live"}, headers=bearer(tok))
        assert resp.status == 202, await resp.text()
        q = await resp.json()
        assert q["status"] == "running" and q["spec"]["follow"] is True
        pcap = await client.get(q["links"]["pcap"], headers=bearer(tok))
        assert pcap.status == 200
        got = await read_exactly(pcap, 24)  # the header: the follow runs
        rest = memoryview(b"".join(p[0] for p in pkts[half:]))
        while rest:
            rest = rest[await asyncio.to_thread(os.write, write_end, rest):]
        expected = tcpdump(src, "tcp")
        got += await read_exactly(pcap, len(expected) - 24)
        view = await (await client.get(q["links"]["self"], headers=bearer(tok))).json()
        assert view["status"] == "running"
        assert view["packets"] == len(read_records(expected)[1])
        cancel = await client.post(f"{q['links']['self']}/cancel", headers=bearer(tok))
        done = await cancel.json()
        assert cancel.status == 200 and done["status"] == "done", done
        got += await asyncio.wait_for(pcap.read(), TIMEOUT_S)  # then a clean end
    finally:
        os.close(write_end)
        await asyncio.to_thread(recorder.stop)
    assert got == expected
    again = await client.get(q["links"]["pcap"], headers=bearer(tok))
    assert await again.read() == expected  # the stored result: what was streamed
    status = await (await client.get("/api/v1/capture/status", headers=bearer(tok))).json()
    assert status["recording"] is False and status["state"] == "stopped"
    assert status["interfaces"]["feed"]["packets"] == len(pkts)


async def test_a_follow_stops_when_its_last_reader_leaves(client, tokens, tmp_path, traffic):
    _src, pkts = traffic
    tok = tokens["acme", "analyst"]
    rec = FakeRecorder(tmp_path / "tenants" / "acme", "eth0", snaplen=65535)
    rec.write(pkts[:10])
    rec.commit()
    q = await (await client.post("/api/v1/queries", json={"follow": True},
                                 headers=bearer(tok))).json()
    pcap = await client.get(q["links"]["pcap"], headers=bearer(tok))
    await read_exactly(pcap, 24)
    pcap.close()  # the client leaves
    job = client.app[QUERIES].get("acme", q["id"])
    await asyncio.wait_for(asyncio.shield(job.task), TIMEOUT_S)
    assert job.status == "done"
    rec.close()


async def test_follow_with_an_end_time_is_refused(client, tokens):
    resp = await client.post("/api/v1/queries", json={"follow": True, "end": 10},
                             headers=bearer(tokens["acme", "analyst"]))
    body = await resp.json()
    assert (resp.status, body["code"]) == (400, "invalid_query")
    assert "a follow has no end time" in body["message"]


def add_drops(store_root, interface, first_s, last_s, **counts):
    store_root.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(store_root / "catalog.sqlite")
    try:
        run = catalog.db.execute("INSERT INTO capture_runs (pid, started, inputs) "
                                 "VALUES (1, 0, '[]')").lastrowid
        add_loss(catalog, run, 0, LossDelta(interface, first_s * 10**9, last_s * 10**9,
                                            **counts))
    finally:
        catalog.close()


async def test_a_query_says_what_its_window_lost(client, tokens, tmp_path):
    acme = tmp_path / "tenants" / "acme"
    await client.get("/api/v1/queries", headers=tokens.headers("acme", "viewer"))  # creates it
    add_drops(acme, "eth0", 100, 200, kernel_drops=5, if_drops=2, backlog_drops=3,
              disk_drops=1)
    add_drops(acme, "eth1", 300, 400, kernel_drops=7)
    tok = tokens["acme", "analyst"]
    inside = await (await client.post("/api/v1/queries", json={"start": 150, "end": 250},
                                      headers=bearer(tok))).json()
    assert inside["loss"] == {"packets": 10, "kernel": 5, "interface": 2, "backlog": 3,
                              "disk": 1, "interfaces": {"eth0": {
                                  "packets": 10, "kernel": 5, "interface": 2, "backlog": 3,
                                  "disk": 1}},
                              "expired": {"packets": 0, "segments": 0, "spans": [],
                                          "more_spans": 0}}
    both = await (await client.post("/api/v1/queries", json={}, headers=bearer(tok))).json()
    assert both["loss"]["packets"] == 17 and set(both["loss"]["interfaces"]) == {"eth0", "eth1"}
    none = await (await client.post("/api/v1/queries", json={"start": 500},
                                    headers=bearer(tok))).json()
    view = await (await client.get(none["links"]["self"], headers=bearer(tok))).json()
    assert view["loss"]["packets"] == 0


def status_doc(now: float, packets: int = 1000) -> dict:
    return {"pid": 4242, "started": now - 60, "updated": now, "state": "running",
            "interfaces": {"eth0": {"packets": packets, "bytes": packets * 100,
                                    "kernel_drops": 3, "if_drops": 2, "backlog_drops": 5,
                                    "disk_drops": 1, "input_errors": 0, "pps": 10.0,
                                    "mbps": 0.008}},
            "segments": 4, "disk_bytes": 123456, "disk_free_bytes": 987654321,
            "write_errors": 1, "commit_backlog": 0, "listening": [],
            "latency_hist": {"buckets": [0.05, 0.1, 0.25, 0.5, 1, 2, 5],
                             "counts": [10, 20, 30, 40, 50, 60, 70], "sum": 12.5,
                             "count": 80}}


def write_status(store_root, doc) -> None:
    (store_root / "capture").mkdir(parents=True, exist_ok=True)
    (store_root / "capture" / "status.json").write_text(json.dumps(doc))


async def test_capture_status_per_tenant(client, tokens, tmp_path):
    acme = tmp_path / "tenants" / "acme"
    assert await (await client.get("/api/v1/capture/status", headers=tokens.headers(
        "acme", "viewer"))).json() == {"recording": False,
                                       "loss": {"interfaces": {}, "segments": []}}
    doc = status_doc(time.time())
    write_status(acme, doc)
    add_drops(acme, "eth0", 100, 200, kernel_drops=3, if_drops=2, backlog_drops=5,
              disk_drops=1)
    got = await (await client.get("/api/v1/capture/status",
                                  headers=tokens.headers("acme", "viewer"))).json()
    assert got["recording"] is True and 0 <= got["age_s"] < TIMEOUT_S
    assert {k: got[k] for k in doc} == doc
    assert got["loss"]["interfaces"]["eth0"] == {"kernel_drops": 3, "if_drops": 2,
                                                 "backlog_drops": 5, "disk_drops": 1}
    (seg,) = got["loss"]["segments"]
    assert (seg["interface"], seg["segment_id"], seg["kernel_drops"]) == ("eth0", 0, 3)
    other = await (await client.get("/api/v1/capture/status",
                                    headers=tokens.headers("globex", "admin"))).json()
    assert other == {"recording": False, "loss": {"interfaces": {}, "segments": []}}
    write_status(acme, {**doc, "updated": time.time() - 3600})  # a recorder killed long ago
    stale = await (await client.get("/api/v1/capture/status",
                                    headers=tokens.headers("acme", "viewer"))).json()
    assert stale["recording"] is False and stale["pid"] == 4242


async def test_metrics_expose_each_tenants_status_exactly(aiohttp_client, tmp_path):
    now = time.time()
    write_status(tmp_path / "tenants" / "acme", status_doc(now))
    write_status(tmp_path / "tenants" / "globex", {**status_doc(now, 7), "interfaces": {
        "eth1": {**status_doc(now)["interfaces"]["eth0"], "packets": 7, "bytes": 700}}})
    write_status(tmp_path / "tenants" / "initech", {**status_doc(now), "state": "stopped"})
    (tmp_path / "tenants" / "umbrella").mkdir()  # no recorder: no metrics
    client = await aiohttp_client(create_metrics_app(tmp_path))
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(await resp.text())
               for s in fam.samples}

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("pcapwire_capture_up", tenant="acme") == 1
    assert value("pcapwire_capture_up", tenant="initech") == 0
    assert ("pcapwire_capture_up", (("tenant", "umbrella"),)) not in samples
    assert value("pcapwire_capture_packets_total", tenant="acme", interface="eth0") == 1000
    assert value("pcapwire_capture_bytes_total", tenant="acme", interface="eth0") == 100000
    assert value("pcapwire_capture_packets_total", tenant="globex", interface="eth1") == 7
    for cause, n in (("kernel", 3), ("interface", 2), ("backlog", 5)):
        assert value("pcapwire_capture_drops_total", tenant="acme", interface="eth0",
                     cause=cause) == n
    assert value("pcapwire_capture_disk_drops_total", tenant="acme", interface="eth0") == 1
    assert value("pcapwire_capture_segments", tenant="acme") == 4
    assert value("pcapwire_capture_disk_bytes", tenant="acme") == 123456
    assert value("pcapwire_capture_disk_free_bytes", tenant="acme") == 987654321
    assert value("pcapwire_capture_write_errors_total", tenant="acme") == 1
    hist = "pcapwire_capture_queryable_latency_seconds"
    for le, n in (("0.05", 10), ("0.1", 20), ("0.25", 30), ("0.5", 40), ("1.0", 50),
                  ("2.0", 60), ("5.0", 70), ("+Inf", 80)):
        assert value(f"{hist}_bucket", tenant="acme", le=le) == n
    assert value(f"{hist}_count", tenant="acme") == 80
    assert value(f"{hist}_sum", tenant="acme") == 12.5
    assert not any(labels and dict(labels).get("tenant") == "initech" and name !=
                   "pcapwire_capture_up" for name, labels in samples)


async def test_metrics_are_not_on_the_api_port_but_on_their_own(client, tokens, tmp_path):
    assert (await client.get("/metrics")).status == 404
    assert (await client.get("/metrics", headers=tokens.headers("acme", "admin"))
            ).status == 404
    write_status(tmp_path / "tenants" / "acme", status_doc(time.time()))
    runner = await start_metrics(ApiConfig(data_dir=tmp_path), "127.0.0.1", 0)
    try:
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{host}:{port}/metrics") as resp:
                text = await resp.text()
            async with session.get(f"http://{host}:{port}/api/v1/queries") as other:
                assert other.status == 404
        assert resp.status == 200
        assert 'pcapwire_capture_up{tenant="acme"} 1.0' in text
    finally:
        await runner.cleanup()
