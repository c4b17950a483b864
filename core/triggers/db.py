"""Triggers, their versions, hunts, units of work, matches and deliveries: one SQLite file
per store (``<data-dir>/triggers.sqlite``, WAL), shared by the CLI, ``pcapwire serve`` and
the runner (:mod:`.runner`), each with its own connection.

- ``triggers``: one row per trigger (``state`` active|paused|deleted, current ``version``).
- ``trigger_versions``: every definition a trigger had (JSON, secrets included) and its
  :func:`~.model.rules_digest`; a new version only when the digest changes.
- ``hunts``: one per (trigger, version): ``status`` queued|running|paused|aborted|finished|
  failed, totals and progress in units and bytes.
- ``hunt_units``: a hunt's units of work (one sealed segment each): ``state``
  queued|running|done|failed, attempts, the error of the last attempt. A unit is ``done``
  only in the same transaction that adds its matches (:meth:`TriggerDB.finish_unit`), so a
  hunt killed at any moment resumes with every finished unit kept and none repeated.
- ``matches``: the trigger's one result set, hunt and watch alike, unique per (rule key,
  flow key); ``match_versions`` says which versions found each (a new version's hunt shows
  what it found anew and what it no longer finds, :meth:`TriggerDB.version_diff`).
- ``watch``: per trigger, its watch's cursor (``last_segment_id``: every segment up to it
  is handled) and ``hunt_bound``: the current version's hunt takes the sealed segments up
  to it (set when a version is made, :meth:`TriggerDB.hunt_scope`); ``watch_segments``:
  the segments above the cursor the watch has begun (``live``: read up to ``offset``
  while recorded) or finished (``done``), see :mod:`.watch`; ``watch_engine_hits``: per
  (segment, version, rule, flow) the hits its live engines counted (:mod:`.live_engines`,
  :meth:`TriggerDB.add_engine_hits`); ``notified_id`` and
  ``workflows_id``: the last match handed to the notifier (:mod:`.notify`) and to the
  trigger's workflows (:mod:`.service`).
- ``trigger_rule_sets``: the Suricata rule files a trigger's workflows use, with their
  SHA-256 when last seen (``pcapwire rules update`` re-hunts on a change, :mod:`.rulesets`).
- ``deliveries``: every notification attempt (target, status, attempts, last error).
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from pcapwire.errors import ConfigError
from pcapwire.triggers.model import Indicators, Scope, Target, TriggerDef, rules_digest

TRIGGERS_FILE = "triggers.sqlite"
TRIGGER_STATES = ("active", "paused", "deleted")
HUNT_STATES = ("queued", "running", "paused", "aborted", "finished", "failed")
UNIT_STATES = ("queued", "running", "done", "failed")
#: Attempts at a unit before it is listed as failed.
UNIT_ATTEMPTS = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS triggers (
  id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, state TEXT NOT NULL,
  version INTEGER NOT NULL, created REAL NOT NULL, created_by TEXT NOT NULL,
  updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS trigger_versions (
  trigger_id INTEGER NOT NULL, version INTEGER NOT NULL, definition TEXT NOT NULL,
  digest TEXT NOT NULL, created REAL NOT NULL, created_by TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '', PRIMARY KEY (trigger_id, version));
CREATE TABLE IF NOT EXISTS hunts (
  id INTEGER PRIMARY KEY AUTOINCREMENT, trigger_id INTEGER NOT NULL, version INTEGER NOT NULL,
  status TEXT NOT NULL, units_total INTEGER NOT NULL DEFAULT 0,
  units_done INTEGER NOT NULL DEFAULT 0, units_failed INTEGER NOT NULL DEFAULT 0,
  bytes_total INTEGER NOT NULL DEFAULT 0, bytes_done INTEGER NOT NULL DEFAULT 0,
  created REAL NOT NULL, started REAL, finished REAL, error TEXT,
  UNIQUE (trigger_id, version));
CREATE TABLE IF NOT EXISTS hunt_units (
  hunt_id INTEGER NOT NULL, segment_id INTEGER NOT NULL, bytes INTEGER NOT NULL,
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, error TEXT,
  matches INTEGER NOT NULL DEFAULT 0, seconds REAL, finished REAL,
  PRIMARY KEY (hunt_id, segment_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS matches (
  id INTEGER PRIMARY KEY AUTOINCREMENT, trigger_id INTEGER NOT NULL, rule TEXT NOT NULL,
  flow_key TEXT NOT NULL, flow_id INTEGER, proto INTEGER, src_ip TEXT, src_port INTEGER,
  dest_ip TEXT, dest_port INTEGER, ts REAL NOT NULL, segment_id INTEGER,
  source TEXT NOT NULL, evidence TEXT NOT NULL DEFAULT '{}', found REAL NOT NULL,
  UNIQUE (trigger_id, rule, flow_key));
CREATE INDEX IF NOT EXISTS matches_found ON matches(trigger_id, id);
CREATE TABLE IF NOT EXISTS match_versions (
  match_id INTEGER NOT NULL, version INTEGER NOT NULL, hits INTEGER NOT NULL,
  PRIMARY KEY (match_id, version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS watch (
  trigger_id INTEGER PRIMARY KEY, last_segment_id INTEGER NOT NULL DEFAULT 0,
  live_segment_id INTEGER, live_offset INTEGER, hunt_bound INTEGER NOT NULL DEFAULT 0,
  notified_id INTEGER NOT NULL DEFAULT 0, workflows_id INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS watch_segments (
  trigger_id INTEGER NOT NULL, segment_id INTEGER NOT NULL, offset INTEGER NOT NULL,
  state TEXT NOT NULL, PRIMARY KEY (trigger_id, segment_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS watch_engine_hits (
  trigger_id INTEGER NOT NULL, version INTEGER NOT NULL, segment_id INTEGER NOT NULL,
  rule TEXT NOT NULL, flow_key TEXT NOT NULL, hits INTEGER NOT NULL,
  PRIMARY KEY (trigger_id, segment_id, version, rule, flow_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trigger_rule_sets (
  trigger_id INTEGER NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL,
  PRIMARY KEY (trigger_id, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (
  id INTEGER PRIMARY KEY AUTOINCREMENT, trigger_id INTEGER NOT NULL, match_id INTEGER,
  target TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT, http_status INTEGER, created REAL NOT NULL, delivered REAL);
"""


@dataclass(frozen=True)
class Trigger:
    id: int
    name: str
    state: str
    version: int
    created: float
    created_by: str
    updated: float
    definition: TriggerDef


@dataclass(frozen=True)
class Hunt:
    id: int
    trigger_id: int
    version: int
    status: str
    units_total: int
    units_done: int
    units_failed: int
    bytes_total: int
    bytes_done: int
    created: float
    started: float | None
    finished: float | None
    error: str | None


@dataclass(frozen=True)
class Hit:
    """One thing a matcher found in a unit (before deduplication): the rule key
    (:func:`~.model.rule_key`), the flow's 5-tuple as seen (any direction), the time of
    the packet or flow it is about, and what the engine said (EVE alert, YARA strings …)."""

    rule: str
    proto: int
    src_ip: str
    src_port: int
    dest_ip: str
    dest_port: int
    ts: float
    evidence: dict[str, Any]
    flow_id: int | None = None



@dataclass(frozen=True)
class HitBatch:
    """Hits as the result set takes them: one row per (rule, flow key) with the fields of
    its first hit (the earliest time, the first flow id known), the evidence as JSON, and
    its number of hits. A hunt's worker process makes it (:meth:`of`), so that the runner
    only writes it (a unit brings tens of thousands of hits) and what crosses between them
    is plain tuples; a matcher that has its hits as rows already hands them to
    :meth:`of_rows` (the IP indicators, :func:`.ip_walk.ip_batches`)."""

    rows: tuple[tuple[Any, ...], ...]  # rule, flow key, flow id, proto, src, sport, dest,
    # dport, ts, evidence JSON, hits
    hits: int

    @classmethod
    def of(cls, hits: list[Hit]) -> HitBatch:
        batch = cls.of_rows([(h.rule, flow_key(h.proto, h.src_ip, h.src_port, h.dest_ip,
                                               h.dest_port), h.flow_id, h.proto, h.src_ip,
                              h.src_port, h.dest_ip, h.dest_port, h.ts, h.evidence, 1)
                             for h in hits])
        return cls(tuple((*r[:9], evidence_json(r[9]), r[10]) for r in batch.rows),
                     batch.hits)

    @classmethod
    def of_rows(cls, rows: list[tuple[Any, ...]]) -> HitBatch:
        """A batch of rows in the shape of :attr:`rows`, hits in the order found (several
        rows of one (rule, flow key) are merged as :meth:`of` merges hits)."""
        out: dict[tuple[str, str], tuple[Any, ...]] = {}
        for r in rows:
            first = out.get((r[0], r[1]))
            out[(r[0], r[1])] = r if first is None else (
                *first[:2], r[2] if first[2] is None else first[2], *first[3:8],
                min(first[8], r[8]), first[9], first[10] + r[10])
        return cls(tuple(out.values()), sum(r[10] for r in rows))


@dataclass(frozen=True)
class StagedRows:
    """A unit's hits made as :attr:`HitBatch.rows` by SQLite itself (one row per (rule,
    flow key), in the order of their first hit), in a table the trigger database's
    connection reads (the IP indicators: a walker's staging database attached to it,
    :meth:`.ip_walk.IpWalkers.attached`): the rows with rowids ``first`` to ``last`` of
    ``table`` (schema-qualified; its columns named as ``hit_batch``'s), ``hits`` hits in
    all."""

    table: str
    first: int
    last: int
    hits: int


def evidence_json(evidence: dict[str, Any]) -> str:
    """A hit's evidence as the result set stores it (JSON, keys sorted)."""
    return orjson.dumps(evidence, default=str, option=_EVIDENCE_JSON).decode()


def flow_key(proto: int, a_ip: str, a_port: int, b_ip: str, b_port: int) -> str:
    """Direction-independent key of a 5-tuple (as the catalog's flows are)."""
    if (_ip_sort(b_ip), b_port) < (_ip_sort(a_ip), a_port):
        a_ip, a_port, b_ip, b_port = b_ip, b_port, a_ip, a_port
    return f"{proto} {a_ip} {a_port} {b_ip} {b_port}"


def stored_definition(stored: str) -> TriggerDef:
    """A definition as a version row holds it (JSON of :meth:`TriggerDef.to_dict`), read
    back without being checked again: :func:`~.model.from_dict` checked and normalised it
    before it was stored (1,000 indicators take ~0.1 s to check; a hunt reads its
    definition several times)."""
    raw = json.loads(stored)
    return TriggerDef(**{**raw, "indicators": Indicators(**raw.get("indicators", {})),
                         "scope": Scope(**raw.get("scope", {})),
                         "notify": [Target(**t) for t in raw.get("notify", [])]})


def watch_start(root: Path) -> int:
    """Where a new trigger's watch starts: below the first segment being recorded, else
    after the last segment (0 without a catalog). The hunt takes what is sealed up to it."""
    path = root / "catalog.sqlite"
    if not path.is_file():
        return 0
    cat = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cat.execute("PRAGMA busy_timeout=30000")
        last, first_open = cat.execute(
            "SELECT (SELECT coalesce(max(id), 0) FROM segments), (SELECT min(segment_id) "
            "FROM capture_segments WHERE state='open')").fetchone()
    finally:
        cat.close()
    return int(last) if first_open is None else int(first_open) - 1


@functools.lru_cache(maxsize=2**16)
def _ip_sort(ip: str) -> tuple[int, bytes]:
    """(IP version, packed address); (9, text) for what is no address. inet_pton: a tenth
    of ipaddress's time (a hunt keys thousands of hits per unit)."""
    import socket

    for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        try:
            return (version, socket.inet_pton(family, ip))
        except OSError:
            pass
    return (9, ip.encode())


class TriggerDB:
    """One connection to a store's trigger database; use from one thread."""

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root) / TRIGGERS_FILE
        # URI file names: the hunt runner attaches its IP walkers' staging databases (memdb)
        self.db = sqlite3.connect(f"file:{quote(str(self.path))}", uri=True,
                                  isolation_level=None, check_same_thread=False, timeout=30)
        # NORMAL first: a new file's switch to WAL then syncs once less
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA temp_store=MEMORY")  # the batch tables, not files
        self.db.execute("PRAGMA busy_timeout=30000")
        if self.db.execute("SELECT 1 FROM sqlite_master").fetchone() is None:
            # a new file: its schema in one transaction (one commit, not one a table)
            self.db.executescript(f"BEGIN IMMEDIATE;{SCHEMA}COMMIT;")
        else:
            self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> TriggerDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # -- triggers --------------------------------------------------------------------------
    def create(self, defn: TriggerDef, actor: str) -> tuple[Trigger, Hunt]:
        """A new trigger (version 1) and its first hunt, queued. What the store holds now
        is the hunt's (sealed segments up to :func:`watch_start`), the rest the watch's."""
        now = time.time()
        bound = watch_start(self.path.parent)
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM triggers WHERE name=? AND state!='deleted'",
                          (defn.name,)).fetchone():
                raise ConfigError(f"a trigger named {defn.name!r} exists; edit it or delete "
                                  "it first")
            db.execute("DELETE FROM triggers WHERE name=? AND state='deleted'", (defn.name,))
            cur = db.execute("INSERT INTO triggers (name, state, version, created, created_by, "
                             "updated) VALUES (?, 'active', 1, ?, ?, ?)",
                             (defn.name, now, actor, now))
            tid = int(cur.lastrowid or 0)
            self._add_version(tid, 1, defn, actor, "created")
            hunt_id = self._add_hunt(tid, 1)
            db.execute("INSERT INTO watch (trigger_id, last_segment_id, hunt_bound) VALUES "
                       "(?, ?, ?)", (tid, bound, bound))
        return self.get(tid), self.hunt(hunt_id)

    def update(self, trigger_id: int, defn: TriggerDef, actor: str, reason: str
               ) -> tuple[Trigger, Hunt | None]:
        """Store ``defn`` as the trigger's definition: a new version and a new hunt (queued;
        the previous version's hunt, if still going, is aborted) when what decides the
        results changed; otherwise the current version's definition is replaced in place
        (name, workflows, targets). Returns the trigger and the new hunt, if any."""
        now = time.time()
        with self.transaction() as db:
            cur = self.get(trigger_id)
            if cur.state == "deleted":
                raise ConfigError(f"trigger {trigger_id} is deleted")
            if rules_digest(defn) == rules_digest(cur.definition):
                db.execute("UPDATE trigger_versions SET definition=? WHERE trigger_id=? AND "
                           "version=?", (json.dumps(defn.to_dict()), trigger_id, cur.version))
                db.execute("UPDATE triggers SET name=?, updated=? WHERE id=?",
                           (defn.name, now, trigger_id))
                return self.get(trigger_id), None
            hunt_id = self._new_version(trigger_id, cur.version + 1, defn, actor, reason)
        return self.get(trigger_id), self.hunt(hunt_id)

    def rehunt(self, trigger_id: int, actor: str, reason: str) -> tuple[Trigger, Hunt]:
        """A new version with the same definition, and its hunt (``pcapwire rules update``
        changed a rule set the trigger's workflows use, :mod:`.rulesets`)."""
        with self.transaction():
            cur = self.get(trigger_id)
            if cur.state == "deleted":
                raise ConfigError(f"trigger {trigger_id} is deleted")
            hunt_id = self._new_version(trigger_id, cur.version + 1, cur.definition, actor,
                                        reason)
        return self.get(trigger_id), self.hunt(hunt_id)

    def _new_version(self, trigger_id: int, version: int, defn: TriggerDef, actor: str,
                     reason: str) -> int:
        """In a transaction: the version, its hunt (the previous one aborted), and the
        hunt's bound: every segment the watch has handled so far (with the earlier rules)."""
        now = time.time()
        self._add_version(trigger_id, version, defn, actor, reason)
        self.db.execute("UPDATE hunts SET status='aborted', finished=? WHERE trigger_id=? AND "
                        "status IN ('queued','running','paused')", (now, trigger_id))
        self.db.execute("UPDATE triggers SET name=?, version=?, updated=? WHERE id=?",
                        (defn.name, version, now, trigger_id))
        self.db.execute(
            "UPDATE watch SET hunt_bound=max(last_segment_id, coalesce((SELECT max(segment_id) "
            "FROM watch_segments WHERE trigger_id=? AND state='done'), 0)) WHERE trigger_id=?",
            (trigger_id, trigger_id))
        return self._add_hunt(trigger_id, version)

    def _add_version(self, tid: int, version: int, defn: TriggerDef, actor: str,
                     reason: str) -> None:
        self.db.execute("INSERT INTO trigger_versions VALUES (?,?,?,?,?,?,?)",
                        (tid, version, json.dumps(defn.to_dict()), rules_digest(defn),
                         time.time(), actor, reason))

    def _add_hunt(self, tid: int, version: int) -> int:
        cur = self.db.execute("INSERT INTO hunts (trigger_id, version, status, created) VALUES "
                              "(?, ?, 'queued', ?)", (tid, version, time.time()))
        return int(cur.lastrowid or 0)

    def set_state(self, trigger_id: int, state: str) -> Trigger:
        """active | paused (the watch stops, the hunt pauses) | deleted (both end; its
        matches and delivery log stay until the name is reused)."""
        if state not in TRIGGER_STATES:
            raise ValueError(state)
        with self.transaction() as db:
            self.get(trigger_id)
            db.execute("UPDATE triggers SET state=?, updated=? WHERE id=?",
                       (state, time.time(), trigger_id))
            if state == "deleted":
                db.execute("UPDATE hunts SET status='aborted', finished=? WHERE trigger_id=? "
                           "AND status IN ('queued','running','paused')",
                           (time.time(), trigger_id))
        return self.get(trigger_id)

    def state(self, trigger_id: int) -> str:
        """The trigger's state alone (:meth:`get` also checks its whole definition)."""
        row = self.db.execute("SELECT state FROM triggers WHERE id=?", (trigger_id,)).fetchone()
        if row is None:
            raise KeyError(trigger_id)
        return str(row[0])

    def get(self, trigger_id: int) -> Trigger:
        row = self.db.execute(
            "SELECT t.id, t.name, t.state, t.version, t.created, t.created_by, t.updated, "
            "v.definition FROM triggers t JOIN trigger_versions v ON v.trigger_id=t.id AND "
            "v.version=t.version WHERE t.id=?", (trigger_id,)).fetchone()
        if row is None:
            raise KeyError(trigger_id)
        return Trigger(row[0], row[1], row[2], row[3], row[4], row[5], row[6],
                       stored_definition(row[7]))

    def by_name(self, name: str) -> Trigger:
        row = self.db.execute("SELECT id FROM triggers WHERE name=? AND state!='deleted'",
                              (name,)).fetchone()
        if row is None:
            raise KeyError(name)
        return self.get(row[0])

    def triggers(self, include_deleted: bool = False) -> list[Trigger]:
        sql = "SELECT id FROM triggers" + ("" if include_deleted else
                                            " WHERE state != 'deleted'") + " ORDER BY id"
        return [self.get(r[0]) for r in self.db.execute(sql).fetchall()]

    def versions(self, trigger_id: int) -> list[dict[str, Any]]:
        """Every version of the trigger, oldest first: version, digest, created,
        created_by, reason (not the definition: it holds secrets)."""
        keys = ("version", "digest", "created", "created_by", "reason")
        return [dict(zip(keys, r, strict=True)) for r in self.db.execute(
            "SELECT version, digest, created, created_by, reason FROM trigger_versions "
            "WHERE trigger_id=? ORDER BY version", (trigger_id,))]

    def match_count(self, trigger_id: int) -> int:
        return int(self.db.execute("SELECT count(*) FROM matches WHERE trigger_id=?",
                                   (trigger_id,)).fetchone()[0])

    def version_definition(self, trigger_id: int, version: int) -> TriggerDef:
        row = self.db.execute("SELECT definition FROM trigger_versions WHERE trigger_id=? "
                              "AND version=?", (trigger_id, version)).fetchone()
        if row is None:
            raise KeyError((trigger_id, version))
        return stored_definition(row[0])

    # -- hunts -----------------------------------------------------------------------------
    def hunt(self, hunt_id: int) -> Hunt:
        row = self.db.execute(f"SELECT {_HUNT_COLUMNS} FROM hunts WHERE id=?",
                              (hunt_id,)).fetchone()
        if row is None:
            raise KeyError(hunt_id)
        return Hunt(*row)

    def hunts(self, trigger_id: int | None = None, statuses: tuple[str, ...] | None = None
              ) -> list[Hunt]:
        sql = f"SELECT {_HUNT_COLUMNS} FROM hunts WHERE 1=1"
        args: list[Any] = []
        if trigger_id is not None:
            sql += " AND trigger_id=?"
            args.append(trigger_id)
        if statuses:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args += list(statuses)
        return [Hunt(*r) for r in self.db.execute(sql + " ORDER BY id", args)]

    def set_hunt_status(self, hunt_id: int, status: str, error: str | None = None) -> None:
        if status not in HUNT_STATES:
            raise ValueError(status)
        now = time.time()
        self.db.execute(
            "UPDATE hunts SET status=?, error=coalesce(?, error), "
            "started=CASE WHEN ?='running' THEN coalesce(started, ?) ELSE started END, "
            "finished=CASE WHEN ? IN ('aborted','finished','failed') THEN ? ELSE NULL END "
            "WHERE id=?", (status, error, status, now, status, now, hunt_id))

    def plan_units(self, hunt_id: int, units: list[tuple[int, int]]) -> None:
        """The hunt's units, (segment id, bytes) each, added once (a resumed hunt keeps
        its own); totals follow."""
        with self.transaction() as db:
            db.executemany("INSERT OR IGNORE INTO hunt_units (hunt_id, segment_id, bytes, "
                           "state) VALUES (?, ?, ?, 'queued')",
                           [(hunt_id, s, b) for s, b in units])
            self._totals(hunt_id)

    def units(self, hunt_id: int, states: tuple[str, ...] | None = None
              ) -> list[dict[str, Any]]:
        sql = ("SELECT segment_id, bytes, state, attempts, error, matches, seconds, finished "
               "FROM hunt_units WHERE hunt_id=?")
        args: list[Any] = [hunt_id]
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += list(states)
        keys = ("segment_id", "bytes", "state", "attempts", "error", "matches", "seconds",
                "finished")
        return [dict(zip(keys, r, strict=True))
                for r in self.db.execute(sql + " ORDER BY segment_id", args)]

    def start_units(self, hunt_id: int, segment_ids: list[int]) -> None:
        """The units are handed out: ``running``, their attempt counted."""
        with self.transaction() as db:
            db.executemany("UPDATE hunt_units SET state='running', attempts=attempts+1 "
                           "WHERE hunt_id=? AND segment_id=?",
                           [(hunt_id, s) for s in segment_ids])

    def finish_unit(self, hunt_id: int, segment_id: int,
                    hits: list[Hit] | HitBatch | StagedRows, version: int, seconds: float
                    ) -> list[int]:
        """A unit done: its hits join the result set and the unit is marked done, in one
        transaction. Returns the ids of matches that are new to the trigger (to notify)."""
        hunt = self.hunt(hunt_id)
        batch = hits if isinstance(hits, HitBatch | StagedRows) else HitBatch.of(hits)
        with self.transaction() as db:
            new = self._add_hits(hunt.trigger_id, batch, version, "hunt", segment_id)
            db.execute("UPDATE hunt_units SET state='done', error=NULL, matches=?, seconds=?, "
                       "finished=? WHERE hunt_id=? AND segment_id=?",
                       (batch.hits, seconds, time.time(), hunt_id, segment_id))
            self._totals(hunt_id)
        return new

    def fail_unit(self, hunt_id: int, segment_id: int, error: str) -> bool:
        """The unit's attempt failed: queued again, or failed for good after UNIT_ATTEMPTS
        attempts (returns True then)."""
        with self.transaction() as db:
            row = db.execute("SELECT attempts FROM hunt_units WHERE hunt_id=? AND "
                             "segment_id=?", (hunt_id, segment_id)).fetchone()
            final = row is not None and row[0] >= UNIT_ATTEMPTS
            db.execute("UPDATE hunt_units SET state=?, error=? WHERE hunt_id=? AND "
                       "segment_id=?", ("failed" if final else "queued", error[:2000],
                                        hunt_id, segment_id))
            self._totals(hunt_id)
        return final

    def requeue_units(self, hunt_id: int, segment_ids: list[int] | None = None,
                      attempt_counts: bool = True) -> None:
        """Units left ``running`` (``segment_ids``: only these) queued again: when the
        runner stopped them (``attempt_counts`` False: the attempt is taken back), or died
        (it counts: a unit at UNIT_ATTEMPTS attempts is failed, it may be what kills it)."""
        sql = " AND state='running'"
        args: list[Any] = [hunt_id]
        if segment_ids is not None:
            sql += f" AND segment_id IN ({','.join('?' * len(segment_ids))})"
            args += segment_ids
        with self.transaction() as db:
            if not attempt_counts:
                db.execute("UPDATE hunt_units SET state='queued', attempts=max(attempts-1, 0) "
                           f"WHERE hunt_id=?{sql}", args)
            db.execute("UPDATE hunt_units SET state='failed', error='the runner was stopped "
                       f"during each of its ' || attempts || ' attempts' WHERE hunt_id=?{sql} "
                       "AND attempts >= ?", [*args, UNIT_ATTEMPTS])
            db.execute(f"UPDATE hunt_units SET state='queued' WHERE hunt_id=?{sql}", args)
            self._totals(hunt_id)

    def move_hunt(self, hunt_id: int, status: str, expected: tuple[str, ...],
                  error: str | None = None) -> bool:
        """:meth:`set_hunt_status` only while the hunt's status is one of ``expected``
        (the runner's changes never overwrite a user's pause or abort); whether it did."""
        with self.transaction() as db:
            row = db.execute("SELECT status FROM hunts WHERE id=?", (hunt_id,)).fetchone()
            if row is None or row[0] not in expected:
                return False
            self.set_hunt_status(hunt_id, status, error)
        return True

    def _totals(self, hunt_id: int) -> None:
        self.db.execute(
            "UPDATE hunts SET units_total=t.n, bytes_total=t.b, units_done=t.d, "
            "bytes_done=t.db, units_failed=t.f FROM (SELECT count(*) AS n, "
            "coalesce(sum(bytes),0) AS b, coalesce(sum(state='done'),0) AS d, "
            "coalesce(sum(CASE WHEN state='done' THEN bytes END),0) AS db, "
            "coalesce(sum(state='failed'),0) AS f FROM hunt_units WHERE hunt_id=?) AS t "
            "WHERE hunts.id=?", (hunt_id, hunt_id))

    # -- matches ---------------------------------------------------------------------------
    def add_watch_hits(self, trigger_id: int, hits: list[Hit], version: int,
                       segment_id: int | None) -> list[int]:
        """Hits of the watch (new data); returns the ids of matches new to the trigger."""
        with self.transaction():
            return self._add_hits(trigger_id, hits, version, "watch", segment_id)

    # -- the watch (pcapwire.triggers.watch) -----------------------------------------------
    def hunt_scope(self, trigger_id: int) -> tuple[int, set[int]]:
        """What the current version's hunt plans: the sealed segments with ids up to the
        first value, except those of the second (recorded segments the watch is reading
        live or has not finished: the new rules apply to them from the version on)."""
        row = self.db.execute("SELECT hunt_bound FROM watch WHERE trigger_id=?",
                              (trigger_id,)).fetchone()
        live = {r[0] for r in self.db.execute(
            "SELECT segment_id FROM watch_segments WHERE trigger_id=? AND state!='done'",
            (trigger_id,))}
        return (int(row[0]) if row else 0), live

    def watch_state(self, trigger_id: int) -> tuple[int, dict[int, tuple[int, str]]]:
        """The watch's cursor and its segments above it: id -> (offset read, state)."""
        row = self.db.execute("SELECT last_segment_id FROM watch WHERE trigger_id=?",
                              (trigger_id,)).fetchone()
        rows = {r[0]: (r[1], r[2]) for r in self.db.execute(
            "SELECT segment_id, offset, state FROM watch_segments WHERE trigger_id=?",
            (trigger_id,))}
        return (int(row[0]) if row else 0), rows

    def watch_checkpoint(self, trigger_id: int, version: int,
                         hits: list[tuple[Hit, int | None]],
                         segments: dict[int, tuple[int, str]], existing: list[int]
                         ) -> list[int]:
        """One step of the watch in one transaction: its hits (each with its segment id)
        join the result set, its segments' progress (id -> (offset, state)) is kept, and
        the cursor moves over ``existing`` (the store's segment ids above the cursor, in a
        snapshot) while they are ``done`` (rows up to it dropped). A watch stopped at any
        moment resumes from its last checkpoint: nothing read twice, nothing skipped. Returns the
        ids of matches new to the trigger."""
        with self.transaction() as db:
            new: list[int] = []
            for hit, segment_id in hits:
                new += [m for m in self._add_hits(trigger_id, [hit], version, "watch",
                                                  segment_id) if m not in new]
            db.executemany("INSERT INTO watch_segments VALUES (?, ?, ?, ?) ON CONFLICT "
                           "(trigger_id, segment_id) DO UPDATE SET offset=excluded.offset, "
                           "state=excluded.state",
                           [(trigger_id, s, o, st) for s, (o, st) in segments.items()])
            done = {r[0] for r in db.execute("SELECT segment_id FROM watch_segments WHERE "
                                             "trigger_id=? AND state='done'", (trigger_id,))}
            cursor = 0
            for sid in sorted(existing):
                if sid not in done:
                    break
                cursor = sid
            db.execute("UPDATE watch SET last_segment_id=max(last_segment_id, ?) WHERE "
                       "trigger_id=?", (cursor, trigger_id))
            for table in ("watch_segments", "watch_engine_hits"):
                db.execute(f"DELETE FROM {table} WHERE trigger_id=? AND segment_id <= "
                           "(SELECT last_segment_id FROM watch WHERE trigger_id=?)",
                           (trigger_id, trigger_id))
        return new

    def add_engine_hits(self, trigger_id: int, version: int, segment_id: int,
                        hits: list[tuple[Hit, int]]) -> list[int]:
        """Hits of a live engine (:mod:`.live_engines`) over recorded segment
        ``segment_id``, each with its ordinal among that engine's hits of its (rule, flow):
        one the segment's earlier engines of this version already counted (an engine
        started again reads the segment from its first byte and raises them again) is
        skipped, the others join the result set as :meth:`add_watch_hits` adds them, in
        one transaction with the counts. Returns the ids of matches new to the trigger."""
        with self.transaction() as db:
            fresh: list[Hit] = []
            for hit, ordinal in hits:
                key = flow_key(hit.proto, hit.src_ip, hit.src_port, hit.dest_ip,
                               hit.dest_port)
                where = (trigger_id, segment_id, version, hit.rule, key)
                row = db.execute("SELECT hits FROM watch_engine_hits WHERE trigger_id=? AND "
                                 "segment_id=? AND version=? AND rule=? AND flow_key=?",
                                 where).fetchone()
                if row is not None and row[0] >= ordinal:
                    continue
                db.execute("INSERT OR REPLACE INTO watch_engine_hits VALUES (?,?,?,?,?,?)",
                           (trigger_id, version, segment_id, hit.rule, key, ordinal))
                fresh.append(hit)
            return self._add_hits(trigger_id, fresh, version, "watch", segment_id)

    def _add_hits(self, trigger_id: int, hits: list[Hit] | HitBatch | StagedRows,
                  version: int, source: str, segment_id: int | None) -> list[int]:
        """In a transaction: ``hits`` into the result set, as one set (a unit brings tens
        of thousands): one match per (rule, flow key) (:class:`HitBatch`, or rows SQLite
        made, :class:`StagedRows`; an existing one keeps its fields, its time the
        earliest, its flow id the first known), hits counted per version. Returns the ids
        of the matches this call added, in the order first hit."""
        db = self.db
        if isinstance(hits, StagedRows):
            staged = hits
        else:
            batch = hits if isinstance(hits, HitBatch) else HitBatch.of(hits)
            if not batch.rows:
                return []
            db.execute(_HIT_BATCH)
            db.execute("DELETE FROM temp.hit_batch")
            db.executemany("INSERT INTO temp.hit_batch VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                           batch.rows)
            # an empty table numbers its rows from 1
            staged = StagedRows("temp.hit_batch", 1, len(batch.rows), batch.hits)
        if staged.first > staged.last:
            return []
        (last,) = db.execute("SELECT coalesce(max(id), 0) FROM matches").fetchone()
        # rowid order is first-hit order (a WHERE before ON CONFLICT: SQLite's
        # upsert-after-SELECT rule)
        db.execute(
            "INSERT INTO matches (trigger_id, rule, flow_key, flow_id, proto, src_ip, "
            "src_port, dest_ip, dest_port, ts, segment_id, source, evidence, found) "
            "SELECT ?, rule, flow_key, flow_id, proto, src_ip, src_port, dest_ip, dest_port, "
            f"ts, ?, ?, evidence, ? FROM {staged.table} b WHERE b.rowid BETWEEN ? AND ? "
            "ORDER BY b.rowid ON CONFLICT (trigger_id, rule, flow_key) DO UPDATE SET "
            "ts=min(ts, excluded.ts), flow_id=coalesce(flow_id, excluded.flow_id)",
            (trigger_id, segment_id, source, time.time(), staged.first, staged.last))
        # each row the upsert saw took the next id, so a new match is most likely at its
        # row's place after ``last``: looked up by that id (and checked), by its key else
        db.execute(
            "INSERT INTO match_versions SELECT coalesce((SELECT m.id FROM matches m WHERE "
            "m.id = :guess + b.rowid AND m.trigger_id = :trigger AND m.rule = b.rule AND "
            "m.flow_key = b.flow_key), (SELECT m.id FROM matches m WHERE m.trigger_id = "
            f":trigger AND m.rule = b.rule AND m.flow_key = b.flow_key)), :version, b.hits "
            f"FROM {staged.table} b WHERE b.rowid BETWEEN :first AND :last ON CONFLICT "
            "(match_id, version) DO UPDATE SET hits = hits + excluded.hits",
            {"guess": last + 1 - staged.first, "trigger": trigger_id, "version": version,
             "first": staged.first, "last": staged.last})
        # one JSON text: a dense unit adds thousands (a row each: ~3x the time)
        (ids,) = db.execute("SELECT json_group_array(id) FROM matches WHERE trigger_id=? AND "
                            "id>?", (trigger_id, last)).fetchone()
        new: list[int] = sorted(json.loads(ids))
        if staged.table == "temp.hit_batch":
            db.execute("DELETE FROM temp.hit_batch")
        return new

    def matches(self, trigger_id: int, version: int | None = None, after_id: int = 0,
                limit: int = 1000, ids: list[int] | None = None) -> list[dict[str, Any]]:
        """The result set (``version``: only what that version found; ``ids``: only these
        matches), oldest first."""
        sql = ("SELECT m.id, m.rule, m.flow_key, m.flow_id, m.proto, m.src_ip, m.src_port, "
               "m.dest_ip, m.dest_port, m.ts, m.segment_id, m.source, m.evidence, m.found, "
               "(SELECT group_concat(version) FROM match_versions WHERE match_id=m.id), "
               "(SELECT hits FROM match_versions WHERE match_id=m.id ORDER BY version DESC "
               "LIMIT 1) "
               "FROM matches m WHERE m.trigger_id=? AND m.id>?")
        args: list[Any] = [trigger_id, after_id]
        if version is not None:
            sql += " AND EXISTS (SELECT 1 FROM match_versions v WHERE v.match_id=m.id AND " \
                   "v.version=?)"
            args.append(version)
        if ids is not None:
            sql += " AND m.id IN (SELECT value FROM json_each(?))"
            args.append(json.dumps(ids))
        keys = ("id", "rule", "flow_key", "flow_id", "proto", "src_ip", "src_port", "dest_ip",
                "dest_port", "ts", "segment_id", "source", "evidence", "found", "versions",
                "hits")
        out = []
        for r in self.db.execute(sql + " ORDER BY m.id LIMIT ?", [*args, limit]):
            d = dict(zip(keys, r, strict=True))
            d["evidence"] = json.loads(d["evidence"])
            d["versions"] = sorted(int(v) for v in (d["versions"] or "").split(",") if v)
            out.append(d)
        return out

    def version_diff(self, trigger_id: int, version: int, base: int | None = None
                     ) -> dict[str, list[int]]:
        """Match ids ``version`` found that ``base`` (default ``version - 1``) did not
        (``new``), and those ``base`` found that ``version`` does not (``gone``; meaningful
        once both versions' hunts have finished)."""
        def ids(v: int) -> set[int]:
            return {r[0] for r in self.db.execute(
                "SELECT v.match_id FROM match_versions v JOIN matches m ON m.id=v.match_id "
                "WHERE m.trigger_id=? AND v.version=?", (trigger_id, v))}

        now, before = ids(version), ids(version - 1 if base is None else base)
        return {"new": sorted(now - before), "gone": sorted(before - now)}


#: One call's hits, one row per (rule, flow key) (:meth:`TriggerDB._add_hits`).
_HIT_BATCH = ("CREATE TEMP TABLE IF NOT EXISTS hit_batch (rule TEXT, flow_key TEXT, "
              "flow_id INTEGER, proto INTEGER, src_ip TEXT, src_port INTEGER, dest_ip TEXT, "
              "dest_port INTEGER, ts REAL, evidence TEXT, hits INTEGER)")
#: A hit's evidence as stored: JSON, keys sorted.
_EVIDENCE_JSON = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
_HUNT_COLUMNS = ("id, trigger_id, version, status, units_total, units_done, units_failed, "
                 "bytes_total, bytes_done, created, started, finished, error")
