"""A central's cluster triggers kept in step with its sensors: every create, edit, pause,
resume, abort and delete made through ``/api/v1/cluster/triggers`` is first recorded
(:mod:`.trigger_state`), then sent to the sensors; a sensor that did not answer stays
*pending*, and the central's reconcile task (:meth:`TriggerSync.start`, with the app) brings
it to the recorded state once it answers again, through the same mutual-TLS path as the
routes, on behalf of the user who asked for each part (their tenant and role are checked
again by the sensor and the sensor's custody names them).

**The rule for changes made on a sensor.** The reconcile changes only what the central
changed after that sensor last had the central's state, and it does not overwrite a change
made on the sensor itself that is newer: when the trigger there was changed since the
central last touched it (its ``updated`` is not the one the central saw), a central change
is applied only if it was made later than that ``updated`` (wall-clock seconds of each
machine: keep them in NTP sync). What it keeps is said in the sensor's ``note``. A trigger
deleted on a sensor is created again only by a newer central create or edit. A refusal (a
4xx of the sensor: role, conflict) is final for that revision and noted; a sensor that does
not answer (or answers 5xx) is tried again after :func:`backoff_s`.

An ``abort`` is recorded with the body revision whose hunt it ended: a sensor that missed it
ends its hunt of that body (queued, running or paused) once it has the body, unless a newer
change on the sensor started that hunt; a hunt that ended by itself meanwhile is left as it
is (the sensor's 409 is the note). An edit after the abort starts a new hunt, which is not
aborted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from pcapwire.cluster.config import SensorConfig
from pcapwire.cluster.sensors import Caller, Sensors
from pcapwire.cluster.trigger_state import STATE_FILE, Delivery, Desired, TriggerState
from pcapwire.cluster.triggers import TRIGGERS_PATH, ClusterTriggers, Outcome

log = logging.getLogger(__name__)

#: the first retry of a sensor that did not answer comes after this …
RETRY_MIN_S = 0.5
#: … each further one after twice the wait before, at most this
RETRY_MAX_S = 10.0
#: the actions that change what the central asks for
RECORDED = ("created", "edited", "pause", "resume", "abort", "delete")


def backoff_s(failures: int) -> float:
    """The wait before the next try of a sensor that failed ``failures`` times in a row."""
    return min(RETRY_MIN_S * 2 ** max(failures - 1, 0), RETRY_MAX_S)


class Unreachable(Exception):
    """The sensor gave no usable answer (none, or 5xx): try again later."""


@dataclass(frozen=True)
class Change:
    """A change recorded before the sensors are asked."""

    desired: Desired
    before: dict[str, Delivery]  # each sensor's delivery before the change

    def was_pending(self, sensor: str) -> bool:
        had = self.before.get(sensor)
        return had is not None and had.revision < self.desired.revision - 1


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _refusal(status: int, data: Any) -> str:
    err = data if isinstance(data, dict) else {}
    return f"HTTP {status} {err.get('code', 'error')}: {err.get('message', '')}"


def _answered(status: int | None, data: Any) -> int:
    if status is None:
        raise Unreachable(str(data))
    if status >= 500:
        raise Unreachable(_refusal(status, data))
    return status


class TriggerSync:
    """The central's record of its cluster triggers and its reconcile task."""

    def __init__(self, state: TriggerState, sensors: Sensors) -> None:
        self.state = state
        self.sensors = sensors
        self.triggers = ClusterTriggers(sensors)
        self._locks: dict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}  # sensor -> time.monotonic() of its next try
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, data_dir: Path, sensors: Sensors) -> TriggerSync:
        """The record in ``data_dir`` (:data:`STATE_FILE`, opened off the event loop)."""
        return cls(await asyncio.to_thread(TriggerState, data_dir / STATE_FILE), sensors)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def lock(self, tenant: str, name: str) -> asyncio.Lock:
        """Held while the trigger's record and its sensors change (a route or a delivery)."""
        return self._locks[(tenant, name)]

    async def record(self, caller: Caller, name: str, action: str,
                     body: dict[str, Any] | None = None,
                     definition: dict[str, Any] | None = None,
                     covered: list[str] | None = None) -> Change | None:
        """Record the caller's ``action`` before the sensors are asked (None: nothing to
        record, see :meth:`.TriggerState.change`)."""
        if action not in RECORDED:
            return None
        mine = [s.name for s in self.sensors.of_tenant(caller.tenant)]
        got = await asyncio.to_thread(self.state.change, caller.tenant, name, action,
                                      caller.actor, caller.role, mine, body, definition,
                                      covered)
        return None if got is None else Change(*got)

    async def settle(self, change: Change | None, outcomes: list[Outcome]) -> None:
        """What each sensor did with ``change``: those that answered have its revision;
        those that did not (and those that were already behind) stay pending."""
        if change is None:
            return
        d = change.desired
        by_sensor = {o.sensor: o for o in outcomes}

        def write() -> bool:
            pending = False
            for sensor in change.before:
                out = by_sensor.get(sensor)
                seen = (out.trigger or {}).get("updated") if out is not None else None
                if out is not None and out.status is None:
                    self.state.failed(d.tenant, d.name, sensor, (out.error or {}).get(
                        "message", "no answer"))
                elif change.was_pending(sensor) or (out is not None and out.status >= 500):
                    self.state.failed(d.tenant, d.name, sensor, f"revision {d.revision} "
                                      "waits for the reconcile", seen if out and out.ok else None)
                else:
                    note = None if out is None or out.ok else _refusal(
                        out.status or 0, out.error)
                    self.state.delivered(d.tenant, d.name, sensor, d.revision, seen, note)
                    continue
                pending = True
            return pending

        if await asyncio.to_thread(write):
            self.wake()

    def wake(self) -> None:
        """Look for pending sensors now."""
        self._wake.set()

    async def view(self, caller: Caller, name: str) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of ``GET /api/v1/cluster/triggers/{name}``."""
        def read() -> tuple[Desired | None, dict[str, Delivery]]:
            return (self.state.get(caller.tenant, name),
                    self.state.deliveries(caller.tenant, name))

        desired, deliveries = await asyncio.to_thread(read)
        mine = self.sensors.of_tenant(caller.tenant)
        pending = frozenset(s.name for s in mine if desired is not None and deliveries.get(
            s.name, Delivery(s.name, 0, None, None)).revision < desired.revision)
        shown = {s.name: (status, data) for s, status, data
                 in await self.triggers.show(caller, name, pending)}
        items = []
        for sensor in mine:
            got = deliveries.get(sensor.name)
            item: dict[str, Any] = {
                "sensor": sensor.name, "sync": None, "revision": None, "note": None,
                "status": None, "trigger": None, "error": None}
            if desired is not None:
                item.update(sync="pending" if sensor.name in pending else "delivered",
                            revision=got.revision if got else 0,
                            note=got.note if got else None)
            if desired is not None and sensor.name in pending:
                item["error"] = {"code": "pending", "message": f"revision {desired.revision} "
                                 f"not delivered yet: {item['note'] or 'not tried yet'}"}
            else:
                status, data = shown[sensor.name]
                item["status"] = status
                out = ClusterTriggers.outcome(sensor, "shown", status, data)
                item["trigger"], item["error"] = (data if out.ok else None), out.error
            items.append(item)
        if desired is None and items and all(i["status"] == 404 for i in items):
            return 404, {"code": "not_found", "message": f"no sensor of your tenant has a "
                         f"trigger {name!r}", "details": {"sensors": items}}
        complete = all(i["status"] in (200, 404) for i in items)
        return (200 if complete else 207), {
            "name": name, "complete": complete,
            "central": desired.view() if desired is not None else None, "sensors": items}

    async def _run(self) -> None:
        """Deliver what sensors miss, each sensor after its backoff; wait for a change or
        the next retry in between."""
        while True:
            self._wake.clear()
            by_sensor: dict[str, list[tuple[str, str]]] = defaultdict(list)
            for tenant, name, sensor in await asyncio.to_thread(self.state.pending):
                cfg = self.sensors.sensors.get(sensor)
                if cfg is not None and tenant in cfg.tenants:  # else: gone from the file
                    by_sensor[sensor].append((tenant, name))
            now = time.monotonic()
            due = [s for s in by_sensor if self._retry_at.get(s, 0.0) <= now]
            await asyncio.gather(*(self._round(self.sensors.sensors[s], by_sensor[s])
                                   for s in due))
            retry = [self._retry_at[s] for s in by_sensor if s in self._retry_at]
            timeout = max(min(retry) - time.monotonic(), 0.0) if retry else None
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    async def _round(self, sensor: SensorConfig, items: list[tuple[str, str]]) -> None:
        """Deliver ``items`` to ``sensor`` in turn, until it stops answering."""
        for tenant, name in items:
            try:
                await self.deliver(sensor, tenant, name)
            except Exception as exc:  # noqa: BLE001 - the task lives on; the note says why
                reason = str(exc) if isinstance(exc, Unreachable) else (
                    f"{type(exc).__name__}: {exc}")
                if not isinstance(exc, Unreachable):
                    log.exception("trigger %s/%s on sensor %s", tenant, name, sensor.name)
                failures = self._failures[sensor.name] = self._failures.get(sensor.name, 0) + 1
                self._retry_at[sensor.name] = time.monotonic() + backoff_s(failures)
                if failures == 1:
                    log.warning("sensor %s: cluster triggers pending (%s); trying again "
                                "with backoff up to %.0f s", sensor.name, reason, RETRY_MAX_S)
                await asyncio.to_thread(self.state.failed, tenant, name, sensor.name, reason)
                return
        if self._failures.pop(sensor.name, 0):
            log.info("sensor %s: reachable again, its pending cluster triggers delivered",
                     sensor.name)
        self._retry_at.pop(sensor.name, None)

    async def deliver(self, sensor: SensorConfig, tenant: str, name: str) -> None:
        """Bring the trigger on ``sensor`` to the central's record (Unreachable: not now)."""
        async with self.lock(tenant, name):
            desired = await asyncio.to_thread(self.state.get, tenant, name)
            row = (await asyncio.to_thread(self.state.deliveries, tenant, name)).get(
                sensor.name)
            if desired is None or row is None or row.revision >= desired.revision:
                return
            seen, note = await self._bring(sensor, desired, row)
            await asyncio.to_thread(self.state.delivered, tenant, name, sensor.name,
                                    desired.revision, seen, note)
            log.info("trigger %s/%s: revision %d delivered to sensor %s%s", tenant, name,
                     desired.revision, sensor.name, f" ({note})" if note else "")

    async def _bring(self, sensor: SensorConfig, d: Desired, row: Delivery
                     ) -> tuple[float | None, str | None]:
        """Make the sensor's trigger what ``d`` asks; its ``updated`` after, and a note."""
        ask = self.triggers.ask
        editor = Caller(d.tenant, d.body_by, d.body_role)
        changer = Caller(d.tenant, d.state_by, d.state_role)
        status, found = await self.triggers.find(sensor, changer, d.name)
        if _answered(status, found) == 404:
            if d.deleted or sensor.name not in d.sensors or row.revision >= d.body_revision:
                return None, None
            status, data = await ask(sensor, editor, "POST", TRIGGERS_PATH, d.body)
            if _answered(status, data) >= 300:
                return None, _refusal(status or 0, data)
            view = data["trigger"]
            if d.paused:
                status, data = await ask(sensor, changer, "POST",
                                         f"{TRIGGERS_PATH}/{view['id']}/pause")
                if _answered(status, data) >= 300:
                    return view["updated"], _refusal(status or 0, data)
                view = data
            if d.abort_due(row.revision):
                view, note = await self._abort(sensor, d, f"{TRIGGERS_PATH}/{view['id']}",
                                               view)
                return view["updated"], note
            return view["updated"], None
        if status != 200:  # the list refused (the sensor's token?): try again later
            raise Unreachable(_refusal(status or 0, found))
        path = f"{TRIGGERS_PATH}/{found}"
        status, view = await ask(sensor, changer, "GET", path)
        if _answered(status, view) != 200:
            raise Unreachable(_refusal(status or 0, view))
        updated = view["updated"]
        untouched = updated == row.seen_updated

        def kept(what: str, at: float) -> str | None:
            if untouched or at > updated:
                return None
            return (f"kept the sensor's own change of {_iso(updated)}: newer than the "
                    f"central's {what} of {_iso(at)}")

        if d.deleted:
            if (note := kept("deletion", d.state_at)) is not None:
                return updated, note
            status, data = await ask(sensor, changer, "DELETE", path)
            return None, None if _answered(status, data) < 300 or status == 404 else \
                _refusal(status or 0, data)
        notes = []
        if row.revision < d.body_revision and (untouched or view["definition"] != d.definition):
            # (an untouched trigger gets the body even if only a webhook secret changed)
            if (note := kept("edit", d.body_at)) is not None:
                notes.append(note)
            else:
                status, data = await ask(sensor, editor, "PUT", path, d.body)
                if _answered(status, data) >= 300:
                    notes.append(_refusal(status or 0, data))
                else:
                    view = data["trigger"]
        want = "paused" if d.paused else "active"
        if view["state"] != want:
            if (note := kept("pause" if d.paused else "resume", d.state_at)) is not None:
                notes.append(note)
            else:
                status, data = await ask(sensor, changer, "POST",
                                         f"{path}/{'pause' if d.paused else 'resume'}")
                if _answered(status, data) >= 300:
                    notes.append(_refusal(status or 0, data))
                else:
                    view = data
        if d.abort_due(row.revision):
            if (note := kept("abort", d.abort.at)) is not None:
                notes.append(note)
            else:
                view, note = await self._abort(sensor, d, path, view)
                notes.extend([note] if note else [])
        return view["updated"], "; ".join(notes) or None

    async def _abort(self, sensor: SensorConfig, d: Desired, path: str,
                     view: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """End the sensor's hunt as the central's abort asked: the trigger's view after,
        and a note when the sensor refused (409: its hunt had already ended)."""
        status, data = await self.triggers.ask(
            sensor, Caller(d.tenant, d.abort.by, d.abort.role), "POST", f"{path}/abort")
        if _answered(status, data) >= 300:
            return view, _refusal(status or 0, data)
        return data, None


TRIGGER_SYNC = web.AppKey("trigger_sync", TriggerSync)
