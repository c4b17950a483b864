"""The packet store: segment files under ``<root>/segments`` and the SQLite catalog.

One store per data directory. Ingest is exclusive (an ``ingest.lock`` flock); queries run
alongside it and see each segment once its checkpoint is committed. The queries it runs
are kept in the data directory's case store (:attr:`Store.cases`, ``cases.sqlite``).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcapwire.errors import ConfigError
from pcapwire.store.catalog import Catalog, FlowRow, Segment
from pcapwire.store.ingest import Ingestor, IngestReport
from pcapwire.store.segments import remove_orphans

if TYPE_CHECKING:
    from pcapwire.cases import CaseStore

#: Attempts at moving an old catalog's query history (each one fails only when a process
#: of an older pcapwire added a query to it meanwhile).
MOVE_HISTORY_ATTEMPTS = 5

__all__ = ["Catalog", "FlowRow", "IngestReport", "Segment", "Store"]



class IngestBusy(ConfigError):
    """Another ingest holds the store's ingest lock."""

class Store:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "segments").mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot use data directory {self.root}: {exc}") from None
        self.catalog = Catalog(self.root / "catalog.sqlite")
        self._cases: CaseStore | None = None
        try:
            self.move_query_history()
        except BaseException:
            self.close()
            raise

    @property
    def cases(self) -> CaseStore:
        """The data directory's case store, where queries are kept (opened on first use;
        it leaves runs found running alone: another process may be running them)."""
        if self._cases is None:
            from pcapwire.cases import CASES_FILE, CaseStore

            self._cases = CaseStore(self.root / CASES_FILE, interrupt_running=False)
        return self._cases

    def move_query_history(self) -> None:
        """Move the query history that catalogs of schema 1 kept into the case store, once
        (the store does this when it opens): the rows are committed to ``cases.sqlite``
        before the catalog's table is dropped, so an interrupted move loses nothing and
        the next open completes it; with no such table, nothing happens."""
        for _ in range(MOVE_HISTORY_ATTEMPTS):
            rows = self.catalog.legacy_queries()
            if rows is None:
                return
            if rows:
                self.cases.adopt_queries(rows)
            if self.catalog.drop_legacy_queries(rows):
                return

    @classmethod
    def existing(cls, root: str | os.PathLike[str]) -> Store:
        """A store that already exists (for commands that only answer from it): a
        directory without a catalog is refused instead of becoming an empty store."""
        path = Path(root)
        if not (path / "catalog.sqlite").is_file():
            what = "does not exist" if not path.exists() else "is not a pcapwire store"
            raise ConfigError(f"data directory {path} {what} (no catalog.sqlite); ingest "
                              "into it first, or name the store with --data-dir or "
                              "PCAPWIRE_DATA_DIR")
        return cls(path)

    def close(self) -> None:
        self.catalog.close()
        if self._cases is not None:
            self._cases.close()
            self._cases = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def ingest_lock(self) -> Iterator[None]:
        """Exclusive while ingesting; also the moment to clear what a crash left behind."""
        with open(self.root / "ingest.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise IngestBusy(f"another ingest is running on {self.root}; wait for it to "
                                  "finish") from None
            remove_orphans(self.root / "segments", self.catalog.segment_paths(), self.root)
            yield

    def ingest(self, paths: list[str] | list[Path], **options: Any) -> IngestReport:
        with self.ingest_lock():
            return Ingestor(self, **options).ingest(paths)

    def query_engine(self) -> Any:
        from pcapwire.query.engine import QueryEngine

        return QueryEngine(self)
