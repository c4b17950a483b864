"""Jobs through a real ``nats-server`` (JetStream on 127.0.0.1, its own storage directory)
and real worker processes (``pcapwire worker --nats URL --sensor S``): a job runs once and
its result is fetched; a worker SIGKILLed mid-job hands the job to another worker, whose
heartbeats keep it from a third while it runs, and the store ends with every packet once; a
server restart loses no queued job; a delivery whose unit has a result is acknowledged
without running; a job whose workers keep dying ends as ``worker_lost``. Every wait is a KV
watch or, for what only the server knows (pending pulls, unacknowledged deliveries), a
bounded poll of the consumer's state; none is a fixed sleep."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import corpus_file
from nats.js.kv import _is_key_valid
from pcaputil import read_records
from pcapwire.jobs import Job, JobError, JobResult
from pcapwire.jobs.nats import (
    MAX_RESULT_BYTES,
    RESULT_BUCKET,
    STREAM,
    NatsJobs,
    kv_key,
    stored_result,
    subject,
)
from pcapwire.jobs.runner import KINDS, tenant_root
from pcapwire.store import Store
from pcapwire.synth import generate
from pcapwire.testing.natsserver import NatsServer

WAIT_S = 60.0  # the bound of every wait for a state or a result (never reached when green)
HOST = socket.gethostname()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats") as srv:
        yield srv


@pytest.fixture
async def jobs(server: NatsServer) -> AsyncIterator[NatsJobs]:
    # a short ack wait: a killed worker's job is delivered again 2 s after its last beat.
    # The consumers are made before any worker starts (the first to make one sets it up).
    async with await NatsJobs.connect(server.url, ack_wait_s=2.0) as conn:
        for sensor in ("s1", "s2"):
            await conn.ensure_consumer(sensor)
        yield conn


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    tenant_root(tmp_path / "data", "acme").mkdir(parents=True)
    return tmp_path / "data"


class Workers:
    """``pcapwire worker --nats`` processes; each is stopped (SIGTERM) at the end and must
    exit 0 then."""

    def __init__(self, url: str, data_dir: Path, logs: Path) -> None:
        self.url, self.data_dir, self.logs = url, data_dir, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, sensor: str = "s1") -> subprocess.Popen[bytes]:
        log = open(self.logs / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "pcapwire.cli", "--data-dir",
                                 str(self.data_dir), "worker", "--nats", self.url,
                                 "--sensor", sensor], stdout=log, stderr=log)
        log.close()
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(WAIT_S) for proc in self.procs]
        logs = {p.name: p.read_text() for p in sorted(self.logs.glob("worker-*.log"))}
        assert all(c in (0, -signal.SIGKILL) for c in codes), (codes, logs)


@pytest.fixture
def workers(server: NatsServer, data_dir: Path, tmp_path: Path) -> Iterator[Workers]:
    ws = Workers(server.url, data_dir, tmp_path)
    try:
        yield ws
    finally:
        ws.stop_all()


def name(proc: subprocess.Popen[bytes]) -> str:
    return f"{HOST}:{proc.pid}"


async def finished(jobs: NatsJobs, unit_id: str) -> dict[str, Any]:
    """The unit's state once done or failed (it follows the result's write)."""
    return await jobs.wait_state(unit_id, lambda s: s["state"] in ("done", "failed"), WAIT_S)


async def pulls_waiting(jobs: NatsJobs, n: int) -> None:
    """A bounded wait until ``n`` workers of s1 have a pull request pending (a state the
    server reports only when asked)."""
    async with asyncio.timeout(WAIT_S):
        while (await jobs.js.consumer_info(STREAM, "worker-s1")).num_waiting < n:
            await asyncio.sleep(0.05)


async def deliveries(jobs: NatsJobs, sensor: str = "s1") -> int:
    """Every delivery the sensor's consumer made (redeliveries count), once all of them are
    acknowledged (a bounded wait: the last ack is not confirmed to its sender)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            info = await jobs.js.consumer_info(STREAM, f"worker-{sensor}")
            if info.num_ack_pending == info.num_pending == 0:
                assert info.delivered is not None
                return info.delivered.consumer_seq
            await asyncio.sleep(0.05)


async def stored_results(jobs: NatsJobs) -> int:
    """Messages in the results bucket's stream: one per result ever written."""
    info = await jobs.js.stream_info(f"KV_{RESULT_BUCKET}")
    return info.state.messages


async def test_jobs_run_once_on_their_sensor_and_results_are_fetched(
        jobs: NatsJobs, workers: Workers, data_dir: Path) -> None:
    root = tenant_root(data_dir, "acme")
    (root / "inbox").mkdir()
    (root / "inbox" / "get.pcap").write_bytes(corpus_file("zeek-http-get").read_bytes())
    w1, w2 = workers.start("s1"), workers.start("s2")
    submitted = [Job("ping", "hunt-1.unit:1", "acme", sensor="s1"),
                 Job("ping", "hunt-1.unit:2", "acme", sensor="s2"),
                 Job("ingest", "ingest-1", "acme", {"paths": ["inbox/get.pcap"]}, "s1"),
                 Job("ping", "bad-tenant", "../acme", sensor="s2")]
    for job in submitted:
        await jobs.submit(job)
    await jobs.submit(submitted[0])  # the same unit again: queued once

    ping1, ping2, ingest, bad = [await jobs.result(j.unit_id, WAIT_S) for j in submitted]
    assert ping1 == JobResult("hunt-1.unit:1", True, data={"kinds": list(KINDS)},
                              worker=name(w1))
    assert ping2 == JobResult("hunt-1.unit:2", True, data={"kinds": list(KINDS)},
                              worker=name(w2))
    assert (ingest.ok, ingest.worker, ingest.data["packets"]) == (True, name(w1), 14)
    assert (bad.ok, bad.code, bad.worker) == (False, "invalid_job", name(w2))
    assert "tenant" in bad.message
    with Store(root) as store:
        assert store.catalog.stats()["packets"] == 14
    states = [await finished(jobs, j.unit_id) for j in submitted]
    assert [(s["state"], s["deliveries"], s["worker"], s["code"]) for s in states] == [
        ("done", 1, name(w1), "ok"), ("done", 1, name(w2), "ok"), ("done", 1, name(w1), "ok"),
        ("failed", 1, name(w2), "invalid_job")]
    # a finished unit submitted again is not queued: its result stays the only one
    await jobs.submit(submitted[2])
    assert await jobs.result("ingest-1", WAIT_S) == ingest
    assert await stored_results(jobs) == 4
    assert (await deliveries(jobs, "s1"), await deliveries(jobs, "s2")) == (2, 2)
    stream = await jobs.js.stream_info(STREAM)
    assert stream.state.messages == 0  # work queue: every job acknowledged and gone


async def test_a_worker_killed_mid_job_hands_it_on_and_it_completes_once(
        server: NatsServer, workers: Workers, data_dir: Path) -> None:
    root = tenant_root(data_dir, "acme")
    big = root / "inbox" / "big.pcap"
    big.parent.mkdir()
    generate(big, 128 * 2**20, seed=3)  # an ingest of about a second: time to die in
    _, records = read_records(big.read_bytes())
    # an ack wait shorter than the second run: only the in-progress heartbeats (every
    # ack_wait / 3) keep the job from going to the idle third worker meanwhile
    async with await NatsJobs.connect(server.url, ack_wait_s=0.6) as jobs:
        await jobs.ensure_consumer("s1")
        procs = {name(p): p for p in (workers.start(), workers.start(), workers.start())}
        await pulls_waiting(jobs, 3)  # all idle; the two not given the job stay idle
        await jobs.submit(Job("ingest", "ingest-big", "acme", {"paths": ["inbox/big.pcap"]},
                              "s1"))
        running = await jobs.wait_state("ingest-big", lambda s: s["state"] == "running",
                                        WAIT_S)
        assert (running["worker"] in procs, running["deliveries"]) == (True, 1)
        first = procs.pop(running["worker"])
        first.send_signal(signal.SIGKILL)
        assert first.wait(WAIT_S) == -signal.SIGKILL
        others = set(procs)

        result = await jobs.result("ingest-big", WAIT_S)
        assert (result.ok, result.code, result.worker in others) == (True, "ok", True), result
        state = await finished(jobs, "ingest-big")
        assert (state["state"], state["deliveries"], state["worker"]) == (
            "done", 2, result.worker)
        assert (await deliveries(jobs), await stored_results(jobs)) == (2, 1)
    with Store(root) as store:  # the second run resumed where the killed one had committed
        assert store.catalog.stats()["packets"] == len(records)
    assert 0 < result.data["packets"] <= len(records)


async def test_a_server_restart_loses_no_queued_job(
        jobs: NatsJobs, server: NatsServer, workers: Workers) -> None:
    units = [f"restart-{i}" for i in range(4)]
    for uid in units:
        await jobs.submit(Job("ping", uid, "acme", sensor="s1"))
    other = workers.start("s2")  # connected while the server restarts
    await jobs.submit(Job("ping", "before", "acme", sensor="s2"))
    assert (await jobs.result("before", WAIT_S)).worker == name(other)
    waiting = asyncio.create_task(jobs.result("after", WAIT_S))  # across the restart
    # same port, same storage directory; off the loop, so the clients see the server go
    await asyncio.to_thread(server.restart)
    await jobs.submit(Job("ping", "after", "acme", sensor="s2"))
    assert (await waiting).worker == name(other)
    server.stop()
    with socket.create_server(("127.0.0.1", server.port)) as gate:  # no NATS here yet
        gate.settimeout(WAIT_S)
        worker = workers.start("s1")
        conn, _ = await asyncio.to_thread(gate.accept)  # the worker dials out, finds none
        conn.close()
    await asyncio.to_thread(server.start)  # and tries again
    for uid in units:
        assert await jobs.result(uid, WAIT_S) == JobResult(
            uid, True, data={"kinds": list(KINDS)}, worker=name(worker))
        assert (await finished(jobs, uid))["deliveries"] == 1
    assert await stored_results(jobs) == 6


async def _deliver_and_die(jobs: NatsJobs, server: NatsServer,
                           result: JobResult | None) -> int:
    """What a worker killed after its fetch does: take the next job of s1 (storing
    ``result`` for it, if given) and go away without acknowledging it."""
    async with await NatsJobs.connect(server.url) as dying:
        sub = await dying.js.pull_subscribe_bind("worker-s1", stream=STREAM)
        [msg] = await sub.fetch(1, timeout=WAIT_S)
        if result is not None:
            await dying.results.create(kv_key(result.unit_id), result.to_json())
        return msg.metadata.num_delivered


async def test_a_redelivered_job_whose_result_exists_is_not_run_again(
        jobs: NatsJobs, server: NatsServer, workers: Workers, data_dir: Path) -> None:
    root = tenant_root(data_dir, "acme")
    (root / "get.pcap").write_bytes(corpus_file("zeek-http-get").read_bytes())
    await jobs.submit(Job("ingest", "once", "acme", {"paths": ["get.pcap"]}, "s1"))
    stored = JobResult("once", True, data={"packets": 14}, worker="the-dead-worker")
    assert await _deliver_and_die(jobs, server, stored) == 1
    workers.start()
    state = await jobs.wait_state("once", lambda s: s["deliveries"] == 2, WAIT_S)
    assert (state["state"], state["worker"]) == ("done", "the-dead-worker")
    assert await jobs.result("once", WAIT_S) == stored
    assert await stored_results(jobs) == 1
    with Store(root) as store:  # the ingest never ran
        assert store.catalog.stats()["packets"] == 0
    assert await deliveries(jobs) == 2


async def test_a_job_whose_workers_keep_dying_ends_as_worker_lost(
        server: NatsServer, workers: Workers) -> None:
    async with await NatsJobs.connect(server.url, ack_wait_s=1.0, max_runs=1) as jobs:
        await jobs.submit(Job("ping", "doomed", "acme", sensor="s1"))
        assert await _deliver_and_die(jobs, server, None) == 1  # the one allowed run
        worker = workers.start()
        result = await jobs.result("doomed", WAIT_S)
        assert (result.ok, result.code, result.worker) == (False, "worker_lost", name(worker))
        state = await finished(jobs, "doomed")
        assert (state["state"], state["deliveries"], state["code"]) == (
            "failed", 2, "worker_lost")
        assert await deliveries(jobs) == 2


async def test_waits_end_with_the_units_state(jobs: NatsJobs) -> None:
    with pytest.raises(JobError, match="never submitted") as exc:
        await jobs.result("nobody", 0.2)
    assert exc.value.code == "timeout"
    await jobs.submit(Job("ping", "queued-only", "acme", sensor="s9"))
    with pytest.raises(JobError, match='"state":"queued"'):
        await jobs.result("queued-only", 0.2)
    with pytest.raises(JobError, match="names the sensor") as exc:
        await jobs.submit(Job("ping", "nowhere", "acme"))
    assert exc.value.code == "invalid_job"
    with pytest.raises(JobError, match="no job with unit id"):
        await jobs.state("nobody")


def test_keys_subjects_and_result_size_limits() -> None:
    keys = {i: kv_key(i) for i in ("a.b:c", "a..b", "a.", "a...", "a:b", "a.b", "a-b")}
    assert keys == {"a.b:c": "a.b=3Ac", "a..b": "a=2E.b", "a.": "a=2E", "a...": "a=2E=2E=2E",
                    "a:b": "a=3Ab", "a.b": "a.b", "a-b": "a-b"}
    assert all(_is_key_valid(k) and ".." not in k for k in keys.values())
    assert subject("site-a_1") == "pcapwire.jobs.site-a_1"
    for bad in ("site.a", "a*", "", "x" * 64):
        with pytest.raises(JobError, match="sensor name"):
            subject(bad)
    fits = JobResult("u", True, data={"x": "y" * (MAX_RESULT_BYTES - 200)}, worker="w")
    assert stored_result(fits) == fits.to_json()
    big = JobResult("u", True, data={"x": "y" * MAX_RESULT_BYTES}, worker="w")
    replaced = JobResult.from_json(stored_result(big))
    assert (replaced.ok, replaced.code, replaced.worker) == (False, "result_too_large", "w")
    assert str(len(big.to_json())) in replaced.message
    assert orjson.loads(stored_result(big))["unit_id"] == "u"


def test_logged_urls_carry_no_credentials() -> None:
    from pcapwire.jobs.nats import shown_url

    assert shown_url("nats://user:s3cret@127.0.0.1:4222") == "nats://***@127.0.0.1:4222"
    assert shown_url("tls://tok3n@[::1]:4222") == "tls://***@[::1]:4222"
    assert shown_url("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
