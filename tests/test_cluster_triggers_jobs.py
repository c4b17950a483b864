"""Hunts queued by the sensors themselves (``pcapwire serve --hunts-by-workers --nats URL
--sensor-name NAME``) and run by their ``pcapwire worker --nats`` processes, on real
processes: a real ``nats-server``, three sensors with one worker each, a central with the
cluster file's ``[nats] url``.

A trigger created at the central is hunted on each sensor by that sensor's worker (the
result names the worker process) as job ``hunt:acme:<sensor>:c2:v1``, the very unit the
central's job route gives that hunt; its hits are exactly the sensor's flows. Editing the
rules at the central (version 2) and re-hunting as ``pcapwire rules update`` does (version 3,
on sensor a) queue their jobs the same way, one job each. Waits are KV watches
(:meth:`NatsJobs.wait_state`)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pcapwire.jobs import JobError
from pcapwire.jobs.nats import NatsJobs
from pcapwire.jobs.runner import tenant_root
from pcapwire.testing.natsserver import NatsServer
from pcapwire.triggers import TriggerDB
from test_cluster_jobs import JobCluster, Workers
from test_cluster_query import Api
from test_cluster_triggers import C2, IP, SENSORS, item, layout, named

WAIT_S = 120.0
HOST = socket.gethostname()


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with NatsServer(tmp_path_factory.mktemp("nats")) as srv:
        yield srv


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, nats_server: NatsServer
            ) -> Iterator[JobCluster]:
    root = tmp_path_factory.mktemp("ctrigjobs")
    (root / "parts").mkdir()
    cl = JobCluster(root / "nodes", layout(root / "parts"),
                    sensor_args=["--hunts-by-workers", "--nats", nats_server.url])
    cl.nats_url = nats_server.url
    with named(cl):
        cl.central.wait_log(r"job queue \S+ connected")
        yield cl  # type: ignore[misc]


async def hits(jobs: NatsJobs, units: dict[str, str]) -> dict[str, tuple[str, int, str]]:
    """Each sensor's (status, hits, worker) of its hunt job, once it ended."""
    out = {}
    for sensor, unit in units.items():
        await jobs.wait_state(unit, lambda s: s["state"] in ("done", "failed"), WAIT_S)
        result = await jobs.result(unit, WAIT_S)
        assert result.ok, result
        out[sensor] = (result.data["status"], result.data["hits"], result.worker)
    return out


async def test_sensors_queue_their_hunts_for_their_workers(
        cluster: JobCluster, nats_server: NatsServer, tmp_path: Path) -> None:
    acme = Api(cluster.central_url, cluster.central_token("acme", "analyst"))
    workers = Workers(nats_server.url, cluster, tmp_path)
    try:
        procs = {name: workers.start(name) for name in SENSORS}
        ran = {name: f"{HOST}:{proc.pid}" for name, proc in procs.items()}
        async with await NatsJobs.connect(nats_server.url) as jobs:
            created = acme.json("POST", "/api/v1/cluster/triggers", C2, status=201)
            assert created["sensors"] == [item(s, 1) for s in SENSORS]
            v1 = await hits(jobs, {s: f"hunt:acme:{s}:c2:v1" for s in SENSORS})

            acme.json("PUT", "/api/v1/cluster/triggers/c2", {
                **C2, "indicators": {"ips": [IP, "203.0.113.9"]}})
            v2 = await hits(jobs, {s: f"hunt:acme:{s}:c2:v2" for s in SENSORS})

            with TriggerDB(tenant_root(cluster.sensors["a"].data_dir, "acme")) as db:
                db.rehunt(1, "pcapwire rules update", "rule set et/open changed")
            v3 = await hits(jobs, {"a": "hunt:acme:a:c2:v3"})
            for sensor in SENSORS:  # one job per hunt: none was queued a second time
                for version in (1, 2):
                    with pytest.raises(JobError):
                        await jobs.state(f"hunt:acme:{sensor}:c2:v{version}:r2")
    finally:
        await asyncio.to_thread(workers.stop_all)
    assert v1 == {s: ("finished", n, ran[s]) for s, n in (("a", 3), ("b", 1), ("c", 0))}
    assert v2 == {s: ("finished", n, ran[s]) for s, n in (("a", 3), ("b", 1), ("c", 1))}
    assert v3 == {"a": ("finished", 3, ran["a"])}
    # the central shows the same unit its job route would have queued
    view = acme.json("GET", "/api/v1/cluster/jobs/hunt:acme:b:c2:v1")
    assert (view["state"], view["sensor"], view["kind"], view["result"]["data"]["hits"],
            view["result"]["worker"]) == ("done", "b", "hunt", 1, ran["b"])
    listed = acme.json("GET", "/api/v1/cluster/triggers")["triggers"]
    assert {(t["sensor"], t["version"], t["matches"]) for t in listed} == {
        ("a", 3, 3), ("b", 2, 1), ("c", 2, 1)}
