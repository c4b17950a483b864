"""Reading an NSRL RDSv3 release (SQLite): the ``FILE`` view (or table, in the minimal
releases) with columns ``sha256, sha1, md5, file_name, ...``.

The file may come from anyone (an API upload), so it is read as hostile:

* opened read-only and immutable (``mode=ro&immutable=1``: no lock, no journal, nothing
  written beside it), with ``trusted_schema=OFF`` and ``query_only=ON``;
* SQLite's own limits (:data:`SQLITE_LIMITS`) bound the schema and every value: string
  length, SQL length, columns, expression depth, compound SELECTs, program size, no
  ``ATTACH``, no worker threads;
* an authorizer lets the ``SELECT`` on ``FILE`` do only what a plain view does: read
  columns of the file's tables and call the functions in :data:`RDS3_FUNCTIONS`. A
  recursive query (``WITH RECURSIVE``, which never ends if written so), another function,
  a pragma or anything else refuses the file. (Triggers never run: nothing is written.)
* a progress handler, every :data:`~.limits.RDS3_PROGRESS_INTERVAL` SQLite instructions,
  stops the read when the import is cancelled, past its deadline, or over its SQLite step
  budget; and a file with more ``FILE`` rows than allowed is refused
  (:class:`~.limits.ImportLimits`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from pcapwire.hashlist.digests import parse_digest
from pcapwire.hashlist.formats import HashListError, _label
from pcapwire.hashlist.limits import RDS3_PROGRESS_INTERVAL, Budget

if TYPE_CHECKING:
    from pcapwire.hashlist.formats import Reader

#: ``sqlite3.setlimit`` values of the connection reading an RDSv3 file (a real release
#: is far below each: its longest value is a file name, its longest CREATE statement the
#: ``FILE`` view's ~600 bytes, its widest table 9 columns, its query ~35 instructions).
SQLITE_LIMITS: dict[int, int] = {
    sqlite3.SQLITE_LIMIT_LENGTH: 1_000_000,  # bytes of one string, BLOB or row
    sqlite3.SQLITE_LIMIT_SQL_LENGTH: 100_000,  # bytes of SQL, the schema's included
    sqlite3.SQLITE_LIMIT_COLUMN: 100,  # columns of a table, view or result
    sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 50,  # nesting of an expression
    sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 8,  # SELECTs joined by UNION & co.
    sqlite3.SQLITE_LIMIT_VDBE_OP: 25_000,  # instructions of the compiled query
    sqlite3.SQLITE_LIMIT_FUNCTION_ARG: 8,  # arguments of one function call
    sqlite3.SQLITE_LIMIT_ATTACHED: 0,  # no other database files
    sqlite3.SQLITE_LIMIT_WORKER_THREADS: 0,  # no sorter threads
}
#: Functions a ``FILE`` view may call: deterministic string functions (NIST's view
#: calls ``UPPER``); anything else refuses the file.
RDS3_FUNCTIONS = frozenset({
    "upper", "lower", "trim", "ltrim", "rtrim", "substr", "substring", "replace",
    "coalesce", "ifnull", "nullif", "iif", "length", "hex"})
_PLAIN = "not a plain NSRL RDSv3 database"


class _Guard:
    """The authorizer and progress handler of one read (see the module docstring)."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.steps = 0
        self.refused: str | None = None
        self.stopped: str | None = None

    def authorize(self, action: int, arg1: str | None, arg2: str | None, db: str | None,
                  _source: str | None) -> int:
        if action == sqlite3.SQLITE_SELECT or (
                action == sqlite3.SQLITE_READ and db == "main") or (
                action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() == "table_info") or (
                action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in RDS3_FUNCTIONS):
            return sqlite3.SQLITE_OK
        if self.refused is None:
            if action == sqlite3.SQLITE_RECURSIVE:
                self.refused = "FILE uses a recursive query (WITH RECURSIVE)"
            elif action == sqlite3.SQLITE_FUNCTION:
                self.refused = (f"FILE calls the function {arg2}(), not one of "
                                f"{', '.join(sorted(RDS3_FUNCTIONS))}")
            elif action == sqlite3.SQLITE_READ:
                self.refused = f"FILE reads {arg1}.{arg2} of the database {db!r}"
            else:
                self.refused = f"FILE does more than read its tables (SQLite action {action})"
        return sqlite3.SQLITE_DENY

    def progress(self) -> int:
        self.steps += RDS3_PROGRESS_INTERVAL
        reason = self.budget.stop_reason()
        if reason is None and self.steps > self.budget.limits.max_steps:
            reason = "max_steps"
        if reason is not None:
            self.stopped = reason
            return 1
        return 0

    def error(self, shown: str, exc: BaseException, what: str) -> HashListError:
        """The error for an SQLite exception ``exc`` raised while ``what``."""
        stopped = self.stopped or self.budget.stop_reason()  # or set since the last check
        if stopped is not None:
            return self.budget.error(stopped, shown)
        if self.refused is not None:
            return HashListError(f"{shown}: {_PLAIN}: {self.refused}; refused")
        if isinstance(exc, MemoryError):
            return HashListError(f"{shown}: {_PLAIN}: the query on FILE is over "
                                 f"{SQLITE_LIMITS[sqlite3.SQLITE_LIMIT_VDBE_OP]} SQLite "
                                 "instructions (SQLITE_LIMIT_VDBE_OP); refused")
        return HashListError(f"{shown}: {what}: {exc}")


def connect(path: Path, guard: _Guard | None = None) -> sqlite3.Connection:
    """A read-only connection to ``path`` under :data:`SQLITE_LIMITS` (and ``guard``'s
    authorizer and progress handler)."""
    uri = "file:" + quote(str(Path(path).resolve())) + "?mode=ro&immutable=1"
    db = sqlite3.connect(uri, uri=True)
    for limit, value in SQLITE_LIMITS.items():
        db.setlimit(limit, value)
    db.execute("PRAGMA trusted_schema=OFF")
    db.execute("PRAGMA query_only=ON")
    db.execute("PRAGMA cell_size_check=ON")
    if guard is not None:
        db.set_authorizer(guard.authorize)
        db.set_progress_handler(guard.progress, RDS3_PROGRESS_INTERVAL)
    return db


def read(reader: Reader) -> Iterator[tuple[bytes, str | None]]:
    """``(digest, label)`` of every row of ``FILE``; bad rows go to ``reader``'s
    ``bad`` callback as ``FILE row N``."""
    shown = reader.source.shown
    budget = reader.budget or Budget()
    guard = _Guard(budget)
    try:
        db = connect(reader.source.path, guard)
    except sqlite3.Error as exc:
        raise HashListError(f"{shown}: cannot open as SQLite: {exc}") from None
    try:
        try:
            info = db.execute("PRAGMA table_info(FILE)").fetchall()
        except (sqlite3.DatabaseError, MemoryError) as exc:
            raise guard.error(shown, exc, "not a readable SQLite database") from None
        have = {str(r[1]).lower(): str(r[1]) for r in info}
        cols = [have[c] for c in ("sha256", "sha1", "md5") if c in have]
        if not cols:
            raise HashListError(
                f"{shown}: not an NSRL RDSv3 database: no FILE table or view with "
                f"sha256/sha1/md5 columns (it has {', '.join(_tables(db)) or 'no tables'})")
        reader.columns = cols
        label = have.get("file_name") if reader.source.label_column else None
        reader.label_column = label
        select = ", ".join(f'"{c}"' for c in [*cols, *([label] if label else [])])
        max_rows = budget.limits.max_rows
        try:
            cursor = db.execute(f"SELECT {select} FROM FILE")  # noqa: S608 - known names
            for n, row in enumerate(cursor, 1):
                if n > max_rows:
                    raise budget.error("max_rows", shown)
                reader.records += 1
                yield from _row(reader, n, cols, row, label is not None)
        except (sqlite3.DatabaseError, MemoryError) as exc:
            raise guard.error(shown, exc, f"reading FILE failed after {reader.records} "
                              "rows") from None
    finally:
        db.close()


def _tables(db: sqlite3.Connection) -> list[str]:
    try:
        return [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table','view') "
            "ORDER BY name LIMIT 30")]
    except sqlite3.DatabaseError:
        return []


def _row(reader: Reader, n: int, cols: list[str], row: tuple[object, ...], labelled: bool
         ) -> Iterator[tuple[bytes, str | None]]:
    text = _label(str(row[-1])) if labelled and row[-1] is not None else None
    found = problems = 0
    for name, value in zip(cols, row, strict=False):
        if value is None or value == "":
            continue
        try:
            digest = parse_digest(str(value))
        except ValueError as exc:
            problems += 1
            reader.error(n, f"{name}: {exc}", "row")
            continue
        found += 1
        if reader.keep(digest):
            yield digest, text
    if not found and not problems:
        reader.error(n, f"no hash in {', '.join(cols)}", "row")
