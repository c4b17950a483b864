"""The hash-list store: one SQLite file (``<data-dir>/hashlists.sqlite``) holding any number
of allow and deny lists.

Layout: a ``lists`` table (name, kind, severity, description, counts per algorithm, state)
and, per list, a table ``h_<id>(digest BLOB PRIMARY KEY, label TEXT) WITHOUT ROWID``: the
B-tree *is* the index, keyed on the binary digest (16, 20 or 32 bytes), so a lookup is one
B-tree descent (a few microseconds for millions of entries, see
``benchmarks/bench_hashlist.py``) and a list costs about its digests' bytes on disk.

Why SQLite rather than a sorted memory-mapped file of digests: lookups cost the same order
(a B-tree descent vs a binary search, both over the page cache), and SQLite also gives
what a sorted file does not: several lists with their metadata in one file, appending to a
list without rewriting it, removing a list (``DROP TABLE``) without touching the others,
readers that never see a half-imported list (WAL, the list turns ``ready`` in one commit),
and concurrent readers in other processes (the analyzer, the API) while an import runs.

Imports stream the input: entries go in batches of :data:`BATCH_ROWS`, each sorted by
digest and inserted with ``executemany`` in its own transaction, while the list is in
state ``importing`` (invisible to lookups); one commit at the end makes it ``ready`` (and,
for ``replace``, drops the old list in the same commit; ``append`` loads a hidden list the
same way and merges it into the existing one in that commit). One import at a time per
store (an ``flock`` on ``hashlists.sqlite.lock``).

An import that fails, goes over its limits (:mod:`.limits`) or is cancelled leaves
nothing: its hidden list is dropped and the space it took returned to the file system
(stores are created with ``auto_vacuum=INCREMENTAL``; the WAL is truncated). Lists left
``importing`` by a killed import are removed the same way by the next import, or at once
by :meth:`HashListStore.discard_interrupted` (what the API calls after stopping one).
"""

from __future__ import annotations

import fcntl
import logging
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path
from urllib.parse import quote

from pcapwire.hashlist.digests import ALGORITHM_BY_BYTES, ALGORITHMS
from pcapwire.hashlist.formats import HashListError, Reader, Source
from pcapwire.hashlist.limits import Budget, ImportLimits
from pcapwire.hashlist.model import (
    DEFAULT_SEVERITY,
    KINDS,
    MODES,
    HashList,
    ImportBusy,
    ImportFailed,
    ImportReport,
    ListExists,
    ListNotFound,
    Match,
    check_list_name,
)
from pcapwire.records import SEVERITIES

log = logging.getLogger(__name__)

DB_NAME = "hashlists.sqlite"
SCHEMA_VERSION = 1
#: Entries inserted per transaction during an import.
BATCH_ROWS = 100_000
#: Bytes of the store a reader maps into memory (lookups then read pages from the page
#: cache without a system call each).
READER_MMAP_BYTES = 1 * 2**30
#: Digests per ``IN (...)`` in a batch lookup.
LOOKUP_CHUNK = 500
#: Bytes of write-ahead log kept on disk after a checkpoint (a large import's WAL is cut
#: back to this).
WAL_SIZE_LIMIT = 64 * 2**20
#: Milliseconds the WAL checkpoint after a removal waits for readers (busy ones keep the
#: WAL for a later checkpoint rather than stall the removal).
CHECKPOINT_WAIT_MS = 200
#: Milliseconds a writer waits for the store's lock held by another connection.
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lists (
  id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('allow', 'deny')), severity TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '', source TEXT NOT NULL DEFAULT '',
  format TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL CHECK (state IN ('importing', 'ready')),
  created REAL NOT NULL, updated REAL NOT NULL, md5 INTEGER NOT NULL DEFAULT 0,
  sha1 INTEGER NOT NULL DEFAULT 0, sha256 INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX IF NOT EXISTS lists_name ON lists(name) WHERE state = 'ready';
"""
_LIST_COLUMNS = ("id, name, kind, severity, description, source, format, created, updated, "
                 "md5, sha1, sha256")


class HashListStore:
    """One ``hashlists.sqlite``. ``readonly=True`` (lookups: the analyzer, the API) never
    creates the file: a store whose file does not exist yet has no lists, and sees them
    once an import created it. Safe to share between threads (calls are serialised)."""

    def __init__(self, path: str | Path, *, readonly: bool = False, scope: str = "tenant",
                 refresh_interval: float = 0.0) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.scope = scope
        #: lookups re-read the set of lists when another connection changed it, checking
        #: at most this often (seconds; 0: on every call). A list removed or replaced
        #: meanwhile is noticed at once (its table is gone); a new one within this time.
        self.refresh_interval = refresh_interval
        self._checked = 0.0
        self._db: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._lists: list[HashList] | None = None
        self._version: int | None = None
        if not readonly:
            self._connect()

    # ---- connection -----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection | None:
        if self._db is not None:
            return self._db
        try:
            if self.readonly:
                now = time.monotonic()
                if self._lists == [] and now - self._checked < self.refresh_interval:
                    return None  # checked for the file a moment ago
                if not self.path.exists():
                    self._lists, self._checked = [], now
                    return None
                self._lists = None
                self._db = sqlite3.connect(f"file:{quote(str(self.path.resolve()))}?mode=ro",
                                           uri=True, isolation_level=None,
                                           check_same_thread=False)
                self._db.execute("PRAGMA busy_timeout=5000")
                self._db.execute("PRAGMA cache_size=-65536")
                self._db.execute(f"PRAGMA mmap_size={READER_MMAP_BYTES}")
                return self._db
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # a new file only (see _reclaim)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA cache_size=-131072")
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                       (str(SCHEMA_VERSION),))
            self._db = db
            return db
        except (OSError, sqlite3.Error) as exc:
            raise HashListError(f"hash-list store {self.path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> HashListStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reads ----------------------------------------------------------------------------
    def lists(self) -> list[HashList]:
        """Every ready list, by name."""
        with self._lock:
            try:
                return list(self._current(force=True))
            except sqlite3.DatabaseError as exc:
                raise HashListError(f"hash-list store {self.path}: {exc}") from None

    def get(self, name: str) -> HashList | None:
        return next((x for x in self.lists() if x.name == name), None)

    def _current(self, force: bool = False) -> list[HashList]:
        db = self._connect()
        if db is None:
            return []
        now = time.monotonic()
        if (not force and self._lists is not None
                and now - self._checked < self.refresh_interval):
            return self._lists
        self._checked = now
        version = db.execute("PRAGMA data_version").fetchone()[0]
        if self._lists is None or version != self._version:
            try:
                rows = db.execute(f"SELECT {_LIST_COLUMNS} FROM lists WHERE state='ready' "
                                  "ORDER BY name").fetchall()
            except sqlite3.OperationalError:  # created, schema not written yet
                rows = []
            self._lists = [HashList(id=r[0], name=r[1], kind=r[2], severity=r[3],
                                    description=r[4], source=r[5], format=r[6],
                                    created=r[7], updated=r[8],
                                    counts=dict(zip(ALGORITHMS, r[9:12], strict=True)),
                                    scope=self.scope) for r in rows]
            self._version = version
        return self._lists

    def lookup(self, digests: Sequence[bytes], names: Collection[str] | None = None
               ) -> dict[bytes, list[Match]]:
        """For each binary digest found, the lists holding it (digests found nowhere are
        absent). ``names`` restricts the lists consulted."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    return self._lookup(digests, names)
                except sqlite3.OperationalError as exc:
                    if attempt == 2 or "no such table" not in str(exc):
                        raise HashListError(f"hash-list store {self.path}: {exc}") from None
                    self._lists = None  # a list was replaced or removed meanwhile
                except sqlite3.DatabaseError as exc:
                    raise HashListError(f"hash-list store {self.path}: {exc}") from None
        raise AssertionError("unreachable")

    def _lookup(self, digests: Sequence[bytes], names: Collection[str] | None
                ) -> dict[bytes, list[Match]]:
        out: dict[bytes, list[Match]] = {}
        lists = self._current()
        if not lists or not digests:
            return out
        db = self._db
        assert db is not None
        unique = list(dict.fromkeys(digests))
        for hl in lists:
            if names is not None and hl.name not in names:
                continue
            for i in range(0, len(unique), LOOKUP_CHUNK):
                part = unique[i:i + LOOKUP_CHUNK]
                if len(part) == 1:
                    sql = f"SELECT digest, label FROM h_{hl.id} WHERE digest=?"
                else:
                    sql = (f"SELECT digest, label FROM h_{hl.id} WHERE digest IN "
                           f"({','.join('?' * len(part))})")
                for digest, label in db.execute(sql, part):
                    out.setdefault(bytes(digest), []).append(Match(hl, bytes(digest), label))
        return out

    # ---- writes ---------------------------------------------------------------------------
    def _rw(self) -> sqlite3.Connection:
        if self.readonly:
            raise HashListError(f"hash-list store {self.path} is open read-only")
        db = self._connect()
        assert db is not None
        return db

    @contextmanager
    def _import_lock(self, wait: bool) -> Iterator[None]:
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise ImportBusy(f"another import into {self.path} is running; retry when "
                                 "it finishes") from None
            yield

    def _drop_stale(self, db: sqlite3.Connection) -> int:
        stale = db.execute("SELECT id FROM lists WHERE state='importing'").fetchall()
        for (list_id,) in stale:
            log.warning("removing list %d left half-imported by an interrupted import", list_id)
            self._drop(db, list_id)
        if stale:
            self._reclaim(db)
        return len(stale)

    @staticmethod
    def _reclaim(db: sqlite3.Connection) -> None:
        """Give the pages of dropped lists back to the file system (a store created before
        ``auto_vacuum=INCREMENTAL`` keeps them for its next imports) and cut the WAL."""
        try:
            db.executescript("PRAGMA incremental_vacuum;")  # every page: steps to the end
            db.execute(f"PRAGMA busy_timeout={CHECKPOINT_WAIT_MS}")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("could not reclaim the space of a removed list: %s", exc)
        finally:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    def discard_interrupted(self) -> int:
        """Remove the lists an interrupted import left half-written (and their space);
        the number removed. Does nothing (0) while another import runs."""
        with self._lock:
            db = self._rw()
            try:
                with self._import_lock(wait=False):
                    return self._drop_stale(db)
            except ImportBusy:
                return 0

    @staticmethod
    def _drop(db: sqlite3.Connection, list_id: int) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute(f"DROP TABLE IF EXISTS h_{int(list_id)}")
        db.execute("DELETE FROM lists WHERE id=?", (list_id,))
        db.execute("COMMIT")

    def import_sources(self, sources: Iterable[Source], *, name: str, kind: str,
                       severity: str | None = None, description: str | None = None,
                       mode: str = "create", wait: bool = False,
                       limits: ImportLimits | None = None,
                       cancel: threading.Event | None = None) -> ImportReport:
        """Load ``sources`` into the list ``name`` (see the module docstring).

        ``mode``: ``create`` (the name must be free), ``replace`` (a new list takes the
        place of the old one in one commit; the old one stays if this import fails),
        ``append`` (into an existing list of the same kind, in one commit). Raises
        :class:`ImportFailed` when no entry at all could be read (nothing changes then),
        :class:`ImportBusy` when another import runs and ``wait`` is false,
        :class:`~.limits.LimitExceeded` over ``limits``, and
        :class:`~.limits.ImportCancelled` once ``cancel`` is set; nothing changes then
        either."""
        check_list_name(name)
        if kind not in KINDS:
            raise HashListError(f"kind must be allow or deny, not {kind!r}")
        if severity is not None and severity not in SEVERITIES:
            raise HashListError(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
        if mode not in MODES:
            raise HashListError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        sources = list(sources)
        with self._lock, self._import_lock(wait):
            db = self._rw()
            self._drop_stale(db)
            self._lists = None
            existing = self.get(name)
            if mode == "create" and existing is not None:
                raise ListExists(f"a list named {name!r} already exists ({existing.kind}, "
                                    f"{existing.total} hashes); replace or append to it, or "
                                    "remove it first")
            if mode == "append":
                if existing is None:
                    raise ListNotFound(f"no list named {name!r} to append to")
                if existing.kind != kind:
                    raise HashListError(f"list {name!r} is a {existing.kind} list; cannot "
                                        f"append {kind} entries")
            sev = severity or (existing.severity if existing is not None and mode == "append"
                               else DEFAULT_SEVERITY[kind])
            report = ImportReport(name, kind, sev, mode)
            t0 = time.perf_counter()
            budget = Budget(limits or ImportLimits(), cancel or threading.Event())
            # append: a hidden list too, merged into the existing one by _finish
            target = self._new_list(db, name, kind, sev,
                                    "" if mode == "append" else description or "")
            try:
                self._fill(db, target, sources, report, budget)
                report.seconds = time.perf_counter() - t0
                if report.added_total == 0 and mode != "append":
                    what = "no valid hash" if report.records else "no hashes"
                    first = f"; first problem: {report.errors[0]}" if report.errors else ""
                    raise ImportFailed(f"{', '.join(s.shown for s in sources)}: {what} to "
                                       f"import ({report.bad} bad line(s)){first}", report)
                self._finish(db, target, existing if mode != "create" else None, report,
                             sources, description, append=mode == "append")
            except BaseException:
                try:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    self._drop(db, target)
                    self._reclaim(db)
                except sqlite3.Error:
                    log.exception("could not remove the half-imported list %s", name)
                raise
            finally:
                self._lists = None
            report.seconds = time.perf_counter() - t0
            return report

    def _new_list(self, db: sqlite3.Connection, name: str, kind: str, severity: str,
                  description: str) -> int:
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        cur = db.execute("INSERT INTO lists (name, kind, severity, description, state, created, "
                         "updated) VALUES (?,?,?,?, 'importing', ?, ?)",
                         (name, kind, severity, description, now, now))
        list_id = int(cur.lastrowid or 0)
        db.execute(f"CREATE TABLE h_{list_id} (digest BLOB PRIMARY KEY, label TEXT) "
                   "WITHOUT ROWID")
        db.execute("COMMIT")
        return list_id

    def _fill(self, db: sqlite3.Connection, list_id: int, sources: list[Source],
              report: ImportReport, budget: Budget) -> None:
        batch: list[tuple[bytes, str | None]] = []
        for src in sources:
            budget.check(src.shown)
            reader = Reader(src, report.add_error, budget=budget)
            bad_before = report.bad
            for entry in reader:
                batch.append(entry)
                if len(batch) >= BATCH_ROWS:
                    budget.check(src.shown)
                    self._insert(db, list_id, batch, report)
                    batch = []
                    log.info("%s: %d entries added so far", src.shown, report.added_total)
            report.records += reader.records
            report.skipped += reader.skipped
            report.files.append({"file": src.shown, "format": reader.format,
                                 "columns": reader.columns, "label_column": reader.label_column,
                                 "records": reader.records, "bad_lines": report.bad - bad_before})
        if batch:
            budget.check(sources[-1].shown)
            self._insert(db, list_id, batch, report)

    @staticmethod
    def _insert(db: sqlite3.Connection, list_id: int, batch: list[tuple[bytes, str | None]],
                report: ImportReport) -> None:
        """One transaction per batch; per algorithm, sorted by digest (B-tree inserts in
        key order touch each page once)."""
        groups: dict[int, list[tuple[bytes, str | None]]] = {16: [], 20: [], 32: []}
        for entry in batch:
            groups[len(entry[0])].append(entry)
        sql = f"INSERT OR IGNORE INTO h_{int(list_id)} (digest, label) VALUES (?, ?)"
        db.execute("BEGIN IMMEDIATE")
        try:
            for size, rows in groups.items():
                if rows:
                    rows.sort(key=itemgetter(0))
                    added = db.executemany(sql, rows).rowcount
                    report.added[ALGORITHM_BY_BYTES[size]] += added
                    report.duplicates += len(rows) - added
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _finish(self, db: sqlite3.Connection, list_id: int, old: HashList | None,
                report: ImportReport, sources: list[Source], description: str | None,
                append: bool) -> None:
        formats = ",".join(dict.fromkeys(f["format"] for f in report.files))
        source = ", ".join(s.shown for s in sources)[:1000]
        db.execute("BEGIN IMMEDIATE")
        try:
            if append:
                assert old is not None
                self._merge(db, list_id, old.id, report)
                sets = ", ".join(f"{a} = {a} + ?" for a in ALGORITHMS)
                db.execute(f"UPDATE lists SET {sets}, severity=?, updated=?, "
                           "description=coalesce(?, description) WHERE id=?",
                           (*(report.added.get(a, 0) for a in ALGORITHMS), report.severity,
                            time.time(), description, old.id))
            else:
                if old is not None:
                    db.execute(f"DROP TABLE IF EXISTS h_{int(old.id)}")
                    db.execute("DELETE FROM lists WHERE id=?", (old.id,))
                db.execute("UPDATE lists SET state='ready', md5=?, sha1=?, sha256=?, "
                           "source=?, format=?, updated=? WHERE id=?",
                           (*(report.added.get(a, 0) for a in ALGORITHMS), source, formats,
                            time.time(), list_id))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @staticmethod
    def _merge(db: sqlite3.Connection, staged: int, into: int, report: ImportReport) -> None:
        """Move the hidden list ``staged`` into the list ``into`` (inside the caller's
        transaction); ``report.added`` then counts what was new to ``into``."""
        for size, alg in ALGORITHM_BY_BYTES.items():
            added = db.execute(f"INSERT OR IGNORE INTO h_{int(into)} (digest, label) "
                               f"SELECT digest, label FROM h_{int(staged)} "
                               "WHERE length(digest)=? ORDER BY digest", (size,)).rowcount
            report.duplicates += report.added[alg] - added
            report.added[alg] = added
        db.execute(f"DROP TABLE h_{int(staged)}")
        db.execute("DELETE FROM lists WHERE id=?", (staged,))

    def remove(self, name: str) -> bool:
        """Remove a list and its entries; False when there is no such list."""
        with self._lock:
            db = self._rw()
            row = db.execute("SELECT id FROM lists WHERE name=? AND state='ready'",
                             (name,)).fetchone()
            if row is None:
                return False
            self._drop(db, int(row[0]))
            self._reclaim(db)
            self._lists = None
            return True
