"""A stand-in for the recorder in query tests: it keeps the recorder's contract with the
catalog (see :mod:`pcapwire.query.follow`) without a network: one live segment, written
record by record, committed in parts (the row with its current size, packets and times;
the part's flows merged, their offsets appended), through a catalog connection of its
own, as another process would. The segment file is always a valid pcap up to the
committed size; bytes written after the last commit may be an incomplete record."""

from __future__ import annotations

import os
import queue
import select
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path

from pcapwire import _native
from pcapwire.query.follow import Follow
from pcapwire.query.output import StreamFormatter
from pcapwire.records import PcapChunk
from pcapwire.store.catalog import Catalog
from pcapwire.store.segments import LIVE_SUFFIX

META = struct.Struct(_native.META_STRUCT)
WAIT_S = 30  # bound of every wait for a follow's output


def packets(path: Path | str) -> list[tuple[bytes, bytes, tuple[int, int, int]]]:
    """Each packet of a capture as (record bytes, its meta with rec_off 0, (linktype,
    snaplen, tsprec)), read by the native reader as ingest reads it."""
    reader = _native.Reader(str(path))
    data = Path(path).read_bytes()
    out = []
    for linktype, snaplen, tsprec, records, meta, _off in reader.feed(data) + reader.finish():
        for i in range(len(meta) // META.size):
            m = list(META.unpack_from(meta, i * META.size))
            at, caplen = m[1], m[2]
            m[1] = 0
            out.append((records[at:at + 16 + caplen], META.pack(*m),
                        (linktype, snaplen, tsprec)))
    return out


class FakeRecorder:
    """One recorder stream writing segment ``name`` (under ``<store>/segments/live/``)."""

    def __init__(self, store_root: Path, name: str, linktype: int = 1,
                 snaplen: int = 262144, tsprec: int = 6) -> None:
        store_root.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(store_root / "catalog.sqlite")
        self.interface = name
        self.rel = f"segments/live/{name}/{time.time_ns():x}.pcap"
        self.final = store_root / self.rel  # the row's path; written as <path>.live
        self.path = self.final.with_name(self.final.name + LIVE_SUFFIX)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.kind = (linktype, snaplen, tsprec)
        self.source_id = self.catalog.add_source(f"fake-recorder:{self.rel}", self.rel, 0)
        self.run_id = int(self.catalog.db.execute(
            "INSERT INTO capture_runs (pid, started, inputs) VALUES (?,?,?)",
            (0, time.time(), f'["{name}"]')).lastrowid or 0)
        self.file = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        magic = 0xA1B2C3D4 if tsprec == 6 else 0xA1B23C4D
        self.file.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
        self.size = self.committed = 24
        self.packets = 0
        self.first_ns: int | None = None
        self.last_ns = 0
        self.segment_id: int | None = None
        self.partial = 0  # bytes of the next record already written
        self.indexer = _native.SegmentIndexer()

    def write(self, pkts: list[tuple[bytes, bytes, tuple[int, int, int]]]) -> None:
        """Append packets (not yet visible: see :meth:`commit`)."""
        for rec, meta, kind in pkts:
            assert kind == self.kind, (kind, self.kind)
            count, first, last = self.indexer.add(meta, self.size)
            self.file.write(rec[self.partial:])
            self.partial = 0
            self.size += len(rec)
            self.packets += count
            self.first_ns = first if self.first_ns is None else min(self.first_ns, first)
            self.last_ns = max(self.last_ns, last)

    def write_partial(self, rec: bytes) -> None:
        """The first half of record ``rec``, which the next :meth:`write` must complete."""
        self.partial = len(rec) // 2
        self.file.write(rec[:self.partial])

    def commit(self) -> None:
        db = self.catalog.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = (*self.kind, self.first_ns or 0, self.last_ns, self.packets, self.size)
            if self.segment_id is None:
                cur = db.execute(
                    "INSERT INTO segments (path, linktype, snaplen, tsprec, first_ns, "
                    "last_ns, packets, size, source_id) VALUES (?,?,?,?,?,?,?,?,?)",
                    (self.rel, *row, self.source_id))
                self.segment_id = int(cur.lastrowid or 0)
                db.execute("INSERT INTO capture_segments (segment_id, run_id, interface, "
                           "state, opened) VALUES (?,?,?,'open',?)",
                           (self.segment_id, self.run_id, self.interface, time.time()))
            else:
                db.execute("UPDATE segments SET linktype=?, snaplen=?, tsprec=?, first_ns=?, "
                           "last_ns=?, packets=?, size=? WHERE id=?", (*row, self.segment_id))
            self.catalog._merge_flows(self.segment_id, self.indexer.finish())
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.committed = self.size

    def seal(self) -> None:
        """Commit, close the file and rename it to the row's path."""
        self.commit()
        self.file.close()
        self.path.rename(self.final)
        self.catalog.db.execute("UPDATE capture_segments SET state='sealed', sealed=? "
                                "WHERE segment_id=?", (time.time(), self.segment_id))

    def close(self) -> None:
        self.file.close()
        self.catalog.close()


class Collector:
    """Runs a Follow in a thread; chunks land in a queue."""

    def __init__(self, follow: Follow) -> None:
        self.follow = follow
        self.chunks: queue.Queue[PcapChunk | BaseException | None] = queue.Queue()
        self.got: list[PcapChunk] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for chunk in self.follow.chunks():
                self.chunks.put(chunk)
            self.chunks.put(None)
        except BaseException as exc:
            self.chunks.put(exc)

    def take(self) -> PcapChunk | BaseException | None:
        item = self.chunks.get(timeout=WAIT_S)
        if isinstance(item, PcapChunk):
            self.got.append(item)
        return item

    def until_packets(self, n: int) -> None:
        """Until ``n`` packets (and at least one chunk: the header) have come."""
        while not self.got or sum(c.packets for c in self.got) < n:
            item = self.take()
            assert isinstance(item, PcapChunk), item

    def finish(self) -> BaseException | None:
        self.follow.stop()
        while (item := self.take()) is not None:
            if isinstance(item, BaseException):
                return item
        self.thread.join(WAIT_S)
        return None

    def capture(self) -> bytes:
        fmt = StreamFormatter(self.follow.snaplens)
        return fmt.header() + b"".join(bytes(fmt.body(c)) for c in self.got)


#: a child started with this in its environment prints every thread's stack on SIGABRT
FAULTHANDLER_ENV = {**os.environ, "PYTHONFAULTHANDLER": "1"}


def communicate_or_dump(proc: subprocess.Popen, timeout: float = WAIT_S
                        ) -> tuple[bytes, bytes]:
    """``proc.communicate(timeout)``; a child that has not ended by then is aborted and the
    test fails with its threads' stacks (started with :data:`FAULTHANDLER_ENV`)."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _out, err = proc.communicate()
        raise AssertionError(f"the child had not ended after {timeout}s; its stacks:\n"
                             f"{err.decode(errors='replace')}") from None


def read_until(proc: subprocess.Popen, have: bytearray, size: int) -> None:
    """Read the child's stdout until ``have`` holds ``size`` bytes (bounded wait)."""
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + WAIT_S
    while len(have) < size:
        left = deadline - time.monotonic()
        assert left > 0, f"{len(have)} of {size} bytes after {WAIT_S}s: " \
            f"{proc.stderr.read1() if proc.poll() is not None else ''!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            data = os.read(fd, 1 << 20)
            assert data, f"EOF after {len(have)} of {size} bytes; rc {proc.wait()}: " \
                f"{proc.stderr.read()!r}"
            have += data
