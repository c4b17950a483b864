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

Writes go through :meth:`SearchIndex.write` (one transaction per batch); a batch's postings
go in sorted by key, so an index larger than the page cache is walked once per batch
instead of read at random. The walk over a document's values, the grouping of a batch's
postings and their sort run natively (core/native/postings.c, ~3x cheaper than the Python
walk and grouping); :func:`postings` and :func:`_value` are their Python statement.
Searches go through :func:`pcapwire.search.query.search`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from pcapwire import _native
from pcapwire.errors import ConfigError
from pcapwire.search.ecs import Doc
from pcapwire.search.fields import FIELDS, OPAQUE_OBJECTS, TEXT_FIELDS
from pcapwire.search.values import iso_us, parse_ip

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
WRITE_BATCH = 50_000
#: SQLite page cache of one connection, KiB (the postings of a batch land in cache).
CACHE_KIB = 128 * 1024
#: Page size of a new index file (SQLite's default is 4,096; a file keeps the size it was
#: made with). A batch's postings land on pages all over the ``terms`` and ``nums``
#: B-trees, and each page a transaction touches is written to the WAL and copied by the
#: checkpoint, a system call each time: with 16 KiB pages a transaction of 30,000 of the
#: pace benchmark's documents (written again into an index growing to 310,000) wrote
#: 10,870 pages instead of 41,757, the same bytes in a quarter of the calls, and the
#: writer's commit took ~7.7 instead of ~14 µs a document (README, the pace section).
PAGE_BYTES = 16384
#: Keys looked up by one ``SELECT ... IN (...)`` when documents replace others (under
#: SQLite's default limit of 32,766 parameters).
LOOKUP_CHUNK = 500
#: Postings inserted by one statement (``VALUES (?,?,?), ...``: 900 parameters, under the
#: 999 of SQLite builds before 3.32): 1.1 µs a posting instead of 1.8 one statement each.
ROWS_PER_INSERT = 300
SCHEMA_VERSION = 1
_DUMPS = json.JSONEncoder(separators=(",", ":"), default=str).encode
_ORJSON_DUMPS = orjson.dumps
_ORJSON_ERRORS = (TypeError, orjson.JSONEncodeError)
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
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


#: Field type -> the small code :func:`postings` dispatches on (one dict look-up a value;
#: core/native/postings.c knows the same numbers).
_LONG, _DATE, _IP, _KEYWORD, _TEXT = range(5)
_CODE_OF = {"long": _LONG, "date": _DATE, "ip": _IP, "keyword": _KEYWORD, "text": _TEXT}
_CODES: dict[str, int] = {name: _CODE_OF[ftype] for name, ftype in FIELDS.items()}
#: Every dotted prefix of an indexed field (``url`` of ``url.domain``): an object under
#: any other name holds nothing that is indexed.
_PREFIXES = frozenset(f[:i] for f in FIELDS for i, c in enumerate(f) if c == ".")
#: Names a :class:`_Node` remembers for its keys (documents from callers may carry keys
#: of their own; past this many the names are made per value).
NODE_MEMO_KEYS = 256
#: Key sequences a :class:`_Node` remembers the plan of (:meth:`_Node.plan`); past this
#: many a plan is made per object.
NODE_MEMO_PLANS = 256
#: Keyword and text values a :class:`_Node` remembers the posting of (:meth:`_Node.pair`),
#: and their longest.
NODE_MEMO_VALUES = 1024
NODE_MEMO_VALUE_CHARS = 128


class _Node:
    """A dotted name on the way to indexed fields: its type code (None: not a field), the
    prefix of its children's names, whether an object under it is walked (not
    :data:`OPAQUE_OBJECTS`, and an indexed field lies below it), and, memoised, the node
    of each key met under it (None: no indexed field below that key, the value is skipped
    whole) and the plan of each key sequence met (:meth:`plan`)."""

    __slots__ = ("name", "code", "prefix", "walk", "below", "children", "plans", "pairs",
                 "info")

    def __init__(self, name: str) -> None:
        self.name = name
        self.code = _CODES.get(name)
        self.prefix = name + "." if name else ""
        self.below = not name or name in _PREFIXES
        self.walk = self.below and name not in OPAQUE_OBJECTS
        #: What the native walk reads of a node, in one look-up: (code, -1 for None;
        #: name; walk; below).
        self.info = (-1 if self.code is None else self.code, name, self.walk, self.below)
        self.children: dict[str, _Node | None] = {}
        self.plans: dict[tuple[str, ...], tuple[tuple[str, _Node], ...]] = {}
        self.pairs: dict[str, tuple[str, str]] = {}

    def child(self, key: str) -> _Node | None:
        node = self.children.get(key, self)
        if node is self:
            name = self.prefix + key
            node = _Node(name) if name in _CODES or name in _PREFIXES else None
            if len(self.children) < NODE_MEMO_KEYS:
                self.children[key] = node
        return node

    def plan(self, obj: dict[str, Any]) -> tuple[tuple[str, _Node], ...]:
        """The keys of ``obj`` that lead to indexed fields, in its order, with their
        nodes. Documents from one builder have a few key sequences: each is planned
        once, and the keys that lead nowhere (``ecs``, ``observer``...) are not
        looked at again."""
        keys = tuple(obj)
        plan = self.plans.get(keys)
        if plan is None:
            plan = tuple((k, sub) for k in keys if (sub := self.child(k)) is not None)
            if len(self.plans) < NODE_MEMO_PLANS:
                self.plans[keys] = plan
        return plan

    def pair(self, value: str) -> tuple[str, str]:
        """The posting of a keyword or text ``value`` of this field: ``(name, value
        case-folded, cut at MAX_TERM_CHARS)``. Kept (up to :data:`NODE_MEMO_VALUES` values
        of at most :data:`NODE_MEMO_VALUE_CHARS`, then it starts again): a run's documents
        repeat most values, and a kept pair is one look-up instead of a case-fold, a cut
        and a tuple, and its value's hash is known."""
        pair = (self.name, value.casefold()[:MAX_TERM_CHARS])
        if len(value) <= NODE_MEMO_VALUE_CHARS:
            if len(self.pairs) >= NODE_MEMO_VALUES:
                self.pairs.clear()
            self.pairs[value] = pair
        return pair


_ROOT = _Node("")


def flatten(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    """(dotted field, scalar value) of every leaf outside the opaque objects; lists give
    one pair per item, lists of objects flatten each object under the same prefix. The
    order :func:`postings` takes the values in (an object's own values, then its objects
    from the last to the first)."""
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
    """A date value as µs since the epoch (None: not a time): Unix seconds, or ISO 8601
    (the form documents carry natively, :func:`pcapwire._native.doc_time_us`)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return round(value * 1e6)
    us: int | None = _native.doc_time_us(value)
    if us is not None:
        return us
    try:
        return iso_us(str(value))
    except ValueError:
        return None


def _value(sub: _Node, value: Any, terms: list[tuple[str, str]],
           nums: list[tuple[str, int]], words: list[str], text: dict[str, str]) -> None:
    """Add one value of field ``sub`` (not None, not an object) to a document's postings
    (:func:`postings`): case-folded keywords and text (:meth:`_Node.pair`), an ip's hex
    form, a long, a date's µs; text values also to their FTS5 column. The native walk
    (:func:`pcapwire._native.index_add`) takes string keywords, dotted IPv4 addresses,
    dates in the documents' own form and numbers under long fields itself, and hands every
    other value here."""
    code = sub.code
    if code == _KEYWORD or code == _TEXT:
        s = value if type(value) is str else str(value)
        terms.append(sub.pairs.get(s) or sub.pair(s))
        words.append(s)
        if code == _TEXT:
            col = FTS_COLUMN_OF[sub.name]
            text[col] = f"{text[col]}\n{s}" if col in text else s
    elif code == _LONG:
        if isinstance(value, int | float) and not isinstance(value, bool):
            nums.append((sub.name, int(value)))
    elif code == _DATE:
        n = _date_us(value)
        if n is not None:
            nums.append((sub.name, n))
    elif code == _IP:
        s = str(value)
        ip = parse_ip(s)
        if ip is not None:
            terms.append((sub.name, ip))
            words.append(s)


def postings(body: dict[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, int]],
                                            dict[str, str]]:
    """What one document puts in ``terms``, ``nums`` and ``fts`` (by field name), the
    values taken in :func:`flatten`'s order (FTS5 positions depend on it).

    A walk over the objects that lead to indexed fields only (a document's ``observer``,
    ``ecs``, ``pcapwire.evidence``... are not visited), each object's keys by its
    :meth:`_Node.plan`, each value by its field's type code (a string keyword or an
    integer long here, the others by :func:`_value`); keywords case-folded
    (:func:`.values.keyword`) once a value (:meth:`_Node.pair`).

    The indexer runs the same walk natively (:func:`pcapwire._native.index_add`,
    core/native/postings.c: 2-3x cheaper); this is its statement in Python, and the walk
    of a document holding an object or list of a dict or list subclass."""
    terms: list[tuple[str, str]] = []
    nums: list[tuple[str, int]] = []
    words: list[str] = []
    text: dict[str, str] = {}
    stack: list[tuple[_Node, dict[str, Any]]] = [(_ROOT, body)]
    dict_, list_, str_, int_ = dict, list, str, int
    while stack:
        node, obj = stack.pop()
        for k, sub in node.plans.get(tuple(obj)) or node.plan(obj):
            v = obj[k]
            tv = type(v)
            code = sub.code
            if tv is str_ and code == _KEYWORD:  # the most common value, as below
                terms.append(sub.pairs.get(v) or sub.pair(v))
                words.append(v)
                continue
            if tv is int_ and code == _LONG:
                nums.append((sub.name, v))
                continue
            if tv is dict_ or (tv is not list_ and isinstance(v, dict)):
                if sub.walk:
                    stack.append((sub, v))
                continue
            for value in v if tv is list_ or isinstance(v, list) else (v,):
                if value is None:
                    continue
                if isinstance(value, dict):  # an object in a list
                    if sub.below:
                        stack.append((sub, value))
                else:
                    _value(sub, value, terms, nums, words, text)
    text["anytext"] = "\n".join(words)
    return terms, nums, text


_FILE_LOCKS: dict[str, threading.RLock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _file_lock(path: Path) -> threading.RLock:
    """This process's lock of one index file. Its writers (each workflow run's hook in a
    worker thread, the recorder's flow indexer...) take turns here, however long the
    queue: waiting on SQLite's lock instead, a run queued behind two others' batches
    passed :data:`BUSY_TIMEOUT_SECONDS` and its records stayed out of the index
    (``database is locked``) until a rebuild. Other processes still meet that timeout."""
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(os.path.realpath(path), threading.RLock())


#: A batch's postings of one table (``terms`` or ``nums``): field name -> value -> its
#: documents, in the order added (a value twice in one document is one posting). Keyed by
#: name, not field id: the field ids, reversed values and sort wait for
#: :func:`pcapwire._native.key_order`, once a distinct value of the batch.
Groups = dict[str, dict[Any, list[int]]]


def _walk(doc_id: int, body: dict[str, Any], terms: Groups, nums: Groups) -> dict[str, str]:
    """Add the document's postings to ``terms``/``nums`` under ``doc_id`` (the native walk,
    :func:`pcapwire._native.index_add`); its FTS text."""
    text: dict[str, str] | None = _native.index_add(
        doc_id, body, _ROOT, _value, terms, nums, MAX_TERM_CHARS)
    if text is None:  # an object or list of a subclass: the walk in Python
        doc_terms, doc_nums, text = postings(body)
        _native.group_add(terms, doc_id, doc_terms)
        _native.group_add(nums, doc_id, doc_nums)
    return text


_INSERT_ONE = "INSERT OR IGNORE INTO {} VALUES (?,?,?)"
_INSERT_MANY = "INSERT OR IGNORE INTO {} VALUES " + ",".join(["(?,?,?)"] * ROWS_PER_INSERT)


def _insert_postings(db: sqlite3.Connection, table: str, flat: list[Any]) -> None:
    """Insert the postings of :func:`pcapwire._native.key_order` into ``terms`` or ``nums``,
    :data:`ROWS_PER_INSERT` a statement."""
    width = 3 * ROWS_PER_INSERT
    full = len(flat) - len(flat) % width
    if full:
        db.executemany(_INSERT_MANY.format(table),
                       (flat[i:i + width] for i in range(0, full, width)))
    db.executemany(_INSERT_ONE.format(table),
                   (flat[i:i + 3] for i in range(full, len(flat), 3)))


def dumps(body: dict[str, Any]) -> str:
    """A document as its stored JSON: orjson (3x cheaper than :mod:`json`), or json's
    encoder for what orjson refuses (keys that are not strings, integers beyond 64 bits,
    lone surrogates). Both read back as the same values, except a float NaN or infinity,
    which orjson writes as null (JSON has neither; no analyzer writes them). Dates and
    dataclasses are written as :func:`str` makes them, as json's ``default=str`` does."""
    try:
        return _ORJSON_DUMPS(body, default=str, option=_ORJSON_OPTIONS).decode()
    except _ORJSON_ERRORS:
        return _DUMPS(body)


class SearchIndex:
    """One connection to a store's index; safe to share between threads (a lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.file_lock = _file_lock(self.path)
        try:
            self.db = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"search index {self.path}: {exc}") from None
        self.lock = threading.RLock()
        self._field_ids: dict[str, int] = dict(
            (n, i) for i, n in self.db.execute("SELECT id, name FROM fields"))

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                             timeout=BUSY_TIMEOUT_SECONDS)
        db.execute(f"PRAGMA page_size={PAGE_BYTES}")  # before WAL mode makes a new file
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        try:  # a reader (a search) must not queue behind a writer: write only to create
            made = db.execute("SELECT 1 FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.OperationalError:  # no such table: a new index
            made = None
        if made is None:
            with self.file_lock:
                db.executescript(_SCHEMA)
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                           (str(SCHEMA_VERSION),))
        return db

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
        with self.file_lock, self.lock:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (key, value))

    # ---- writes --------------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[_Writer]:
        """One transaction: ``with index.write() as w: w.put_many(docs) ...``; writers of
        this process queue for the file first (:func:`_file_lock`)."""
        with self.file_lock, self.lock:
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


#: One batch of documents as :meth:`_Writer.put_prepared` takes them (:func:`prepare`):
#: the ``docs`` rows without their ids (key, case, ts µs, JSON text), the FTS text of
#: each, and the ``terms`` and ``nums`` groups (field name -> value -> places in the
#: batch, from 1). Plain types: :mod:`pcapwire.search.pipeline` sends it to another
#: process with :mod:`marshal`.
Prepared = tuple[list[tuple[str, str, int, str]], list[dict[str, str]], Groups, Groups]


def prepare(docs: Iterable[Doc]) -> Prepared:
    """One batch's documents made ready to write, without the index: a key met twice
    keeps the last document at the first's place; each gets ``event.id`` (its key,
    searchable), its ``docs`` row and FTS text, and its postings grouped by field name and
    value under its place in the batch (``index_add``, the native walk)."""
    rows: list[tuple[str, str, int, str]] = []
    fts: list[dict[str, str]] = []
    terms: Groups = {}
    nums: Groups = {}
    unique = {d.key: d for d in docs}
    for place, d in enumerate(unique.values(), 1):
        body = d.body
        body.setdefault("event", {})["id"] = d.key
        pw = body.get("pcapwire") or {}
        rows.append((d.key, str(pw.get("case") or ""), _date_us(body.get("@timestamp")) or 0,
                     dumps(body)))
        fts.append(_walk(place, body, terms, nums))
    return rows, fts, terms, nums


class _Writer:
    def __init__(self, index: SearchIndex) -> None:
        self.index = index
        self.db = index.db
        self.fids = index._field_ids
        self.term_ids: dict[str, tuple[int, int]] = {}

    def _fid(self, name: str) -> int:
        fid = self.fids.get(name)
        if fid is None:
            fid = self.index.field_id(name, create=True)
            assert fid is not None
        return fid

    def _term_ids(self, name: str) -> tuple[int, int]:
        """(field id, the id of its reversed values, 0 when it keeps none)."""
        ids = self.term_ids.get(name)
        if ids is None:
            fid = self._fid(name)
            ids = self.term_ids[name] = (fid, -fid if name in SUFFIX_FIELDS else 0)
        return ids

    def _num_ids(self, name: str) -> tuple[int, int]:
        return self._fid(name), 0

    def _fts(self, command: str, rows: list[tuple[int, dict[str, str]]]) -> None:
        """Insert (or with command 'delete', remove) FTS rows, grouped by their columns."""
        by_cols: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for doc_id, text in rows:
            cols = tuple(text)
            by_cols.setdefault(cols, []).append((doc_id, *text.values()))
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
        term_docs: Groups = {}
        num_docs: Groups = {}
        fts_rows: list[tuple[int, dict[str, str]]] = []
        ids = []
        it = iter(keys)
        while chunk := list(islice(it, LOOKUP_CHUNK)):
            for doc_id, body in self.db.execute(
                    f"SELECT id, body FROM docs WHERE key IN ({', '.join('?' * len(chunk))})",
                    chunk):
                fts_rows.append((doc_id, _walk(doc_id, json.loads(body), term_docs,
                                               num_docs)))
                ids.append((doc_id,))
        if not ids:
            return 0
        for table, groups, field_ids in (("terms", term_docs, self._term_ids),
                                         ("nums", num_docs, self._num_ids)):
            flat = _native.key_order(groups, field_ids)
            self.db.executemany(f"DELETE FROM {table} WHERE f=? AND v=? AND doc=?",
                                (flat[i:i + 3] for i in range(0, len(flat), 3)))
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
        return self.put_prepared(prepare(docs), replace)

    def put_prepared(self, batch: Prepared, replace: bool = True) -> int:
        """Write one prepared batch (:func:`prepare`), the documents with the same keys
        first (``replace``), then the new ones with the ids after the highest, in the
        batch's order; each table filled by one ``executemany`` (postings sorted: a batch
        walks each B-tree once, in order, instead of landing on random pages of an index
        larger than the cache). Returns the documents written."""
        rows, fts, terms, nums = batch
        if replace:
            self.delete(r[0] for r in rows)
        db = self.db
        # Inside the write transaction (BEGIN IMMEDIATE): no other writer takes these ids.
        base = int(db.execute("SELECT coalesce(max(id), 0) FROM docs").fetchone()[0])
        db.executemany("INSERT INTO docs (id, key, case_id, ts, body) VALUES (?,?,?,?,?)",
                       [(base + place, *row) for place, row in enumerate(rows, 1)])
        for table, groups, ids in (("terms", terms, self._term_ids),
                                   ("nums", nums, self._num_ids)):
            flat: list[Any] = _native.key_order(groups, ids)
            flat[2::3] = [place + base for place in flat[2::3]]
            _insert_postings(db, table, flat)
        self._fts("", [(base + place, text) for place, text in enumerate(fts, 1)])
        return len(rows)

    def clear(self) -> None:
        """Everything goes (``pcapwire search rebuild``: in the same transaction as the
        documents that replace it, so searches see the old index until the commit)."""
        for table in ("docs", "terms", "nums"):
            self.db.execute(f"DELETE FROM {table}")
        self.db.execute("INSERT INTO fts (fts) VALUES ('delete-all')")
        self.db.execute("DELETE FROM meta WHERE key != 'schema_version'")
