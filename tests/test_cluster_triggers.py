"""Triggers made and controlled at a cluster's central (``/api/v1/cluster/triggers``), on
real processes: three sensors (``pcapwire serve`` with mutual TLS and ``--sensor-name``,
each running its own hunts) serving tenant acme (globex: sensor a only), and a central.

Each sensor holds a crafted capture with a known number of flows to 198.18.0.7 (a: 3,
b: 1, c: 0). A trigger created at the central gets trigger id 1 on every sensor, and each
sensor's hunt finds exactly its flows; ``scope.sensor`` creates it only where it names;
names the tenant has no sensor of are refused before any sensor is asked; a trigger whose
scope is edited to name sensor a alone gets its new version everywhere, but b and c do
nothing with it (their hunt of it ends out of scope, no unit). Pause, resume, abort and
delete go by name to every sensor; each sensor checks tenant and role again (the
central's sensor tokens are analysts: a deletion is refused by each sensor, and said so
per sensor). A sensor killed is named in the answer, never skipped silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from captureutil import wait_for
from pcapwire.testing.cluster import Cluster
from pcapwire.testing.craft import udp_exchange, write_capture
from test_cluster_query import Api

SENSORS = ("a", "b", "c")
FLOWS = {"a": 3, "b": 1, "c": 0}  # flows to 198.18.0.7 in each sensor's capture
IP = "198.18.0.7"
WAIT_S = 120.0
C2 = {"name": "c2", "indicators": {"ips": [IP]}}


def capture(path: Path, flows: int, extra: str = "") -> Path:
    """``flows`` DNS exchanges with 198.18.0.7, one with ``extra`` if given, and one that
    matches nothing."""
    traffic = [udp_exchange(f"10.0.{i}.2:1001 > {IP}:53", b"q", b"a") for i in range(flows)]
    if extra:
        traffic.append(udp_exchange(f"10.0.99.2:1002 > {extra}:53", b"q", b"a"))
    traffic.append(udp_exchange("10.0.50.6:7 > 10.0.50.7:9", b"no", b"match"))
    return write_capture(path, traffic)


def layout(root: Path) -> dict[str, dict[str, list[Path]]]:
    """Who serves which tenant with what: c also holds a flow to 203.0.113.9."""
    parts = {n: capture(root / f"{n}.pcap", FLOWS[n], "203.0.113.9" if n == "c" else "")
             for n in SENSORS}
    return {"a": {"acme": [parts["a"]], "globex": []}, "b": {"acme": [parts["b"]]},
            "c": {"acme": [parts["c"]]}}


def named(cluster: Cluster) -> Cluster:
    """Each sensor serves with ``--sensor-name`` (its name in the cluster file)."""
    for name, node in cluster.sensors.items():
        node.argv += ["--sensor-name", name]
    return cluster


def named_cluster(root: Path) -> Cluster:
    """The three named sensors (:func:`layout`'s data) and a central under ``root``."""
    (root / "parts").mkdir()
    return named(Cluster(root / "nodes", layout(root / "parts")))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with named_cluster(tmp_path_factory.mktemp("ctrig")) as cl:
        yield cl


def item(sensor: str, trigger_id: int | None, version: int | None = 1, *,
         status: int = 201, action: str = "created", state: str | None = "active",
         hunt: str | None = "queued", error: dict[str, str] | None = None
         ) -> dict[str, Any]:
    return {"sensor": sensor, "status": status, "action": action, "error": error,
            "trigger_id": trigger_id, "version": version, "state": state, "hunt": hunt}


def refused(sensor: str, status: int, action: str, code: str, message: str
            ) -> dict[str, Any]:
    return item(sensor, None, None, status=status, action=action, state=None, hunt=None,
                error={"code": code, "message": message})


def views(api: Api, name: str) -> dict[str, dict[str, Any]]:
    """The trigger ``name`` on each sensor, as the central lists it."""
    listed = api.json("GET", "/api/v1/cluster/triggers")
    assert listed["missing"] == []
    return {t["sensor"]: t for t in listed["triggers"] if t["name"] == name}


def hunted(api: Api, name: str, version: int, sensors: tuple[str, ...]
           ) -> dict[str, dict[str, Any]]:
    """The views once the hunt of ``version`` ended on each of ``sensors``."""
    def ended() -> dict[str, dict[str, Any]] | None:
        got = views(api, name)
        done = all(s in got and got[s]["version"] == version
                   and got[s]["hunt"]["status"] == "finished" for s in sensors)
        return got if done else None
    found: dict[str, dict[str, Any]] = wait_for(ended, WAIT_S, f"{name} v{version} hunts")
    return found


def test_triggers_made_and_controlled_at_the_central(cluster: Cluster) -> None:
    acme = Api(cluster.central_url, cluster.central_token("acme", "analyst"))
    out = acme.json("POST", "/api/v1/cluster/triggers", C2, status=201)
    assert out == {"name": "c2", "complete": True, "imports": [],
                   "sensors": [item(s, 1) for s in SENSORS]}
    done = hunted(acme, "c2", 1, SENSORS)
    assert {s: (v["id"], v["matches"], v["hunt"]["units_done"]) for s, v in done.items()} \
        == {"a": (1, 3, 1), "b": (1, 1, 1), "c": (1, 0, 1)}

    # scope.sensor: only where it names
    only_b = acme.json("POST", "/api/v1/cluster/triggers", {
        **C2, "name": "only-b", "scope": {"sensor": "b"}}, status=201)
    assert only_b["sensors"] == [item("b", 2)]
    a_and_c = acme.json("POST", "/api/v1/cluster/triggers", {
        **C2, "name": "a-and-c", "scope": {"sensor": ["c", "a"]}}, status=201)
    assert a_and_c["sensors"] == [item("a", 2), item("c", 2)]
    assert {s: v["definition"]["scope"]["sensor"] for s, v in
            hunted(acme, "a-and-c", 1, ("a", "c")).items()} == {"a": ["a", "c"],
                                                                "c": ["a", "c"]}

    # refused at the central, before any sensor is asked: one error, naming the field
    globex = Api(cluster.central_url, cluster.central_token("globex", "analyst"))
    for api, body, field, message in [
        (acme, {**C2, "name": "x", "scope": {"sensor": "zz"}}, "scope.sensor",
         "body: scope.sensor: no sensor 'zz' serves tenant 'acme'; its sensors: a, b, c"),
        (globex, {**C2, "name": "x", "scope": {"sensor": ["a", "b"]}}, "scope.sensor",
         "body: scope.sensor: no sensor 'b' serves tenant 'globex'; its sensors: a"),
        (acme, {"name": "x", "indicators": {"ips": ["nope"]}}, "indicators.ips[0]",
         "body: indicators.ips[0]: 'nope' is no IP address or CIDR network"),
        (acme, {**C2, "name": "x", "scope": {"sensor": "Site A"}}, "scope.sensor",
         "body: scope.sensor: 'Site A' is no sensor name (1-63 characters a-z 0-9 _ -, "
         "starting with a letter or digit, as in the cluster file)"),
    ]:
        status, raw = api.call("POST", "/api/v1/cluster/triggers", body)
        err = json.loads(raw)
        assert (status, err["code"], err["message"], err["details"]) == (
            400, "invalid_trigger", message, {"field": field})
    assert [t["name"] for t in acme.json("GET", "/api/v1/cluster/triggers")["triggers"]
            if t["name"] == "x"] == []

    # a name taken on every sensor: each sensor's refusal, side by side
    taken = acme.json("POST", "/api/v1/cluster/triggers", C2, status=207)
    assert taken["complete"] is False and taken["sensors"] == [refused(
        s, 409, "created", "trigger_conflict",
        "a trigger named 'c2' exists (id 1); edit it or delete it first") for s in SENSORS]

    # the scope edited to a alone: a new version everywhere, hunted on a only
    edited = acme.json("PUT", "/api/v1/cluster/triggers/c2", {
        **C2, "indicators": {"ips": [IP, "203.0.113.9"]}, "scope": {"sensor": "a"}})
    assert edited["sensors"] == [item(s, 1, 2, status=200, action="edited") for s in SENSORS]
    done = hunted(acme, "c2", 2, SENSORS)
    out_of_scope = "out of scope: scope.sensor names a; this sensor is {}"
    assert {s: (v["hunt"]["units_total"], v["hunt"]["error"], v["matches"])
            for s, v in done.items()} == {"a": (1, None, 3),
                                          "b": (0, out_of_scope.format("b"), 1),
                                          "c": (0, out_of_scope.format("c"), 0)}

    # by name, on every sensor that has it
    paused = acme.json("POST", "/api/v1/cluster/triggers/c2/pause")
    assert paused["sensors"] == [item(s, 1, 2, status=200, action="pause", state="paused",
                                      hunt="finished") for s in SENSORS]
    resumed = acme.json("POST", "/api/v1/cluster/triggers/c2/resume")
    assert [(o["sensor"], o["state"]) for o in resumed["sensors"]] == [
        (s, "active") for s in SENSORS]
    aborted = acme.json("POST", "/api/v1/cluster/triggers/a-and-c/abort", status=207)
    nothing = "trigger 'a-and-c': no hunt to abort (the current one is finished)"
    assert aborted["sensors"] == [
        refused("a", 409, "abort", "trigger_conflict", nothing),
        refused("b", 404, "abort", "not_found", "no trigger 'a-and-c' here"),
        refused("c", 409, "abort", "trigger_conflict", nothing)]

    # roles and tenants, at the central and again at each sensor
    admin = Api(cluster.central_url, cluster.central_token("acme", "admin"))
    deleted = admin.json("DELETE", "/api/v1/cluster/triggers/c2", status=207)
    assert deleted["sensors"] == [refused(
        s, 403, "delete", "forbidden", "this needs the 'admin' role; your token has "
        "'analyst'") for s in SENSORS]
    viewer = Api(cluster.central_url, cluster.central_token("acme", "viewer"))
    nobody = Api(cluster.central_url, None)
    globex_admin = Api(cluster.central_url, cluster.central_token("globex", "admin"))
    calls: list[tuple[Api, str, str, Any, int, str | None]] = [
        (nobody, "POST", "/api/v1/cluster/triggers", C2, 401, None),
        (nobody, "POST", "/api/v1/cluster/triggers/c2/pause", None, 401, None),
        (viewer, "POST", "/api/v1/cluster/triggers", C2, 403, "forbidden"),
        (viewer, "PUT", "/api/v1/cluster/triggers/c2", C2, 403, "forbidden"),
        (viewer, "POST", "/api/v1/cluster/triggers/c2/pause", None, 403, "forbidden"),
        (acme, "DELETE", "/api/v1/cluster/triggers/c2", None, 403, "forbidden"),
        (globex_admin, "POST", "/api/v1/cluster/triggers/c2/pause", None, 404, "not_found"),
        (globex_admin, "PUT", "/api/v1/cluster/triggers/c2", C2, 404, "not_found"),
        (globex_admin, "DELETE", "/api/v1/cluster/triggers/c2", None, 404, "not_found"),
        (acme, "POST", "/api/v1/cluster/triggers/..%2Fc2/pause", None, 404, "not_found"),
    ]
    for api, method, path, body, status, code in calls:
        got, raw = api.call(method, path, body)
        assert got == status, (method, path, raw[:300])
        if code is not None:
            assert json.loads(raw)["code"] == code, raw
    assert [(s, v["state"]) for s, v in views(acme, "c2").items()] == [
        (s, "active") for s in SENSORS]

    # a sensor down is named, the others go on
    cluster.kill("c")
    late = acme.json("POST", "/api/v1/cluster/triggers", {**C2, "name": "late"}, status=207)
    assert late["sensors"][:2] == [item("a", 3), item("b", 3)]
    down = late["sensors"][2]
    assert (down["sensor"], down["status"], down["error"]["code"]) == (
        "c", None, "sensor_unavailable")
    assert down["error"]["message"].startswith("cannot connect: ")
    paused = acme.json("POST", "/api/v1/cluster/triggers/late/pause", status=207)
    assert [(o["sensor"], o["status"], o["state"]) for o in paused["sensors"]] == [
        ("a", 200, "paused"), ("b", 200, "paused"), ("c", None, None)]
