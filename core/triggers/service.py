"""The trigger service of one store: its hunts (:func:`.hunt.run_pending`), its watch
(:mod:`.watch`, live and units), its notifications (:mod:`.notify`) and the triggers'
workflows on every new match, and the matches into the metadata search index
(:mod:`.searchdocs`), each in a thread of its own so that none waits for another (a slow
webhook or workflow never delays matching).

Started beside ``pcapwire serve`` for every tenant store with a ``triggers.sqlite``
(:meth:`TriggerServices.of_tenants`, as :class:`~pcapwire.store.maintenance.Maintenance`
is), and in the foreground by ``pcapwire trigger run`` (:func:`run_foreground`). One
service per store at a time: it holds ``<store>/triggers.lock`` (``flock``); a second
one (a ``trigger run`` beside ``serve``) waits for it.

Workflows: each new match (hunt or watch) runs the trigger's ``workflows`` on the query
of its flow (:func:`~.pivot.match_spec`, case ``trigger-<name>``, event
``match-<id>``), kept in the case store as any query with its runs and verdicts,
:data:`WORKFLOW_CONCURRENCY` matches at a time; each trigger's ``workflows_id`` cursor
moves once a batch has run (a restart runs an unfinished batch again). Under ``serve``
the runs use the server's plugin host on the server's event loop; the foreground runner
builds its own.

Hunts by workers: with ``hunts=False`` (``pcapwire serve --hunts-by-workers``, a cluster
sensor) the service starts no hunt runner: it watches new traffic, notifies and runs the
matches' workflows, and each pending hunt (a trigger created or edited, ``rules update``,
a hunt resumed) becomes a ``hunt`` job (:mod:`pcapwire.jobs.handlers_hunt`) through its
``queue`` (:mod:`.hunt_jobs`: a local worker child, or NATS for the sensor's ``pcapwire
worker --nats``); without a queue the hunt stays ``queued`` until someone submits its job.

The sensor's name (``sensor``, ``serve --sensor-name``): a trigger whose ``scope.sensor``
names only other sensors is neither watched nor hunted here (its queued hunt is ended,
:func:`.hunt_jobs.settle_out_of_scope`). Without a name every trigger runs.

Live events: the API follows a trigger by polling :meth:`~.db.TriggerDB.matches` with
``after_id`` and :meth:`~.db.TriggerDB.hunts` (another process may run the service).

Waking: the API calls :meth:`TriggerServices.wake` with the tenant's store after it
created, edited, paused, resumed, aborted or deleted a trigger: the store's service looks
at its hunts, live segments and units at once (the first trigger of a tenant: its service
starts at once), rather than at its next poll; the periodic looks (:data:`RESCAN_S`,
:data:`HUNT_POLL_S`, ...) stay, for changes made elsewhere (``pcapwire trigger`` beside
``serve``).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from pcapwire.search.indexer import safely
from pcapwire.triggers import rulesets
from pcapwire.triggers.db import TRIGGERS_FILE, TriggerDB
from pcapwire.triggers.hunt_jobs import Dispatch, HuntQueue, settle_out_of_scope
from pcapwire.triggers.notify import Notifier
from pcapwire.triggers.offloop import SerialCalls
from pcapwire.triggers.pivot import case_name, match_spec
from pcapwire.triggers.searchdocs import index_matches
from pcapwire.triggers.watch import UnitFunction, Watch

log = logging.getLogger(__name__)

LOCK_FILE = "triggers.lock"
#: Longest wait of the live watch between looks when the catalog does not change (new
#: triggers, resumed ones); the catalog's change counter is read every POLL_S.
LIVE_IDLE_S = 1.0
POLL_S = 0.1
#: Seconds between looks for new sealed segments, pending hunts, and tenant stores.
UNIT_POLL_S = 1.0
HUNT_POLL_S = 1.0
RESCAN_S = 5.0
#: Matches whose workflows run at once (per store).
WORKFLOW_CONCURRENCY = 2
SERVICE_ACTOR = "pcapwire trigger service"


class TriggerService:
    """The threads of one store's triggers; ``workflows``: a loaded
    :class:`~pcapwire.api.workflows.WorkflowService` (``host`` and ``loaded``) or None
    (matches run no workflow); ``loop``: the event loop its host belongs to (``serve``'s),
    None to run workflows on a loop of the service's own; ``hunts``: False to leave the
    store's hunts to ``hunt`` jobs (no hunt runner here), queued through ``queue`` (None:
    by someone else); ``sensor``: this server's name ("" unknown: every scope covers
    it)."""

    def __init__(self, root: str | Path, workflows: Any = None,
                 stop: threading.Event | None = None,
                 loop: asyncio.AbstractEventLoop | None = None,
                 unit: UnitFunction | None = None, hunts: bool = True, sensor: str = "",
                 queue: HuntQueue | None = None) -> None:
        self.root = Path(root)
        self.workflows = workflows
        self.hunts = hunts
        self.sensor = sensor
        self.dispatch = Dispatch(self.root, queue, sensor) if queue is not None else None
        self.loop = loop
        self.unit = unit
        self.stop_event = stop or threading.Event()
        self.threads: list[threading.Thread] = []
        self.notifier = Notifier(self.root, self.stop_event)
        self.wake_workflows = threading.Event()
        self.wake_search = threading.Event()
        #: set by :meth:`wake` (and :meth:`stop`): each thread looks again at once
        self.wakes = {name: threading.Event() for name in ("live", "units", "hunts")}
        self.watch: Watch | None = None
        self._lock_fd: int | None = None
        self.started = threading.Event()  # set once the lock is held and threads run

    def on_matches(self, trigger_id: int, match_ids: list[int]) -> None:
        """New matches (hunt or watch): wake the notifier and the workflow runner."""
        self.notifier.wake()
        self.wake_workflows.set()
        self.wake_search.set()

    def wake(self) -> None:
        """Triggers changed (created, edited, paused, resumed, aborted, deleted): look at
        hunts, live segments and units now."""
        for event in self.wakes.values():
            event.set()

    def _sleep(self, name: str, seconds: float) -> None:
        """Wait ``seconds``, or less when woken or stopped."""
        event = self.wakes[name]
        if not self.stop_event.is_set():
            event.wait(seconds)
        event.clear()

    def start(self) -> None:
        t = threading.Thread(target=self._main, name=f"pcapwire-triggers:{self.root.name}",
                             daemon=True)
        self.threads.append(t)  # first: _main's own threads follow it in the list
        t.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.wake()
        self.wake_workflows.set()
        self.wake_search.set()
        self.notifier.wake()
        for t in list(self.threads):
            t.join()

    def _main(self) -> None:
        if not self._acquire():
            return
        try:
            self.watch = Watch(self.root, self.on_matches, unit=self.unit, sensor=self.sensor)
            self.notifier.start()
            for name, target in (("live", self._live), ("units", self._units),
                                 ("hunts", self._hunts), ("workflows", self._workflows),
                                 ("search", self._search)):
                if name == "hunts" and not (self.hunts or self.dispatch or self.sensor):
                    continue  # left to `hunt` jobs someone else queues
                t = threading.Thread(target=self._guard(name, target),
                                     name=f"pcapwire-triggers-{name}", daemon=True)
                t.start()
                self.threads.append(t)
            self.started.set()
            self.stop_event.wait()
            self.notifier.stop()
        finally:
            for t in self.threads[1:]:
                t.join()
            if self.watch is not None:
                self.watch.close()
            if self._lock_fd is not None:
                import os

                os.close(self._lock_fd)

    def _acquire(self) -> bool:
        import os

        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        while not self.stop_event.is_set():
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock_fd = fd
                return True
            except BlockingIOError:
                self.stop_event.wait(RESCAN_S)
        os.close(fd)
        return False

    def _guard(self, name: str, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            while not self.stop_event.is_set():
                try:
                    target()
                    return
                except Exception:
                    log.exception("%s: trigger %s failed; starting it again", self.root, name)
                    self.stop_event.wait(RESCAN_S)
        return run

    # -- the threads ----------------------------------------------------------------------
    def _live(self) -> None:
        assert self.watch is not None
        version = -1
        idle = 0.0
        while not self.stop_event.is_set():
            now = self.watch.catalog_version()
            woken = self.wakes["live"].is_set()
            if now != version or idle >= LIVE_IDLE_S or woken:
                version, idle = now, 0.0
                self.wakes["live"].clear()
                self.watch.live_step(self.stop_event)
                continue
            self.wakes["live"].wait(POLL_S)
            idle += POLL_S

    def _units(self) -> None:
        assert self.watch is not None
        while not self.stop_event.is_set():
            if not self.watch.unit_step(self.stop_event):
                self._sleep("units", UNIT_POLL_S)

    def _hunts(self) -> None:
        try:
            from pcapwire.triggers.hunt import run_pending
        except ImportError:
            log.warning("pcapwire.triggers.hunt is missing: hunts do not run")
            return
        while not self.stop_event.is_set():
            self.wakes["hunts"].clear()  # a change from now on: looked at after this pass
            settle_out_of_scope(self.root, self.sensor)
            if self.hunts:
                run_pending(self.root, self.stop_event, on_matches=self.on_matches)
            elif self.dispatch is not None:
                self.dispatch.step(self.stop_event)
            self._sleep("hunts", HUNT_POLL_S)

    def _search(self) -> None:
        """New matches into the metadata index (:mod:`.searchdocs`), at once and every
        :data:`RESCAN_S` (after a ``search rebuild``); a failing index is logged."""
        while not self.stop_event.is_set():
            self.wake_search.clear()
            safely(index_matches, self.root)
            self.wake_search.wait(RESCAN_S)

    def _workflows(self) -> None:
        if self.workflows is None:
            return
        own = self.loop is None
        loop = asyncio.new_event_loop() if own else self.loop
        assert loop is not None
        db = TriggerDB(self.root)
        recorded = 0.0
        try:
            while not self.stop_event.is_set():
                self.wake_workflows.clear()
                if time.monotonic() - recorded >= RESCAN_S:  # the rule sets they use
                    rulesets.record(db, self.root, self.workflows.loaded, SERVICE_ACTOR)
                    recorded = time.monotonic()
                if not self._workflow_batch(db, loop, own):
                    self.wake_workflows.wait(UNIT_POLL_S)
        finally:
            db.close()
            if own:
                loop.run_until_complete(self.workflows.stop())
                loop.close()

    def _workflow_batch(self, db: TriggerDB, loop: asyncio.AbstractEventLoop,
                        own: bool) -> bool:
        """Run the workflows of the next matches of one trigger; False when none waits."""
        for trig in db.triggers():
            names = trig.definition.workflows
            if trig.state != "active" or not names:
                continue
            after = db.db.execute("SELECT workflows_id FROM watch WHERE trigger_id=?",
                                  (trig.id,)).fetchone()[0]
            batch = db.matches(trig.id, after_id=after, limit=WORKFLOW_CONCURRENCY)
            if not batch:
                continue
            coro = self._run_batch(trig.name, names, batch)
            if own:
                loop.run_until_complete(coro)
            else:
                fut: Future[None] = asyncio.run_coroutine_threadsafe(coro, loop)
                while not fut.done():
                    if self.stop_event.wait(POLL_S):
                        fut.cancel()
                        return False
            db.db.execute("UPDATE watch SET workflows_id=? WHERE trigger_id=?",
                          (batch[-1]["id"], trig.id))
            return True
        return False

    async def _run_batch(self, trigger_name: str, names: list[str],
                         batch: list[dict[str, Any]]) -> None:
        await asyncio.gather(*(self._run_match(trigger_name, names, m) for m in batch))

    async def _run_match(self, trigger_name: str, names: list[str],
                         match: dict[str, Any]) -> None:
        """The trigger's workflows on the query of one match's flow, in case
        ``trigger-<name>`` (each workflow on a query of its own, kept in the case)."""
        from pcapwire.store import Store
        from pcapwire.workflow.engine import Engine
        from pcapwire.workflow.queries import LocalQueries

        spec = match_spec(trigger_name, match)
        # a cancelled batch (the service stops) leaves its plan running in a worker
        # thread: the store closes after it (offloop.SerialCalls), not under it
        calls = SerialCalls()
        store = await calls.call(Store, self.root)
        queries = LocalQueries(self.root)
        try:
            for name in names:
                wf = self.workflows.loaded.get(name)
                if wf is None:
                    log.warning("trigger %s: no workflow %r is loaded; available: %s",
                                trigger_name, name, ", ".join(self.workflows.loaded) or
                                "none")
                    continue
                engine = store.query_engine()
                plan = await calls.call(engine.plan, spec)
                runner = Engine(self.workflows.host, store.cases,
                                workdir=self.root / "work", data_dir=self.root,
                                queries=queries)
                (self.root / "work").mkdir(exist_ok=True)
                try:
                    await runner.run(wf, engine.run(spec, plan=plan),
                                     case=case_name(trigger_name), event=spec.event)
                except Exception:
                    log.exception("trigger %s: workflow %s on match %s failed",
                                  trigger_name, name, match["id"])
        finally:
            queries.close()
            await calls.close(store.close)


class TriggerServices(threading.Thread):
    """A :class:`TriggerService` for every store ``roots()`` names that has triggers,
    started as they appear (looked for every ``rescan_s``, default :data:`RESCAN_S`, and
    at once on :meth:`wake`), all stopped by :meth:`stop`; ``hunts``, ``sensor`` and
    ``queue`` as for :class:`TriggerService` (the queue is closed by :meth:`stop`)."""

    def __init__(self, roots: Callable[[], list[Path]], workflows: Any = None,
                 loop: asyncio.AbstractEventLoop | None = None,
                 rescan_s: float | None = None, hunts: bool = True, sensor: str = "",
                 queue: HuntQueue | None = None) -> None:
        super().__init__(name="pcapwire-triggers", daemon=True)
        self.roots, self.workflows, self.loop = roots, workflows, loop
        self.hunts, self.sensor, self.queue = hunts, sensor, queue
        self.rescan_s = RESCAN_S if rescan_s is None else rescan_s
        self.stop_event = threading.Event()
        self.rescan = threading.Event()
        self.services: dict[Path, TriggerService] = {}

    @classmethod
    def of_tenants(cls, data_dir: Path, workflows: Any = None,
                   loop: asyncio.AbstractEventLoop | None = None,
                   hunts: bool = True, sensor: str = "",
                   queue: HuntQueue | None = None) -> TriggerServices:
        def roots() -> list[Path]:
            try:
                return sorted(p for p in (data_dir / "tenants").iterdir()
                              if (p / TRIGGERS_FILE).is_file()
                              and (p / "catalog.sqlite").is_file())
            except OSError:
                return []
        return cls(roots, workflows, loop, hunts=hunts, sensor=sensor, queue=queue)

    def wake(self, root: str | Path) -> None:
        """The triggers of store ``root`` changed (the API calls it, from any thread): its
        service looks at them at once; a store without a service yet gets one now."""
        svc = self.services.get(Path(root).resolve())
        if svc is not None:
            svc.wake()
        else:
            self.rescan.set()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.rescan.clear()
            for root in self.roots():
                key = root.resolve()
                if key not in self.services:
                    svc = TriggerService(root, self.workflows, loop=self.loop,
                                         hunts=self.hunts, sensor=self.sensor,
                                         queue=self.queue)
                    svc.start()
                    self.services[key] = svc
            self.rescan.wait(self.rescan_s)

    def stop(self) -> None:
        self.stop_event.set()
        self.rescan.set()
        if self.is_alive():
            self.join()
        for svc in self.services.values():
            svc.stop_event.set()
        for svc in self.services.values():
            svc.stop()
        if self.queue is not None:
            self.queue.close()


def run_foreground(root: str | Path, stop: threading.Event,
                   workflow_dirs: list[Path] | None = None) -> None:
    """``pcapwire trigger run``: the service of one store until ``stop`` is set (the
    command sets it on SIGINT/SIGTERM). ``workflow_dirs``: where the triggers' workflows
    are loaded from (as ``serve --workflows``)."""
    workflows = None
    if workflow_dirs:
        from pcapwire.api.workflows import WorkflowService

        workflows = WorkflowService(list(workflow_dirs))
        workflows.start()
    svc = TriggerService(root, workflows, stop)
    svc.start()
    stop.wait()
    svc.stop()
