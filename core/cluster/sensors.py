"""The central's client of its sensors' own APIs: one HTTPS session with mutual TLS for
the whole cluster; every request carries the sensor's service token for the caller's tenant
(from the cluster file) and who asks with which role (``X-Pcapwire-On-Behalf-Of``,
``X-Pcapwire-Role``: a sensor lowers its token's role to it and names the caller in its
custody log). A sensor that does not answer, or falls silent for the cluster's
``timeout_s`` in the middle of an answer, raises :class:`SensorError` with a reason a
person can act on.

A sensor's stored time range (which queries it is asked) is cached (:data:`RANGE_CACHE_S`)
and read again in the background (:data:`RANGE_REFRESH_S`); every query answer also
reports it (:meth:`Sensors.note_range`), so a central queried steadily reads no range of
its own, whose reading would compete with the query for the sensor.

The cluster file cannot say which tenant a token is for (a token encodes none): before a
token is first used, the sensor's ``GET /api/v1/whoami`` says whose it is (the central
checks every token at start, :meth:`Sensors.check_tokens`). A token of another tenant is
never sent on that tenant's behalf: the sensor counts as down for it, with the reason. A
sensor that could not be reached is asked again when it answers next (it may have come
back with other tokens)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from pcapwire.cluster.config import SensorConfig
from pcapwire.cluster.tls import on_behalf_headers

RANGE_CACHE_S = 5.0  # how long a sensor's stored time range is reused for planning
#: a cached range used when older than this is read again in the background, so that a
#: central queried steadily never waits for it
RANGE_REFRESH_S = 2.5
#: an idle connection to a sensor is kept this long for the next request (no new TCP and
#: TLS handshake per query; a sensor's aiohttp server keeps it open far longer)
KEEPALIVE_S = 60.0
MAX_REASON_CHARS = 300  # of a sensor's error answer quoted in a reason
RANGE_PATH = "/api/v1/retention"  # a sensor route (viewer) whose ``kept`` is its range
WHOAMI_PATH = "/api/v1/whoami"  # a sensor route (viewer): the token's tenant and role
log = logging.getLogger(__name__)


class SensorError(Exception):
    """A sensor did not give a usable answer; ``str()`` is the reason shown to users."""


@dataclass(frozen=True)
class Caller:
    """Who the central asks on behalf of: their tenant, custody name and role."""

    tenant: str
    actor: str
    role: str


@dataclass
class TimeRange:
    oldest_ns: int | None
    newest_ns: int | None
    fetched: float  # time.monotonic()

    def overlaps(self, start_ns: int | None, end_ns: int | None) -> bool:
        """Whether [start_ns, end_ns) meets what the sensor keeps; an empty sensor holds
        nothing of any window."""
        if self.oldest_ns is None or self.newest_ns is None:
            return False
        return ((end_ns is None or self.oldest_ns < end_ns)
                and (start_ns is None or self.newest_ns >= start_ns))


def reason_of(exc: BaseException, timeout_s: float) -> str:
    """A short reason for a failed exchange with a sensor."""
    if isinstance(exc, SensorError):
        return str(exc)
    if isinstance(exc, TimeoutError):  # aiohttp's read and connect timeouts are these
        return f"no answer for {timeout_s:g} s (timeout_s of the cluster file)"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return f"TLS handshake failed: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc}"
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return "its answer broke off (the sensor died or its query failed)"
    return f"{type(exc).__name__}: {exc}"


class Sensors:
    """Requests to the sensors of one cluster (open with :meth:`start`, then :meth:`close`)."""

    def __init__(self, sensors: tuple[SensorConfig, ...], ssl_context: ssl.SSLContext,
                 timeout_s: float) -> None:
        self.sensors = {s.name: s for s in sensors}
        self.ssl_context = ssl_context
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._ranges: dict[tuple[str, str], TimeRange] = {}
        self._refreshing: dict[tuple[str, str], asyncio.Task[TimeRange]] = {}
        # (sensor, tenant) -> the check of its token: None (it is the tenant's) or why not
        self._tokens: dict[tuple[str, str], asyncio.Future[str | None]] = {}

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s,
                                        sock_read=self.timeout_s)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.ssl_context, keepalive_timeout=KEEPALIVE_S),
            timeout=timeout, raise_for_status=False)

    async def close(self) -> None:
        for task in list(self._refreshing.values()):
            task.cancel()
        await asyncio.gather(*self._refreshing.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def of_tenant(self, tenant: str) -> list[SensorConfig]:
        """The sensors that hold ``tenant``, in cluster-file order."""
        return [s for s in self.sensors.values() if tenant in s.tenants]

    async def check_tokens(self) -> None:
        """Check every token of the cluster file now (at start); each mismatch is logged."""
        checks = [self.check_token(s, t) for s in self.sensors.values() for t in s.tenants]
        await asyncio.gather(*checks, return_exceptions=True)

    async def check_token(self, sensor: SensorConfig, tenant: str) -> None:
        """Make sure the sensor's token for ``tenant`` is that tenant's (asked once while
        the sensor stays reachable); :class:`SensorError` if it is not, or if the sensor
        cannot say."""
        key = (sensor.name, tenant)
        check = self._tokens.get(key)
        if check is None:
            check = self._tokens[key] = asyncio.ensure_future(self._whoami(sensor, tenant))
        reason = await asyncio.shield(check)
        if reason is not None:
            raise SensorError(reason)

    async def _whoami(self, sensor: SensorConfig, tenant: str) -> str | None:
        """Why the sensor's token for ``tenant`` must not be used, or None."""
        try:
            async with self._send(sensor, "GET", WHOAMI_PATH, {
                    "Authorization": f"Bearer {sensor.tenants[tenant]}"}) as resp:
                if resp.status != 200:
                    reason = (f"the sensor refuses the token of tenant {tenant!r}: "
                              f"{await status_reason(resp)}")
                    self._tokens.pop((sensor.name, tenant), None)  # asked again next time
                    return reason
                who = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._tokens.pop((sensor.name, tenant), None)
            raise SensorError(reason_of(exc, self.timeout_s)) from exc
        if who.get("tenant") == tenant:
            return None
        reason = (f"the token file of tenant {tenant!r} holds a token of tenant "
                  f"{who.get('tenant')!r} ({who.get('role')}) on this sensor; it is not used "
                  f"for {tenant!r}: correct tenants of sensor {sensor.name!r} in the cluster "
                  "file and restart the central")
        log.warning("sensor %s: %s", sensor.name, reason)
        return reason

    def _forget(self, sensor: SensorConfig) -> None:
        """The sensor could not be reached: check its tokens again when it comes back."""
        for key in [k for k, check in self._tokens.items()
                    if k[0] == sensor.name and check.done()]:
            del self._tokens[key]

    @asynccontextmanager
    async def _send(self, sensor: SensorConfig, method: str, path: str,
                    headers: dict[str, str], **kw: Any
                    ) -> AsyncIterator[aiohttp.ClientResponse]:
        if self._session is None:
            raise RuntimeError("Sensors.start() was not called")
        try:
            async with self._session.request(method, sensor.url.rstrip("/") + path,
                                             headers=headers, **kw) as resp:
                yield resp
        except (aiohttp.ClientConnectionError, TimeoutError):
            self._forget(sensor)
            raise

    @asynccontextmanager
    async def request(self, sensor: SensorConfig, caller: Caller, method: str, path: str,
                      **kw: Any) -> AsyncIterator[aiohttp.ClientResponse]:
        """The sensor's response (any status); connection failures raise as aiohttp's, a
        token that is not the caller's tenant's (:meth:`check_token`) as SensorError."""
        await self.check_token(sensor, caller.tenant)
        headers = {"Authorization": f"Bearer {sensor.tenants[caller.tenant]}",
                   **on_behalf_headers(caller.actor, caller.role)}
        async with self._send(sensor, method, path, headers, **kw) as resp:
            yield resp

    async def json(self, sensor: SensorConfig, caller: Caller, method: str, path: str,
                   ok: tuple[int, ...] = (200,), **kw: Any) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of a request; a status outside ``ok`` (other than 404,
        which the caller reads as "not there") raises :class:`SensorError`."""
        try:
            async with self.request(sensor, caller, method, path, **kw) as resp:
                if resp.status not in ok and resp.status != 404:
                    raise SensorError(await status_reason(resp))
                return resp.status, await resp.json()
        except SensorError:
            raise
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SensorError(reason_of(exc, self.timeout_s)) from exc

    async def each(self, caller: Caller, path: str, params: dict[str, str] | None = None
                   ) -> tuple[list[tuple[str, int, dict[str, Any]]], list[dict[str, str]]]:
        """``GET path`` from every sensor of the caller's tenant at once: (sensor, status,
        body) of those that answered (200, or 404: not there), in cluster-file order, and
        ``[{sensor, reason}]`` of those that did not."""
        sensors = self.of_tenant(caller.tenant)

        async def one(sensor: SensorConfig) -> tuple[int, dict[str, Any]] | str:
            try:
                return await self.json(sensor, caller, "GET", path, params=params or {})
            except SensorError as exc:
                return str(exc)

        answers, missing = [], []
        for sensor, got in zip(sensors, await asyncio.gather(*map(one, sensors)), strict=True):
            if isinstance(got, str):
                missing.append({"sensor": sensor.name, "reason": got})
            else:
                answers.append((sensor.name, *got))
        return answers, missing

    def note_range(self, sensor: SensorConfig, caller: Caller, kept: str | None) -> None:
        """Keep the range a query's answer reported (``KEPT_RANGE_HEADER``: ``OLDEST_NS
        NEWEST_NS``, empty for an empty store) as a fresh reading: a central queried
        steadily reads no range of its own. An answer without it, or with anything else,
        changes nothing."""
        try:
            ends = [int(ns) for ns in (kept or "").split()]
        except ValueError:
            return
        if kept is None or len(ends) not in (0, 2):
            return
        oldest, newest = ends if ends else (None, None)
        self._ranges[(sensor.name, caller.tenant)] = TimeRange(oldest, newest,
                                                               time.monotonic())

    async def time_range(self, sensor: SensorConfig, caller: Caller, fresh: bool = False
                         ) -> TimeRange:
        """What ``sensor`` keeps of the caller's tenant; unless ``fresh``, an answer up to
        :data:`RANGE_CACHE_S` old is reused (and read again in the background once it is
        :data:`RANGE_REFRESH_S` old)."""
        key = (sensor.name, caller.tenant)
        cached = self._ranges.get(key)
        if fresh or cached is None or (age := time.monotonic() - cached.fetched) >= RANGE_CACHE_S:
            return await self._read_range(sensor, caller)
        if age >= RANGE_REFRESH_S and key not in self._refreshing:
            task = self._refreshing[key] = asyncio.create_task(self._read_range(sensor, caller))
            task.add_done_callback(lambda t: self._refreshed(key, t))
        return cached

    def _refreshed(self, key: tuple[str, str], task: asyncio.Task[TimeRange]) -> None:
        del self._refreshing[key]
        if not task.cancelled() and task.exception() is not None:  # the next query asks
            log.info("sensor %s: range not read again: %s", key[0], task.exception())

    async def _read_range(self, sensor: SensorConfig, caller: Caller) -> TimeRange:
        key = (sensor.name, caller.tenant)
        status, body = await self.json(sensor, caller, "GET", RANGE_PATH)
        if status != 200:
            raise SensorError(f"HTTP {status} from {RANGE_PATH}")
        kept = body.get("kept") or {}
        found = TimeRange(kept.get("oldest_ns"), kept.get("newest_ns"), time.monotonic())
        self._ranges[key] = found
        return found


async def status_reason(resp: aiohttp.ClientResponse) -> str:
    """``HTTP 403 forbidden: …`` from a sensor's JSON error (or its first bytes)."""
    text = (await resp.text(errors="replace"))[:MAX_REASON_CHARS]
    try:
        err = await resp.json(content_type=None)
        text = f"{err['code']}: {err['message']}"[:MAX_REASON_CHARS]
    except (ValueError, KeyError, TypeError):
        pass
    return f"HTTP {resp.status} {text}".rstrip()
