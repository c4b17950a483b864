"""The recorder: sources in, live segments out, one catalog committer, a status file.

Threads: per source a reading thread (``Source.batches`` into its :class:`Backlog`; it
never waits for the disk) and a :class:`SourceWriter`; per PCAP-over-IP listener an
accepting thread (each connection is a new source); one :class:`Committer`; one status
thread (``DATA_DIR/capture/status.json`` every second). One recorder per data directory
(``DATA_DIR/capture/capture.lock``); on start it completes what a previous one left open
(:mod:`.recovery`). Beside it, the store's maintenance thread
(:mod:`pcapwire.store.maintenance`: retention, holds, compression); when retention can
free nothing more and the disk is above its high mark, the store's ``when_full`` says
what the recorder does: ``drop`` (go on; what does not fit is counted as disk drops, and
the alarm shows in the status) or ``stop`` (stop cleanly: :attr:`Recorder.stop_reason`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcapwire.capture import ledger
from pcapwire.capture.backlog import Backlog, Queued
from pcapwire.capture.committer import Committer
from pcapwire.capture.config import RecorderConfig
from pcapwire.capture.recovery import RecoveryReport, recover, seal_recovered
from pcapwire.capture.segment import META_SIZE, meta_ts
from pcapwire.capture.sources import MAX_CONNECTIONS, PcapOverIpListener, Source
from pcapwire.capture.status import (
    LatencyHistogram,
    Rates,
    SourceCounters,
    StatusFile,
    interface_totals,
)
from pcapwire.capture.writer import SourceInfo, SourceWriter
from pcapwire.errors import ConfigError
from pcapwire.store import Store
from pcapwire.store.catalog import Catalog
from pcapwire.store.config import StoreConfig
from pcapwire.store.config import load as load_store_config

if TYPE_CHECKING:
    from pcapwire.store.maintenance import Maintenance

log = logging.getLogger(__name__)

CAPTURE_DIR = "capture"  # DATA_DIR/capture: status.json, capture.lock
STATUS_FILE = "status.json"
LOCK_FILE = "capture.lock"
LOG_EVERY = 10.0


@dataclass
class _Running:
    source: Source
    info: SourceInfo
    counters: SourceCounters
    backlog: Backlog
    writer: SourceWriter
    reader: threading.Thread = field(init=False)
    listener: PcapOverIpListener | None = None


class Recorder:
    def __init__(self, data_dir: str | os.PathLike[str],
                 config: RecorderConfig | None = None) -> None:
        self.root = Path(data_dir).resolve()
        self.config = config or RecorderConfig()
        self.config.check()
        self.latency = LatencyHistogram()
        self.started = time.time()
        self.run_id = 0
        self.recovery: RecoveryReport | None = None
        self.on_status: Callable[[dict[str, Any]], None] | None = None
        self.last_status: dict[str, Any] = {}
        self._running: list[_Running] = []
        self._retired: list[SourceCounters] = []
        self._listeners: list[tuple[PcapOverIpListener, threading.Thread]] = []
        self._lock = threading.Lock()
        self._stop_reading = threading.Event()
        self._stop_status = threading.Event()
        self._rates = Rates()
        self._lock_file: Any = None
        self._committer: Committer | None = None
        self._status_file: StatusFile | None = None
        self._status_thread: threading.Thread | None = None
        self._last_log = 0.0
        self._maintenance: Maintenance | None = None
        self.retention: dict[str, Any] | None = None  # the last retention run, for status
        self.stop_reason: str | None = None  # set when the store's when_full says stop
        self.stopped = False

    # -- life cycle ----------------------------------------------------------------------------
    def start(self, sources: Sequence[Source] = (),
              listeners: Sequence[PcapOverIpListener] = ()) -> None:
        Store(self.root).close()  # creates (or migrates) the store
        load_store_config(self.root)  # a broken store.toml is an error now, not later
        capture_dir = self.root / CAPTURE_DIR
        capture_dir.mkdir(exist_ok=True)
        self._lock_file = open(capture_dir / LOCK_FILE, "w")  # noqa: SIM115 - held till stop
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise ConfigError(f"another `pcapwire capture` records into {self.root}; one "
                              "recorder per data directory (give it several inputs)") from None
        try:
            self._start(capture_dir, sources, listeners)
        except BaseException:
            self.stop()
            raise

    def _start(self, capture_dir: Path, sources: Sequence[Source],
               listeners: Sequence[PcapOverIpListener]) -> None:
        self._committer = committer = Committer(self.root, self.latency)
        committer.start()
        self.recovery = committer.call(lambda cat: recover(cat, self.root))
        seal_recovered(self.root, self.recovery)
        inputs = [s.name for s in sources] + [li.interface for li in listeners]
        self.run_id = committer.call(lambda cat: ledger.start_run(cat, inputs))
        self._status_file = StatusFile(capture_dir / STATUS_FILE)
        from pcapwire.store.maintenance import Maintenance  # it imports the holds, they us

        self._maintenance = Maintenance.of_store(self.root, self._on_retention)
        self._maintenance.start()
        for src in sources:
            self.add_source(src)
        for li in listeners:
            self._retired.append(SourceCounters(li.interface))  # shown before a connection
            thread = threading.Thread(target=self._accept_loop, args=(li,), daemon=True,
                                      name=f"pcapwire-capture-accept-{li.address}")
            self._listeners.append((li, thread))
            thread.start()
        self._write_status()
        self._status_thread = threading.Thread(target=self._status_loop, daemon=True,
                                               name="pcapwire-capture-status")
        self._status_thread.start()

    def add_source(self, src: Source, listener: PcapOverIpListener | None = None) -> None:
        committer = self._committer
        assert committer is not None
        source_id = committer.call(lambda cat: ledger.add_source(cat, self.run_id, src.name))
        info = SourceInfo(self.run_id, source_id, src.name, src.interface)
        counters = SourceCounters(src.interface)
        policy = "drop" if src.live_timestamps else self.config.backlog_policy
        backlog = Backlog(self.config.queue_bytes, policy)
        writer = SourceWriter(self.root, info, backlog, counters, committer, self.config)
        run = _Running(src, info, counters, backlog, writer, listener=listener)
        run.reader = threading.Thread(target=self._read_loop, args=(run,), daemon=True,
                                      name=f"pcapwire-capture-read-{src.name}")
        with self._lock:
            self._running.append(run)
        writer.start()
        run.reader.start()

    @property
    def inputs_ended(self) -> bool:
        """Every source has ended (EOF) and was sealed, and no listener waits for more."""
        with self._lock:
            running = list(self._running)
        return not self._listeners and all(not r.writer.is_alive() for r in running)

    def wait(self, stop: threading.Event, poll: float = 0.25) -> None:
        """Until ``stop`` is set, every input has ended, or the store's ``when_full``
        says stop (:attr:`stop_reason`)."""
        while not stop.wait(poll):
            if self.inputs_ended or self.stop_reason is not None:
                return

    def stop(self) -> None:
        """Stop reading; write, index, seal and commit everything received; release."""
        if self.stopped:
            return
        self.stopped = True
        if self._maintenance is not None:
            self._maintenance.stop()  # between two deletions at most
        self._stop_reading.set()
        if self.config.writer_gate is not None:
            self.config.writer_gate.set()
        for _li, thread in self._listeners:
            thread.join()
        with self._lock:
            running = list(self._running)
        for r in running:
            r.reader.join()
        for r in running:
            r.writer.join()
        self._stop_status.set()
        if self._status_thread is not None:
            self._status_thread.join()
        committer = self._committer
        if committer is not None:
            self._prune(final=True)
            committer.call_soon(lambda cat: ledger.stop_run(cat, self.run_id))
            committer.stop()
        self._write_status("stopped")
        if self._lock_file is not None:
            self._lock_file.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- counters ------------------------------------------------------------------------------
    def counters(self) -> list[SourceCounters]:
        with self._lock:
            return [r.counters for r in self._running] + list(self._retired)

    def totals(self) -> dict[str, dict[str, int]]:
        """Per interface: packets, bytes and drops by cause (no rates)."""
        return interface_totals(self.counters())

    @property
    def write_errors(self) -> int:
        own = self._committer.write_errors if self._committer is not None else 0
        return own + sum(c.write_errors for c in self.counters())

    def status(self, state: str = "running") -> dict[str, Any]:
        now = time.time()
        counters = self.counters()
        interfaces: dict[str, dict[str, Any]] = dict(interface_totals(counters))
        self._rates(interfaces, now)
        try:
            st = os.statvfs(self.root)
            free = st.f_bavail * st.f_frsize
        except OSError:
            free = 0
        committer = self._committer
        return {
            "pid": os.getpid(), "started": self.started, "updated": now, "state": state,
            "interfaces": interfaces, "segments": sum(c.segments for c in counters),
            "disk_bytes": committer.store_bytes if committer is not None else 0,
            "disk_free_bytes": free, "write_errors": self.write_errors,
            "commit_backlog": committer.backlog if committer is not None else 0,
            "listening": [li.address for li, _t in self._listeners],
            "latency_hist": self.latency.snapshot(), "retention": self.retention}

    def _on_retention(self, _root: Path, config: StoreConfig, report: Any) -> None:
        """A retention run of the maintenance thread: its alarm goes into the status;
        with ``when_full = "stop"`` an alarm stops the recorder."""
        before = self.retention or {}
        self.retention = {"alarm": report.alarm, "when_full": config.retention.when_full,
                          "deleted_segments": before.get("deleted_segments", 0)
                          + len(report.deleted)}
        if report.alarm and config.retention.when_full == "stop" and self.stop_reason is None:
            self.stop_reason = f"the store is full ({report.alarm_reason})"
            log.error("recorder stops: %s", self.stop_reason)

    # -- threads -------------------------------------------------------------------------------
    def _read_loop(self, run: _Running) -> None:
        src, counters, backlog = run.source, run.counters, run.backlog
        interval = self.config.commit_interval / 2
        next_stats = 0.0
        try:
            while not self._stop_reading.is_set():
                try:
                    batches = src.batches(self.config.read_timeout)
                except Exception as exc:
                    log.error("%s: reading failed, this input ends: %s", src.name, exc)
                    break
                if batches:
                    self._queue(run, batches)
                if time.monotonic() >= next_stats:
                    counters.add_stats(src.stats())
                    next_stats = time.monotonic() + interval
                if src.exhausted:
                    break
        finally:
            try:
                counters.add_stats(src.stats())
            except Exception as exc:  # the counters keep their last values
                log.error("%s: cannot read its counters: %s", src.name, exc)
            backlog.close()
            try:
                src.close()
            except OSError as exc:
                log.warning("%s: close: %s", src.name, exc)

    def _queue(self, run: _Running, batches: list[tuple]) -> None:
        live = run.source.live_timestamps
        now = time.time_ns()
        for batch in batches:
            meta = batch[4]
            count = len(meta) // META_SIZE
            if not count:
                continue
            first, last = (meta_ts(meta, 0), meta_ts(meta, count - 1)) if live else (now, now)
            if not run.backlog.put(Queued(batch, count, first, last), self._stop_reading):
                run.counters.queue_drops += count
                mono = time.monotonic()
                if mono - self._last_log >= LOG_EVERY:
                    self._last_log = mono
                    log.error("%s: the writer falls behind (disk or catalog too slow): %d "
                              "packets dropped from the backlog so far", run.info.name,
                              run.counters.queue_drops)

    def _accept_loop(self, listener: PcapOverIpListener) -> None:
        try:
            while not self._stop_reading.is_set():
                src = listener.accept(0.2)
                if src is None:
                    continue
                with self._lock:
                    active = sum(1 for r in self._running
                                 if r.listener is listener and r.writer.is_alive())
                if active >= MAX_CONNECTIONS:
                    log.error("%s: %d connections already; %s refused", listener.interface,
                              active, src.name)
                    src.close()
                    continue
                try:
                    self.add_source(src, listener)
                except Exception as exc:
                    log.error("%s: cannot record this connection: %s", src.name, exc)
                    src.close()
        finally:
            listener.close()

    def _status_loop(self) -> None:
        while not self._stop_status.wait(self.config.status_interval):
            self._prune()
            self._write_status()

    def _write_status(self, state: str = "running") -> None:
        doc = self.status(state)
        self.last_status = doc
        if self._status_file is not None:
            self._status_file.write(doc)
        if self.on_status is not None:
            self.on_status(doc)

    def _prune(self, final: bool = False) -> None:
        """Sources that have ended: their counters stay (in _retired), their catalog
        source is marked done."""
        with self._lock:
            done = [r for r in self._running if final or not r.writer.is_alive()]
            self._running = [r for r in self._running if r not in done]
            self._retired += [r.counters for r in done]
        committer = self._committer
        if committer is not None and done:
            ends = [(r.info.source_id, r.counters.packets) for r in done]
            committer.call_soon(lambda cat: _finish_sources(cat, ends))


def _finish_sources(catalog: Catalog, ends: list[tuple[int, int]]) -> None:
    for source_id, packets in ends:
        ledger.finish_source(catalog, source_id, packets)
