"""One full pcapwire store per tenant (``DATA_DIR/tenants/<tenant>/``): isolation is
structural, a tenant's packets, flows, query history and results live in its own directory.

Reads (planning and flows from the catalog; history, runs and verdicts from the case
store) run on the event loop, and so do the workflow engine's writes to the case store;
writes to the query history go through a second case-store connection
(:attr:`pcapwire.store.Store.cases`) in a worker thread, so that waiting for the case
store's write lock (held by a batch of verdicts, or by another process) never blocks the
loop. Ingest runs in a child process (the store's ``ingest.lock`` keeps it exclusive
across processes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from pcapwire.api.authdb import check_name
from pcapwire.api.config import ApiConfig
from pcapwire.api.errors import ApiError
from pcapwire.cases import CASES_FILE, CaseStore
from pcapwire.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from pcapwire.cli.ingest import limit_args
from pcapwire.hashlist import HashListSet
from pcapwire.store import Catalog, Store
from pcapwire.store.limits import IngestLimits

log = logging.getLogger(__name__)


class TenantStore:
    def __init__(self, tenant: str, root: Path) -> None:
        self.tenant = tenant
        self.root = root
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
        """Ingest in a child process (``pcapwire ingest --json``), so that its CPU work never
        competes with the event loop for the interpreter; returns the summary it printed,
        :meth:`pcapwire.store.ingest.IngestReport.summary` (with ``stopped`` when one of
        ``limits`` stopped it: see :mod:`.ingest_limits`)."""
        if self.ingesting.locked():
            raise ApiError(409, "ingest_busy", f"tenant {self.tenant!r} is already ingesting; "
                           "retry when it finishes")
        async with self.ingesting:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pcapwire.cli", "--data-dir", str(self.root), "ingest",
                "--json", "--progress", "none", *limit_args(limits or IngestLimits()),
                "--", *map(str, paths),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            try:
                out, err = await proc.communicate()
            except asyncio.CancelledError:
                proc.kill()
                await proc.wait()
                raise
        if proc.returncode in (EXIT_OK, EXIT_PARTIAL) or (proc.returncode == EXIT_USAGE
                                                          and out.startswith(b"{")):
            return dict(json.loads(out))  # exit 2 with a summary: an input was no capture
        message = err.decode(errors="replace").strip().removeprefix("pcapwire: error: ")
        if "another ingest is running" in message:
            raise ApiError(409, "ingest_busy", message)
        log.error("ingest into %s failed (exit %s): %s", self.root, proc.returncode, message)
        raise ApiError(400, "ingest_failed", message or f"ingest exited {proc.returncode}")

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
            ts = self._stores[tenant] = TenantStore(tenant, self.config.tenant_dir(tenant))
        return ts

    def close(self) -> None:
        for ts in self._stores.values():
            ts.close()
        self._stores.clear()

