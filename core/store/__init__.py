"""The packet store: segment files under ``<root>/segments`` and the SQLite catalog.

One store per data directory. Ingest is exclusive (an ``ingest.lock`` flock); queries run
alongside it and see each segment once its checkpoint is committed.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pcapwire.errors import ConfigError
from pcapwire.store.catalog import Catalog, FlowRow, Segment
from pcapwire.store.ingest import Ingestor, IngestReport
from pcapwire.store.segments import remove_orphans

__all__ = ["Catalog", "FlowRow", "IngestReport", "Segment", "Store"]


class Store:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "segments").mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot use data directory {self.root}: {exc}") from None
        self.catalog = Catalog(self.root / "catalog.sqlite")

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
                raise ConfigError(f"another ingest is running on {self.root}; wait for it to "
                                  "finish") from None
            remove_orphans(self.root / "segments", self.catalog.segment_paths(), self.root)
            yield

    def ingest(self, paths: list[str] | list[Path], **options: Any) -> IngestReport:
        with self.ingest_lock():
            return Ingestor(self, **options).ingest(paths)

    def query_engine(self) -> Any:
        from pcapwire.query.engine import QueryEngine

        return QueryEngine(self)
