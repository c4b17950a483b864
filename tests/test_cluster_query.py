"""A central over three real sensors (each ``pcapwire serve`` with its own data directory,
port and mutual TLS; :mod:`pcapwire.testing.cluster`), started once for the module: the
central's merged answer is byte for byte what ``mergecap -F pcap`` makes of the sensors'
own answers to the same query; only sensors holding the tenant and the window are asked;
a stopped (silent) or killed sensor makes a flagged partial result; the central's read
routes tag every item with its sensor; and the tenant x role matrix holds for the
central's routes.

Traffic: a generated capture; its first two thirds (by time) split by host pair over
sensors a and b, its last third on c. Tenant acme is on all three, globex (empty) on a
and b only.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import ssl
import struct
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pcaputil import read_records, tcpdump
from pcapwire.api.authdb import ROLES
from pcapwire.api.openapi import CLUSTER_PATHS
from pcapwire.cluster.fanout import RecordCounter
from pcapwire.cluster.tls import central_client_context
from pcapwire.pcapformat import iter_records
from pcapwire.query.engine import QueryStats
from pcapwire.synth import generate
from pcapwire.testing.cluster import Cluster, split_capture

SENSORS = ("a", "b", "c")
TIMEOUT_S = 2.0  # the cluster file's timeout_s: a stopped sensor is missing after this


class Api:
    """Calls to one server with one token (and, for a sensor, the central's certificate)."""

    def __init__(self, url: str, token: str | None, context: ssl.SSLContext | None = None):
        self.url, self.token, self.context = url, token, context

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, method=method, headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(req, timeout=120, context=self.context) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def json(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        got, data = self.call(method, path, body)
        assert got == status, data[:500]
        return json.loads(data)

    def query(self, body: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """Submit, read the whole PCAP, then the final view."""
        q = self.json("POST", "/api/v1/queries", body, status=202)
        status, pcap = self.call("GET", f"/api/v1/queries/{q['id']}/pcap")
        assert status == 200, pcap[:300]
        return self.json("GET", f"/api/v1/queries/{q['id']}"), pcap


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    capture = root / "all.pcap"
    generate(capture, 2 * 2**20, seed=14)
    times = [sec * 10**9 + us * 1000 for sec, us, *_ in iter_records(capture.read_bytes())]
    cut = times[0] + (times[-1] - times[0]) * 2 // 3

    def choose(ts_ns: int, frame: bytes) -> int:
        return 2 if ts_ns >= cut else sum(frame[26:34]) % 2  # IPv4 addresses: per host pair

    parts = dict(zip(SENSORS, split_capture(capture, root / "parts", SENSORS, choose),
                     strict=True))
    layout = {"a": {"acme": [parts["a"]], "globex": []}, "b": {"acme": [parts["b"]],
                                                               "globex": []},
              "c": {"acme": [parts["c"]]}}
    with Cluster(root / "nodes", layout, timeout_s=TIMEOUT_S) as cl:
        cl.capture, cl.parts, cl.cut = capture, parts, cut
        yield cl


@pytest.fixture(scope="module")
def acme(cluster):
    return Api(cluster.central_url, cluster.central_token("acme", "analyst"))


def sensor_api(cluster, name: str, tenant: str = "acme") -> Api:
    context = central_client_context(cluster.client.cert, cluster.client.key, cluster.ca.cert)
    return Api(cluster.sensor_url(name), cluster.sensor_token(name, tenant, "analyst"),
               context)


def mergecap(tmp: Path, answers: list[bytes]) -> bytes:
    inputs = []
    for i, data in enumerate(answers):
        inputs.append(tmp / f"in{i}.pcap")
        inputs[-1].write_bytes(data)
    subprocess.run(["mergecap", "-F", "pcap", "-w", str(tmp / "out.pcap"),
                    *map(str, inputs)], check=True, capture_output=True)
    return (tmp / "out.pcap").read_bytes()


def big_endian_ns(data: bytes) -> bytes:
    """A little-endian µs pcap rewritten as a big-endian nanosecond one."""
    header, records = read_records(data)
    magic, major, minor, zone, sigfigs, snaplen, linktype = struct.unpack("<IHHiIII", header)
    out = [struct.pack(">IHHiIII", 0xA1B23C4D, major, minor, zone, sigfigs, snaplen,
                       linktype)]
    for rec in records:
        sec, usec, caplen, origlen = struct.unpack_from("<IIII", rec)
        out.append(struct.pack(">IIII", sec, usec * 1000, caplen, origlen) + rec[16:])
    return b"".join(out)


def test_record_counter_counts_a_stream_cut_anywhere():
    """The central's packet and byte counts come from its merged bytes, in pieces of any
    size (a record header split, a file header split, whole chunks); any byte order and
    precision."""
    from pcapwire.testing import capture, tcp_session

    little = capture([tcp_session("10.0.0.1:40001 > 10.0.0.2:80", client=b"x" * 5000,
                                  server=b"y" * 20000)])
    _, records = read_records(little)
    expected = (len(records), sum(map(len, records)))
    assert expected[0] > 20
    rng = random.Random(14)
    for data in (little, big_endian_ns(little)):
        for _ in range(50):
            stats, pos = QueryStats(), 0
            counter = RecordCounter(stats)
            while pos < len(data):
                n = rng.choice((1, 2, 15, 16, 17, 23, 24, 25, 300, 4096))
                counter.feed(data[pos:pos + n])
                pos += n
            assert (stats.packets, stats.bytes) == expected


def test_merged_answer_is_mergecap_of_the_sensors_answers(cluster, acme, tmp_path):
    body = {"bpf": "tcp", "case": "merge", "event": "e1"}
    view, pcap = acme.query(body)
    own = [sensor_api(cluster, n).query({**body, "workflows": []})[1] for n in SENSORS]
    assert pcap == mergecap(tmp_path, own)
    _, records = read_records(pcap)
    _, expected = read_records(tcpdump(cluster.capture, "tcp"))
    assert records == expected and len(records) == 2534  # the whole capture's, in order
    assert (view["status"], view["sensors"], view["missing"], view["partial"]) == (
        "done", list(SENSORS), [], False)
    assert (view["packets"], view["bytes"]) == (len(records), len(pcap) - 24)


def test_a_window_asks_only_the_sensors_that_hold_it(cluster, acme, tmp_path):
    end = cluster.cut  # the window ends where c's part begins
    body = {"end": f"{end // 10**9}.{end % 10**9:09d}"}
    view, pcap = acme.query(body)
    assert view["sensors"] == ["a", "b"]
    own = [sensor_api(cluster, n).query({**body, "workflows": []})[1] for n in ("a", "b")]
    assert pcap == mergecap(tmp_path, own)
    assert len(read_records(pcap)[1]) == sum(
        len(read_records(cluster.parts[n].read_bytes())[1]) for n in ("a", "b"))


def test_refused_at_the_central(acme):
    for body, code in (({"flow_ids": [1]}, "invalid_query"),
                       ({"workflows": ["ids"]}, "no_workflows_at_central"),
                       ({"bpf": "tcp and"}, "invalid_query")):
        status, data = acme.call("POST", "/api/v1/queries", body)
        assert (status, json.loads(data)["code"]) == (400, code), data


def test_the_result_cap_holds_for_the_merged_result(cluster, acme):
    sizes = [len(sensor_api(cluster, n).query({"bpf": "tcp", "workflows": []})[1]) - 24
             for n in SENSORS]
    cap = max(sizes) + 1  # every sensor's answer fits, their sum does not
    q = acme.json("POST", "/api/v1/queries", {"bpf": "tcp", "max_bytes": cap}, status=202)
    with pytest.raises(http.client.IncompleteRead):  # cut off, never a whole-looking PCAP
        acme.call("GET", f"/api/v1/queries/{q['id']}/pcap")
    view = acme.json("GET", f"/api/v1/queries/{q['id']}")
    assert (view["status"], view["error_code"], view["missing"]) == (
        "error", "result_too_large", [])
    assert f"exceeds the limit of {cap} bytes" in view["error"]


def test_read_routes_tag_each_item_with_its_sensor(cluster, acme):
    sensors = acme.json("GET", "/api/v1/cluster/sensors")["sensors"]
    ranges = {}
    for n in SENSORS:
        ts = [sec * 10**9 + us * 1000 for sec, us, *_ in iter_records(
            cluster.parts[n].read_bytes())]
        ranges[n] = (ts[0], ts[-1])
    assert [(s["name"], s["status"], s["reason"], (s["oldest_ns"], s["newest_ns"]))
            for s in sensors] == [(n, "ok", None, ranges[n]) for n in SENSORS]
    acme.query({"bpf": "udp", "case": "tagged"})
    cases = acme.json("GET", "/api/v1/cluster/cases?q=tagged")
    assert sorted((c["sensor"], c["case"], c["queries"]) for c in cases["cases"]) == [
        (n, "tagged", 1) for n in SENSORS]
    assert cases["missing"] == []
    verdicts = acme.json("GET", "/api/v1/cluster/cases/tagged/verdicts")
    assert (verdicts["verdicts"], verdicts["sensors"]) == ([], list(SENSORS))
    trigger = sensor_api(cluster, "b").json("POST", "/api/v1/triggers", {
        "name": "on-b", "bpf": "udp port 53"}, status=201)["trigger"]
    triggers = acme.json("GET", "/api/v1/cluster/triggers")["triggers"]
    assert [(t["sensor"], t["id"], t["name"]) for t in triggers] == [
        ("b", trigger["id"], "on-b")]


def test_tenant_and_role_matrix_of_the_central(cluster, acme):
    """Every cluster route and the query routes at the central: anonymous 401, a lower
    role 403, another tenant 404 on acme's things and nothing of acme's in its lists;
    globex's sensors are its own (c does not serve it)."""
    _, done = acme.query({"bpf": "udp", "case": "matrix"})
    qid = acme.json("GET", "/api/v1/queries?case=matrix")["queries"][0]["id"]
    ops = [(m, p, op["x-required-role"]) for p, ops in CLUSTER_PATHS.items()
           for m, op in ops.items()]
    ops += [("post", "/api/v1/queries", "analyst"), ("get", "/api/v1/queries", "viewer"),
            ("get", "/api/v1/queries/{id}", "viewer"),
            ("get", "/api/v1/queries/{id}/pcap", "viewer"),
            ("post", "/api/v1/queries/{id}/cancel", "analyst")]
    ids = {"id": qid, "case": "matrix"}
    failures = []
    for method, path, need in ops:
        url = path.format(**ids)
        body = {"bpf": "udp"} if method == "post" else None
        if (got := Api(cluster.central_url, None).call(method.upper(), url, body)[0]) != 401:
            failures.append(f"{method} {path} anonymous: {got}")
        for role in ROLES[:ROLES.index(need)]:
            api = Api(cluster.central_url, cluster.central_token("acme", role))
            if (got := api.call(method.upper(), url, body)[0]) != 403:
                failures.append(f"{method} {path} as acme {role}: {got}")
        if "{" in path:
            api = Api(cluster.central_url, cluster.central_token("globex", "admin"))
            if (got := api.call(method.upper(), url, body)[0]) != 404:
                failures.append(f"{method} {path} as globex admin: {got}")
    assert failures == []
    globex = Api(cluster.central_url, cluster.central_token("globex", "admin"))
    assert [s["name"] for s in globex.json("GET", "/api/v1/cluster/sensors")["sensors"]] == [
        "a", "b"]
    assert globex.json("GET", "/api/v1/cluster/cases")["cases"] == []
    assert globex.json("GET", "/api/v1/queries")["queries"] == []
    view, pcap = globex.query({"bpf": "udp"})  # globex's part of a and b is empty: no one
    assert (view["status"], view["sensors"], len(pcap), view["packets"]) == ("done", [], 24, 0)
    assert len(read_records(done)[1]) > 0
    nobody = Api(cluster.central_url, cluster.central_token("initech", "admin"))
    assert nobody.json("GET", "/api/v1/cluster/sensors")["sensors"] == []


def test_a_silent_sensor_is_missing_after_timeout_s(cluster, acme, tmp_path):
    pid = cluster.sensors["c"].proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        view, pcap = acme.query({"bpf": "tcp"})
    finally:
        os.kill(pid, signal.SIGCONT)
    assert (view["status"], view["partial"]) == ("done", True)
    assert view["missing"] == [{"sensor": "c", "reason": f"no answer for {TIMEOUT_S:g} s "
                                "(timeout_s of the cluster file)"}]
    assert view["error"].startswith("partial result: sensor c is missing")
    own = [sensor_api(cluster, n).query({"bpf": "tcp", "workflows": []})[1] for n in "ab"]
    assert pcap == mergecap(tmp_path, own)


def test_a_killed_sensor_gives_a_flagged_partial_result(cluster, acme, tmp_path):
    own = [sensor_api(cluster, n).query({"bpf": "tcp", "workflows": []})[1] for n in "ac"]
    cluster.kill("b")
    view, pcap = acme.query({"bpf": "tcp"})
    assert (view["status"], view["partial"], view["sensors"]) == ("done", True, list(SENSORS))
    [missing] = view["missing"]
    assert missing["sensor"] == "b" and missing["reason"].startswith("cannot connect"), missing
    assert pcap == mergecap(tmp_path, own)
    sensors = {s["name"]: s for s in acme.json("GET", "/api/v1/cluster/sensors")["sensors"]}
    assert (sensors["b"]["status"], sensors["a"]["status"]) == ("down", "ok")
    assert [m["sensor"] for m in acme.json("GET", "/api/v1/cluster/cases")["missing"]] == ["b"]
