"""The central API's cluster state (``pcapwire serve --cluster FILE``): the sensors'
client and the query fan-out, opened with the application and closed with it (at start,
every token of the cluster file is checked against the sensor's own idea of its tenant,
in the background: a wrong one is logged and that sensor counts as down for the tenant);
and each sensor's health as the caller's tenant sees it (``GET /api/v1/cluster/sensors``).

With the cluster file's ``[nats] url`` the central submits jobs (:mod:`pcapwire.jobs.nats`)
to its sensors' workers (``pcapwire worker --nats URL --sensor NAME``): the connection is
made in the background at start, tried again every :data:`JOBS_RETRY_S` until the server
answers (the API runs meanwhile; job routes answer 409 ``job_queue_unavailable``), then the
client reconnects by itself. A job runs in the caller's tenant, only on a sensor that serves
it, only of the kinds in :data:`API_JOB_KINDS`; its parameters are checked by the worker,
whose handlers keep every path inside the tenant's store. Unit ids name kind, tenant and
sensor: a hunt of a given version is one unit (``hunt:<tenant>:<sensor>:<trigger>:v<N>``),
so submitting it again returns the same job and its one result; other jobs get a new unit
id each (``<kind>:<tenant>:<sensor>:<random>``)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pcapwire.cluster.config import ClusterConfig, SensorConfig
from pcapwire.cluster.fanout import FanOut
from pcapwire.cluster.sensors import Caller, SensorError, Sensors
from pcapwire.jobs.model import MAX_JOB_BYTES, UNIT_ID, Job, JobError, JobResult

if TYPE_CHECKING:
    from pcapwire.jobs.nats import NatsJobs

log = logging.getLogger(__name__)

#: job kinds a caller may submit through the API (the others are the server's own work)
API_JOB_KINDS = ("hunt", "extract", "workflow", "sandbox")
#: while the [nats] server cannot be reached at start, the central tries again after this
JOBS_RETRY_S = 1.0


class JobRefused(Exception):
    """A job the central does not submit or show: ``status`` and ``code`` for the API."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class Central:
    """What a central needs to reach its sensors (:meth:`start`, then :meth:`close`)."""

    def __init__(self, cluster: ClusterConfig) -> None:
        self.cluster = cluster
        self.sensors = Sensors(cluster.sensors, cluster.central.ssl_context(),
                               cluster.central.timeout_s)
        self.fanout = FanOut(self.sensors)
        self._checking: asyncio.Task[None] | None = None
        self.jobs: NatsJobs | None = None  # connected to the [nats] url
        self._connecting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.sensors.start()
        self._checking = asyncio.create_task(self.sensors.check_tokens())
        if self.cluster.nats_url is not None:
            self._connecting = asyncio.create_task(self._connect_jobs(self.cluster.nats_url))

    async def close(self) -> None:
        for task in (self._checking, self._connecting):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.jobs is not None:
            await self.jobs.close()
            self.jobs = None
        await self.sensors.close()

    async def _connect_jobs(self, url: str) -> None:
        import nats.errors
        from pcapwire.jobs.nats import NatsJobs, shown_url

        while True:
            try:
                self.jobs = await NatsJobs.connect(url, name="pcapwire-central")
            except (OSError, nats.errors.Error) as exc:
                log.warning("job queue %s: %s; trying again in %.0f s", shown_url(url),
                            str(exc) or type(exc).__name__, JOBS_RETRY_S)
                await asyncio.sleep(JOBS_RETRY_S)
            else:
                log.info("job queue %s connected", shown_url(url))
                return

    def _queue(self) -> NatsJobs:
        if self.cluster.nats_url is None:
            raise JobRefused(409, "no_job_queue", "this central has no job queue: add "
                             "[nats] url to its cluster file (docs/cluster.md) and restart it")
        if self.jobs is None:
            raise JobRefused(409, "job_queue_unavailable", f"the job queue "
                             f"{self.cluster.nats_url} has not been reached yet; try again")
        return self.jobs

    async def submit_job(self, caller: Caller, sensor: str, kind: str,
                         params: dict[str, Any]) -> dict[str, Any]:
        """Queue a job of ``kind`` on ``sensor`` in the caller's tenant; its view."""
        import nats.errors

        jobs = self._queue()
        if kind not in API_JOB_KINDS:
            raise JobRefused(400, "invalid_job", f"job kind {kind!r} cannot be submitted "
                             f"here; choose {' or '.join(API_JOB_KINDS)}")
        if sensor not in {s.name for s in self.sensors.of_tenant(caller.tenant)}:
            raise JobRefused(404, "not_found", f"no sensor {sensor!r} serves tenant "
                             f"{caller.tenant!r}")
        try:
            job = Job(kind, self._unit_id(caller.tenant, sensor, kind, params),
                      caller.tenant, params, sensor)
            if len(job.to_json()) > MAX_JOB_BYTES:
                raise JobError("invalid_job", f"the job is over MAX_JOB_BYTES "
                               f"({MAX_JOB_BYTES}); parameters name files, never carry data")
            await jobs.submit(job)
            state = await jobs.state(job.unit_id)
        except JobError as exc:
            raise JobRefused(400, exc.code, str(exc)) from None
        except nats.errors.Error as exc:
            raise self._unreachable(exc) from None
        log.info("job %s (%s) queued on %s by %s", job.unit_id, kind, sensor, caller.actor)
        return await self._view(jobs, state)

    @staticmethod
    def _unit_id(tenant: str, sensor: str, kind: str, params: dict[str, Any]) -> str:
        from pcapwire.jobs.handlers_hunt import hunt_unit_id

        version = params.get("version")
        if kind == "hunt" and isinstance(version, int) and not isinstance(version, bool):
            return hunt_unit_id(tenant, sensor, params.get("trigger"), version)
        return f"{kind}:{tenant}:{sensor}:{uuid.uuid4().hex}"

    async def job(self, caller: Caller, unit_id: str) -> dict[str, Any]:
        """The view of a job of the caller's tenant (404 for any other)."""
        import nats.errors

        jobs = self._queue()
        gone = JobRefused(404, "not_found", f"no job {unit_id!r} in tenant {caller.tenant!r}")
        if not UNIT_ID.fullmatch(unit_id):
            raise gone
        try:
            state = await jobs.state(unit_id)
        except JobError:
            raise gone from None
        except nats.errors.Error as exc:
            raise self._unreachable(exc) from None
        if state.get("tenant") != caller.tenant:
            raise gone
        return await self._view(jobs, state)

    async def _view(self, jobs: NatsJobs, state: dict[str, Any]) -> dict[str, Any]:
        import nats.errors
        import nats.js.errors
        from pcapwire.jobs.nats import kv_key

        result = None
        try:
            entry = await jobs.results.get(kv_key(state["unit_id"]))
        except nats.js.errors.KeyNotFoundError:
            pass
        except nats.errors.Error as exc:
            raise self._unreachable(exc) from None
        else:
            if entry.value:
                done = JobResult.from_json(entry.value)
                result = {"ok": done.ok, "code": done.code, "message": done.message,
                          "data": done.data, "worker": done.worker}
        return {"unit_id": state["unit_id"], "sensor": state.get("sensor", ""),
                "kind": state.get("kind", ""), "state": state["state"],
                "deliveries": int(state.get("deliveries", 0)),
                "worker": state.get("worker", ""), "updated": float(state.get("updated", 0)),
                "result": result}

    def _unreachable(self, exc: Exception) -> JobRefused:
        return JobRefused(409, "job_queue_unavailable", f"the job queue "
                          f"{self.cluster.nats_url} did not answer: "
                          f"{str(exc) or type(exc).__name__}; try again")

    async def health(self, caller: Caller) -> list[dict[str, Any]]:
        """Each sensor of the caller's tenant: reachable with its token (``ok``) or
        ``down`` with the reason, what it keeps (``oldest_ns``/``newest_ns``), how long
        it took to answer."""
        async def one(sensor: SensorConfig) -> dict[str, Any]:
            began = time.monotonic()
            out: dict[str, Any] = {"name": sensor.name, "url": sensor.url, "status": "ok",
                                   "reason": None, "oldest_ns": None, "newest_ns": None}
            try:
                found = await self.sensors.time_range(sensor, caller, fresh=True)
            except SensorError as exc:
                out.update(status="down", reason=str(exc))
            else:
                out.update(oldest_ns=found.oldest_ns, newest_ns=found.newest_ns)
            out["latency_ms"] = round((time.monotonic() - began) * 1000, 1)
            return out

        return list(await asyncio.gather(*map(one, self.sensors.of_tenant(caller.tenant))))


CENTRAL = web.AppKey("central", Central)
