"""The central API's cluster state (``pcapwire serve --cluster FILE``): the sensors'
client and the query fan-out, opened with the application and closed with it (at start,
every token of the cluster file is checked against the sensor's own idea of its tenant,
in the background: a wrong one is logged and that sensor counts as down for the tenant);
and each sensor's health as the caller's tenant sees it (``GET /api/v1/cluster/sensors``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from pcapwire.cluster.config import ClusterConfig, SensorConfig
from pcapwire.cluster.fanout import FanOut
from pcapwire.cluster.sensors import Caller, SensorError, Sensors


class Central:
    """What a central needs to reach its sensors (:meth:`start`, then :meth:`close`)."""

    def __init__(self, cluster: ClusterConfig) -> None:
        self.cluster = cluster
        self.sensors = Sensors(cluster.sensors, cluster.central.ssl_context(),
                               cluster.central.timeout_s)
        self.fanout = FanOut(self.sensors)
        self._checking: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.sensors.start()
        self._checking = asyncio.create_task(self.sensors.check_tokens())

    async def close(self) -> None:
        if self._checking is not None:
            self._checking.cancel()
            await asyncio.gather(self._checking, return_exceptions=True)
        await self.sensors.close()

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
