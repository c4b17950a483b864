"""Completing what a recorder that died (``kill -9``, a crash, power loss) left open.

The recorder calls :func:`recover` when it starts, holding the capture lock (so no other
recorder writes these files), before it writes anything:

* a segment whose row is still ``open``: its file (``<path>.live``, or ``<path>`` if the
  rename happened) holds the committed records, possibly more written after the last
  commit, and possibly the start of a record the crash cut. The records after the
  committed size are walked header by header up to the last complete one, the file is
  truncated there, those records are indexed and committed (row, flows), and the
  segment is sealed (state ``recovered``) and renamed into place. Nothing is counted
  twice: only the bytes after the committed size are indexed.
* a ``.live`` file with no row (the recorder died before its first commit): indexed
  whole the same way and added to the catalog.
* a segment whose row is sealed but whose file is still ``.live`` (died between the
  commit and the rename): renamed.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from pcapwire import _native
from pcapwire.capture import ledger
from pcapwire.custody import actor_cli, events, file_object
from pcapwire.pcapformat import HEADER_LEN, sniff_header
from pcapwire.store.catalog import Catalog
from pcapwire.store.segments import LIVE_SUFFIX

log = logging.getLogger(__name__)

CAPTURE_DIR = "segments/capture"
MAX_RECORD = 256 * 2**20  # no link type's maximum caplen is larger (libpcap: DBUS 128 MiB)
_RECORD = struct.Struct("<IIII")
FEED_BYTES = 8 * 2**20


@dataclass
class RecoveryReport:
    segments: list[str] = field(default_factory=list)  # catalog paths completed
    packets: int = 0  # records found after the committed sizes (written, never committed)
    truncated_bytes: int = 0  # the cut record(s) at the ends
    problems: list[str] = field(default_factory=list)


def recover(catalog: Catalog, root: Path) -> RecoveryReport:
    report = RecoveryReport()
    known = catalog.segment_paths()
    for seg_id, rel, _state in ledger.open_segments(catalog):
        _complete(catalog, root, seg_id, rel, report)
    capture_dir = root / CAPTURE_DIR
    if capture_dir.is_dir():
        for live in sorted(capture_dir.rglob("*.pcap" + LIVE_SUFFIX)):
            final = live.with_name(live.name[:-len(LIVE_SUFFIX)])
            rel = str(final.relative_to(root))
            if rel in known:  # sealed, not yet renamed (open ones are complete by now)
                if live.exists():
                    os.replace(live, final)
                continue
            _adopt(catalog, root, live, rel, report)
    for line in report.problems:
        log.error("recovery: %s", line)
    if report.segments:
        log.warning("recovered %d segment(s) a previous recorder left open: %d packets "
                    "written after its last commit kept, %d bytes of a cut record removed",
                    len(report.segments), report.packets, report.truncated_bytes)
    return report


def seal_recovered(root: Path, report: RecoveryReport) -> None:
    """The seal entries of the segments recovery completed (their files hashed now: the
    writer that hashed them as it wrote died with its hash)."""
    objects = []
    for rel in report.segments:
        try:
            found = file_object("segment", root / rel, root)
        except OSError as exc:
            report.problems.append(f"{rel}: cannot hash it for the custody log: {exc}")
            continue
        objects.append(events.segment_object(rel, found["sha256"], found["size"]))
    events.sealed(root, objects, actor_cli(), {"recovered": True})


def _complete(catalog: Catalog, root: Path, seg_id: int, rel: str,
              report: RecoveryReport) -> None:
    final = root / rel
    live = final.with_name(final.name + LIVE_SUFFIX)
    path = live if live.exists() else final
    row = catalog.db.execute("SELECT size, packets, first_ns, last_ns FROM segments "
                             "WHERE id=?", (seg_id,)).fetchone()
    committed, packets, first_ns, last_ns = (int(v) for v in row)
    if not path.exists():
        report.problems.append(f"{rel}: its file is gone; its {packets} committed packets "
                               "cannot be read (state 'missing')")
        _set_state(catalog, seg_id, "missing")
        return
    size = path.stat().st_size
    if size < committed:
        report.problems.append(f"{rel}: the file has {size} bytes, the catalog committed "
                               f"{committed} (lost by the file system?); kept as it is")
        _set_state(catalog, seg_id, "damaged")
        return
    indexed = _index_tail(path, committed)
    if indexed is None:
        report.problems.append(f"{rel}: not a pcap file; left open")
        return
    end, count, flows, first, last = indexed
    _truncate(path, end, report)
    db = catalog.db
    db.execute("BEGIN IMMEDIATE")
    try:
        if count:
            db.execute("UPDATE segments SET size=?, packets=?, first_ns=?, last_ns=? WHERE id=?",
                       (end, packets + count, min(first, first_ns) if packets else first,
                        max(last, last_ns), seg_id))
            catalog.add_flows(seg_id, flows)
        _set_state(catalog, seg_id, "recovered")
        db.execute("COMMIT")
    except BaseException:
        catalog.abort()
        raise
    if path == live:
        os.replace(live, final)
    report.segments.append(rel)
    report.packets += count


def _adopt(catalog: Catalog, root: Path, live: Path, rel: str, report: RecoveryReport) -> None:
    """A .live file the catalog never heard of: index it whole and add it."""
    with open(live, "rb") as f:
        head = sniff_header(f.read(HEADER_LEN))
    if head is None or head.order != "<":
        report.problems.append(f"{rel}{LIVE_SUFFIX}: not a segment (no pcap header); left "
                               "alone")
        return
    indexed = _index_tail(live, HEADER_LEN)
    assert indexed is not None
    end, count, flows, first, last = indexed
    _truncate(live, end, report)
    if count == 0:  # a header and nothing else: no packet to keep
        live.unlink()
        return
    source_id = int(live.parent.name.split("-", 1)[0]) if live.parent.name[:6].isdigit() else 0
    run = ledger.source_run(catalog, source_id)
    if run is None:  # the source row is gone too: a recovery source holds it
        source_id = ledger.add_source(catalog, 0, f"recovered:{rel}:{time.time_ns()}")
        run = (0, rel)
    commit = ledger.SegmentCommit(run[0], source_id, _interface(run[1]), rel, head.linktype,
                                  head.snaplen, head.tsprec, live.stat().st_mtime, first,
                                  last, count, end, flows)
    ids: dict[str, int] = {}
    ledger.apply(catalog, [commit], ids)
    _set_state(catalog, ids[rel], "recovered")
    os.replace(live, root / rel)
    report.segments.append(rel)
    report.packets += count


def _interface(source_name: str) -> str:
    """A source's interface from its name (eth0#1 -> eth0; a listener's connection ->
    the listener)."""
    return source_name.split("<-", 1)[0].split("#", 1)[0]


def _set_state(catalog: Catalog, seg_id: int, state: str) -> None:
    catalog.db.execute("UPDATE capture_segments SET state=?, sealed=? WHERE segment_id=?",
                       (state, time.time(), seg_id))


def _truncate(path: Path, end: int, report: RecoveryReport) -> None:
    size = path.stat().st_size
    if size > end:
        os.truncate(path, end)
        report.truncated_bytes += size - end


def _index_tail(path: Path, start: int) -> tuple[int, int, list[tuple], int, int] | None:
    """Index the whole records of a segment file from byte ``start``: (end of the last
    whole record, packets, flows, first_ns, last_ns); None if it is no pcap file."""
    with open(path, "rb") as f:
        header = f.read(HEADER_LEN)
        if sniff_header(header) is None:
            return None
        size = os.fstat(f.fileno()).st_size
        if size <= start:
            return start, 0, [], 0, 0
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            end = start
            while end + 16 <= size:
                caplen = _RECORD.unpack_from(mm, end)[2]
                if caplen > MAX_RECORD or end + 16 + caplen > size:
                    break
                end += 16 + caplen
            if end == start:
                return start, 0, [], 0, 0
            reader = _native.Reader(str(path))
            indexer = _native.SegmentIndexer()
            count, first, last = 0, 0, 0

            def index(batches: list[tuple]) -> None:
                nonlocal count, first, last
                for _lt, _snap, _prec, _records, meta, off in batches:
                    n, lo, hi = indexer.add(meta, start + off - HEADER_LEN)
                    if n:
                        first = lo if not count else min(first, lo)
                        last = max(last, hi)
                        count += n

            index(reader.feed(header))
            for at in range(start, end, FEED_BYTES):
                index(reader.feed(mm[at:min(end, at + FEED_BYTES)]))
            index(reader.finish())
            return end, count, indexer.finish(), first, last
