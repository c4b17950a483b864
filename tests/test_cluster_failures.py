"""A central over real sensors (:mod:`pcapwire.testing.cluster`, mutual TLS) when things go
wrong: a sensor killed in the middle of its answer, a query cancelled at the central, a
token file holding another tenant's token (checked at the central's start, and when a
sensor that was down comes back), a central restarted after a partial result, and a role
lowered by the central's user.

Traffic: a generated capture of ~32 MiB split by host pair, 7/8 on sensor a (its answer is
larger than every buffer between it and the central: while the merge waits for b, a cannot
finish) and 1/8 on b, both over the same time. Sensor c serves globex and initech, and the
cluster file swaps their token files. ``timeout_s`` is long: no sensor here is missing for
silence (SIGSTOP only holds a sensor while the test sets things up).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from pcaputil import read_records
from pcapwire.synth import generate
from pcapwire.testing.cluster import Cluster, split_capture
from test_cluster_query import Api, mergecap, sensor_api

TIMEOUT_S = 120.0  # the cluster file's timeout_s: a ceiling, never reached here
POLL_S = 0.02  # pacing of the loops that wait for a state (each has a deadline)
DEADLINE_S = 60.0
FIRST_BYTES = 64 * 1024  # of a's answer at the central before a is killed (many records)
SWAPPED = "the token file of tenant 'globex' holds a token of tenant 'initech' (analyst) on " \
          "this sensor; it is not used for 'globex': correct tenants of sensor 'c' in the " \
          "cluster file and restart the central"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("failures")
    capture = root / "all.pcap"
    generate(capture, 32 * 2**20, seed=41)
    parts = split_capture(capture, root / "parts", ["a", "b"],
                          lambda _ts, frame: int(sum(frame[26:34]) % 8 == 0))
    small = [root / "globex.pcap", root / "initech.pcap"]
    for seed, path in enumerate(small):
        generate(path, 200_000, seed=seed)
    layout = {"a": {"acme": [parts[0]]}, "b": {"acme": [parts[1]]},
              "c": {"globex": [small[0]], "initech": [small[1]]}}
    with Cluster(root / "nodes", layout, timeout_s=TIMEOUT_S,
                 token_of={("c", "globex"): "initech", ("c", "initech"): "globex"}) as cl:
        yield cl


@pytest.fixture
def acme(cluster):
    return Api(cluster.central_url, cluster.central_token("acme", "analyst"))


def wait_until(what: str, probe: Any) -> Any:
    """``probe()`` once it is true (polled, with a deadline)."""
    end = time.monotonic() + DEADLINE_S
    while not (got := probe()):
        if time.monotonic() > end:
            raise AssertionError(f"no {what} within {DEADLINE_S} s")
        time.sleep(POLL_S)
    return got


def sensor_queries(cluster, name: str, tenant: str, case: str) -> list[dict[str, Any]]:
    """The queries of ``case`` on sensor ``name`` as that sensor's tenant sees them."""
    return sensor_api(cluster, name, tenant).json("GET", f"/api/v1/queries?case={case}")[
        "queries"]


def test_a_token_of_another_tenant_is_refused_at_start_and_never_used(cluster):
    # checked at start, before any request reaches the central
    line = cluster.central.wait_log(r"sensor c: the token file of tenant 'globex'")
    assert SWAPPED in line
    globex = Api(cluster.central_url, cluster.central_token("globex", "analyst"))
    [c] = globex.json("GET", "/api/v1/cluster/sensors")["sensors"]
    assert (c["name"], c["status"], c["reason"]) == ("c", "down", SWAPPED)
    q = globex.json("POST", "/api/v1/queries", {"case": "swapped"}, status=202)
    try:  # no sensor answered: a cut stream, or 422 if the query failed before the GET
        status, body = globex.call("GET", f"/api/v1/queries/{q['id']}/pcap")
    except http.client.IncompleteRead:
        pass
    else:
        assert (status, json.loads(body)["code"]) == (422, "sensors_unavailable")
    view = globex.json("GET", f"/api/v1/queries/{q['id']}")
    assert (view["status"], view["error_code"], view["missing"]) == (
        "error", "sensors_unavailable", [{"sensor": "c", "reason": SWAPPED}])
    assert globex.json("GET", "/api/v1/cluster/cases")["missing"] == [
        {"sensor": "c", "reason": SWAPPED}]
    for tenant in ("globex", "initech"):  # nothing reached c with either token
        assert sensor_queries(cluster, "c", tenant, "swapped") == []
        assert sensor_api(cluster, "c", tenant).json("GET", "/api/v1/queries")["total"] == 0


def test_a_role_lowered_by_the_central_is_named_in_the_403(cluster):
    api = sensor_api(cluster, "b")
    headers = {"Authorization": f"Bearer {api.token}", "Content-Type": "application/json",
               "X-Pcapwire-On-Behalf-Of": "alice@central", "X-Pcapwire-Role": "viewer"}
    req = urllib.request.Request(api.url + "/api/v1/queries", method="POST", headers=headers,
                                 data=b'{"bpf": "udp"}')
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=60, context=api.context)
    assert err.value.code == 403
    assert json.loads(err.value.read())["message"] == (
        "this needs the 'analyst' role; the central's user you ask for (alice@central) has "
        "'viewer' (X-Pcapwire-Role; your token has 'analyst')")
    viewer = Api(api.url, cluster.sensor_token("b", "acme", "viewer"), api.context)
    status, data = viewer.call("POST", "/api/v1/queries", {"bpf": "udp"})
    assert (status, json.loads(data)["message"]) == (
        403, "this needs the 'analyst' role; your token has 'viewer'")
    doc = Api(cluster.central_url, None).json("GET", "/api/v1/openapi.json")
    assert "`X-Pcapwire-On-Behalf-Of: <the central's user>`" in doc["info"]["description"]
    assert "`X-Pcapwire-Role: viewer|analyst|admin`" in doc["info"]["description"]


def test_cancelling_at_the_central_cancels_the_sensors_queries(cluster, acme):
    """a is held (SIGSTOP) before the central asks it: the central's cancel waits for a's
    answer to the query request, then cancels the query a started (scanning its ~28 MiB)."""
    acme.json("GET", "/api/v1/cluster/sensors")  # fresh ranges: planning needs no answer
    pid = cluster.sensors["a"].proc.pid
    os.kill(pid, signal.SIGSTOP)
    cancelled: list[Any] = []
    try:
        q = acme.json("POST", "/api/v1/queries", {"case": "cancel"}, status=202)
        canceller = threading.Thread(target=lambda: cancelled.append(
            acme.json("POST", f"/api/v1/queries/{q['id']}/cancel")))
        canceller.start()
        cluster.central.wait_log("cancelling the queries of sensors a")  # before a answers
    finally:
        os.kill(pid, signal.SIGCONT)
    canceller.join()
    assert cancelled[0]["status"] == "cancelled"
    assert [(s["status"], s["error"]) for s in sensor_queries(cluster, "a", "acme", "cancel")
            ] == [("cancelled", None)]
    assert len(sensor_queries(cluster, "b", "acme", "cancel")) == 1  # b was asked too


def test_a_sensor_killed_mid_answer_and_a_central_restart(cluster, acme, tmp_path):
    """b is held, so the merge cannot pass its first record and a's answer stops at what
    the buffers take; once the central holds FIRST_BYTES of it, a is killed and b let go.
    The result: every whole record a delivered, merged with b's whole answer. After a
    restart of the central, the query still says a was missing."""
    body = {"case": "killed"}
    own = {n: sensor_api(cluster, n).query({**body, "workflows": []})[1] for n in "ab"}
    header, a_records = read_records(own["a"])
    acme.json("GET", "/api/v1/cluster/sensors")  # fresh ranges: planning needs no answer
    pid = cluster.sensors["b"].proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        q = acme.json("POST", "/api/v1/queries", body, status=202)
        wait_until("bytes of a at the central", lambda: acme.json(
            "GET", f"/api/v1/queries/{q['id']}")["received"]["a"] >= FIRST_BYTES)
        cluster.kill("a")
    finally:
        os.kill(pid, signal.SIGCONT)
    status, pcap = acme.call("GET", f"/api/v1/queries/{q['id']}/pcap")
    view = acme.json("GET", f"/api/v1/queries/{q['id']}")
    missing = [{"sensor": "a",
                "reason": "its answer broke off (the sensor died or its query failed)"}]
    assert (status, view["status"], view["partial"], view["sensors"], view["missing"]) == (
        200, "done", True, ["a", "b"], missing)
    delivered = view["received"]["a"]
    kept = len(read_records(pcap)[1]) - len(read_records(own["b"])[1])
    assert 0 < kept < len(a_records)  # a died mid-answer; what it sent is there
    whole = len(header) + sum(map(len, a_records[:kept]))
    assert whole <= delivered < whole + len(a_records[kept])  # a partial record is dropped
    assert view["received"]["b"] == len(own["b"])
    assert pcap == mergecap(tmp_path, [header + b"".join(a_records[:kept]), own["b"]])

    cluster.restart_central()
    again = Api(cluster.central_url, acme.token).json("GET", f"/api/v1/queries/{q['id']}")
    assert (again["live"], again["status"], again["partial"], again["sensors"],
            again["missing"], again["packets"]) == (False, "done", True, ["a", "b"], missing,
                                                    view["packets"])


def test_a_sensor_down_at_start_has_its_tokens_checked_when_it_comes_back(cluster):
    """The central starts while c is down (nothing to check then); the first request after
    c is back checks c's tokens and refuses the swapped one."""
    cluster.kill("c")
    cluster.restart_central()
    globex = Api(cluster.central_url, cluster.central_token("globex", "analyst"))
    [c] = globex.json("GET", "/api/v1/cluster/sensors")["sensors"]
    assert (c["status"], c["reason"].startswith("cannot connect")) == ("down", True), c
    cluster.restart_sensor("c")
    [c] = globex.json("GET", "/api/v1/cluster/sensors")["sensors"]
    assert (c["status"], c["reason"]) == ("down", SWAPPED)
    assert SWAPPED in cluster.central.wait_log(r"sensor c: the token file of tenant 'globex'")
    assert sensor_api(cluster, "c", "initech").json("GET", "/api/v1/queries")["total"] == 0
