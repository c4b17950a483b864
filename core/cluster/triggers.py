"""A central's triggers, made and controlled on its sensors (``/api/v1/cluster/triggers``).

A trigger lives on each sensor (its ``triggers.sqlite``, its hunt over that sensor's
history, its watch of that sensor's traffic); the central writes the same definition to
every sensor of the caller's tenant that its ``scope.sensor`` covers (a name or a list of
names; none: all of the tenant's sensors), through the sensors' own trigger routes, with
the sensor's token for the tenant and on behalf of the caller (:class:`~.sensors.Sensors`):
each sensor checks tenant and role again. Afterwards the trigger is addressed by its name
across the sensors: edit (``PUT``), pause, resume, abort, delete.

Every answer lists each sensor asked with what happened there (:class:`Outcome`): the
trigger's id, version and hunt status, or the sensor's HTTP status and error code, or
``sensor_unavailable`` with the reason (refused connection, TLS, silence for
``timeout_s``). Nothing is rolled back: a trigger created on two sensors of three stays on
those two, and the answer says which one is missing it (create it again there, or edit:
an edit creates the trigger on a sensor its scope covers that lacks it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from pcapwire.cluster.config import SensorConfig
from pcapwire.cluster.sensors import Caller, SensorError, Sensors, reason_of

TRIGGERS_PATH = "/api/v1/triggers"
#: actions on a trigger by name: (HTTP method, the sensor's path after the trigger id)
CONTROLS = {"pause": ("POST", "/pause"), "resume": ("POST", "/resume"),
            "abort": ("POST", "/abort"), "delete": ("DELETE", "")}


class TriggerRefused(Exception):
    """A request the central refuses before asking a sensor: ``status``, ``code`` and
    ``details`` for the API."""

    def __init__(self, status: int, code: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.details = status, code, details or {}


@dataclass
class Outcome:
    """What one sensor did: ``status`` its HTTP status (None: no answer), ``action``
    (created, edited, paused …), the trigger as it is there, or the error."""

    sensor: str
    status: int | None
    action: str = ""
    trigger: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    imports: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sensor": self.sensor, "status": self.status,
                               "action": self.action, "error": self.error}
        trig = self.trigger or {}
        hunt = trig.get("hunt") or {}
        out.update(trigger_id=trig.get("id"), version=trig.get("version"),
                   state=trig.get("state"), hunt=hunt.get("status"))
        return out


def answer(name: str, outcomes: list[Outcome], done: int) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of a fanned-out action: ``done`` when every sensor asked did it,
    207 when some did not (each says why), 404 when no sensor has the trigger."""
    items = [o.to_dict() for o in outcomes]
    absent = [o for o in outcomes if o.status == 404]
    if outcomes and len(absent) == len(outcomes):
        return 404, {"code": "not_found", "message": f"no sensor of your tenant has a "
                     f"trigger {name!r}", "details": {"sensors": items}}
    failed = [o for o in outcomes if not o.ok and o not in absent]
    body = {"name": name, "sensors": items, "complete": not failed}
    return (done if not failed else 207), body


class ClusterTriggers:
    """Triggers on the sensors of one cluster (uses the central's :class:`Sensors`)."""

    def __init__(self, sensors: Sensors) -> None:
        self.sensors = sensors

    def targets(self, tenant: str, scope_sensor: Any) -> list[SensorConfig]:
        """The sensors of ``tenant`` that a (checked, normalised) ``scope.sensor`` covers;
        TriggerRefused 400 when it names a sensor that does not serve the tenant."""
        mine = self.sensors.of_tenant(tenant)
        if not scope_sensor:
            return mine
        named = [scope_sensor] if isinstance(scope_sensor, str) else list(scope_sensor)
        unknown = sorted(set(named) - {s.name for s in mine})
        if unknown:
            raise TriggerRefused(400, "invalid_trigger", f"body: scope.sensor: no sensor "
                                 f"{', '.join(map(repr, unknown))} serves tenant {tenant!r}; "
                                 f"its sensors: {', '.join(s.name for s in mine) or 'none'}",
                                 {"field": "scope.sensor"})
        return [s for s in mine if s.name in named]

    async def ask(self, sensor: SensorConfig, caller: Caller, method: str, path: str,
                   body: dict[str, Any] | None = None) -> tuple[int | None, Any]:
        """(status, JSON body) of one request to a sensor; (None, reason) without an
        answer."""
        try:
            async with self.sensors.request(sensor, caller, method, path, json=body) as resp:
                data = await resp.json(content_type=None) if resp.status != 204 else {}
                return resp.status, data
        except SensorError as exc:
            return None, str(exc)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return None, reason_of(exc, self.sensors.timeout_s)

    @staticmethod
    def outcome(sensor: SensorConfig, action: str, status: int | None, data: Any
                 ) -> Outcome:
        if status is None:
            return Outcome(sensor.name, None, action,
                           error={"code": "sensor_unavailable", "message": str(data)})
        if not 200 <= status < 300:
            err = data if isinstance(data, dict) else {}
            return Outcome(sensor.name, status, action, error={
                "code": str(err.get("code", "error")), "message": str(err.get("message", ""))})
        trig = data.get("trigger", data) if isinstance(data, dict) else {}
        imports = data.get("imports", []) if isinstance(data, dict) else []
        return Outcome(sensor.name, status, action, trig or None, imports=imports)

    async def _create_on(self, sensor: SensorConfig, caller: Caller, body: dict[str, Any]
                         ) -> Outcome:
        status, data = await self.ask(sensor, caller, "POST", TRIGGERS_PATH, body)
        return self.outcome(sensor, "created", status, data)

    async def create(self, caller: Caller, body: dict[str, Any], scope_sensor: Any
                     ) -> list[Outcome]:
        """``body`` (a checked TriggerRequest) created on every sensor it covers."""
        targets = self.targets(caller.tenant, scope_sensor)
        return list(await asyncio.gather(*(self._create_on(s, caller, body)
                                           for s in targets)))

    async def find(self, sensor: SensorConfig, caller: Caller, name: str
                    ) -> tuple[int | None, Any]:
        """(200, the trigger's id) on the sensor; (404, None) when it has none of that
        name; else the failed answer."""
        status, data = await self.ask(sensor, caller, "GET", TRIGGERS_PATH)
        if status != 200:
            return status, data
        found = [t["id"] for t in data.get("triggers", []) if t.get("name") == name]
        if not found:
            return 404, {"code": "not_found", "message": f"no trigger {name!r} here"}
        return 200, found[0]

    async def control(self, caller: Caller, name: str, action: str) -> list[Outcome]:
        """``action`` (:data:`CONTROLS`) on the trigger ``name`` of every sensor of the
        caller's tenant that has it."""
        method, suffix = CONTROLS[action]

        async def one(sensor: SensorConfig) -> Outcome:
            status, found = await self.find(sensor, caller, name)
            if status != 200:
                return self.outcome(sensor, action, status, found)
            status, data = await self.ask(sensor, caller, method,
                                           f"{TRIGGERS_PATH}/{found}{suffix}")
            out = self.outcome(sensor, action, status, data)
            if out.ok and out.trigger is None:  # a deletion answers 204
                out.trigger = {"id": found}
            return out

        return list(await asyncio.gather(*map(one, self.sensors.of_tenant(caller.tenant))))

    async def edit(self, caller: Caller, name: str, body: dict[str, Any], scope_sensor: Any
                   ) -> list[Outcome]:
        """The trigger ``name`` replaced by ``body`` on every sensor that has it (a sensor
        the new scope leaves out keeps it, doing nothing there), and created on those of
        the new scope that lack it."""
        covered = {s.name for s in self.targets(caller.tenant, scope_sensor)}
        mine = self.sensors.of_tenant(caller.tenant)
        found = await asyncio.gather(*(self.find(s, caller, name) for s in mine))
        if all(status == 404 for status, _ in found):  # nowhere: nothing to edit
            return [self.outcome(s, "edited", 404, f) for s, (_, f) in zip(mine, found,
                                                                           strict=True)]

        async def one(sensor: SensorConfig, status: int | None, trigger_id: Any) -> Outcome:
            if status == 404 and sensor.name in covered:
                return await self._create_on(sensor, caller, body)
            if status != 200:
                return self.outcome(sensor, "edited", status, trigger_id)
            status, data = await self.ask(sensor, caller, "PUT",
                                           f"{TRIGGERS_PATH}/{trigger_id}", body)
            return self.outcome(sensor, "edited", status, data)

        return list(await asyncio.gather(*(one(s, status, f) for s, (status, f)
                                           in zip(mine, found, strict=True))))

    async def show(self, caller: Caller, name: str, skip: frozenset[str] = frozenset()
                   ) -> list[tuple[SensorConfig, int | None, Any]]:
        """The trigger ``name`` on each sensor of the caller's tenant but ``skip``, as the
        sensor's ``GET /api/v1/triggers/{id}`` shows it: (sensor, status, body); (None,
        reason) without an answer, 404 when it has none of that name."""
        async def one(sensor: SensorConfig) -> tuple[SensorConfig, int | None, Any]:
            status, found = await self.find(sensor, caller, name)
            if status != 200:
                return sensor, status, found
            status, data = await self.ask(sensor, caller, "GET", f"{TRIGGERS_PATH}/{found}")
            return sensor, status, data

        mine = [s for s in self.sensors.of_tenant(caller.tenant) if s.name not in skip]
        return list(await asyncio.gather(*map(one, mine)))
