"""Ingest capture files into segments: pcap (µs/ns, either byte order), pcapng, gzip'd
either, and whole directories.

The per-packet work (parsing, dissection, flow indexing) is native; this module moves
8 MiB blocks from the input to the native reader and batches from the reader to segment
files, and commits checkpoints to the catalog. Damage in an input (truncated records,
absurd lengths, broken pcapng blocks) is reported with file and byte offset; every valid
packet before and after it is kept.

Resume: a source (identified by a fingerprint of its content) records how many of its
packets are in committed segments. Re-ingesting a finished source does nothing; an
interrupted one skips the packets already stored and continues.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcapwire import _native
from pcapwire.custody import actor_cli, events
from pcapwire.pcapformat import HEADER_LEN, sniff_header
from pcapwire.store.gunzip import GZIP_MAGIC, Gunzip
from pcapwire.store.limits import QUOTA, IngestLimits, LimitStop, Quota
from pcapwire.store.segments import SEGMENT_MAX_BYTES, SEGMENT_MAX_SPAN_NS, SegmentWriter

if TYPE_CHECKING:
    from pcapwire.store import Store

log = logging.getLogger(__name__)

READ_BLOCK = 8 * 2**20
FINGERPRINT_SPAN = 2**20


@dataclass
class FileReport:
    path: str
    packets: int = 0
    bytes: int = 0
    segments: int = 0
    skipped: bool = False  # already ingested
    resumed_from: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[tuple[int, str]] = field(default_factory=list)
    stopped: LimitStop | None = None  # a limit ended it early (pcapwire.store.limits)
    #: not a capture at all (missing, unreadable, empty, neither pcap nor pcapng): nothing
    #: of it was stored, and it is not remembered as ingested
    unusable: bool = False


@dataclass
class IngestReport:
    files: list[FileReport] = field(default_factory=list)
    flows_before: int = 0
    flows_after: int = 0
    seconds: float = 0.0

    @property
    def packets(self) -> int:
        return sum(f.packets for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def segments(self) -> int:
        return sum(f.segments for f in self.files)

    @property
    def errors(self) -> list[str]:
        return [f"{f.path}: byte {off}: {msg}" if off >= 0 else f"{f.path}: {msg}"
                for f in self.files for off, msg in f.errors]

    @property
    def unusable(self) -> list[str]:
        """Inputs that are not captures (an input error, not a partial result)."""
        return [f.path for f in self.files if f.unusable]

    @property
    def stopped(self) -> list[LimitStop]:
        return [f.stopped for f in self.files if f.stopped is not None]

    @property
    def ok(self) -> bool:
        return not any(f.errors for f in self.files)

    def summary(self) -> dict[str, Any]:
        """What ``pcapwire ingest`` prints (``--json``) and ``POST /api/v1/ingest`` answers
        (schema ``IngestSummary``): counts, rate, errors and warnings; ``stopped`` (each a
        :meth:`LimitStop.as_dict`) and ``unusable`` (inputs that are not captures) only
        when there are any."""
        out: dict[str, Any] = {
            "files": len(self.files),
            "already_ingested": sum(f.skipped for f in self.files),
            "packets": self.packets, "bytes": self.bytes,
            "flows_new": self.flows_after - self.flows_before,
            "flows_total": self.flows_after, "segments": self.segments,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(self.bytes / max(self.seconds, 1e-9) / 1e6, 1),
            "errors": self.errors,
            "warnings": [f"{f.path}: byte {o}: {m}" for f in self.files for o, m in f.warnings],
        }
        if self.stopped:  # only then: the API's IngestSummary schema has no such field
            out["stopped"] = [s.as_dict() for s in self.stopped]
        if self.unusable:  # likewise: the API answers these with a 400
            out["unusable"] = self.unusable
        return out


Progress = Callable[[str, int, int], None]  # (path, bytes done, bytes total)


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> Iterator[tuple[Path, str | None]]:
    """Files in the given order; directories recursively in name order. Yields
    ``(path, error)``; error is set for a path that cannot be read."""
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            children: list[Path] = []
            for root, dirs, files in os.walk(p, onerror=None):
                dirs.sort()
                children += [Path(root) / f for f in sorted(files)]
            for child in children:
                yield from expand_paths([child])
        elif not p.exists():
            yield p, "no such file"
        elif not p.is_file():
            yield p, "not a regular file"
        elif not os.access(p, os.R_OK):
            yield p, "permission denied (not readable)"
        else:
            yield p, None


def fingerprint(path: Path) -> str:
    """Content identity of an input without reading all of it: size + first and last MiB."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(FINGERPRINT_SPAN))
        if size > 2 * FINGERPRINT_SPAN:
            f.seek(size - FINGERPRINT_SPAN)
        h.update(f.read(FINGERPRINT_SPAN))
    return h.hexdigest()


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def _blocks(path: Path, rep: FileReport, limits: IngestLimits | None = None
            ) -> Generator[tuple[memoryview, int], None, None]:
    """The input in blocks of READ_BLOCK bytes, with the input bytes consumed so far.

    Plain files are mapped and fed as slices of the mapping (no kernel→user copy); gzip
    input is decompressed in small steps (:mod:`.gunzip`) into one reused buffer. Damage
    in a gzip stream ends the input with an error in ``rep`` at its decompressed offset;
    every byte decompressed before it is handed on first. A decompression limit ends it
    likewise, with ``rep.stopped`` set.
    """
    if _is_gzip(path):
        with open(path, "rb") as f:
            gz = Gunzip(f, limits)
            for block in gz.blocks(READ_BLOCK):
                yield block, gz.consumed
        if gz.damage is not None:
            rep.errors.append((gz.out, f"gzip stream broken after {gz.out} decompressed "
                                       f"bytes: {gz.damage}; the {gz.out} bytes before it "
                                       "were read"))
        if gz.stopped is not None:
            rep.stopped = LimitStop(gz.stopped[0], gz.stopped[1], str(path), gz.out,
                                    gz.consumed, decompressed=True)
        return
    with open(path, "rb", buffering=0) as f:
        # Not closed explicitly: the caller may still hold the last slice; the
        # mapping goes when the last view of it does.
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    mm.madvise(mmap.MADV_SEQUENTIAL)
    view = memoryview(mm)
    for start in range(0, len(mm), READ_BLOCK):
        yield view[start:start + READ_BLOCK], min(start + READ_BLOCK, len(mm))
        # Parsed (the reader copies what it keeps): unmap, so the process does not
        # grow to the file's size (the pages stay in the page cache).
        mm.madvise(mmap.MADV_DONTNEED, start, min(READ_BLOCK, len(mm) - start))


class _QuotaReached(Exception):
    """The next batch would take the store over its quota."""

    def __init__(self, stop: LimitStop) -> None:
        super().__init__(stop.limit_name)
        self.stop = stop


class _NotInPlace(Exception):
    """This input cannot be indexed where it lies (see Ingestor._index_in_place)."""


#: Input bytes whose flows an in-place ingest merges into the catalog as one part.
IN_PLACE_PART = 128 * 2**20
# Merges the flow parts of an in-place ingest while the ingest thread reads on.
_MERGER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pcapwire-flow-merge")
# Hashes the blocks of an in-place ingest (for its seal entry) while the reader parses them.
_HASHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pcapwire-in-place-hash")


def _in_place_candidate(path: Path, size: int) -> bool:
    """A little-endian classic pcap 2.4 whose offsets fit the index (u32)."""
    with open(path, "rb") as f:
        head = sniff_header(f.read(HEADER_LEN))
    return (head is not None and head.order == "<" and head.version == (2, 4)
            and size < 2**32)


class Ingestor:
    """Ingests files into a store; one instance per ``ingest`` call."""

    def __init__(self, store: Store, segment_max_bytes: int = SEGMENT_MAX_BYTES,
                 segment_max_span_ns: int = SEGMENT_MAX_SPAN_NS,
                 progress: Progress | None = None,
                 on_checkpoint: Callable[[int], None] | None = None,
                 in_place: bool = False, limits: IngestLimits | None = None,
                 actor: str | None = None) -> None:
        self.store = store
        self.actor = actor or actor_cli()  # who the custody log's seal entries name
        self.in_place = in_place
        self.segment_max_bytes = segment_max_bytes
        self.segment_max_span_ns = segment_max_span_ns
        self.progress = progress
        self.on_checkpoint = on_checkpoint
        self.limits = limits or IngestLimits()
        self.quota: Quota | None = None

    def ingest(self, paths: Iterable[str | os.PathLike[str]]) -> IngestReport:
        started = time.monotonic()
        paths = list(paths)
        report = IngestReport(flows_before=self.store.catalog.stats()["flows"])
        if self.limits.quota_bytes:
            inputs = [Path(p) for p in paths if Path(p).is_file()]
            self.quota = Quota(self.limits.quota_bytes, self.store.root, inputs)
        for path, error in expand_paths(paths):
            if error is not None:
                report.files.append(FileReport(str(path), errors=[(-1, error)], unusable=True))
                continue
            try:
                report.files.append(self.ingest_file(path))
            except OSError as exc:
                report.files.append(FileReport(str(path), errors=[(-1, f"cannot read: {exc}")],
                                               unusable=True))
            stop = report.files[-1].stopped
            if stop is not None and stop.limit_name == QUOTA:
                break  # the store is full: no later input fits either
        report.flows_after = self.store.catalog.stats()["flows"]
        report.seconds = time.monotonic() - started
        return report

    def ingest_file(self, path: Path) -> FileReport:
        catalog = self.store.catalog
        rep = FileReport(str(path))
        size = path.stat().st_size
        if size == 0:
            rep.errors.append((0, "empty file (0 bytes): not a pcap or pcapng capture"))
            rep.unusable = True
            return rep
        fp = fingerprint(path)
        src = catalog.source(fp)
        if src is not None and src["state"] == "done":
            rep.skipped = True
            log.info("%s: already ingested (as %s)", path, src["path"])
            return rep
        if src is None:
            source_id, skip = catalog.add_source(fp, str(path), size), 0
        else:
            source_id, skip = src["id"], src["packets_done"]
        rep.resumed_from = skip
        if self.in_place and skip == 0 and _in_place_candidate(path, size):
            try:
                return self._index_in_place(path, size, source_id)
            except _NotInPlace as why:
                log.info("%s: indexed by copying (%s)", path, why)
        # Batches no bigger than a quarter segment, so a segment closes near its limit.
        batch_max = max(1, min(READ_BLOCK, self.segment_max_bytes // 4))
        quota = self.quota
        if quota is not None:
            batch_max = quota.batch_bytes(batch_max)
        reader = _native.Reader(str(path), skip_packets=skip, max_batch_bytes=batch_max)
        writers: dict[tuple[int, int, int], SegmentWriter] = {}
        gzipped = _is_gzip(path)

        def checkpoint() -> None:
            closed = [w.close() for w in writers.values()]
            writers.clear()
            ids = catalog.commit_checkpoint(source_id, skip + rep.packets, closed)
            self._sealed([(row, i) for (row, _flows), i in zip(closed, ids, strict=True)],
                         path)
            rep.segments += len(closed)
            if quota is not None:
                quota.measure()
            if self.on_checkpoint is not None:
                self.on_checkpoint(rep.segments)

        def make_room(nbytes: int, packets: int, off: int) -> None:
            """Raise _QuotaReached unless the quota has room for a batch."""
            assert quota is not None
            if not quota.fits(nbytes, packets) and (writers or quota.pending):
                checkpoint()  # the estimate is pessimistic: measure what is really used
            if not quota.fits(nbytes, packets):
                raise _QuotaReached(LimitStop(QUOTA, quota.limit, str(path), off,
                                              decompressed=gzipped))
            quota.charge(nbytes, packets)

        def add(batches: list[tuple]) -> None:
            for linktype, snaplen, tsprec, records, meta, off in batches:
                if not records:
                    continue
                if quota is not None:
                    make_room(len(records), len(meta) // _native.META_SIZE, off)
                key = (linktype, snaplen, tsprec)
                w = writers.get(key)
                if w is None:
                    w = writers[key] = self._new_writer(source_id, *key)
                count = w.add(records, meta)
                rep.packets += count  # written, not just parsed: checkpoints count these
                rep.bytes += len(records) - 16 * count
                if (w.size >= self.segment_max_bytes
                        or (w.last_ns or 0) - (w.first_ns or 0) > self.segment_max_span_ns):
                    checkpoint()

        blocks = _blocks(path, rep, self.limits)
        try:
            try:
                for data, done in blocks:
                    add(reader.feed(data))
                    if self.progress is not None:
                        self.progress(str(path), min(done, size), size)
                held = list(reader.errors)
                add(reader.finish())
                # Stopped by a decompression limit, the record the limit cut is not damage.
                errors = held if rep.stopped is not None else list(reader.errors)
            except _QuotaReached as full:
                rep.stopped, errors = full.stop, list(reader.errors)
            checkpoint()
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        finally:
            blocks.close()
        rep.errors += errors
        rep.warnings += list(reader.warnings)
        if rep.stopped is not None:
            self._stopped(rep)
        elif reader.format is None:  # not a capture: forget it, so a retry is not "skipped"
            rep.unusable = True
            catalog.forget_source(source_id)
        else:
            catalog.finish_source(source_id, rep.errors)
        return rep

    def _stopped(self, rep: FileReport) -> None:
        """Record what a limit left stored; the source stays unfinished (resumable)."""
        stop = rep.stopped
        assert stop is not None
        stop.packets_kept, stop.bytes_kept = rep.packets, rep.bytes
        stop.segments_kept, stop.packets_before = rep.segments, rep.resumed_from
        rep.errors.append((stop.offset, stop.where()))
        log.info("%s: %s", rep.path, stop.where())

    def _index_in_place(self, path: Path, size: int, source_id: int) -> FileReport:
        """Index a clean little-endian classic pcap where it lies: one segment that is the
        file itself (absolute path), no bytes copied. Anything the reader would change or
        report (damage, several link types) raises _NotInPlace, nothing is kept, and the
        caller ingests by copying instead.

        The flows of every IN_PLACE_PART bytes of input are merged into the catalog by
        another thread while this one reads on (SQLite and the native reader both release
        the GIL), all in one transaction that commits only when the file is done."""
        rep = FileReport(str(path), segments=1)
        catalog = self.store.catalog
        reader = _native.Reader(str(path), max_batch_bytes=READ_BLOCK)
        indexer = _native.SegmentIndexer()
        key: tuple[int, int, int] | None = None
        expect, first_ns, last_ns, part_start = 24, None, None, 0

        def add(batches: list[tuple]) -> None:
            nonlocal key, expect, first_ns, last_ns
            if reader.errors:
                raise _NotInPlace(f"damage at byte {reader.errors[0][0]}")
            for linktype, snaplen, tsprec, records, meta, off in batches:
                if not records:
                    continue
                if key not in (None, (linktype, snaplen, tsprec)):
                    raise _NotInPlace("link type or snaplen changes")
                if off != expect:
                    raise _NotInPlace(f"records are not the file's bytes at {off}")
                key, expect = (linktype, snaplen, tsprec), off + len(records)
                count, first, last = indexer.add(meta, off)
                first_ns = first if first_ns is None else min(first_ns, first)
                last_ns = last if last_ns is None else max(last_ns, last)
                rep.packets += count
                rep.bytes += len(records) - 16 * count

        segment_id = catalog.begin_segment(source_id, str(path.resolve()))
        merging: Future[None] | None = None
        sha = hashlib.sha256()  # the file's, for its seal entry: hashed as it is read

        def merge_part() -> None:
            nonlocal merging
            if merging is not None:
                merging.result()  # one part in flight: the connection is used by one thread
            merging = _MERGER.submit(catalog.add_flows, segment_id, indexer.finish())

        try:
            for data, done in _blocks(path, rep):
                hashing = _HASHER.submit(sha.update, data)
                try:
                    add(reader.feed(data))
                finally:
                    hashing.result()  # before the block is unmapped
                if done - part_start >= IN_PLACE_PART:
                    merge_part()
                    part_start = done
                if self.progress is not None:
                    self.progress(str(path), done, size)
            add(reader.finish())
            if key is None or expect != size:
                raise _NotInPlace("no packets" if key is None
                                  else f"trailing bytes at {expect}")
            merge_part()
            assert merging is not None
            merging.result()
            row = {"linktype": key[0], "snaplen": key[1], "tsprec": key[2],
                   "first_ns": first_ns or 0, "last_ns": last_ns or 0,
                   "packets": rep.packets, "size": size}
            catalog.end_segment(source_id, segment_id, row, rep.packets)
        except BaseException:
            if merging is not None:
                with contextlib.suppress(BaseException):
                    merging.result()
            catalog.abort()
            raise
        rep.warnings += list(reader.warnings)
        catalog.finish_source(source_id, rep.errors)
        self._sealed([({**row, "path": str(path.resolve()), "sha256": sha.hexdigest()},
                       segment_id)], path)
        return rep

    def _sealed(self, rows: list[tuple[dict[str, Any], int]], source: Path) -> None:
        """Segments committed to the catalog (rows with ``sha256``, and their ids): one
        seal entry each in the store's custody log. A crash between the commit and this
        leaves a segment no seal names (``custody verify`` lists it as unverified)."""
        events.sealed(self.store.root, [
            events.segment_object(row["path"], row["sha256"], row["size"], seg_id)
            for row, seg_id in rows], self.actor, {"source": str(source)})

    def _new_writer(self, source_id: int, linktype: int, snaplen: int, tsprec: int
                    ) -> SegmentWriter:
        name = f"{source_id:06d}/{time.time_ns():x}-lt{linktype}-{tsprec}.pcap"
        rel = f"segments/{name}"
        return SegmentWriter(self.store.root / rel, rel, linktype, snaplen, tsprec)
