"""Spare engines: Suricata processes with their rules already loaded, waiting for a run.

A run takes a spare (or starts an engine if none is ready); when it ends, the pool starts
the next spare in the background, so from the second run on the rules are loaded *before*
the query is submitted and the first verdict only waits for packets. Spares are keyed by
:meth:`SuricataSettings.fingerprint`, which covers rule file sizes and mtimes, so editing a
rule file makes the next run start a fresh engine instead of using stale rules.

One pool per event loop (engines are bound to the loop that started them); the owner
calls :meth:`EnginePool.close` when it shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict

from pcapwire.plugins.suricata.config import SuricataSettings
from pcapwire.plugins.suricata.engine import SuricataEngine

log = logging.getLogger(__name__)

#: Distinct configurations that keep spares at once; the least recently used beyond it
#: lose theirs.
MAX_SPARE_CONFIGS = 4


class EnginePool:
    def __init__(self) -> None:
        self._spares: OrderedDict[str, list[asyncio.Task[SuricataEngine]]] = OrderedDict()
        self._closed = False
        self.started = 0  # engines started (spares included), for tests and stats
        self.reused = 0   # runs served by a spare that was already loaded

    async def _start(self, settings: SuricataSettings) -> SuricataEngine:
        self.started += 1
        engine = SuricataEngine(settings)
        await engine.start()
        return engine

    def warm(self, settings: SuricataSettings) -> None:
        """Start spares for ``settings`` (up to ``settings.warm_spares``) in the background."""
        if self._closed or settings.warm_spares <= 0:
            return
        key = settings.fingerprint()
        tasks = self._spares.setdefault(key, [])
        self._spares.move_to_end(key)
        while len(tasks) < settings.warm_spares:
            tasks.append(asyncio.create_task(self._start(settings), name="suricata-spare"))
        while len(self._spares) > MAX_SPARE_CONFIGS:
            _key, old = self._spares.popitem(last=False)
            for task in old:
                _discard(task)

    async def acquire(self, settings: SuricataSettings) -> SuricataEngine:
        """A started engine for ``settings``: a loaded spare when there is one."""
        key = settings.fingerprint()
        engine: SuricataEngine | None = None
        tasks = self._spares.get(key, [])
        while tasks and engine is None:
            # Prefer a spare that is already loaded; else wait for the oldest one.
            task = next((t for t in tasks if t.done()), tasks[0])
            tasks.remove(task)
            try:
                spare = await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.cancelled():  # the spare was discarded, not us
                    continue
                if not task.done():  # we were cancelled: keep the spare for later
                    tasks.append(task)
                raise
            except Exception as exc:
                log.warning("suricata: a spare engine failed to start: %s", exc)
                continue
            if spare.process is None or spare.process.returncode is not None:
                await spare.kill()  # died while waiting
                continue
            engine = spare
            self.reused += 1
        if engine is None:
            engine = await self._start(settings)
        return engine

    def release(self, settings: SuricataSettings) -> None:
        """A run using ``settings`` ended: load the next spare now. (Not when the run takes
        its engine: a spare loading rules would compete for CPU with the running engine.)"""
        self.warm(settings)

    async def close(self) -> None:
        """Stop every spare (reaped, files removed)."""
        self._closed = True
        tasks = [t for group in self._spares.values() for t in group]
        self._spares.clear()
        for task in tasks:
            if not task.done():
                task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                engine = await task
                await engine.kill()

    @property
    def spares(self) -> int:
        return sum(len(group) for group in self._spares.values())


def _discard(task: asyncio.Task[SuricataEngine]) -> None:
    async def stop() -> None:
        with contextlib.suppress(BaseException):
            engine = await task
            await engine.kill()
    if not task.done():
        task.cancel()
    asyncio.ensure_future(stop())
