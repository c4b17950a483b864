"""The metadata index: one SQLite file per store (``<data-dir>/search.sqlite``, WAL mode,
so searches in any process read while one process writes).

Tables (the store was chosen by measurement, see benchmarks/bench_search.py and
docs/search.md):

- ``docs``: one row per ECS document: ``key`` (its identity: the same key replaces it),
  ``case_id``, ``ts`` (µs) and ``body`` (the document as JSON);
- ``terms(f, v, doc)``: keyword, text and ip values, case-folded, one row per value; the
  primary key ``(f, v, doc)`` answers ``field:value``, prefixes (``v`` range) and CIDR
  networks (ip values are 32 hex digits, :mod:`.values`); the same values reversed under
  ``f = -field id`` answer suffixes (``*.example``);
- ``nums(f, v, doc)``: long and date values (dates in µs), for ranges;
- ``fts``: a contentless FTS5 table, column ``anytext`` (every string value of the document)
  and one column per ``text`` field (words and phrases of ``email.subject:``...).

Writes go through :meth:`SearchIndex.write` (one transaction per batch); searches through
:func:`pcapwire.search.query.search`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

from pcapwire.errors import ConfigError
from pcapwire.search.ecs import Doc
from pcapwire.search.fields import FIELDS, OPAQUE_OBJECTS, TEXT_FIELDS
from pcapwire.search.values import iso_us, keyword, parse_ip

#: The index's file in a data directory.
SEARCH_FILE = "search.sqlite"
#: How long a write waits for another process's write lock before it fails.
BUSY_TIMEOUT_SECONDS = 30.0
#: Fields whose values are also kept reversed, so that ``*.example`` (a suffix) is an index
#: range; a suffix pattern on another field reads all of that field's values.
SUFFIX_FIELDS = frozenset({
    "url.domain", "url.path", "url.original", "http.request.referrer", "dns.question.name",
    "dns.answers.data", "tls.client.server_name", "tls.server.subject", "tls.server.issuer",
    "file.name", "file.mime_type", "email.from.address", "email.to.address",
    "email.cc.address", "email.sender.address", "email.subject",
    "email.attachments.file.name", "user_agent.original", "rule.name"})
#: Longest value kept in ``terms`` (longer ones are cut: a wildcard still finds the start).
MAX_TERM_CHARS = 512
#: Documents handed to SQLite at once by :meth:`_Writer.put_many`.
WRITE_BATCH = 5000
#: SQLite page cache of one connection, KiB (the postings of a batch land in cache).
CACHE_KIB = 128 * 1024
SCHEMA_VERSION = 1
FTS_COLUMNS: tuple[str, ...] = ("anytext", *(f"t{i}" for i in range(len(TEXT_FIELDS))))
#: text field -> its FTS5 column.
FTS_COLUMN_OF: dict[str, str] = {f: f"t{i}" for i, f in enumerate(TEXT_FIELDS)}
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fields (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS docs (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, case_id TEXT NOT NULL DEFAULT '',
    ts INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS terms (f INTEGER NOT NULL, v TEXT NOT NULL, doc INTEGER NOT NULL,
    PRIMARY KEY (f, v, doc)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nums (f INTEGER NOT NULL, v INTEGER NOT NULL, doc INTEGER NOT NULL,
    PRIMARY KEY (f, v, doc)) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5({', '.join(FTS_COLUMNS)}, content='',
    tokenize='unicode61 remove_diacritics 2');
"""


def flatten(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    """(dotted field, scalar value) of every leaf outside the opaque objects; lists give
    one pair per item, lists of objects flatten each object under the same prefix."""
    out: list[tuple[str, Any]] = []
    stack: list[tuple[str, dict[str, Any]]] = [("", doc)]
    while stack:
        prefix, obj = stack.pop()
        for k, v in obj.items():
            name = prefix + k
            if isinstance(v, dict):
                if name not in OPAQUE_OBJECTS:
                    stack.append((name + ".", v))
            elif isinstance(v, list):
                for item in v:
                    if isinstance(item, dict):
                        stack.append((name + ".", item))
                    elif item is not None:
                        out.append((name, item))
            elif v is not None:
                out.append((name, v))
    return out


def _date_us(value: Any) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return round(value * 1e6)
    try:
        return iso_us(str(value))
    except ValueError:
        return None


def postings(body: dict[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, int]],
                                            dict[str, str]]:
    """What one document puts in ``terms``, ``nums`` and ``fts`` (by field name)."""
    terms: list[tuple[str, str]] = []
    nums: list[tuple[str, int]] = []
    words: list[str] = []
    text: dict[str, str] = {}
    for name, value in flatten(body):
        ftype = FIELDS.get(name)
        if ftype is None:
            continue
        if ftype == "long":
            if isinstance(value, int | float) and not isinstance(value, bool):
                nums.append((name, int(value)))
        elif ftype == "date":
            n = _date_us(value)
            if n is not None:
                nums.append((name, n))
        elif ftype == "ip":
            ip = parse_ip(str(value))
            if ip is not None:
                terms.append((name, ip))
                words.append(str(value))
        else:
            s = str(value)
            terms.append((name, keyword(s)[:MAX_TERM_CHARS]))
            words.append(s)
            if ftype == "text":
                col = FTS_COLUMN_OF[name]
                text[col] = f"{text[col]}\n{s}" if col in text else s
    text["anytext"] = "\n".join(words)
    return terms, nums, text


class SearchIndex:
    """One connection to a store's index; safe to share between threads (a lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path, check_same_thread=False,
                                      isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self.db.executescript(_SCHEMA)
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                            (str(SCHEMA_VERSION),))
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"search index {self.path}: {exc}") from None
        self.lock = threading.RLock()
        self._field_ids: dict[str, int] = dict(
            (n, i) for i, n in self.db.execute("SELECT id, name FROM fields"))

    @classmethod
    def of(cls, root: str | Path) -> SearchIndex:
        return cls(Path(root) / SEARCH_FILE)

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def __enter__(self) -> SearchIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- fields and meta -----------------------------------------------------------------
    def field_id(self, name: str, create: bool = False) -> int | None:
        fid = self._field_ids.get(name)
        if fid is None:
            row = self.db.execute("SELECT id FROM fields WHERE name=?", (name,)).fetchone()
            if row is None and create:
                row = (self.db.execute("INSERT INTO fields (name) VALUES (?)",
                                       (name,)).lastrowid,)
            if row is not None:
                fid = self._field_ids[name] = int(row[0])
        return fid

    def get_meta(self, key: str, default: str = "") -> str:
        with self.lock:
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (key, value))

    # ---- writes --------------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[_Writer]:
        """One transaction: ``with index.write() as w: w.put_many(docs) ...``."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield _Writer(self)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def put(self, docs: Iterable[Doc]) -> int:
        """Index ``docs`` in one transaction (replacing those with the same key)."""
        with self.write() as w:
            return w.put_many(docs)

    def count(self) -> int:
        with self.lock:
            return int(self.db.execute("SELECT count(*) FROM docs").fetchone()[0])


class _Writer:
    def __init__(self, index: SearchIndex) -> None:
        self.index = index
        self.db = index.db
        self.fids = index._field_ids

    def _fid(self, name: str) -> int:
        fid = self.fids.get(name)
        if fid is None:
            fid = self.index.field_id(name, create=True)
            assert fid is not None
        return fid

    def _rows(self, doc_id: int, body: dict[str, Any]
              ) -> tuple[list[tuple[int, str, int]], list[tuple[int, int, int]], dict[str, str]]:
        terms, nums, text = postings(body)
        term_rows = []
        for name, v in set(terms):
            fid = self._fid(name)
            term_rows.append((fid, v, doc_id))
            if name in SUFFIX_FIELDS:
                term_rows.append((-fid, v[::-1], doc_id))
        return term_rows, [(self._fid(n), v, doc_id) for n, v in set(nums)], text

    def _fts(self, command: str, rows: list[tuple[int, dict[str, str]]]) -> None:
        """Insert (or with command 'delete', remove) FTS rows, grouped by their columns."""
        by_cols: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for doc_id, text in rows:
            cols = tuple(sorted(text))
            by_cols.setdefault(cols, []).append((doc_id, *(text[c] for c in cols)))
        for cols, values in by_cols.items():
            marks = ", ".join("?" * len(cols))
            if command:
                self.db.executemany(f"INSERT INTO fts (fts, rowid, {', '.join(cols)}) "
                                    f"VALUES ('{command}', ?, {marks})", values)
            else:
                self.db.executemany(f"INSERT INTO fts (rowid, {', '.join(cols)}) "
                                    f"VALUES (?, {marks})", values)

    def delete(self, keys: Iterable[str]) -> int:
        """Remove the documents with these keys (those that exist); returns how many."""
        term_rows: list[tuple[int, str, int]] = []
        num_rows: list[tuple[int, int, int]] = []
        fts_rows: list[tuple[int, dict[str, str]]] = []
        ids = []
        for key in keys:
            row = self.db.execute("SELECT id, body FROM docs WHERE key=?", (key,)).fetchone()
            if row is None:
                continue
            t, n, text = self._rows(row[0], json.loads(row[1]))
            term_rows += t
            num_rows += n
            fts_rows.append((row[0], text))
            ids.append((row[0],))
        self.db.executemany("DELETE FROM terms WHERE f=? AND v=? AND doc=?", term_rows)
        self.db.executemany("DELETE FROM nums WHERE f=? AND v=? AND doc=?", num_rows)
        self._fts("delete", fts_rows)
        self.db.executemany("DELETE FROM docs WHERE id=?", ids)
        return len(ids)

    def put_many(self, docs: Iterable[Doc], *, replace: bool = True) -> int:
        """Index ``docs`` (read :data:`WRITE_BATCH` at a time); with ``replace`` (the
        default) a document with the same key goes first (``replace=False``: the caller
        knows the keys are new, e.g. a rebuild)."""
        n = 0
        it = iter(docs)
        while batch := list(islice(it, WRITE_BATCH)):
            n += self._put_batch(batch, replace)
        return n

    def _put_batch(self, docs: list[Doc], replace: bool) -> int:
        if replace:
            self.delete(d.key for d in docs)
        term_rows: list[tuple[int, str, int]] = []
        num_rows: list[tuple[int, int, int]] = []
        fts_rows: list[tuple[int, dict[str, str]]] = []
        insert = self.db.execute
        for d in docs:
            body = d.body
            body.setdefault("event", {})["id"] = d.key  # its identity, searchable
            pw = body.get("pcapwire") or {}
            doc_id = int(insert(
                "INSERT INTO docs (key, case_id, ts, body) VALUES (?,?,?,?)",
                (d.key, str(pw.get("case") or ""), _date_us(body.get("@timestamp")) or 0,
                 json.dumps(body, separators=(",", ":"), default=str))).lastrowid or 0)
            t, n, text = self._rows(doc_id, body)
            term_rows += t
            num_rows += n
            fts_rows.append((doc_id, text))
        self.db.executemany("INSERT OR IGNORE INTO terms VALUES (?,?,?)", term_rows)
        self.db.executemany("INSERT OR IGNORE INTO nums VALUES (?,?,?)", num_rows)
        self._fts("", fts_rows)
        return len(docs)

    def clear(self) -> None:
        """Everything goes (``pcapwire search rebuild``: in the same transaction as the
        documents that replace it, so searches see the old index until the commit)."""
        for table in ("docs", "terms", "nums"):
            self.db.execute(f"DELETE FROM {table}")
        self.db.execute("INSERT INTO fts (fts) VALUES ('delete-all')")
        self.db.execute("DELETE FROM meta WHERE key != 'schema_version'")
