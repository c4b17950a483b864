"""Hunts queued as ``hunt`` jobs by the sensor itself (``pcapwire serve --hunts-by-workers``):
every queued or running hunt of an active trigger whose scope covers this sensor becomes a
job (:mod:`pcapwire.jobs.handlers_hunt`) as soon as the trigger service sees it: a trigger
created or edited (a new version), ``pcapwire rules update`` re-hunting it, a hunt resumed.

Two queues, one contract (:class:`HuntQueue`):

- :class:`LocalHunts` (no NATS configured): the job runs at once on this machine in a
  ``pcapwire worker --job -`` child (:func:`pcapwire.jobs.local.run`), one at a time per
  store, in the service's thread; stopping the service stops the child (SIGTERM, then
  SIGKILL after :data:`LOCAL_STOP_GRACE_S`) and the hunt resumes from its checkpoints later.
- :class:`NatsHunts` (``serve --nats URL --sensor-name NAME``): the job is queued on NATS
  JetStream for this sensor's ``pcapwire worker --nats URL --sensor NAME`` processes. Its
  unit id is the one the central gives the same hunt (:func:`~pcapwire.jobs.handlers_hunt.
  hunt_unit_id`): a hunt queued both ways is one job. A hunt whose job ended without
  ending it (paused then resumed, its worker stopped or lost) is queued again as the next
  run (``…:v<N>:r2``, ``:r3`` …, at most :data:`MAX_HUNT_RUNS`); the queue itself says which
  runs exist, so a restarted ``serve`` queues nothing twice.

:func:`settle_out_of_scope` ends (``finished``, no unit, the reason in ``error``) the queued
hunts of triggers whose ``scope.sensor`` names only other sensors: nothing runs them here.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pcapwire.jobs.handlers_hunt import hunt_unit_id
from pcapwire.jobs.model import Job, JobError
from pcapwire.triggers.db import TriggerDB

if TYPE_CHECKING:
    from pcapwire.jobs.nats import NatsJobs

log = logging.getLogger(__name__)

#: runs (jobs) of one hunt version the sensor queues before it gives up on the hunt
MAX_HUNT_RUNS = 20
#: a stopping service gives a local hunt job this long to stop by itself (then SIGKILL)
LOCAL_STOP_GRACE_S = 10.0
#: how often a local job's runner looks whether the service stops
LOCAL_POLL_S = 0.2
#: a call to the NATS server (connect, state, submit) fails after this long
NATS_CALL_S = 30.0
#: the unit id's sensor part of a local job on a server that does not know its name
LOCAL_SENSOR = "local"


class HuntQueue(Protocol):
    """Where a sensor's hunt jobs go."""

    def queue(self, root: Path, trigger: str, version: int, start_run: int,
              stop: threading.Event) -> int | None:
        """Make sure a job runs the hunt of (``trigger``, ``version``) of the store
        ``root`` (``DATA/tenants/<tenant>``), looking from run ``start_run`` on; the run
        now in charge of it (None: cannot say now, ask again)."""

    def close(self) -> None:
        """Let go of what the queue holds (connections, threads)."""


def pending_hunts(root: Path, sensor: str) -> list[tuple[int, str, int]]:
    """(hunt id, trigger name, version) of every queued or running hunt of an active
    trigger whose scope covers ``sensor``, oldest first."""
    with TriggerDB(root) as tdb:
        triggers = {t.id: t for t in tdb.triggers()}
        return [(h.id, triggers[h.trigger_id].name, h.version)
                for h in tdb.hunts(statuses=("queued", "running"))
                if h.trigger_id in triggers and triggers[h.trigger_id].state == "active"
                and triggers[h.trigger_id].definition.scope.covers(sensor)]


def settle_out_of_scope(root: Path, sensor: str) -> list[int]:
    """End the queued hunts of triggers scoped to other sensors only; their ids."""
    if not sensor:
        return []
    settled = []
    with TriggerDB(root) as tdb:
        for trig in tdb.triggers():
            scope = trig.definition.scope
            if scope.covers(sensor):
                continue
            reason = (f"out of scope: scope.sensor names {', '.join(scope.sensors())}; "
                      f"this sensor is {sensor}")
            for hunt in tdb.hunts(trig.id, ("queued",)):
                if tdb.move_hunt(hunt.id, "finished", ("queued",), reason):
                    log.info("%s: trigger %s: %s", root, trig.name, reason)
                    settled.append(hunt.id)
    return settled


def hunt_queue(by_workers: bool, nats_url: str | None, sensor: str) -> HuntQueue | None:
    """The queue of ``serve --hunts-by-workers [--nats URL] [--sensor-name NAME]``; None
    when the server runs its hunts itself."""
    if not by_workers:
        return None
    if nats_url is not None:
        return NatsHunts(nats_url, sensor)
    return LocalHunts(sensor)


class Dispatch:
    """One store's pending hunts, each queued once as a job (the service's hunt thread
    calls :meth:`step`)."""

    def __init__(self, root: Path, queue: HuntQueue, sensor: str) -> None:
        self.root, self.queue, self.sensor = root, queue, sensor
        self.runs: dict[int, int] = {}  # hunt id -> the run last known in charge

    def step(self, stop: threading.Event) -> int:
        """Queue a job for each pending hunt that has none; the number of hunts looked at."""
        pending = pending_hunts(self.root, self.sensor)
        for hunt_id, name, version in pending:
            if stop.is_set():
                break
            run = self.queue.queue(self.root, name, version, self.runs.get(hunt_id, 1), stop)
            if run is not None:
                self.runs[hunt_id] = run
        return len(pending)


class _Loop:
    """An event loop in a thread of its own, for the service's threads to call into (a
    loop per call would be closed while a child's transports still need it)."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="pcapwire-hunt-jobs")
        self._thread.start()

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class LocalHunts(_Loop):
    """Hunt jobs run here, each in a worker child, to their end (see the module)."""

    def __init__(self, sensor: str = "") -> None:
        super().__init__()
        self.sensor = sensor or LOCAL_SENSOR

    def queue(self, root: Path, trigger: str, version: int, start_run: int,
              stop: threading.Event) -> int | None:
        from pcapwire.jobs import local

        if start_run > MAX_HUNT_RUNS:
            if start_run == MAX_HUNT_RUNS + 1:
                log.error("%s: hunt of trigger %s version %d: %d jobs ended without ending "
                          "it; not run again", root, trigger, version, MAX_HUNT_RUNS)
            return MAX_HUNT_RUNS + 2
        tenant = root.name  # a server's store is DATA/tenants/<tenant>
        job = Job("hunt", hunt_unit_id(tenant, self.sensor, trigger, version, start_run),
                  tenant, {"trigger": trigger, "version": version}, self.sensor)

        async def run() -> None:
            task = asyncio.ensure_future(local.run(job, root,
                                                   kill_grace_s=LOCAL_STOP_GRACE_S))
            while not task.done():
                await asyncio.wait({task}, timeout=LOCAL_POLL_S)
                if stop.is_set():
                    task.cancel()
            try:
                result = await task
            except asyncio.CancelledError:
                return
            if result.ok:
                log.info("%s: hunt job %s: %s", root, job.unit_id, result.data.get("status"))
            else:
                log.warning("%s: hunt job %s failed: %s %s", root, job.unit_id, result.code,
                            result.message)

        self._call(run())
        return start_run + 1  # a hunt still pending after this run gets another

    def close(self) -> None:
        self._close_loop()


class NatsHunts(_Loop):
    """Hunt jobs queued on NATS for this sensor's workers (see the module): one connection
    on an event loop of its own (a thread), made on first use (the client reconnects by
    itself after that)."""

    def __init__(self, url: str, sensor: str) -> None:
        super().__init__()
        self.url, self.sensor = url, sensor
        self._jobs: NatsJobs | None = None
        self._down = False  # the last call failed (logged once per outage)

    def queue(self, root: Path, trigger: str, version: int, start_run: int,
              stop: threading.Event) -> int | None:
        import nats.errors

        try:
            run = self._call(self._queue(root.name, trigger, version, start_run),
                             NATS_CALL_S)
        except (OSError, TimeoutError, nats.errors.Error, JobError) as exc:
            if not self._down:
                from pcapwire.jobs.nats import shown_url

                log.warning("hunt jobs: %s: %s; trying again", shown_url(self.url),
                            str(exc) or type(exc).__name__)
            self._down = True
            return None
        self._down = False
        return run  # type: ignore[no-any-return]

    async def _queue(self, tenant: str, trigger: str, version: int, start_run: int
                     ) -> int | None:
        import nats.js.errors
        from pcapwire.jobs.nats import NatsJobs, kv_key

        if self._jobs is None:
            self._jobs = await NatsJobs.connect(self.url, name=f"pcapwire-sensor-{self.sensor}")
        jobs = self._jobs
        for run in range(start_run, MAX_HUNT_RUNS + 1):
            unit = hunt_unit_id(tenant, self.sensor, trigger, version, run)
            try:
                await jobs.state(unit)
            except JobError:  # never submitted
                await jobs.submit(Job("hunt", unit, tenant,
                                      {"trigger": trigger, "version": version}, self.sensor))
                log.info("hunt job %s queued", unit)
                return run
            try:
                await jobs.results.get(kv_key(unit))
            except nats.js.errors.KeyNotFoundError:
                return run  # queued or running: its job goes on
        if start_run <= MAX_HUNT_RUNS:
            log.error("hunt of trigger %s version %d (tenant %s): %d jobs ended without "
                      "ending it; not queued again (submit it through the central)", trigger,
                      version, tenant, MAX_HUNT_RUNS)
        return MAX_HUNT_RUNS + 1

    def close(self) -> None:
        async def close() -> None:
            if self._jobs is not None:
                await self._jobs.close()

        try:
            self._call(close(), NATS_CALL_S)
        except Exception:  # closing: nothing left to do about it
            log.debug("hunt jobs: closing the connection failed", exc_info=True)
        self._close_loop()
