"""Cluster triggers reach a sensor that was down (``pcapwire.cluster.trigger_sync``), on
real processes: three mTLS sensors (a, b, c, with ``--sensor-name``) serving acme (globex:
a only) and a central, whose tokens at the sensors are made admins (a central deletion
needs it).

While c is down, the central creates c2, edits it, deletes ``gone``, edits ``mine`` and
``other``, pauses ``other``, and edits the paused ``halt`` and aborts its new hunt; it is
then restarted (its record is on disk) and c started: c gets c2 with the definition a and b
have, hunts it (1 match: its flow to 203.0.113.9), loses ``gone``, takes the central's edit
and pause of ``other`` (made after c's own edit of it), keeps its own edit of ``mine`` (made
after the central's), and ends its new hunt of ``halt`` as a and b did.
``GET /api/v1/cluster/triggers/{name}`` says ``pending`` for c until then, then c's trigger
as c shows it. Every trigger route of the central holds the tenant x role matrix, and
globex sees none of acme's triggers.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from captureutil import wait_for
from pcapwire.api.authdb import ROLES
from pcapwire.api.openapi import CLUSTER_TRIGGER_PATHS
from pcapwire.cluster.trigger_state import NO_ABORT, STATE_FILE, Abort, TriggerState
from pcapwire.cluster.trigger_sync import RETRY_MAX_S, RETRY_MIN_S, backoff_s
from pcapwire.testing.cluster import Cluster
from test_cluster_query import Api, sensor_api
from test_cluster_triggers import C2, IP, SENSORS, item, named_cluster

WAIT_S = 120.0
EDITED = {**C2, "indicators": {"ips": [IP, "203.0.113.9"]}}


def ips(name: str, *addrs: str) -> dict[str, Any]:
    return {"name": name, "indicators": {"ips": list(addrs)}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with named_cluster(tmp_path_factory.mktemp("ctrigsync")) as cl:
        yield cl


def admin_tokens(cluster: Cluster) -> None:
    """The central's acme tokens at the sensors made admins (read when it starts)."""
    for name in SENSORS:
        path = cluster.root / "tokens" / f"{name}-acme.token"
        path.write_text(cluster.sensor_token(name, "acme", "admin") + "\n")


def shown(api: Api, name: str, status: int = 200) -> dict[str, Any]:
    out: dict[str, Any] = api.json("GET", f"/api/v1/cluster/triggers/{name}", status=status)
    return out


def on(view: dict[str, Any], sensor: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in view["sensors"] if s["sensor"] == sensor)
    return found


def behalf(trigger: dict[str, Any]) -> str:
    """The central's user a sensor names as the trigger's creator."""
    return str(trigger["created_by"].split(" on behalf of ", 1)[1])


def test_a_sensor_that_was_down_gets_what_it_missed(cluster: Cluster) -> None:
    acme = Api(cluster.central_url, cluster.central_token("acme", "analyst"))
    for name in ("gone", "mine", "other", "halt"):
        out = acme.json("POST", "/api/v1/cluster/triggers", ips(name, "198.51.100.1"),
                        status=201)
        assert [o["status"] for o in out["sensors"]] == [201, 201, 201]
    acme.json("POST", "/api/v1/cluster/triggers/halt/pause")

    # c's own edit of `other`, before the central's (the central stopped meanwhile)
    cluster.central.stop()
    admin_tokens(cluster)
    direct = sensor_api(cluster, "c")
    direct.json("PUT", "/api/v1/triggers/3", ips("other", "198.51.100.2"))
    cluster.central.start()
    acme = Api(cluster.central_url, acme.token)
    admin = Api(cluster.central_url, cluster.central_token("acme", "admin"))

    cluster.kill("c")
    created = acme.json("POST", "/api/v1/cluster/triggers", C2, status=207)
    assert created["sensors"][:2] == [item("a", 5), item("b", 5)]
    down = created["sensors"][2]
    assert (down["sensor"], down["status"], down["error"]["code"]) == (
        "c", None, "sensor_unavailable")
    view = shown(acme, "c2", 207)
    assert view["complete"] is False
    assert {k: view["central"][k] for k in ("revision", "sensors", "paused", "deleted")} == {
        "revision": 1, "sensors": ["a", "b", "c"], "paused": False, "deleted": False}
    pending = on(view, "c")
    assert {k: pending[k] for k in ("sync", "revision", "status", "trigger")} == {
        "sync": "pending", "revision": 0, "status": None, "trigger": None}
    assert pending["note"]  # the last try's reason: refused connection, or a dead keep-alive
    assert (pending["error"]["code"], pending["error"]["message"]) == (
        "pending", f"revision 1 not delivered yet: {pending['note']}")
    assert [(s["sync"], s["revision"], s["status"], s["trigger"]["id"])
            for s in view["sensors"][:2]] == [("delivered", 1, 200, 5)] * 2

    assert acme.json("PUT", "/api/v1/cluster/triggers/c2", EDITED, status=207)[
        "sensors"][:2] == [item(s, 5, 2, status=200, action="edited") for s in ("a", "b")]
    gone = admin.json("DELETE", "/api/v1/cluster/triggers/gone", status=207)
    assert [(o["sensor"], o["status"]) for o in gone["sensors"]] == [
        ("a", 204), ("b", 204), ("c", None)]
    acme.json("PUT", "/api/v1/cluster/triggers/mine", ips("mine", "198.51.100.3"),
              status=207)
    acme.json("PUT", "/api/v1/cluster/triggers/other", ips("other", "198.51.100.3"),
              status=207)
    acme.json("POST", "/api/v1/cluster/triggers/other/pause", status=207)
    # the edit of a paused trigger starts its new hunt paused: the abort ends it
    acme.json("PUT", "/api/v1/cluster/triggers/halt", ips("halt", "198.51.100.4"),
              status=207)
    aborted = acme.json("POST", "/api/v1/cluster/triggers/halt/abort", status=207)
    assert [(o["sensor"], o["status"], o["hunt"]) for o in aborted["sensors"]] == [
        ("a", 200, "aborted"), ("b", 200, "aborted"), ("c", None, None)]
    listed = acme.json("GET", "/api/v1/cluster/triggers")
    assert [(p["name"], p["sensor"], p["revision"], p["wanted"]) for p in listed["pending"]
            ] == [("c2", "c", 0, 2), ("gone", "c", 1, 2), ("halt", "c", 2, 4),
                  ("mine", "c", 1, 2), ("other", "c", 1, 3)]
    assert all(p["note"] for p in listed["pending"])
    assert [m["sensor"] for m in listed["missing"]] == ["c"]

    # the central restarted (its record is on disk), c back with its own edit of `mine`
    cluster.central.stop()
    cluster.restart_sensor("c")
    sensor_api(cluster, "c").json("PUT", "/api/v1/triggers/2", ips("mine", "198.51.100.2"))
    cluster.central.start()
    acme = Api(cluster.central_url, acme.token)

    def c2_hunted() -> dict[str, Any] | None:
        got = shown_raw(acme, "c2")
        hunt = (on(got, "c")["trigger"] or {}).get("hunt") or {}
        return got if hunt.get("status") == "finished" else None

    done = wait_for(c2_hunted, WAIT_S, "c2 hunted on c")
    assert done["complete"] is True and done["central"]["revision"] == 2
    a, c = on(done, "a")["trigger"], on(done, "c")["trigger"]
    assert c["definition"] == a["definition"] == done["central"]["definition"]
    assert (c["id"], c["version"], c["state"], c["matches"], c["hunt"]["units_done"]) == (
        5, 1, "active", 1, 1)
    assert behalf(c) == behalf(a)  # made on behalf of the user who asked for it
    assert [(s["sync"], s["revision"], s["note"]) for s in done["sensors"]] == [
        ("delivered", 2, None)] * 3

    def settled(name: str) -> dict[str, Any]:
        def delivered() -> dict[str, Any] | None:
            got = shown_raw(acme, name)
            return got if on(got, "c")["sync"] == "delivered" else None
        found: dict[str, Any] = wait_for(delivered, WAIT_S, f"{name} on c")
        return found

    deleted = settled("gone")
    assert deleted["central"]["deleted"] is True
    assert [(s["status"], s["error"]["code"]) for s in deleted["sensors"]] == [
        (404, "not_found")] * 3
    mine, other = settled("mine"), settled("other")
    assert on(mine, "c")["trigger"]["definition"]["indicators"]["ips"] == ["198.51.100.2"]
    assert on(mine, "c")["note"].startswith("kept the sensor's own change of ")
    assert on(mine, "a")["trigger"]["definition"]["indicators"]["ips"] == ["198.51.100.3"]
    assert [(s["trigger"]["definition"]["indicators"]["ips"], s["trigger"]["state"],
             s["revision"], s["note"]) for s in other["sensors"]] == [
        (["198.51.100.3"], "paused", 3, None)] * 3
    assert (other["central"]["paused"], other["central"]["revision"]) == (True, 3)
    halt = settled("halt")
    assert [(s["trigger"]["version"], s["trigger"]["state"], s["trigger"]["hunt"]["status"],
             s["revision"], s["note"]) for s in halt["sensors"]] == [
        (2, "paused", "aborted", 4, None)] * 3
    assert (halt["central"]["aborted"]["revision"], halt["central"]["aborted"]["by"]) == (
        4, halt["central"]["edited_by"])
    assert acme.json("GET", "/api/v1/cluster/triggers")["pending"] == []

    # every trigger route of the central: anonymous 401, a lower role 403, and globex
    # never sees or reaches acme's triggers or sensors (404)
    globex = Api(cluster.central_url, cluster.central_token("globex", "admin"))
    failures = []
    for path, ops in CLUSTER_TRIGGER_PATHS.items():
        for method, op in ops.items():
            url, body = path.format(name="c2"), C2 if method == "put" else None
            calls = [(Api(cluster.central_url, None), 401)] + [
                (Api(cluster.central_url, cluster.central_token("acme", role)), 403)
                for role in ROLES[:ROLES.index(op["x-required-role"])]] + [(globex, 404)]
            for api, want in calls:
                if (got := api.call(method.upper(), url, body)[0]) != want:
                    failures.append(f"{method} {path}: {got}, not {want}")
    assert failures == []
    assert globex.json("GET", "/api/v1/cluster/triggers")["triggers"] == []
    status, raw = acme.call("PUT", "/api/v1/cluster/triggers/c2", {**C2, "name": "zz"})
    assert (status, json.loads(raw)["details"]) == (400, {"field": "name"})
    assert globex.json("POST", "/api/v1/cluster/triggers", C2, status=201)["sensors"] == [
        item("a", 1)]
    theirs = shown(globex, "c2")
    assert [(s["sensor"], s["trigger"]["id"]) for s in theirs["sensors"]] == [("a", 1)]
    assert theirs["central"]["revision"] == 1
    assert shown(acme, "c2")["central"]["revision"] == 2


def shown_raw(api: Api, name: str) -> dict[str, Any]:
    """The view whatever its status (200 or 207)."""
    status, raw = api.call("GET", f"/api/v1/cluster/triggers/{name}")
    assert status in (200, 207), raw[:300]
    out: dict[str, Any] = json.loads(raw)
    return out


def test_the_record_and_its_pending_sensors(tmp_path: Path) -> None:
    state = TriggerState(tmp_path / STATE_FILE)
    body, defn = ips("t", "198.51.100.1"), {"name": "t"}
    new, before = state.change("acme", "t", "created", "alice", "analyst", ["a", "b"], body,
                               defn, ["a", "b"], now=100.0) or (None, None)
    assert new is not None and (new.revision, new.body_revision, new.paused) == (1, 1, False)
    assert {s: d.revision for s, d in (before or {}).items()} == {"a": 0, "b": 0}
    assert state.change("acme", "t", "created", "bob", "analyst", ["a"], body, defn,
                        ["a"]) is None  # a live name: the sensors refuse it
    assert state.change("acme", "x", "pause", "bob", "analyst", ["a"]) is None
    state.delivered("acme", "t", "a", 1, 5.0, None)
    state.failed("acme", "t", "b", "cannot connect: refused")
    assert state.pending() == [("acme", "t", "b")]
    paused, _ = state.change("acme", "t", "pause", "bob", "admin", ["a", "b"], now=200.0) \
        or (None, None)
    assert paused is not None
    assert (paused.revision, paused.body_revision, paused.paused, paused.state_by,
            paused.body_by) == (2, 1, True, "bob", "alice")
    again = TriggerState(tmp_path / STATE_FILE)  # what a restarted central reads
    assert again.pending() == [("acme", "t", "a"), ("acme", "t", "b")]
    assert again.deliveries("acme", "t")["b"].note == "cannot connect: refused"
    assert again.get("globex", "t") is None
    assert {p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {0o600}


def test_backoff_doubles_up_to_its_limit() -> None:
    assert (RETRY_MIN_S, RETRY_MAX_S) == (0.5, 10.0)
    assert [backoff_s(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_an_abort_is_recorded_for_the_body_whose_hunt_it_ended(tmp_path: Path) -> None:
    state = TriggerState(tmp_path / STATE_FILE)
    body, defn = ips("t", "198.51.100.1"), {"name": "t"}
    state.change("acme", "t", "created", "alice", "analyst", ["a"], body, defn, ["a"],
                 now=100.0)
    aborted, _ = state.change("acme", "t", "abort", "carol", "analyst", ["a"], now=150.0) \
        or (None, None)
    assert aborted is not None
    assert (aborted.revision, aborted.abort, aborted.state_by, aborted.paused) == (
        2, Abort(2, 1, 150.0, "carol", "analyst"), "alice", False)
    assert [aborted.abort_due(had) for had in (0, 1, 2)] == [True, True, False]
    assert aborted.view()["aborted"] == {"revision": 2, "at": 150.0, "by": "carol"}
    paused, _ = state.change("acme", "t", "pause", "bob", "analyst", ["a"]) or (None, None)
    assert paused is not None and paused.abort_due(1) and not paused.abort_due(2)
    edited, _ = state.change("acme", "t", "edited", "dan", "analyst", ["a"], body, defn,
                             ["a"]) or (None, None)
    assert edited is not None and edited.abort.revision == 2  # kept, but for the old body
    assert (edited.abort_due(0), edited.view()["aborted"]) == (False, None)
    gone, _ = state.change("acme", "t", "delete", "erin", "admin", ["a"]) or (None, None)
    assert gone is not None and gone.abort_due(0) is False


def test_a_record_of_the_first_release_gets_the_abort_columns(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    with sqlite3.connect(path) as db:  # the table as the first release made it
        db.execute("CREATE TABLE triggers (tenant TEXT NOT NULL, name TEXT NOT NULL, "
                   "revision INTEGER NOT NULL, body TEXT NOT NULL, definition TEXT NOT NULL, "
                   "sensors TEXT NOT NULL, body_revision INTEGER NOT NULL, "
                   "body_at REAL NOT NULL, body_by TEXT NOT NULL, body_role TEXT NOT NULL, "
                   "paused INTEGER NOT NULL, deleted INTEGER NOT NULL, "
                   "state_at REAL NOT NULL, state_by TEXT NOT NULL, "
                   "state_role TEXT NOT NULL, PRIMARY KEY (tenant, name))")
        db.execute("INSERT INTO triggers VALUES ('acme', 't', 3, '{}', '{}', '[\"a\"]', 1, "
                   "10.0, 'alice', 'analyst', 1, 0, 20.0, 'bob', 'analyst')")
    db.close()
    state = TriggerState(path)
    old = state.get("acme", "t")
    assert old is not None and (old.revision, old.paused, old.abort) == (3, True, NO_ABORT)
    aborted, _ = state.change("acme", "t", "abort", "carol", "analyst", ["a"], now=30.0) \
        or (None, None)
    assert aborted is not None and state.get("acme", "t") == aborted
    assert aborted.abort == Abort(4, 1, 30.0, "carol", "analyst")
