"""A trigger's ``scope.sensor`` on a sensor that knows its name (``serve --sensor-name``),
and hunts a sensor queues as jobs itself (``serve --hunts-by-workers`` without NATS: a local
``pcapwire worker --job -`` child per hunt), in process on real stores.

- The field: a name or a list (sorted, distinct; one name is a string), each a cluster
  file's sensor name, at most MAX_SCOPE_SENSORS; every error names the field.
- Sensor ``a``: a trigger scoped to ``b`` and ``c`` neither hunts (its hunt ends at once,
  no unit, the reason in ``error``) nor watches (a segment ingested later matches the
  in-scope triggers only); triggers scoped to ``a`` or to no sensor do both.
- A hunt queued as a local job: created, and re-hunted as ``pcapwire rules update`` does
  (:meth:`TriggerDB.rehunt`), each ends ``finished`` with the exact matches, run by the
  child (the service itself runs no hunt)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from captureutil import wait_for
from pcapwire.api.config import ApiConfig
from pcapwire.errors import ConfigError
from pcapwire.jobs.handlers_hunt import hunt_unit_id
from pcapwire.jobs.model import JobError
from pcapwire.triggers.db import TriggerDB
from pcapwire.triggers.hunt_jobs import MAX_HUNT_RUNS, LocalHunts, hunt_queue
from pcapwire.triggers.model import MAX_SCOPE_SENSORS, from_dict
from pcapwire.triggers.service import TriggerServices
from test_trigger_service_hunts import DEFINITION, expected, ingest, service_of
from triggerutil import WAIT_S


def scope(sensor: Any) -> Any:
    return from_dict({**DEFINITION, "scope": {"sensor": sensor}}, "body").scope.sensor


def test_scope_sensor_is_a_name_or_a_sorted_list() -> None:
    assert [scope(s) for s in ("", None, "a", ["a"], ["c", "a", "c"])] == [
        "", "", "a", "a", ["a", "c"]]
    assert from_dict({**DEFINITION, "scope": {"sensor": ["b", "a"]}}).scope.covers("a")
    assert not from_dict({**DEFINITION, "scope": {"sensor": "b"}}).scope.covers("a")
    assert from_dict({**DEFINITION, "scope": {"sensor": "b"}}).scope.covers("")
    assert len(scope([f"s{i}" for i in range(MAX_SCOPE_SENSORS)])) == MAX_SCOPE_SENSORS


@pytest.mark.parametrize(("sensor", "message"), [
    ([], "body: scope.sensor: a sensor's name or a non-empty list of names (leave it out "
         "for every sensor)"),
    (7, "body: scope.sensor: a sensor's name or a non-empty list of names (leave it out "
        "for every sensor)"),
    ("Site A", "body: scope.sensor: 'Site A' is no sensor name (1-63 characters a-z 0-9 _ -, "
               "starting with a letter or digit, as in the cluster file)"),
    (["a", 3], "body: scope.sensor[1]: 3 is no sensor name (1-63 characters a-z 0-9 _ -, "
               "starting with a letter or digit, as in the cluster file)"),
    ([f"s{i}" for i in range(MAX_SCOPE_SENSORS + 1)],
     f"body: scope.sensor: at most {MAX_SCOPE_SENSORS} sensors"),
])
def test_scope_sensor_errors_name_the_field(sensor: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        scope(sensor)
    assert str(err.value) == message


def test_hunt_unit_ids() -> None:
    assert [hunt_unit_id("acme", "a", "c2", 3, run) for run in (1, 2)] == [
        "hunt:acme:a:c2:v3", "hunt:acme:a:c2:v3:r2"]
    with pytest.raises(JobError) as err:
        hunt_unit_id("acme", "a", "x:y", 1)
    assert (err.value.code, str(err.value)) == (
        "invalid_params", "parameter 'trigger' must be a trigger's name (letters, digits, "
        "'._-'), not 'x:y'")


def test_serve_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--nats needs --hunts-by-workers and "
                                          "--sensor-name"):
        ApiConfig(data_dir=tmp_path, hunts_by_workers=True, nats_url="nats://127.0.0.1:1")
    with pytest.raises(ConfigError, match="--sensor-name 'A B': 1-63 characters"):
        ApiConfig(data_dir=tmp_path, sensor_name="A B")
    assert hunt_queue(False, None, "a") is None
    assert isinstance(hunt_queue(True, None, "a"), LocalHunts)


def matches(root: Path, name: str) -> set[tuple[str, str, int]]:
    with TriggerDB(root) as db:
        return {(m["rule"], m["flow_key"], m["segment_id"])
                for m in db.matches(db.by_name(name).id)}


def found(offsets: tuple[int, ...]) -> set[tuple[str, str, int]]:
    """The matches of the traffic at these offsets, ingested in this order (segments 1 …)."""
    return {(rule, key, segment) for segment, offset in enumerate(offsets, 1)
            for rule, key in expected(offset)}


def test_a_trigger_scoped_to_other_sensors_does_nothing_here(tmp_path: Path) -> None:
    root = tmp_path / "tenants" / "acme"
    ingest(root, tmp_path, 1)
    names = {"here": "a", "elsewhere": ["b", "c"], "everywhere": ""}
    with TriggerDB(root) as db:
        hunts = {name: db.create(from_dict({**DEFINITION, "name": name,
                                            "scope": {"sensor": sensor}}), "t")[1].id
                 for name, sensor in names.items()}
    services = TriggerServices.of_tenants(tmp_path, sensor="a")
    services.start()
    try:
        service_of(services, root)
        with TriggerDB(root) as db:
            wait_for(lambda: all(db.hunt(h).status == "finished" for h in hunts.values()),
                     WAIT_S, "the hunts")
            done = {n: (db.hunt(h).units_total, db.hunt(h).error) for n, h in hunts.items()}
            ingest(root, tmp_path, 2)  # after the triggers: the watch's
            ids = {name: db.by_name(name).id for name in names}
            wait_for(lambda: all(db.watch_state(ids[n])[0] == 2 for n in ("here",
                                                                          "everywhere")),
                     WAIT_S, "the watch")
            # the unit pass takes the triggers in id order: "elsewhere" had its turn
            elsewhere = db.watch_state(ids["elsewhere"])[0]
    finally:
        services.stop()
    assert done == {"here": (1, None), "everywhere": (1, None), "elsewhere": (
        0, "out of scope: scope.sensor names b, c; this sensor is a")}
    assert elsewhere == 1  # its watch never moved past what its hunt was given
    assert matches(root, "here") == matches(root, "everywhere") == found((1, 2))
    assert matches(root, "elsewhere") == set()


def test_hunts_by_workers_run_as_local_jobs(tmp_path: Path) -> None:
    root = tmp_path / "tenants" / "acme"
    ingest(root, tmp_path, 1)
    ingest(root, tmp_path, 3)
    with TriggerDB(root) as db:
        trigger, first = db.create(from_dict(DEFINITION), "t")
    services = TriggerServices.of_tenants(tmp_path, hunts=False, sensor="a",
                                          queue=LocalHunts("a"))
    services.start()
    try:
        svc = service_of(services, root)
        assert svc.dispatch is not None
        with TriggerDB(root) as db:
            wait_for(lambda: db.hunt(first.id).status == "finished", WAIT_S, "hunt v1")
            wait_for(lambda: first.id in svc.dispatch.runs, WAIT_S, "its job's end")
            _, second = db.rehunt(trigger.id, "pcapwire rules update", "rule set changed")
            svc.wake()
            wait_for(lambda: db.hunt(second.id).status == "finished", WAIT_S, "hunt v2")
            wait_for(lambda: second.id in svc.dispatch.runs, WAIT_S, "its job's end")
            hunts = [(h.version, h.status, h.units_done, h.units_total)
                     for h in db.hunts(trigger.id)]
            versions = {tuple(m["versions"]) for m in db.matches(trigger.id)}
    finally:
        services.stop()
    assert hunts == [(1, "finished", 2, 2), (2, "finished", 2, 2)]
    assert matches(root, "site-hunt") == found((1, 3))
    assert svc.dispatch.runs == {first.id: 2, second.id: 2}  # one job each
    assert versions == {(1, 2)}  # each match found again by the new version


def test_a_hunt_that_no_job_ends_is_given_up(tmp_path: Path) -> None:
    """After MAX_HUNT_RUNS jobs the sensor queues no more (no child is started)."""
    queue = LocalHunts("a")
    stop = threading.Event()
    root = tmp_path / "tenants" / "acme"  # no store: a run would fail with not_found
    assert queue.queue(root, "t", 1, MAX_HUNT_RUNS + 1, stop) == MAX_HUNT_RUNS + 2
    assert queue.queue(root, "t", 1, MAX_HUNT_RUNS + 2, stop) == MAX_HUNT_RUNS + 2
