"""The holds tables, in the data directory's case store file (``cases.sqlite``), on a
connection of their own (WAL, a busy timeout): a hold, the evidence parts written for it,
and the segments it has copied.

* ``holds``: case, selection (the query filters, JSON), window (``start_ns``, ``end_ns``;
  NULL is open on that side), reason, who created it and when, ``state`` (``open``: it
  still copies what is recorded in its window; ``complete``: its window has passed and
  every segment of it is copied; ``released``: by whom, when, why);
* ``hold_parts``: one row per evidence file (``n`` from 1): its path relative to the data
  directory, SHA-256, size, packets, the segments it was copied from and what of them
  could not be read (``damage``: a damaged frame of a compressed segment);
* ``hold_segments``: every segment a hold has copied (by id and catalog path, so a
  segment id that SQLite hands out again after retention deleted its segment is a new
  segment), with the part its packets went to (NULL: none of them matched).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: How long a write waits for another connection's write lock.
BUSY_TIMEOUT_MS = 30_000
STATES = ("open", "complete", "released")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS holds (
    id INTEGER PRIMARY KEY AUTOINCREMENT, case_name TEXT NOT NULL, selection TEXT NOT NULL,
    start_ns INTEGER, end_ns INTEGER, reason TEXT NOT NULL, created_by TEXT NOT NULL,
    created REAL NOT NULL, state TEXT NOT NULL, completed REAL, released_by TEXT,
    released REAL, release_reason TEXT);
CREATE INDEX IF NOT EXISTS holds_case ON holds(case_name);
CREATE TABLE IF NOT EXISTS hold_parts (
    hold_id INTEGER NOT NULL REFERENCES holds(id), n INTEGER NOT NULL, path TEXT NOT NULL,
    sha256 TEXT NOT NULL, size INTEGER NOT NULL, packets INTEGER NOT NULL,
    segments TEXT NOT NULL, created REAL NOT NULL, damage TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (hold_id, n));
CREATE TABLE IF NOT EXISTS hold_segments (
    hold_id INTEGER NOT NULL, segment_id INTEGER NOT NULL, path TEXT NOT NULL, part INTEGER,
    PRIMARY KEY (hold_id, segment_id, path)) WITHOUT ROWID;
"""
_HOLD_COLUMNS = ("id, case_name, selection, start_ns, end_ns, reason, created_by, created, "
                 "state, completed, released_by, released, release_reason")


@dataclass(frozen=True)
class Part:
    n: int
    path: str  # relative to the data directory
    sha256: str
    size: int
    packets: int
    segments: list[int]
    created: float
    damage: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "path": self.path, "sha256": self.sha256, "size": self.size,
                "packets": self.packets, "segments": self.segments, "created": self.created,
                "damage": self.damage}


@dataclass
class Hold:
    id: int
    case: str
    selection: dict[str, Any]
    start_ns: int | None
    end_ns: int | None
    reason: str
    created_by: str
    created: float
    state: str
    completed: float | None = None
    released_by: str | None = None
    released: float | None = None
    release_reason: str | None = None
    parts: list[Part] = field(default_factory=list)

    @property
    def packets(self) -> int:
        return sum(p.packets for p in self.parts)

    @property
    def bytes(self) -> int:
        return sum(p.size for p in self.parts)


class HoldsDB:
    """The holds tables; one connection, used from one thread."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            self.db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self.db.execute("PRAGMA journal_mode=WAL")
            if self.db.execute("SELECT count(*) FROM sqlite_master WHERE type='table' AND "
                               "name IN ('holds', 'hold_parts', 'hold_segments')"
                               ).fetchone()[0] < 3:
                self.db.executescript(_SCHEMA)
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> HoldsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- holds -----------------------------------------------------------------------------
    def add(self, case: str, selection: dict[str, Any], start_ns: int | None,
            end_ns: int | None, reason: str, actor: str) -> int:
        cur = self.db.execute(
            "INSERT INTO holds (case_name, selection, start_ns, end_ns, reason, created_by, "
            "created, state) VALUES (?,?,?,?,?,?,?, 'open')",
            (case, json.dumps(selection, sort_keys=True), start_ns, end_ns, reason, actor,
             time.time()))
        return int(cur.lastrowid or 0)

    def drop(self, hold_id: int) -> None:
        """Forget a hold that was refused before anything of it was written or logged."""
        self.db.execute("BEGIN IMMEDIATE")
        for table, key in (("hold_segments", "hold_id"), ("hold_parts", "hold_id"),
                           ("holds", "id")):
            self.db.execute(f"DELETE FROM {table} WHERE {key}=?", (hold_id,))
        self.db.execute("COMMIT")

    def get(self, hold_id: int) -> Hold | None:
        found = self.holds(ids=[hold_id])
        return found[0] if found else None

    def holds(self, case: str | None = None, states: Sequence[str] | None = None,
              ids: Iterable[int] | None = None) -> list[Hold]:
        """Holds with their parts, oldest first."""
        sql = f"SELECT {_HOLD_COLUMNS} FROM holds WHERE 1=1"
        args: list[Any] = []
        if case is not None:
            sql += " AND case_name=?"
            args.append(case)
        if states is not None:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += list(states)
        if ids is not None:
            id_list = list(ids)
            sql += f" AND id IN ({','.join('?' * len(id_list))})"
            args += id_list
        self.db.execute("BEGIN")  # the holds and their parts from one commit
        try:
            rows = self.db.execute(sql + " ORDER BY id", args).fetchall()
            out = [Hold(r[0], r[1], json.loads(r[2]), *r[3:]) for r in rows]
            by_id = {h.id: h for h in out}
            if by_id:
                for r in self.db.execute(
                        "SELECT hold_id, n, path, sha256, size, packets, segments, created, "
                        "damage "
                        f"FROM hold_parts WHERE hold_id IN ({','.join('?' * len(by_id))}) "
                        "ORDER BY hold_id, n", list(by_id)):
                    by_id[r[0]].parts.append(Part(r[1], r[2], r[3], r[4], r[5],
                                                  json.loads(r[6]), r[7], json.loads(r[8])))
        finally:
            self.db.execute("COMMIT")
        return out

    def complete(self, hold_id: int) -> bool:
        cur = self.db.execute("UPDATE holds SET state='complete', completed=? WHERE id=? AND "
                              "state='open'", (time.time(), hold_id))
        return cur.rowcount == 1

    def release(self, hold_id: int, actor: str, reason: str) -> bool:
        """False when the hold is already released."""
        cur = self.db.execute("UPDATE holds SET state='released', released_by=?, released=?, "
                              "release_reason=? WHERE id=? AND state!='released'",
                              (actor, time.time(), reason, hold_id))
        return cur.rowcount == 1

    # -- copies ----------------------------------------------------------------------------
    def copied(self, hold_id: int) -> set[tuple[int, str]]:
        """(segment id, catalog path) of every segment the hold has copied."""
        return {(int(r[0]), str(r[1])) for r in self.db.execute(
            "SELECT segment_id, path FROM hold_segments WHERE hold_id=?", (hold_id,))}

    def next_part(self, hold_id: int) -> int:
        return int(self.db.execute("SELECT coalesce(max(n), 0) + 1 FROM hold_parts WHERE "
                                   "hold_id=?", (hold_id,)).fetchone()[0])

    def record_copy(self, hold_id: int, part: Part | None,
                    segments: Sequence[tuple[int, str]]) -> None:
        """The part written (None: nothing matched) and the segments it was copied from,
        in one transaction."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if part is not None:
                self.db.execute(
                    "INSERT INTO hold_parts (hold_id, n, path, sha256, size, packets, "
                    "segments, created, damage) VALUES (?,?,?,?,?,?,?,?,?)",
                    (hold_id, part.n, part.path, part.sha256, part.size, part.packets,
                     json.dumps(part.segments), part.created, json.dumps(part.damage)))
            self.db.executemany(
                "INSERT OR IGNORE INTO hold_segments (hold_id, segment_id, path, part) "
                "VALUES (?,?,?,?)",
                [(hold_id, seg_id, path, part.n if part else None) for seg_id, path in segments])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
