"""One full pcapwire store per tenant (``DATA_DIR/tenants/<tenant>/``): isolation is
structural, a tenant's packets, flows, query history and results live in its own directory.

Reads (planning and flows from the catalog; history, runs and verdicts from the case
store) run on the event loop, and so do the workflow engine's writes to the case store;
writes to the query history go through a second case-store connection
(:attr:`pcapwire.store.Store.cases`) in a worker thread, so that waiting for the case
store's write lock (held by a batch of verdicts, or by another process) never blocks the
loop. Ingest runs as an ``ingest`` job in a worker child process
(:func:`pcapwire.jobs.local.run`; the store's ``ingest.lock`` keeps it exclusive across
processes).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pcapwire.api.authdb import check_name
from pcapwire.api.config import ApiConfig
from pcapwire.api.errors import ApiError
from pcapwire.cases import CASES_FILE, CaseStore
from pcapwire.hashlist import HashListSet
from pcapwire.jobs import Job, local
from pcapwire.store import Catalog, Store
from pcapwire.store.limits import IngestLimits

log = logging.getLogger(__name__)


class TenantStore:
    def __init__(self, tenant: str, root: Path, read_roots: Sequence[Path] = ()) -> None:
        self.tenant = tenant
        self.root = root
        self.read_roots = tuple(read_roots)  # server paths its jobs may read (--ingest-path)
        self.store = Store(root)
        self.results = root / "results"
        self.uploads = root / "uploads"
        self.results.mkdir(exist_ok=True)
        self.uploads.mkdir(exist_ok=True)
        self.work = root / "work"  # workflow runs' scratch directories
        self.work.mkdir(exist_ok=True)
        self._writer = self.store.cases  # the query history's writes, in worker threads
        self._cases: CaseStore | None = None
        self._write_lock = threading.Lock()
        self._closed = False
        self.ingesting = asyncio.Lock()
        self.carve_locks: dict[str, asyncio.Lock] = {}  # query id -> carving it
        self._hashlists: HashListSet | None = None
        self.importing_hashlist = asyncio.Lock()

    @property
    def catalog(self) -> Catalog:
        return self.store.catalog

    @property
    def cases(self) -> CaseStore:
        """The tenant's case store (query history, runs, step results, verdicts), opened
        on first use; the query history is written through :meth:`write`."""
        if self._cases is None:
            self._cases = CaseStore(self.root / CASES_FILE)
        return self._cases

    @property
    def hashlists(self) -> HashListSet:
        """The hash lists this tenant sees, read-only: its own ``hashlists.sqlite`` and the
        server's global one (:mod:`pcapwire.api.hashlists`)."""
        if self._hashlists is None:
            self._hashlists = HashListSet.for_data_dir(self.root)
        return self._hashlists

    def engine(self) -> Any:
        return self.store.query_engine()

    async def write(self, method: str, *args: Any) -> None:
        """Call a query-history method of the case store (``add_query``, ``finish_query``)
        off the loop.
        A write still running when its caller is cancelled finishes in its thread;
        :meth:`close` waits for it, and a write after close is dropped (logged)."""
        def call() -> None:
            with self._write_lock:
                if self._closed:
                    log.warning("tenant %s: %s after close, dropped", self.tenant, method)
                    return
                getattr(self._writer, method)(*args)
        await asyncio.to_thread(call)

    async def ingest(self, paths: list[Path], limits: IngestLimits | None = None
                     ) -> dict[str, Any]:
        """Ingest as a job in a worker child process (:mod:`pcapwire.jobs.handlers_ingest`),
        so that its CPU work never competes with the event loop for the interpreter; returns
        its summary, :meth:`pcapwire.store.ingest.IngestReport.summary` (with ``stopped`` when
        one of ``limits`` stopped it: see :mod:`.ingest_limits`)."""
        if self.ingesting.locked():
            raise ApiError(409, "ingest_busy", f"tenant {self.tenant!r} is already ingesting; "
                           "retry when it finishes")
        job = Job("ingest", uuid.uuid4().hex, self.tenant,
                  {"paths": [str(p) for p in paths],
                   "limits": {k: v for k, v in asdict(limits or IngestLimits()).items() if v}})
        async with self.ingesting:
            result = await local.run(job, self.root, read_roots=self.read_roots)
        if result.ok:
            return dict(result.data)
        if result.code == "ingest_busy":
            raise ApiError(409, "ingest_busy", result.message)
        log.error("ingest into %s failed (%s): %s", self.root, result.code, result.message)
        raise ApiError(400, "ingest_failed", result.message)

    def close(self) -> None:
        with self._write_lock:  # never under a write in flight (SQLite would crash)
            self._closed = True
            self.store.close()  # the catalog and the history writer
        if self._cases is not None:
            self._cases.close()
        if self._hashlists is not None:
            self._hashlists.close()


class TenantRegistry:
    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self._stores: dict[str, TenantStore] = {}

    def get(self, tenant: str) -> TenantStore:
        ts = self._stores.get(tenant)
        if ts is None:
            check_name("tenant", tenant)
            ts = self._stores[tenant] = TenantStore(tenant, self.config.tenant_dir(tenant),
                                                    self.config.ingest_paths)
        return ts

    def close(self) -> None:
        for ts in self._stores.values():
            ts.close()
        self._stores.clear()

