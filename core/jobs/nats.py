"""Jobs through NATS JetStream: a cluster's central submits, each sensor's worker pulls the
jobs meant for its data, runs them with :func:`pcapwire.jobs.runner.run_job` and stores the
result. A worker only dials out (a sensor behind NAT works); nats-server keeps the queue.

- stream :data:`STREAM` (work-queue retention, file storage), subject
  ``pcapwire.jobs.<sensor>``; one durable pull consumer per sensor (``worker-<sensor>``,
  explicit ack) that all of the sensor's worker processes share;
- KV bucket :data:`STATE_BUCKET`, key per unit: ``{"state", "deliveries", "worker",
  "updated", ...}`` (``queued`` written by :meth:`NatsJobs.submit`, ``running``/``done``/
  ``failed`` by the worker); KV bucket :data:`RESULT_BUCKET`: the unit's
  :class:`~pcapwire.jobs.model.JobResult`, written once (KV create);
- a job is acknowledged after its result is stored. A worker that dies mid-job stops its
  ``in_progress`` heartbeats and the job is delivered again after the consumer's ack wait;
  a delivery whose unit already has a result is acknowledged without running (the worker
  died between storing and acknowledging), so a result never appears twice. A job whose
  worker died on each of its ``max_runs`` runs gets the result ``worker_lost`` on the next
  delivery (the consumer allows ``max_runs + 1``) instead of killing a fourth worker;
- a job's submission carries ``Nats-Msg-Id: <unit_id>``: submitting a unit twice within the
  stream's duplicate window queues it once (later, the stored result stops a second run).

The consumer's ``ack_wait`` and ``max_deliver`` are set by whoever creates it first
(:meth:`NatsJobs.connect` arguments, or the defaults here); workers read them back from the
server, so every worker of a sensor heartbeats at a third of the same ack wait.

KV keys: a unit id is its key, except that ``:`` (not allowed in a key) becomes ``=3A`` and a
``.`` that would leave an empty subject token (before another ``.`` or at the end) becomes
``=2E`` (:func:`kv_key`; a unit id never holds ``=``, so the mapping is one-to-one). Other
dots stay: ``nats kv watch pcapwire_jobs 'hunt-7.>'`` follows one hunt's units.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue
from pcapwire.errors import ConfigError
from pcapwire.jobs.model import Job, JobError, JobResult
from pcapwire.jobs.runner import run_job, tenant_root

log = logging.getLogger(__name__)


def shown_url(url: str) -> str:
    """``url`` as logs show it: without a user or password (``nats://user:pw@host``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{netloc}"))

STREAM = "PCAPWIRE_JOBS"
SUBJECT_PREFIX = "pcapwire.jobs"
STATE_BUCKET = "pcapwire_jobs"
RESULT_BUCKET = "pcapwire_results"
#: a job's worker must report progress (in_progress) within this long or it is redelivered
ACK_WAIT_S = 60.0
#: deliveries that run a job; one more delivery records ``worker_lost``
MAX_RUNS = 3
#: how long a stored submission dedupes a second one of the same unit id
DUPLICATE_WINDOW_S = 120.0
#: a state key's kept revisions (``nats kv history pcapwire_jobs KEY`` shows the path)
STATE_HISTORY = 8
#: a stored result may not exceed this (nats-server's default max_payload is 1 MiB); a
#: bigger one is replaced by a ``result_too_large`` failure naming its size
MAX_RESULT_BYTES = 512 * 1024
#: a worker's pull request waits this long for a job before asking again
FETCH_WAIT_S = 5.0
#: after a failed connect or a lost server, a worker tries again after this long
RETRY_S = 1.0
#: the client's pause between reconnection attempts while the server is away
RECONNECT_WAIT_S = 0.5
#: a sensor name becomes a subject token and a consumer name
SENSOR_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}")
_LONE_DOT = re.compile(r"\.(?=\.|$)")


def kv_key(unit_id: str) -> str:
    """The KV key of a unit id (see the module docstring)."""
    return _LONE_DOT.sub("=2E", unit_id).replace(":", "=3A")


def subject(sensor: str) -> str:
    if not SENSOR_NAME.fullmatch(sensor):
        raise JobError("invalid_job", f"sensor name {sensor!r} must match "
                       f"{SENSOR_NAME.pattern} (it becomes a NATS subject token)")
    return f"{SUBJECT_PREFIX}.{sensor}"


def stored_result(result: JobResult) -> bytes:
    """The result's JSON as stored, or a ``result_too_large`` failure in its place."""
    raw = result.to_json()
    if len(raw) <= MAX_RESULT_BYTES:
        return raw
    return JobResult(result.unit_id, False, "result_too_large",
                     f"the {result.code} result of {len(raw)} bytes is over MAX_RESULT_BYTES "
                     f"({MAX_RESULT_BYTES})", worker=result.worker).to_json()


async def _get(kv: KeyValue, key: str) -> bytes | None:
    try:
        entry = await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        return None
    return entry.value


_Waiter = tuple[Callable[[bytes], bool], "asyncio.Future[bytes | None]"]


class _KeyFeed:
    """Waits for values of single keys of a bucket: one subscription per bucket and
    connection (an ordered consumer delivering only what is written after it starts) wakes
    the waiters of a key; a waiter reads the key after registering, so a value written
    before the wait is found too. After a reconnection (the server may have restarted and
    forgotten the consumer) the subscription is made again and every waiter reads again."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, bucket: str) -> None:
        self.js, self.kv, self.bucket = js, kv, bucket
        self.prefix = f"$KV.{bucket}."
        self.sub: Any = None
        self.waiters: dict[str, list[_Waiter]] = {}
        self.subscribing = asyncio.Lock()

    async def wait(self, key: str, accept: Callable[[bytes], bool], timeout: float
                   ) -> bytes | None:
        """The key's first value ``accept`` takes, or None after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    waiter = (accept, loop.create_future())
                    self.waiters.setdefault(key, []).append(waiter)
                    read = asyncio.ensure_future(self._read(key))
                    try:
                        await asyncio.wait((read, waiter[1]),
                                           return_when=asyncio.FIRST_COMPLETED)
                        if read.done():
                            try:
                                value = read.result()
                            except nats.errors.Error as exc:  # the server went away
                                log.info("waiting for %s %s: %s", self.bucket, key, exc)
                            else:
                                if value and accept(value):
                                    return value
                        value = await waiter[1]
                        if value is not None:  # None: reconnected, subscribe and read again
                            return value
                    finally:
                        self._forget(key, waiter)
                        if not read.done():  # a reply lost with the old connection
                            read.cancel()
                            with contextlib.suppress(asyncio.CancelledError,
                                                     nats.errors.Error):
                                await read
        except TimeoutError:
            return None

    async def _read(self, key: str) -> bytes | None:
        """The key's value, once the subscription that will report changes is there."""
        async with self.subscribing:  # one subscription, however many wait at once
            if self.sub is None:
                self.sub = await self.js.subscribe(
                    f"{self.prefix}>", stream=f"KV_{self.bucket}", cb=self._on_msg,
                    ordered_consumer=True, deliver_policy=api.DeliverPolicy.NEW)
        return await _get(self.kv, key)

    def _forget(self, key: str, waiter: _Waiter) -> None:
        waiters = self.waiters.get(key, [])
        if waiter in waiters:
            waiters.remove(waiter)
        if not waiters:
            self.waiters.pop(key, None)

    async def _on_msg(self, msg: Msg) -> None:
        if msg.headers and msg.headers.get("KV-Operation"):  # a delete or purge
            return
        for accept, fut in self.waiters.get(msg.subject[len(self.prefix):], ()):
            if not fut.done() and accept(msg.data):
                fut.set_result(msg.data)

    def reset(self) -> None:
        sub, self.sub = self.sub, None
        if sub is not None:
            asyncio.ensure_future(_quietly(sub.unsubscribe()))
        for waiters in self.waiters.values():
            for _, fut in waiters:
                if not fut.done():
                    fut.set_result(None)


async def _quietly(call: Awaitable[None]) -> None:
    with contextlib.suppress(nats.errors.Error):
        await call


class NatsJobs:
    """A connection to the job queue: submit jobs, read their state and results (the
    central's side), and the calls :func:`serve_worker` makes (a sensor's side)."""

    def __init__(self, nc: Client, js: JetStreamContext, states: KeyValue, results: KeyValue,
                 ack_wait_s: float, max_runs: int) -> None:
        self.nc, self.js, self.states, self.results = nc, js, states, results
        self.ack_wait_s, self.max_runs = ack_wait_s, max_runs
        self._consumers: set[str] = set()
        #: set on each reconnection (a pull request of the lost connection is gone)
        self.reconnected = asyncio.Event()
        self.state_feed = _KeyFeed(js, states, STATE_BUCKET)
        self.result_feed = _KeyFeed(js, results, RESULT_BUCKET)

    @classmethod
    async def connect(cls, url: str, *, ack_wait_s: float = ACK_WAIT_S,
                      max_runs: int = MAX_RUNS, name: str = "pcapwire") -> NatsJobs:
        """Connect (reconnecting for ever while the server is away) and declare the stream
        and buckets (declaring them again with the same settings is a no-op)."""
        if not ack_wait_s > 0 or max_runs < 1:
            raise ConfigError(f"ack_wait_s must be > 0 and max_runs >= 1, not {ack_wait_s!r} "
                              f"and {max_runs!r}")
        jobs: NatsJobs | None = None

        async def on_reconnect() -> None:
            if jobs is not None:
                jobs.reconnected.set()
                jobs.state_feed.reset()
                jobs.result_feed.reset()

        async def on_error(exc: Exception) -> None:  # a lost server: one line, no traceback
            log.warning("nats %s: %s", shown_url(url), str(exc) or type(exc).__name__)

        nc = await nats.connect(url, name=name, max_reconnect_attempts=-1,
                                reconnect_time_wait=RECONNECT_WAIT_S,  # type: ignore[arg-type]
                                reconnected_cb=on_reconnect, error_cb=on_error)
        try:
            js = nc.jetstream()
            await js.add_stream(api.StreamConfig(
                name=STREAM, subjects=[f"{SUBJECT_PREFIX}.>"],
                retention=api.RetentionPolicy.WORK_QUEUE, storage=api.StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_S))
            states = await js.create_key_value(bucket=STATE_BUCKET, history=STATE_HISTORY)
            results = await js.create_key_value(bucket=RESULT_BUCKET, history=1,
                                                max_value_size=MAX_RESULT_BYTES)
        except BaseException:
            await nc.close()
            raise
        jobs = cls(nc, js, states, results, ack_wait_s, max_runs)
        return jobs

    async def close(self) -> None:
        for feed in (self.state_feed, self.result_feed):
            sub, feed.sub = feed.sub, None
            if sub is not None:  # also ends its heartbeat and flow-control tasks
                await _quietly(sub.unsubscribe())
        await self.nc.close()

    async def __aenter__(self) -> NatsJobs:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    def consumer_config(self, sensor: str) -> api.ConsumerConfig:
        return api.ConsumerConfig(
            durable_name=f"worker-{sensor}", filter_subject=subject(sensor),
            ack_policy=api.AckPolicy.EXPLICIT, ack_wait=self.ack_wait_s,
            max_deliver=self.max_runs + 1, deliver_policy=api.DeliverPolicy.ALL)

    async def ensure_consumer(self, sensor: str) -> api.ConsumerInfo:
        """The sensor's durable consumer, created with this connection's settings if it
        does not exist (an existing one keeps its own)."""
        durable = f"worker-{sensor}"
        try:
            info = await self.js.consumer_info(STREAM, durable)
        except nats.js.errors.NotFoundError:
            info = await self.js.add_consumer(STREAM, self.consumer_config(sensor))
        self._consumers.add(sensor)
        return info

    # -- the submitting side

    async def submit(self, job: Job) -> None:
        """Queue ``job`` for its sensor. Submitting a unit again is harmless: within the
        duplicate window the server drops the copy (``Nats-Msg-Id``); later, a worker
        acknowledges it unrun if the unit has a result. A unit's state is only created
        here (``queued``), never reset, so the write may race the worker's ``running``."""
        if not job.sensor:
            raise JobError("invalid_job", f"job {job.unit_id}: a job for the cluster names "
                           "the sensor whose data it needs")
        subj = subject(job.sensor)
        if job.sensor not in self._consumers:
            await self.ensure_consumer(job.sensor)
        await asyncio.gather(
            self._create_state(job),
            self.js.publish(subj, job.to_json(), stream=STREAM,
                            headers={"Nats-Msg-Id": job.unit_id}))

    async def _create_state(self, job: Job) -> None:
        try:
            await self.states.create(kv_key(job.unit_id), self._state_doc(job, "queued", 0, ""))
        except nats.js.errors.KeyWrongLastSequenceError:
            pass  # submitted before, or its worker was quicker: the state goes on

    async def state(self, unit_id: str) -> dict[str, Any]:
        raw = await _get(self.states, kv_key(unit_id))
        if raw is None:
            raise JobError("not_found", f"no job with unit id {unit_id!r} was submitted")
        doc: dict[str, Any] = orjson.loads(raw)
        return doc

    async def wait_state(self, unit_id: str, until: Callable[[dict[str, Any]], bool],
                         timeout: float) -> dict[str, Any]:
        """The unit's state document once ``until(state)`` holds, e.g.
        ``lambda s: s["state"] == "running"``."""
        raw = await self._wait(self.state_feed, unit_id, timeout,
                               lambda raw: until(orjson.loads(raw)))
        doc: dict[str, Any] = orjson.loads(raw)
        return doc

    async def result(self, unit_id: str, timeout: float) -> JobResult:
        """The unit's result, waiting up to ``timeout`` seconds for it."""
        return JobResult.from_json(await self._wait(self.result_feed, unit_id, timeout,
                                                    lambda _: True))

    async def _wait(self, feed: _KeyFeed, unit_id: str, timeout: float,
                    accept: Callable[[bytes], bool]) -> bytes:
        value = await feed.wait(kv_key(unit_id), accept, timeout)
        if value is not None:
            return value
        try:
            now = orjson.dumps(await self.state(unit_id)).decode()
        except JobError:
            now = "never submitted"
        raise JobError("timeout", f"unit {unit_id}: not there within {timeout} s in bucket "
                       f"{feed.bucket}; its state: {now}")

    @staticmethod
    def _state_doc(job: Job, state: str, deliveries: int, worker: str, code: str = ""
                   ) -> bytes:
        return orjson.dumps({"unit_id": job.unit_id, "kind": job.kind, "tenant": job.tenant,
                             "sensor": job.sensor, "state": state, "deliveries": deliveries,
                             "worker": worker, "code": code, "updated": time.time()})

    # -- the worker's side

    async def work_one(self, msg: Msg, data_dir: Path, worker: str, heartbeat_s: float,
                       max_runs: int, read_roots: Sequence[Path] = (),
                       workflow_dirs: Sequence[Path] = ()) -> None:
        """Handle one delivery: skip it if its unit has a result, run it otherwise, store
        the result, then acknowledge."""
        try:
            job = Job.from_json(msg.data)
        except JobError as exc:  # nothing to store it under: no unit id
            log.error("job message %s is not a job (%s); terminated", msg.metadata.sequence,
                      exc)
            await msg.term()
            return
        key = kv_key(job.unit_id)
        deliveries = msg.metadata.num_delivered
        stored = await _get(self.results, key)
        if stored is None:
            if deliveries > max_runs:
                result = JobResult(job.unit_id, False, "worker_lost",
                                   f"given up after {max_runs} runs: the worker running it "
                                   "stopped (killed or crashed) each time", worker=worker)
            else:
                await self.states.put(key, self._state_doc(job, "running", deliveries, worker))
                result = await _execute(job, msg, data_dir, worker, heartbeat_s,
                                        read_roots, workflow_dirs)
            stored = stored_result(result)
            try:
                await self.results.create(key, stored)
            except nats.js.errors.KeyWrongLastSequenceError:  # another delivery was first
                stored = await _get(self.results, key) or stored
        else:
            log.info("unit %s has a result already: delivery %d acknowledged, not run",
                     job.unit_id, deliveries)
        done = JobResult.from_json(stored)
        # the ack is not confirmed: were it lost, the redelivery finds the result
        await asyncio.gather(msg.ack(), self.states.put(key, self._state_doc(
            job, "done" if done.ok else "failed", deliveries, done.worker, done.code)))


async def _execute(job: Job, msg: Msg, data_dir: Path, worker: str, heartbeat_s: float,
                   read_roots: Sequence[Path], workflow_dirs: Sequence[Path]) -> JobResult:
    """Run the job in a thread; meanwhile the event loop tells the server it is in
    progress (all of the job's work, imports included, stays off the loop)."""

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(heartbeat_s)
            try:
                await msg.in_progress()
            except nats.errors.Error as exc:  # the server is away; the ack will tell
                log.warning("unit %s: in-progress heartbeat failed: %s", job.unit_id, exc)

    beat = asyncio.create_task(heartbeat())
    try:
        return await asyncio.to_thread(_run, job, data_dir, worker, read_roots,
                                       workflow_dirs)
    finally:
        beat.cancel()


def _run(job: Job, data_dir: Path, worker: str, read_roots: Sequence[Path],
         workflow_dirs: Sequence[Path]) -> JobResult:
    """The job in the store of its tenant under ``data_dir``; every failure a result."""
    try:
        root = tenant_root(data_dir, job.tenant)
    except JobError as exc:
        return JobResult.failure(job.unit_id, exc, worker)
    return run_job(job, root, worker, read_roots=read_roots, workflow_dirs=workflow_dirs)


async def serve_worker(url: str, sensor: str, data_dir: Path, *,
                       stop: asyncio.Event | None = None, name: str = "",
                       read_roots: Sequence[Path] = (),
                       workflow_dirs: Sequence[Path] = ()) -> None:
    """Run the sensor's jobs one at a time, each in the store of its tenant
    (``data_dir/tenants/<tenant>``; ``read_roots`` and ``workflow_dirs`` as for
    ``pcapwire worker --job``), until
    ``stop`` is set: the running job is finished and acknowledged first (a worker killed
    instead leaves it to be delivered again). Connects out to ``url`` and keeps trying while
    the server is unreachable. ``name`` names the worker in states and results (default
    ``host:pid``)."""
    try:
        subj = subject(sensor)
    except JobError as exc:
        raise ConfigError(f"worker --sensor: {exc}") from None
    stop = stop or asyncio.Event()
    worker = name or f"{socket.gethostname()}:{os.getpid()}"
    jobs = None
    while jobs is None:
        try:
            jobs = await NatsJobs.connect(url, name=f"pcapwire-worker {sensor} {worker}")
        except (OSError, nats.errors.Error) as exc:
            log.warning("worker %s: cannot reach %s (%s); retrying", worker, shown_url(url),
                        exc)
            if await _stopped(stop, RETRY_S):
                return
    async with jobs:
        await jobs.ensure_consumer(sensor)
        sub = await jobs.js.pull_subscribe_bind(f"worker-{sensor}", stream=STREAM)
        info = await sub.consumer_info()
        heartbeat_s = float(info.config.ack_wait or ACK_WAIT_S) / 3
        max_runs = int(info.config.max_deliver or MAX_RUNS + 1) - 1
        log.info("worker %s serves %s (ack wait %.1f s, %d runs)", worker, subj,
                 heartbeat_s * 3, max_runs)
        while not stop.is_set():
            try:
                msgs = await _fetch(sub, stop, jobs.reconnected)
                for msg in msgs:
                    await jobs.work_one(msg, data_dir, worker, heartbeat_s, max_runs,
                                        read_roots, workflow_dirs)
            except nats.errors.TimeoutError:
                continue
            except nats.errors.Error as exc:  # the server went away: its reconnect runs
                log.warning("worker %s: %s; retrying", worker, exc)
                await _stopped(stop, RETRY_S)


async def _fetch(sub: JetStreamContext.PullSubscription, stop: asyncio.Event,
                 reconnected: asyncio.Event) -> list[Msg]:
    """One job, or none when ``stop`` is set first or the connection was replaced (the
    server forgot the pending pull request; the next one goes to the new connection)."""
    reconnected.clear()
    fetch = asyncio.ensure_future(sub.fetch(1, timeout=FETCH_WAIT_S))
    events = [asyncio.ensure_future(e.wait()) for e in (stop, reconnected)]
    await asyncio.wait((fetch, *events), return_when=asyncio.FIRST_COMPLETED)
    for task in events:
        task.cancel()
    if not fetch.done():
        fetch.cancel()
        with contextlib.suppress(asyncio.CancelledError, nats.errors.Error):
            await fetch
        return []
    return fetch.result()


async def _stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``stop``; whether it is set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
    return stop.is_set()
