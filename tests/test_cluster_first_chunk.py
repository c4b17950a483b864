"""A query submitted and streamed in one request (``POST /api/v1/queries/pcap``), which a
central uses to ask its sensors (one round trip fewer before the first chunk), on real
``pcapwire serve`` processes (:mod:`pcapwire.testing.cluster`: two sensors with mutual TLS,
one central): a sensor's answer is byte for byte what ``POST /api/v1/queries`` then ``GET
…/pcap`` give, and ``X-Pcapwire-Query-Id`` names the finished query; a follow is refused;
a query that fails before its first bytes is refused as ``GET …/pcap`` refuses it; a
caller that leaves before the end cancels the query (at the central, whose merge waits
for a held sensor). And the central reads an early answer no further than
``FIRST_READ_BYTES`` until every answer has shown its first piece.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import ssl
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import pytest
from pcaputil import read_records
from pcapwire.api.routes_results import QUERY_ID_HEADER, QUERY_PCAP_PATH
from pcapwire.cluster.fanout import FIRST_READ_BYTES, FirstPieces, Prefetch
from pcapwire.cluster.tls import central_client_context
from pcapwire.synth import generate
from pcapwire.testing.cluster import Cluster, split_capture
from test_cluster_failures import wait_until

SENSORS = ("a", "b")


class Api:
    """Calls to one server with one token (and, for a sensor, the central's certificate)."""

    def __init__(self, url: str, token: str, context: ssl.SSLContext | None = None):
        self.url, self.token, self.context = url, token, context

    def call(self, method: str, path: str, body: Any = None
             ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(
            self.url + path, method=method, data=None if body is None else
            json.dumps(body).encode(), headers={"Authorization": f"Bearer {self.token}",
                                                "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60, context=self.context) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, method: str, path: str, body: Any = None) -> Any:
        status, _, data = self.call(method, path, body)
        assert status in (200, 202), data[:300]
        return json.loads(data)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("first-chunk")
    capture = root / "all.pcap"
    generate(capture, 8 * 2**20, seed=21)
    parts = split_capture(capture, root / "parts", SENSORS,
                          lambda _ts, frame: sum(frame[26:34]) % 2)
    layout = {n: {"acme": [p]} for n, p in zip(SENSORS, parts, strict=True)}
    with Cluster(root / "nodes", layout, timeout_s=30.0) as cl:
        yield cl


def sensor(cluster, name: str) -> Api:
    context = central_client_context(cluster.client.cert, cluster.client.key, cluster.ca.cert)
    return Api(cluster.sensor_url(name), cluster.sensor_token(name, "acme", "analyst"),
               context)


def test_one_request_answers_what_post_then_get_answer(cluster):
    api = sensor(cluster, "a")
    body = {"bpf": "tcp", "case": "one-request", "workflows": []}
    status, headers, streamed = api.call("POST", QUERY_PCAP_PATH, body)
    assert (status, headers["Content-Type"]) == (200, "application/vnd.tcpdump.pcap")
    q = api.json("POST", "/api/v1/queries", body)
    status, _, fetched = api.call("GET", f"/api/v1/queries/{q['id']}/pcap")
    assert status == 200 and streamed == fetched
    done = api.json("GET", f"/api/v1/queries/{headers[QUERY_ID_HEADER]}")
    assert (done["status"], done["packets"]) == ("done", len(read_records(streamed)[1]))
    assert done["packets"] > 1000


def test_a_follow_and_a_query_failing_before_its_first_bytes_are_refused(cluster):
    api = sensor(cluster, "b")
    status, _, data = api.call("POST", QUERY_PCAP_PATH, {"follow": True})
    assert (status, json.loads(data)["code"]) == (400, "follow_not_streamed")
    status, _, data = api.call("POST", QUERY_PCAP_PATH, {"case": "cap", "max_bytes": 100})
    assert (status, json.loads(data)["code"]) == (422, "result_too_large")
    [row] = api.json("GET", "/api/v1/queries?case=cap")["queries"]
    assert (row["status"], row["error_code"]) == ("error", "result_too_large")


def test_a_caller_leaving_before_the_end_cancels_the_query(cluster):
    """b is held, so the central's merge cannot start; the caller sends its query and
    leaves; once b is let go, the central's merge spools, the central sees its caller gone
    and cancels the query (the merge of ~8 MiB cannot end first: it yields to the loop
    between pieces)."""
    central = Api(cluster.central_url, cluster.central_token("acme", "analyst"))
    central.json("GET", "/api/v1/cluster/sensors")  # fresh ranges: planning needs no answer
    pid = cluster.sensors["b"].proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        url = urlsplit(cluster.central_url)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        conn.request("POST", QUERY_PCAP_PATH, json.dumps({"case": "leave"}),
                     {"Authorization": f"Bearer {central.token}",
                      "Content-Type": "application/json"})
        [row] = wait_until("the query at the central", lambda: central.json(
            "GET", "/api/v1/queries?case=leave")["queries"])
        conn.close()
    finally:
        os.kill(pid, signal.SIGCONT)
    done = wait_until("the query's end", lambda: (q := central.json(
        "GET", f"/api/v1/queries/{row['id']}"))["status"] != "running" and q)
    assert (done["status"], done["missing"]) == ("cancelled", [])


async def test_an_early_answer_waits_at_first_read_bytes_for_the_last_first_piece():
    assert FIRST_READ_BYTES == 2**20
    piece, order = b"x" * 2**16, []
    late = asyncio.Event()

    async def early():
        for i in range(64):
            order.append(("early", i))
            yield piece

    async def last():
        await late.wait()
        order.append(("last", 0))
        yield b"y"

    first = FirstPieces(2)
    a, b = Prefetch(early(), first, depth=64), Prefetch(last(), first)
    try:
        held = FIRST_READ_BYTES // len(piece)
        assert [await anext(a) for _ in range(held)] == [piece] * held
        late.set()
        assert await anext(b) == b"y"
        assert [await anext(a) for _ in range(64 - held)] == [piece] * (64 - held)
    finally:
        await a.aclose()
        await b.aclose()
    assert order == [("early", i) for i in range(held)] + [("last", 0)] + [
        ("early", i) for i in range(held, 64)]
