"""Compressed segments: sealed segments stored as zstd seekable files, by policy, in the
background.

A segment ``segments/…/x.pcap`` is stored as ``x.pcap.zst`` (:mod:`.zstdseek`): zstd frames
of about ``frame_bytes`` of the pcap each, cut on record boundaries (the first starts with
the 24-byte file header), so a query decompresses only the frames its packets are in
(:mod:`.reader`) and ``zstd -d x.pcap.zst -o x.pcap`` gives the original file byte for
byte. The catalog row keeps its path (``…/x.pcap``); the table ``segment_storage`` (made
here, in the catalog database) says which segments are compressed, their stored size and
the SHA-256 of both forms.

Only sealed segments are compressed: never one the recorder still writes (``open`` in
``capture_segments``), nor a file indexed in place (an absolute catalog path: the user's
own file). Policies (``[compression]`` of ``store.toml``): ``never``, ``on-seal`` (every
sealed segment, as soon as the maintenance loop sees it), ``after-age`` (those whose last
packet is older than ``after_age``).

Crash safety, in this order: write ``x.pcap.zst.part`` and fsync it; read it back from
disk, decompress every frame and compare the SHA-256 and size with the original's; rename
it to ``x.pcap.zst``; commit the ``segment_storage`` row; append ``segment.compress`` to
the store's custody log; delete ``x.pcap``. So the original exists until its compressed
form is complete, verified and committed. :func:`recover` (run before each round) finishes
or undoes what a crash left: a ``.zst.part`` is deleted; a ``.zst`` with its row while the
``.pcap`` is still there: the custody entry is appended if it is missing, then the
``.pcap`` goes; a ``.zst`` without a row beside the ``.pcap``: the ``.zst`` goes. One
compressor works on a store at a time (``compress.lock``).

Work runs in a thread of its own at the lowest CPU priority (nice 19) and, where the
kernel offers it, the idle I/O class, so capture and queries beside it are not slowed.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import logging
import mmap
import os
import platform
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcapwire import _native, custody
from pcapwire.errors import ConfigError
from pcapwire.pcapformat import HEADER_LEN
from pcapwire.store.catalog import Catalog, Segment
from pcapwire.store.config import CompressionPolicy
from pcapwire.store.reader import compressed_path
from pcapwire.store.segments import ZSTD_SUFFIX
from pcapwire.store.zstdseek import SeekableReader, SeekableWriter, StoredSegmentError

log = logging.getLogger(__name__)

CODEC = "zstd-seekable"
LOCK_FILE = "compress.lock"
ACTOR = "system:compressor"  # who compresses in the background (custody log)
#: One call of :func:`compress_due` stops starting segments after this long, so the
#: maintenance loop that calls it (retention) gets its turn.
ROUND_BUDGET_S = 60.0
NICE = 19
#: Test hook: with this environment variable set to a stage name, compression stops
#: there (prints ``compression paused at STAGE``, then waits for ever) so a test can
#: kill -9 the process at that point.
PAUSE_ENV = "PCAPWIRE_TEST_COMPRESS_PAUSE"
STAGES = ("written", "renamed", "committed")
_SCAN_ALL = 0x7FFFFFFF  # a snaplen that cuts nothing: scan output = input records
_IOPRIO_SET = {"x86_64": 251, "aarch64": 30}  # syscall numbers
_IOPRIO_IDLE = 3 << 13  # IOPRIO_CLASS_IDLE, level 0
_READ_BLOCK = 2**20

TABLE = """
CREATE TABLE IF NOT EXISTS segment_storage (
  segment_id INTEGER PRIMARY KEY, path TEXT NOT NULL, codec TEXT NOT NULL,
  plain_size INTEGER NOT NULL, stored_size INTEGER NOT NULL, frames INTEGER NOT NULL,
  frame_bytes INTEGER NOT NULL, level INTEGER NOT NULL, sha256_plain TEXT NOT NULL,
  sha256_stored TEXT NOT NULL, compressed_at REAL NOT NULL)
"""
# A row says: segment ``segment_id`` (whose catalog path is ``path``; a row whose segment
# is gone or has another path is stale and ignored, then removed by recover()) is stored
# as ``<path>.zst``, verified against the original's SHA-256.
_SEGMENT_COLUMNS = "s.id, s.path, s.linktype, s.snaplen, s.tsprec, s.first_ns, s.last_ns, " \
                   "s.packets, s.size"
_ELIGIBLE = ("FROM segments s LEFT JOIN capture_segments c ON c.segment_id = s.id "
             "LEFT JOIN segment_storage st ON st.segment_id = s.id AND st.path = s.path "
             "WHERE st.segment_id IS NULL AND substr(s.path, 1, 1) != '/' "
             "AND (c.state IS NULL OR c.state IN ('sealed', 'recovered'))")


@dataclass(frozen=True)
class Compressed:
    segment_id: int
    path: str
    plain_size: int
    stored_size: int
    frames: int
    sha256_plain: str
    sha256_stored: str
    cpu_seconds: float


# -- the table and its readers (disk accounting) -------------------------------------------
@contextmanager
def open_db(root: Path) -> Iterator[sqlite3.Connection]:
    """A connection of the compressor's own to the store's catalog, with its table."""
    db = sqlite3.connect(root / "catalog.sqlite", isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout=30000")
        db.execute(TABLE)
        yield db
    finally:
        db.close()


def _has_table(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                      "name='segment_storage'").fetchone() is not None


def storage_rows(db: sqlite3.Connection) -> dict[int, dict[str, Any]]:
    """segment id -> its ``segment_storage`` row, for the compressed segments that exist."""
    if not _has_table(db):
        return {}
    cur = db.execute("SELECT st.* FROM segment_storage st JOIN segments s ON "
                     "s.id = st.segment_id AND s.path = st.path")
    names = [d[0] for d in cur.description]
    return {r[0]: dict(zip(names, r, strict=True)) for r in cur}


def stored_sizes(catalog: Catalog, ids: Iterable[int] | None = None) -> dict[int, int]:
    """Bytes each segment takes as stored: its compressed file's size when compressed,
    else its catalog size (``ids``: only these). Files indexed in place count 0 (they are
    the user's)."""
    db = catalog.db
    join = ("LEFT JOIN segment_storage st ON st.segment_id = s.id AND st.path = s.path"
            if _has_table(db) else "")
    stored = "st.stored_size" if join else "NULL"
    sql = (f"SELECT s.id, CASE WHEN substr(s.path, 1, 1) = '/' THEN 0 ELSE "
           f"coalesce({stored}, s.size) END FROM segments s {join}")
    args: list[int] = []
    if ids is not None:
        id_list = sorted(set(ids))
        sql += f" WHERE s.id IN ({','.join('?' * len(id_list))})"
        args = id_list
    return {int(i): int(n) for i, n in db.execute(sql, args)}


def stored_total(catalog: Catalog) -> int:
    """Bytes all segments take as stored (see :func:`stored_sizes`)."""
    return sum(stored_sizes(catalog).values())


# -- compressing one segment ---------------------------------------------------------------
@contextmanager
def store_lock(root: Path, blocking: bool = True) -> Iterator[bool]:
    """The store's compression lock; yields whether it was taken (always, when
    ``blocking``)."""
    with open(root / LOCK_FILE, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def eligible(db: sqlite3.Connection, older_than_ns: int | None = None) -> list[Segment]:
    """Sealed segments, stored by pcapwire, not compressed yet (oldest first); with
    ``older_than_ns``, only those whose last packet is older."""
    sql = f"SELECT {_SEGMENT_COLUMNS} {_ELIGIBLE}"
    args: list[int] = []
    if older_than_ns is not None:
        sql += " AND s.last_ns < ?"
        args.append(older_than_ns)
    return [Segment(*r) for r in db.execute(sql + " ORDER BY s.last_ns, s.id", args)]


def refusal(root: Path, db: sqlite3.Connection, segment_id: int) -> str | None:
    """Why segment ``segment_id`` cannot be compressed now, or None."""
    row = db.execute("SELECT s.path, c.state FROM segments s LEFT JOIN capture_segments c "
                     "ON c.segment_id = s.id WHERE s.id=?", (segment_id,)).fetchone()
    if row is None:
        return f"segment {segment_id} does not exist"
    path, state = row
    if Path(path).is_absolute():
        return (f"segment {segment_id} is a file indexed in place ({path}): pcapwire does "
                "not rewrite the user's files")
    if segment_id in storage_rows(db):
        return f"segment {segment_id} is already compressed"
    if state == "open":
        return f"segment {segment_id} is still being recorded"
    if state not in (None, "sealed", "recovered"):
        return f"segment {segment_id} is {state}"
    if not (root / path).is_file():
        return (f"segment {segment_id}: {root / path} is not there (a sealed segment the "
                "recorder has not renamed yet: its next start does)")
    return None


def compress_segment(root: Path, segment_id: int, *, level: int = 3,
                     frame_bytes: int = 2**20, actor: str = ACTOR,
                     stop: threading.Event | None = None) -> Compressed | None:
    """Compress one segment (the caller holds :func:`store_lock`); None when stopped or
    when the segment was deleted meanwhile. Raises :class:`ConfigError` for a segment that
    cannot be compressed, :class:`StoredSegmentError` when the result does not verify
    (the original is kept)."""
    root = Path(root)
    cpu0 = time.thread_time()
    with open_db(root) as db:
        why = refusal(root, db, segment_id)
        if why:
            raise ConfigError(why)
        row = db.execute(f"SELECT {_SEGMENT_COLUMNS} FROM segments s WHERE s.id=?",
                         (segment_id,)).fetchone()
    seg = Segment(*row)
    plain_path = root / seg.path
    zst = compressed_path(root, seg.path)
    part = zst.with_name(zst.name + ".part")
    try:
        written = _write(plain_path, part, seg, level, frame_bytes, stop)
        if written is None:
            part.unlink(missing_ok=True)
            return None
        frames, sha_plain, sha_stored = written
        _verify(part, seg.size, sha_plain, sha_stored)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    _pause("written")
    os.replace(part, zst)
    _fsync_dir(zst.parent)
    _pause("renamed")
    stored_size = zst.stat().st_size
    with open_db(root) as db:  # a stale row (of a deleted segment) is replaced
        cur = db.execute(
            "INSERT OR REPLACE INTO segment_storage SELECT ?,?,?,?,?,?,?,?,?,?,? WHERE EXISTS "
            "(SELECT 1 FROM segments WHERE id=? AND path=?)",
            (seg.id, seg.path, CODEC, seg.size, stored_size, frames, frame_bytes, level,
             sha_plain, sha_stored, time.time(), seg.id, seg.path))
    if cur.rowcount == 0:  # retention deleted it meanwhile
        zst.unlink(missing_ok=True)
        return None
    _pause("committed")
    _log(root, actor, {"segment_id": seg.id, "path": seg.path, "codec": CODEC,
                       "plain_size": seg.size, "stored_size": stored_size, "frames": frames,
                       "frame_bytes": frame_bytes, "level": level, "sha256_plain": sha_plain,
                       "sha256_stored": sha_stored})
    plain_path.unlink(missing_ok=True)
    _fsync_dir(plain_path.parent)
    return Compressed(seg.id, seg.path, seg.size, stored_size, frames, sha_plain, sha_stored,
                      time.thread_time() - cpu0)


def compress_eligible(root: Path, *, level: int = 3, frame_bytes: int = 2**20,
                      actor: str = ACTOR) -> list[Compressed]:
    """Compress every sealed segment of the store at ``root`` now, whatever the policy
    (tests, benchmarks); segments deleted meanwhile are skipped."""
    done: list[Compressed] = []
    with store_lock(Path(root)):
        with open_db(Path(root)) as db:
            segs = eligible(db)
        for seg in segs:
            result = compress_segment(Path(root), seg.id, level=level,
                                      frame_bytes=frame_bytes, actor=actor)
            if result is not None:
                done.append(result)
    return done


def _log(root: Path, actor: str, row: dict[str, Any], recovered: bool = False) -> None:
    """The store's custody entry ``segment.compress`` for a ``segment_storage`` row."""
    seg_id, rel = row["segment_id"], row["path"]
    details = {"segment_id": seg_id, "codec": row["codec"], "frames": row["frames"],
               "level": row["level"], "frame_bytes": row["frame_bytes"]}
    if recovered:
        details["recovered"] = True  # the compressor died after its commit: logged now
    custody.append(root, None, "segment.compress", actor, objects=[
        {"id": seg_id, "kind": "segment", "path": rel, "sha256": row["sha256_plain"],
         "size": row["plain_size"]},
        {"id": seg_id, "kind": "segment.zst", "path": rel + ZSTD_SUFFIX,
         "sha256": row["sha256_stored"], "size": row["stored_size"]}], details=details)


def _logged(root: Path, sha256_stored: str) -> bool:
    """Whether the store's custody log has the compression that made ``sha256_stored``."""
    return any(b'"segment.compress"' in line and sha256_stored.encode() in line
               for line in custody.read(root, None))


def _write(plain_path: Path, part: Path, seg: Segment, level: int, frame_bytes: int,
           stop: threading.Event | None) -> tuple[int, str, str] | None:
    """Write the seekable file ``part`` (fsynced); (frames, plain and stored SHA-256), or
    None when ``stop`` was set."""
    sha_plain, sha_stored = hashlib.sha256(), hashlib.sha256()
    with open(plain_path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm, \
            open(part, "wb") as out:
        size = len(mm)
        if size != seg.size:
            raise StoredSegmentError(plain_path, f"is {size} bytes but the catalog says "
                                     f"{seg.size}; not compressed")
        writer = SeekableWriter(out, level)
        frames = pos = 0
        while pos < size or frames == 0:
            if stop is not None and stop.is_set():
                return None
            first = max(pos, HEADER_LEN)  # the first frame starts with the file header
            # the native record walker cuts the frame: the records that fit in it whole
            _out, _ts, end, _n = _native.scan(mm, first, size, tsprec=seg.tsprec,
                                              snaplen=_SCAN_ALL,
                                              max_out=max(1, frame_bytes - (first - pos)))
            view = memoryview(mm)[pos:end]
            try:
                sha_plain.update(view)
                sha_stored.update(writer.add_frame(view))
            finally:
                view.release()
            frames += 1
            pos = end
        sha_stored.update(writer.finish())
        out.flush()
        os.fsync(out.fileno())
        # what is verified next comes from the disk, not from the page cache
        os.posix_fadvise(out.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return frames, sha_plain.hexdigest(), sha_stored.hexdigest()


def _verify(part: Path, size: int, sha_plain: str, sha_stored: str) -> None:
    """Read ``part`` back: its bytes hash to ``sha_stored``, its frames decompress to
    ``size`` bytes hashing to ``sha_plain``."""
    h = hashlib.sha256()
    with open(part, "rb") as f:
        while block := f.read(_READ_BLOCK):
            h.update(block)
    if h.hexdigest() != sha_stored:
        raise StoredSegmentError(part, "reads back different from what was written; the "
                                 "original is kept")
    plain = hashlib.sha256()
    with SeekableReader(part) as reader:
        if reader.table.plain_size != size:
            raise StoredSegmentError(part, f"holds {reader.table.plain_size} bytes, the "
                                     f"original {size}; the original is kept")
        for frame in reader.table.frames:
            plain.update(reader.read_frame(frame))
    if plain.hexdigest() != sha_plain:
        raise StoredSegmentError(part, "decompresses to bytes other than the original's; the "
                                 "original is kept")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pause(stage: str) -> None:
    if os.environ.get(PAUSE_ENV) == stage:
        os.write(1, f"compression paused at {stage}\n".encode())
        threading.Event().wait()


# -- recovery ------------------------------------------------------------------------------
def recover(root: Path) -> list[str]:
    """Finish or undo what an interrupted compression left (the caller holds
    :func:`store_lock`); returns what was done, one line each."""
    root = Path(root)
    done: list[str] = []
    seg_dir = root / "segments"
    with open_db(root) as db:
        known = {str(r[1]): int(r[0]) for r in db.execute("SELECT id, path FROM segments")}
        committed = storage_rows(db)
        for part in sorted(seg_dir.rglob("*" + ZSTD_SUFFIX + ".part")):
            part.unlink(missing_ok=True)
            done.append(f"{part}: an unfinished compression, deleted")
        for zst in sorted(seg_dir.rglob("*.pcap" + ZSTD_SUFFIX)):
            rel = str(zst.relative_to(root))[:-len(ZSTD_SUFFIX)]
            plain = root / rel
            seg_id = known.get(rel)
            if seg_id is None:
                zst.unlink(missing_ok=True)
                done.append(f"{zst}: its segment is no longer in the catalog, deleted")
            elif seg_id in committed:
                if plain.exists():  # died between its commit and the unlink
                    if not _logged(root, committed[seg_id]["sha256_stored"]):
                        _log(root, ACTOR, committed[seg_id], recovered=True)
                    plain.unlink()
                    done.append(f"{plain}: compressed and committed, the original deleted")
            elif plain.exists():
                zst.unlink()
                done.append(f"{zst}: never committed, deleted (the original is kept)")
            else:
                log.error("%s: the only copy of segment %d, but not recorded as compressed; "
                          "left as it is (queries read it; `pcapwire segments export %d` "
                          "checks it)", zst, seg_id, seg_id)
        cur = db.execute("DELETE FROM segment_storage WHERE NOT EXISTS (SELECT 1 FROM "
                         "segments s WHERE s.id = segment_storage.segment_id AND "
                         "s.path = segment_storage.path)")
        if cur.rowcount:
            done.append(f"{cur.rowcount} row(s) of deleted segments removed from "
                        "segment_storage")
    for line in done:
        log.info("compression recovery: %s", line)
    return done


# -- the policy, in the background ---------------------------------------------------------
def lower_priority() -> None:
    """The calling thread: nice 19, and the idle I/O class where the kernel has it."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, NICE)
    except OSError as exc:
        log.debug("cannot lower the compressor's CPU priority: %s", exc)
    nr = _IOPRIO_SET.get(platform.machine())
    if nr is not None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(nr, 1, tid, _IOPRIO_IDLE) != 0:  # IOPRIO_WHO_PROCESS: this thread
            log.debug("cannot set the idle I/O class: errno %d", ctypes.get_errno())


def due(db: sqlite3.Connection, policy: CompressionPolicy, now_ns: int | None = None
        ) -> list[Segment]:
    """The segments ``policy`` says are due now (oldest first)."""
    if policy.policy == "never":
        return []
    if policy.policy == "after-age":
        now_ns = time.time_ns() if now_ns is None else now_ns
        return eligible(db, now_ns - int(policy.after_age_s * 1e9))
    return eligible(db)


def compress_due(store: Any, policy: CompressionPolicy,
                 stop: threading.Event | None = None) -> int:
    """Compress the sealed segments ``policy`` says are due, one at a time, in a thread of
    low priority (this call waits for it: at least one segment, then no new one after
    :data:`ROUND_BUDGET_S`); returns how many were compressed. Another compressor working
    on the store makes it return 0 at once."""
    if policy.policy == "never":
        return 0
    root = Path(store.root)
    with store_lock(root, blocking=False) as mine:
        if not mine:
            return 0
        recover(root)
        with open_db(root) as db:  # a sealed segment still named .live waits its rename
            todo = [s for s in due(db, policy) if (root / s.path).is_file()]
        if not todo:
            return 0
        count = [0]

        def work() -> None:
            lower_priority()
            deadline = time.monotonic() + ROUND_BUDGET_S
            for i, seg in enumerate(todo):
                if (stop is not None and stop.is_set()) or (
                        i and time.monotonic() > deadline):
                    return
                try:
                    if compress_segment(root, seg.id, level=policy.level,
                                        frame_bytes=policy.frame_bytes, stop=stop):
                        count[0] += 1
                except (ConfigError, StoredSegmentError, OSError, ValueError,
                        sqlite3.Error) as exc:
                    log.error("segment %d (%s) not compressed: %s", seg.id, seg.path, exc)

        thread = threading.Thread(target=work, name="pcapwire-compress", daemon=True)
        thread.start()
        thread.join()
        return count[0]
