"""Store maintenance: retention, feeding holds, compression, every ``interval`` of the
store's ``[retention]`` settings.

One pass over a store (:func:`maintain`) runs :func:`pcapwire.retention.enforce`, then
:func:`pcapwire.holds.feed`, then :func:`pcapwire.store.compression.compress_due`; each is
guarded, so one that fails is logged and the others still run. :class:`Maintenance` is the
background thread that runs passes: beside ``pcapwire capture`` (its store), beside
``pcapwire serve`` (every tenant store, each on its own interval), and ``pcapwire ingest``
runs a pass when it ends and retention after each checkpoint. Each pass re-reads
``store.toml``, so a changed policy applies from the next pass; a file that does not parse
is logged once and the last good settings stay in force.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcapwire import holds
from pcapwire.errors import PcapwireError
from pcapwire.retention import RunReport, enforce, has_policy
from pcapwire.retention.usage import measure
from pcapwire.store import Store, compression
from pcapwire.store.config import StoreConfig, load

if TYPE_CHECKING:
    from pcapwire.store.ingest import IngestReport

log = logging.getLogger(__name__)

#: Seconds between looks for new tenant stores (``serve``), and the longest wait of the
#: loop whatever the intervals (so that a store whose interval shrank is seen soon).
RESCAN_S = 5.0

OnReport = Callable[[Path, StoreConfig, RunReport], None]


def maintain(store: Store, config: StoreConfig, stop: threading.Event | None = None
             ) -> RunReport | None:
    """One pass over ``store``; the retention report, or None when retention failed."""
    report = None
    try:
        report = enforce(store, config.retention, stop=stop)
    except Exception:
        log.exception("%s: retention failed", store.root)
    try:
        holds.feed(store)
    except Exception:
        log.exception("%s: feeding the holds failed", store.root)
    try:
        compression.compress_due(store, config.compression, stop)
    except Exception:
        log.exception("%s: compression failed", store.root)
    return report


class Maintenance(threading.Thread):
    """Passes over the stores ``roots()`` names, each every ``interval`` of its own
    settings, the first at once; ``on_report`` sees each retention report."""

    def __init__(self, roots: Callable[[], list[Path]], on_report: OnReport | None = None,
                 name: str = "pcapwire-maintenance") -> None:
        super().__init__(name=name, daemon=True)
        self.roots = roots
        self.on_report = on_report
        self.stop_event = threading.Event()
        self._due: dict[Path, float] = {}
        self._configs: dict[Path, StoreConfig] = {}
        self._bad: dict[Path, str] = {}

    @classmethod
    def of_store(cls, root: Path, on_report: OnReport | None = None) -> Maintenance:
        return cls(lambda: [root], on_report)

    @classmethod
    def of_tenants(cls, data_dir: Path, on_report: OnReport | None = None) -> Maintenance:
        """Every tenant store under ``data_dir/tenants`` (those with a catalog)."""
        def roots() -> list[Path]:
            try:
                return sorted(p for p in (data_dir / "tenants").iterdir()
                              if (p / "catalog.sqlite").is_file())
            except OSError:
                return []
        return cls(roots, on_report)

    def stop(self) -> None:
        self.stop_event.set()
        if self.is_alive():
            self.join()

    def run(self) -> None:
        while not self.stop_event.is_set():
            now = time.monotonic()
            for root in self.roots():
                if self.stop_event.is_set():
                    return
                if self._due.get(root, 0.0) <= now:
                    config = self.config(root)
                    self._due[root] = time.monotonic() + config.retention.interval_s
                    self.pass_over(root, config)
            nearest = min(self._due.values(), default=now + RESCAN_S)
            self.stop_event.wait(max(0.0, min(nearest - time.monotonic(), RESCAN_S)))

    def config(self, root: Path) -> StoreConfig:
        try:
            config = load(root)
        except PcapwireError as exc:
            if self._bad.get(root) != str(exc):
                log.error("%s; the last good settings stay in force", exc)
                self._bad[root] = str(exc)
            return self._configs.get(root, StoreConfig())
        self._bad.pop(root, None)
        self._configs[root] = config
        return config

    def pass_over(self, root: Path, config: StoreConfig) -> None:
        try:
            with Store(root) as store:
                report = maintain(store, config, self.stop_event)
        except Exception:
            log.exception("%s: maintenance failed", root)
            return
        from pcapwire.search.indexer import catch_up

        catch_up(root)  # flows ingested meanwhile become searchable without a search
        if report is not None and self.on_report is not None:
            self.on_report(root, config, report)


#: With a percent policy, an ingest's segments are at most this share of the room the
#: high watermark leaves free (retention runs between segments, so one must fit).
INGEST_ROOM_SHARE = 4
MIN_INGEST_SEGMENT_BYTES = 1 * 2**20


def ingest_under_policy(store: Store, paths: list[str] | list[Path], segment_max_bytes: int,
                        on_checkpoint: Callable[[int], None] | None = None,
                        **options: Any) -> tuple[IngestReport, int]:
    """``store.ingest(paths, **options)`` with the store's retention policy around it
    (:class:`IngestRetention`): the report, and how many old segments retention deleted.
    :class:`~pcapwire.store.IngestBusy` when another ingest holds the store."""
    retention = IngestRetention(store)

    def checkpoint(n: int) -> None:
        retention.checkpoint()
        if on_checkpoint is not None:
            on_checkpoint(n)

    retention.checkpoint()
    report = store.ingest(paths, segment_max_bytes=retention.segment_bytes(segment_max_bytes),
                          on_checkpoint=checkpoint, **options)
    retention.finish()  # the new flows are indexed for search by the next search
    return report, retention.deleted


class IngestRetention:
    """Retention around one ``pcapwire ingest``: before it starts, after each checkpoint
    (so that an ingest into a full disk deletes old unheld data instead of failing), and a
    whole maintenance pass when it ends. Reads ``store.toml`` once, when it starts."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.config = load(store.root)
        self.deleted = 0

    @property
    def active(self) -> bool:
        return has_policy(self.config.retention)

    def segment_bytes(self, requested: int) -> int:
        """``requested``, or less when a percent policy leaves little room above its high
        mark: a segment must fit between two checks."""
        usage = measure(self.store.root, self.store.catalog, self.config.retention)
        if usage is None or usage.kind != "percent":
            return requested
        room = max(0, usage.capacity - usage.high)
        return max(MIN_INGEST_SEGMENT_BYTES, min(requested, room // INGEST_ROOM_SHARE))

    def checkpoint(self) -> None:
        if self.active:
            report = enforce(self.store, self.config.retention, wait=True)
            self.deleted += len(report.deleted)

    def finish(self) -> None:
        report = maintain(self.store, self.config)
        if report is not None:
            self.deleted += len(report.deleted)
