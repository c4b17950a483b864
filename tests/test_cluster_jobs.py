"""Hunts as jobs (:mod:`pcapwire.jobs.handlers_hunt`) and the central's job routes
(``POST /api/v1/cluster/jobs``, ``GET /api/v1/cluster/jobs/{unit_id}``).

In process: a hunt job runs the trigger's hunt to its end (the same hits as
:func:`~pcapwire.triggers.hunt.run_hunt` alone); its parameter errors have codes; a job whose
hunt another runner holds waits for that runner and reports the finished hunt.

A real cluster: a real ``nats-server``, two sensors (``pcapwire serve`` with mutual TLS, each
with a ``pcapwire worker --nats`` beside it on the same data directory) and a central with
the cluster file's ``[nats] url``. Triggers are created through the sensors' API, hunts are
submitted and their results read through the central. Sensor a's worker is SIGKILLed by the
hunt runner's test hook after its second unit: the job is delivered again to a new worker,
which resumes (the finished units keep their one attempt), and the hunt ends once with the
same matches and hit counts as an uninterrupted hunt of the same definition. The sensors
serve with ``--hunts-by-workers``: their own trigger services run no hunt, so that the
workers are the hunts' only runners. Waits are KV watches (:meth:`NatsJobs.wait_state`) or
process exits.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pcapwire.api.authdb import AuthDB
from pcapwire.api.openapi import JOB_PATHS
from pcapwire.cluster.central import API_JOB_KINDS, Central, JobRefused
from pcapwire.cluster.config import load_cluster
from pcapwire.cluster.sensors import Caller
from pcapwire.cluster.tls import central_client_context
from pcapwire.jobs import Job, JobResult
from pcapwire.jobs.nats import RESULT_BUCKET, NatsJobs
from pcapwire.jobs.runner import run_job, tenant_root
from pcapwire.store import Store
from pcapwire.synth import generate
from pcapwire.testing.certs import make_ca
from pcapwire.testing.cluster import Cluster, split_capture
from pcapwire.testing.natsserver import NatsServer
from pcapwire.triggers import TriggerDB, from_dict
from pcapwire.triggers.hunt import KILL_AFTER_ENV, run_hunt
from pcapwire.triggers.service import LOCK_FILE
from test_cluster_query import Api

SENSORS = ("a", "b")
SEGMENT_BYTES = 2**19  # a ~3 MiB part of the capture: 5 or 6 segments, a hunt unit each
UNITS = 5  # the whole capture in segments of 2 * SEGMENT_BYTES
DEFN = {"bpf": "udp port 53"}  # hits in every segment of the generated traffic
KILL_AFTER = 2  # sensor a's first hunt worker dies after recording this many units
WAIT_S = 120.0  # the bound of every wait (never reached when green)
HOST = socket.gethostname()


# -- in process ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cap = tmp_path_factory.mktemp("hunt") / "synth.pcap"
    generate(cap, 6 * 2**20, seed=14)
    return cap


@pytest.fixture
def store(capture: Path, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    with Store(root) as s:
        s.ingest([capture], segment_max_bytes=2 * SEGMENT_BYTES)
        assert len(s.catalog.segments()) == UNITS
    return root


def _create(root: Path, name: str) -> tuple[int, int]:
    with TriggerDB(root) as tdb:
        trigger, hunt = tdb.create(from_dict({"name": name, **DEFN}), "test")
    return trigger.id, hunt.id


def matches(root: Path, name: str) -> list[tuple[str, str, int]]:
    """The trigger's result set: (rule, flow key, hits) of each match."""
    with TriggerDB(root) as tdb:
        found = tdb.matches(tdb.by_name(name).id, limit=10**6)
    return sorted((m["rule"], m["flow_key"], m["hits"]) for m in found)


def unit_hits(root: Path, hunt_id: int) -> int:
    with TriggerDB(root) as tdb:
        return sum(u["matches"] for u in tdb.units(hunt_id))


def test_a_hunt_job_runs_the_hunt_and_reports_it(store: Path) -> None:
    _, ref_hunt = _create(store, "reference")
    run_hunt(store, ref_hunt, threading.Event(), workers=2)
    _, hunt = _create(store, "dns")
    result = run_job(Job("hunt", "hunt:acme:s:dns:v1", "acme", {"trigger": "dns",
                                                                  "version": 1}), store, "w")
    assert result.ok, result
    data = dict(result.data)
    assert (data.pop("rate_bytes_s") or 0) > 0 and data.pop("eta_s") == 0.0
    hits = unit_hits(store, ref_hunt)
    assert hits > 0 and data == {
        "status": "finished", "percent": 100.0, "bytes_done": data["bytes_total"],
        "bytes_total": data["bytes_total"], "units_done": UNITS, "units_failed": 0,
        "units_total": UNITS, "trigger": "dns", "version": 1, "hunt_id": hunt, "hits": hits}
    assert matches(store, "dns") == matches(store, "reference")
    again = run_job(Job("hunt", "u2", "acme", {"trigger": "dns"}), store, "w")
    assert again.ok and again.data["units_done"] == UNITS and again.data["hits"] == hits


@pytest.mark.parametrize(("params", "code", "message"), [
    ({}, "invalid_params", "the job needs the parameter 'trigger'"),
    ({"trigger": 7}, "invalid_params", "parameter 'trigger' must be str, not int"),
    ({"trigger": "dns", "version": 0}, "invalid_params", "parameter 'version' must be >= 1"),
    ({"trigger": "nope"}, "not_found", "no trigger 'nope'"),
    ({"trigger": "dns", "version": 2}, "not_found", "trigger 'dns' has no hunt of version 2"),
])
def test_hunt_parameters_are_checked(store: Path, params: dict[str, Any], code: str,
                                     message: str) -> None:
    _create(store, "dns")
    result = run_job(Job("hunt", "u", "acme", params), store)
    assert (result.ok, result.code) == (False, code) and result.message.startswith(message)


def test_a_store_without_triggers_has_no_hunt(store: Path) -> None:
    result = run_job(Job("hunt", "u", "acme", {"trigger": "dns"}), store)
    assert (result.code, result.message) == ("not_found",
                                             "no trigger 'dns': the tenant has no triggers")


def test_a_job_waits_for_the_runner_that_holds_the_hunt(store: Path) -> None:
    """The other runner is paused inside its first checkpoint (holding the hunt); the job
    can only report a finished hunt if it waited for that runner."""
    _, ref_hunt = _create(store, "reference")
    run_hunt(store, ref_hunt, threading.Event(), workers=1)
    _, hunt = _create(store, "dns")
    holding, release = threading.Event(), threading.Event()

    def on_matches(trigger_id: int, match_ids: list[int]) -> None:
        holding.set()
        release.wait(WAIT_S)

    other = threading.Thread(target=run_hunt, args=(store, hunt, threading.Event(), 1,
                                                     on_matches))
    other.start()
    assert holding.wait(WAIT_S)
    results: list[JobResult] = []
    job = threading.Thread(target=lambda: results.append(run_job(
        Job("hunt", "u", "acme", {"trigger": "dns"}), store)))
    job.start()
    release.set()
    other.join(WAIT_S)
    job.join(WAIT_S)
    assert [(r.ok, r.data["status"], r.data["units_done"], r.data["hits"]) for r in results
            ] == [(True, "finished", UNITS, unit_hits(store, ref_hunt))]
    assert matches(store, "dns") == matches(store, "reference")


def test_a_paused_trigger_ends_the_job_as_paused(store: Path) -> None:
    trigger, _ = _create(store, "dns")
    with TriggerDB(store) as tdb:
        tdb.set_state(trigger, "paused")
    result = run_job(Job("hunt", "u", "acme", {"trigger": "dns"}), store)
    assert (result.ok, result.data["status"], result.data["units_done"]) == (True, "paused", 0)


async def test_a_central_without_nats_refuses_jobs_with_409(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki")
    client = ca.client_cert("central")
    auth = AuthDB(tmp_path / "auth.sqlite")
    (tmp_path / "a.token").write_text(auth.create_token("acme", "analyst", "central")[0])
    auth.close()
    (tmp_path / "cluster.toml").write_text(
        f'[central]\ncert = "{client.cert}"\nkey = "{client.key}"\nca = "{ca.cert}"\n\n'
        '[[sensor]]\nname = "a"\nurl = "https://127.0.0.1:1"\ntenants = { acme = "a.token" }\n')
    central = Central(load_cluster(tmp_path / "cluster.toml"))
    caller = Caller("acme", "alice", "analyst")
    with pytest.raises(JobRefused) as submit:
        await central.submit_job(caller, "a", "hunt", {"trigger": "dns"})
    with pytest.raises(JobRefused) as show:
        await central.job(caller, "hunt:acme:a:dns:v1")
    for refused in (submit.value, show.value):
        assert (refused.status, refused.code, str(refused)) == (
            409, "no_job_queue", "this central has no job queue: add [nats] url to its "
            "cluster file (docs/cluster.md) and restart it")
    await central.sensors.close()


# -- a cluster ----------------------------------------------------------------------------

class JobCluster(Cluster):
    """The test harness's cluster with ``[nats] url`` in its cluster file."""

    nats_url = ""

    def _write_cluster_file(self) -> None:
        super()._write_cluster_file()
        with open(self.root / "cluster.toml", "a") as f:
            f.write(f'\n[nats]\nurl = "{self.nats_url}"\n')


class Workers:
    """``pcapwire worker --nats`` processes (each in a session of its own: a worker killed
    by the hunt's test hook leaves its unit processes, killed with the session)."""

    def __init__(self, url: str, cluster: Cluster, logs: Path) -> None:
        self.url, self.cluster, self.logs = url, cluster, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, sensor: str, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"worker-{sensor}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "pcapwire.cli", "--data-dir",
                                 str(self.cluster.sensors[sensor].data_dir), "worker",
                                 "--nats", self.url, "--sensor", sensor],
                                stdout=log, stderr=log, env={**os.environ, **(env or {})},
                                start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(WAIT_S)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return code

    def stop_all(self) -> None:
        codes = [self.stop(p) for p in self.procs]
        assert all(c in (0, -signal.SIGKILL) for c in codes), codes


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with NatsServer(tmp_path_factory.mktemp("nats")) as srv:
        yield srv


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, capture: Path,
            nats_server: NatsServer) -> Iterator[JobCluster]:
    root = tmp_path_factory.mktemp("cluster")
    parts = split_capture(capture, root / "parts", SENSORS,
                          lambda ts, frame: sum(frame[26:34]) % 2)  # by host pair
    cl = JobCluster(root / "nodes", {"a": {"acme": [], "globex": []}, "b": {"acme": []}},
                    sensor_args=["--hunts-by-workers"])
    cl.nats_url = nats_server.url
    for name, part in zip(SENSORS, parts, strict=True):
        with Store(tenant_root(cl.sensors[name].data_dir, "acme")) as s:
            s.ingest([part], segment_max_bytes=SEGMENT_BYTES)
    # serve --hunts-by-workers queues every new hunt itself (pcapwire.triggers.hunt_jobs);
    # here the test queues them, through the central: the stores' trigger services are
    # kept off by holding their lock (as a `pcapwire trigger run` elsewhere would)
    locks = []
    for name in SENSORS:
        fd = os.open(tenant_root(cl.sensors[name].data_dir, "acme") / LOCK_FILE,
                     os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locks.append(fd)
    try:
        with cl:
            cl.central.wait_log(r"job queue \S+ connected")
            yield cl
    finally:
        for fd in locks:
            os.close(fd)


@pytest.fixture
async def jobs(nats_server: NatsServer) -> AsyncIterator[NatsJobs]:
    """The test's own connection: the sensors' consumers are made here first, with a 2 s
    ack wait (a killed worker's job is delivered again 2 s after its last heartbeat)."""
    async with await NatsJobs.connect(nats_server.url, ack_wait_s=2.0) as conn:
        for sensor in SENSORS:
            await conn.ensure_consumer(sensor)
        yield conn


def sensor_api(cluster: Cluster, name: str) -> Api:
    context = central_client_context(cluster.client.cert, cluster.client.key, cluster.ca.cert)
    return Api(cluster.sensor_url(name), cluster.sensor_token(name, "acme", "analyst"),
               context)


def store_of(cluster: Cluster, name: str) -> Path:
    return tenant_root(cluster.sensors[name].data_dir, "acme")


async def ended(jobs: NatsJobs, unit_id: str) -> dict[str, Any]:
    return await jobs.wait_state(unit_id, lambda s: s["state"] in ("done", "failed"), WAIT_S)


async def test_hunts_through_the_central_survive_a_killed_worker(
        cluster: JobCluster, jobs: NatsJobs, tmp_path: Path) -> None:
    acme = Api(cluster.central_url, cluster.central_token("acme", "analyst"))
    workers = Workers(cluster.nats_url, cluster, tmp_path)
    try:
        for name in SENSORS:
            for trigger in ("reference", "dns"):
                sensor_api(cluster, name).json("POST", "/api/v1/triggers",
                                               {"name": trigger, **DEFN}, status=201)
        plain = {name: workers.start(name) for name in SENSORS}

        # the reference hunts, uninterrupted
        refs = {name: acme.json("POST", "/api/v1/cluster/jobs", {
            "sensor": name, "kind": "hunt", "params": {"trigger": "reference", "version": 1}},
            status=202) for name in SENSORS}
        assert {n: (r["unit_id"], r["state"], r["result"]) for n, r in refs.items()} == {
            n: (f"hunt:acme:{n}:reference:v1", "queued", None) for n in SENSORS}
        for ref in refs.values():
            await ended(jobs, ref["unit_id"])
        ref_views = {n: acme.json("GET", f"/api/v1/cluster/jobs/{r['unit_id']}")
                     for n, r in refs.items()}

        # sensor a's next hunt runs in a worker that kills itself after KILL_AFTER units
        assert workers.stop(plain["a"]) == 0
        doomed = workers.start("a", {KILL_AFTER_ENV: str(KILL_AFTER)})
        submitted = {name: acme.json("POST", "/api/v1/cluster/jobs", {
            "sensor": name, "kind": "hunt", "params": {"trigger": "dns", "version": 1}},
            status=202) for name in SENSORS}
        assert await asyncio.to_thread(doomed.wait, WAIT_S) == -signal.SIGKILL
        workers.stop(doomed)  # its unit processes
        with TriggerDB(store_of(cluster, "a")) as tdb:
            hunt_a = tdb.hunts(tdb.by_name("dns").id)[0].id
            before = {u["segment_id"]: u for u in tdb.units(hunt_a)}
        done_before = {s for s, u in before.items() if u["state"] == "done"}
        assert len(done_before) == KILL_AFTER < len(before)
        rescue = workers.start("a")
        for job in submitted.values():
            await ended(jobs, job["unit_id"])
        views = {n: acme.json("GET", f"/api/v1/cluster/jobs/{j['unit_id']}")
                 for n, j in submitted.items()}
    finally:
        await asyncio.to_thread(workers.stop_all)

    for name in SENSORS:
        ref, got = ref_views[name]["result"], views[name]["result"]
        assert ref["ok"] and got["ok"], (ref, got)
        assert got["data"]["status"] == "finished" and got["data"]["units_failed"] == 0
        for key in ("units_done", "units_total", "bytes_done", "hits"):
            assert got["data"][key] == ref["data"][key], key
        assert got["data"]["units_done"] == got["data"]["units_total"] >= 3
        assert matches(store_of(cluster, name), "dns") == matches(store_of(cluster, name),
                                                                  "reference")
    assert (views["a"]["state"], views["a"]["deliveries"], views["a"]["worker"]) == (
        "done", 2, f"{HOST}:{rescue.pid}")
    assert (views["b"]["state"], views["b"]["deliveries"]) == ("done", 1)
    with TriggerDB(store_of(cluster, "a")) as tdb:
        after = {u["segment_id"]: u for u in tdb.units(hunt_a)}
    for seg in done_before:  # not scanned again
        assert after[seg]["attempts"] == 1 and after[seg]["finished"] == \
            before[seg]["finished"]
    # one result per unit, however often delivered; a resubmission is the same unit
    results = (await jobs.js.stream_info(f"KV_{RESULT_BUCKET}")).state.messages
    again = acme.json("POST", "/api/v1/cluster/jobs", {
        "sensor": "a", "kind": "hunt", "params": {"trigger": "dns", "version": 1}}, status=202)
    assert (again["unit_id"], again["state"], again["result"]) == (
        views["a"]["unit_id"], "done", views["a"]["result"])
    assert (await jobs.js.stream_info(f"KV_{RESULT_BUCKET}")).state.messages == results


async def test_job_routes_keep_to_the_callers_tenant_and_role(
        cluster: JobCluster, jobs: NatsJobs, tmp_path: Path) -> None:
    acme = Api(cluster.central_url, cluster.central_token("acme", "analyst"))
    globex = Api(cluster.central_url, cluster.central_token("globex", "admin"))
    viewer = Api(cluster.central_url, cluster.central_token("acme", "viewer"))
    workers = Workers(cluster.nats_url, cluster, tmp_path)
    try:
        workers.start("a")
        escape = acme.json("POST", "/api/v1/cluster/jobs", {
            "sensor": "a", "kind": "extract",
            "params": {"pcap": "../globex/catalog.sqlite", "out": "carve"}}, status=202)
        assert escape["unit_id"].startswith("extract:acme:a:")
        await ended(jobs, escape["unit_id"])
        view = acme.json("GET", f"/api/v1/cluster/jobs/{escape['unit_id']}")
    finally:
        await asyncio.to_thread(workers.stop_all)
    assert (view["state"], view["result"]["code"], view["result"]["message"]) == (
        "failed", "path_not_allowed",
        "parameter 'pcap': ../globex/catalog.sqlite is outside the tenant's directory")
    unit = f"/api/v1/cluster/jobs/{escape['unit_id']}"
    job = {"sensor": "a", "kind": "hunt", "params": {"trigger": "dns"}}
    calls = [  # (api, method, path, body, status, code)
        (globex, "GET", unit, None, 404, "not_found"),
        (globex, "POST", "/api/v1/cluster/jobs", {**job, "sensor": "b"}, 404, "not_found"),
        (Api(cluster.central_url, None), "GET", unit, None, 401, None),
        (Api(cluster.central_url, None), "POST", "/api/v1/cluster/jobs", job, 401, None),
        (viewer, "POST", "/api/v1/cluster/jobs", job, 403, None),
        (viewer, "GET", "/api/v1/cluster/jobs/hunt:acme:a:nope:v1", None, 404, "not_found"),
        (viewer, "GET", "/api/v1/cluster/jobs/..%2Fx", None, 404, "not_found"),
        (acme, "POST", "/api/v1/cluster/jobs", {**job, "kind": "ingest"}, 400, None),
        (acme, "POST", "/api/v1/cluster/jobs", {**job, "sensor": "zz"}, 404, "not_found"),
        (acme, "POST", "/api/v1/cluster/jobs", {**job, "params": {
            "trigger": "a:b", "version": 1}}, 400, "invalid_params"),
    ]
    for api, method, path, body, status, code in calls:
        got, raw = api.call(method, path, body)
        assert got == status, (method, path, body, raw[:300])
        if code is not None:
            assert json.loads(raw)["code"] == code, raw
    assert set(API_JOB_KINDS) == {"hunt", "extract", "workflow", "sandbox"}
    assert {(p, m, op["x-required-role"]) for p, ops in JOB_PATHS.items()
            for m, op in ops.items()} == {("/api/v1/cluster/jobs", "post", "analyst"),
                                          ("/api/v1/cluster/jobs/{unit_id}", "get", "viewer")}
