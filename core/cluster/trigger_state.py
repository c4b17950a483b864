"""What a central asked of its sensors' triggers: one row per (tenant, trigger name) that
the central created or edited (the request as sent, its public definition, the sensors its
scope covers, paused or not, deleted or not, who asked for each with which role, when) and,
per sensor, the central's *revision* that sensor has (:data:`STATE_FILE` in the central's
data directory, SQLite in WAL mode with ``synchronous=FULL``: a change is on disk before
any sensor is asked; mode 0600: the requests hold webhook secrets).

Every change at the central (create, edit, pause, resume, abort, delete) raises the
trigger's revision by one. An abort is recorded with the body revision whose hunt it ended:
a sensor that missed it ends its hunt of that body once it has it, and an edit after the
abort (a new hunt) makes it moot. A sensor is *pending* while its revision is below the
trigger's: it did not answer when it was asked (:mod:`.trigger_sync` delivers the change
once it answers).
Sensor names and tenants come from the cluster file; an API caller only ever reaches the
rows of its own tenant. Calls are blocking: run them in a worker thread.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

STATE_FILE = "cluster-triggers.sqlite"
#: how long a writer waits for another's transaction (the API and the reconcile task)
BUSY_TIMEOUT_S = 10.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS triggers (
  tenant TEXT NOT NULL, name TEXT NOT NULL,
  revision INTEGER NOT NULL,
  body TEXT NOT NULL,              -- the TriggerRequest as the caller sent it (JSON)
  definition TEXT NOT NULL,        -- its public definition, as a sensor shows it (JSON)
  sensors TEXT NOT NULL,           -- the sensors its scope covers (JSON list)
  body_revision INTEGER NOT NULL, body_at REAL NOT NULL, body_by TEXT NOT NULL,
  body_role TEXT NOT NULL,
  paused INTEGER NOT NULL, deleted INTEGER NOT NULL,
  state_at REAL NOT NULL, state_by TEXT NOT NULL, state_role TEXT NOT NULL,
  PRIMARY KEY (tenant, name));
CREATE TABLE IF NOT EXISTS deliveries (
  tenant TEXT NOT NULL, name TEXT NOT NULL, sensor TEXT NOT NULL,
  revision INTEGER NOT NULL,       -- the central's revision this sensor has (0: none)
  seen_updated REAL,               -- the trigger's `updated` there after the central's action
  note TEXT,                       -- why it is pending, or what the sensor refused or kept
  PRIMARY KEY (tenant, name, sensor));
"""
#: columns added to ``triggers`` after its first release (added to an older file on open):
#: the last abort, i.e. the revision that recorded it, the body revision whose hunt it
#: ended (0: none), when, by whom, with which role
_ADDED = (("abort_revision", "INTEGER NOT NULL DEFAULT 0"),
          ("aborted_body", "INTEGER NOT NULL DEFAULT 0"),
          ("abort_at", "REAL NOT NULL DEFAULT 0"), ("abort_by", "TEXT NOT NULL DEFAULT ''"),
          ("abort_role", "TEXT NOT NULL DEFAULT ''"))


@dataclass(frozen=True)
class Abort:
    """The central's last abort of a trigger's hunt."""

    revision: int  # the revision that recorded it
    body: int  # the body revision whose hunt it ended
    at: float
    by: str
    role: str


NO_ABORT = Abort(0, 0, 0.0, "", "")


@dataclass(frozen=True)
class Desired:
    """The central's record of one trigger."""

    tenant: str
    name: str
    revision: int
    body: dict[str, Any]
    definition: dict[str, Any]
    sensors: tuple[str, ...]
    body_revision: int  # the revision that last changed the body
    body_at: float
    body_by: str
    body_role: str
    paused: bool
    deleted: bool
    state_at: float  # when paused, resumed or deleted last
    state_by: str
    state_role: str
    abort: Abort = NO_ABORT

    def abort_due(self, had: int) -> bool:
        """Whether a sensor that had revision ``had`` still has to end its hunt: the
        central aborted the hunt of the body it has now, after ``had``."""
        return (not self.deleted and self.abort.body == self.body_revision
                and had < self.abort.revision)

    def view(self) -> dict[str, Any]:
        """What the API shows (the public definition: no webhook secret)."""
        return {"revision": self.revision, "definition": self.definition,
                "sensors": list(self.sensors), "paused": self.paused,
                "deleted": self.deleted, "changed": max(self.body_at, self.state_at,
                                                        self.abort.at),
                "edited_by": self.body_by, "state_by": self.state_by,
                "aborted": None if self.abort.body != self.body_revision else {
                    "revision": self.abort.revision, "at": self.abort.at,
                    "by": self.abort.by}}


@dataclass(frozen=True)
class Delivery:
    """What the central knows one sensor has of one trigger."""

    sensor: str
    revision: int
    seen_updated: float | None
    note: str | None


class TriggerState:
    """The central's ``cluster-triggers.sqlite`` (one connection per call)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch(mode=0o600)  # the requests hold webhook secrets (SQLite's WAL copies it)
        with self._db() as db:
            db.executescript(_SCHEMA)
            have = {r[1] for r in db.execute("PRAGMA table_info(triggers)")}
            for column, decl in _ADDED:
                if column not in have:
                    db.execute(f"ALTER TABLE triggers ADD COLUMN {column} {decl}")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    @staticmethod
    def _desired(row: tuple[Any, ...]) -> Desired:
        (tenant, name, revision, body, definition, sensors, body_revision, body_at, body_by,
         body_role, paused, deleted, state_at, state_by, state_role, *abort) = row
        return Desired(tenant, name, revision, json.loads(body), json.loads(definition),
                       tuple(json.loads(sensors)), body_revision, body_at, body_by,
                       body_role, bool(paused), bool(deleted), state_at, state_by,
                       state_role, Abort(*abort))

    def get(self, tenant: str, name: str) -> Desired | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM triggers WHERE tenant=? AND name=?",
                             (tenant, name)).fetchone()
        return None if row is None else self._desired(row)

    def deliveries(self, tenant: str, name: str) -> dict[str, Delivery]:
        with self._db() as db:
            rows = db.execute("SELECT sensor, revision, seen_updated, note FROM deliveries "
                              "WHERE tenant=? AND name=?", (tenant, name)).fetchall()
        return {r[0]: Delivery(*r) for r in rows}

    def pending_of(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's deliveries behind their trigger's revision: trigger name, sensor,
        the revision it has and the one it lacks, and why (the last try's reason)."""
        with self._db() as db:
            return [{"name": r[0], "sensor": r[1], "revision": r[2], "wanted": r[3],
                     "note": r[4]} for r in db.execute(
                "SELECT d.name, d.sensor, d.revision, t.revision, d.note FROM deliveries d "
                "JOIN triggers t ON t.tenant=d.tenant AND t.name=d.name WHERE d.tenant=? "
                "AND d.revision < t.revision ORDER BY d.name, d.sensor", (tenant,))]

    def pending(self) -> list[tuple[str, str, str]]:
        """(tenant, name, sensor) of every delivery behind its trigger's revision."""
        with self._db() as db:
            return [tuple(r) for r in db.execute(
                "SELECT d.tenant, d.name, d.sensor FROM deliveries d JOIN triggers t "
                "ON t.tenant=d.tenant AND t.name=d.name WHERE d.revision < t.revision "
                "ORDER BY d.sensor, d.tenant, d.name").fetchall()]

    def change(self, tenant: str, name: str, action: str, actor: str, role: str,
               sensors: list[str], body: dict[str, Any] | None = None,
               definition: dict[str, Any] | None = None, covered: list[str] | None = None,
               now: float | None = None) -> tuple[Desired, dict[str, Delivery]] | None:
        """Record ``action`` (created, edited, pause, resume, abort, delete) on the trigger, for
        the tenant's ``sensors``; the new record and each sensor's delivery before it.
        None (nothing recorded) for a create over a live record, and for an edit or a
        control of a trigger the central has no live record of (made on the sensors)."""
        now = time.time() if now is None else now
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT * FROM triggers WHERE tenant=? AND name=?",
                                 (tenant, name)).fetchone()
                old = None if row is None else self._desired(row)
                new = self._next(old, tenant, name, action, actor, role, body, definition,
                                 covered, now)
                if new is None:
                    db.execute("ROLLBACK")
                    return None
                a = new.abort
                db.execute("INSERT OR REPLACE INTO triggers VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
                           "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (
                               tenant, name, new.revision, json.dumps(new.body),
                               json.dumps(new.definition), json.dumps(list(new.sensors)),
                               new.body_revision, new.body_at, new.body_by, new.body_role,
                               int(new.paused), int(new.deleted), new.state_at, new.state_by,
                               new.state_role, a.revision, a.body, a.at, a.by, a.role))
                db.executemany("INSERT OR IGNORE INTO deliveries VALUES (?, ?, ?, 0, NULL, "
                               "NULL)", [(tenant, name, s) for s in sensors])
                before = {r[0]: Delivery(*r) for r in db.execute(
                    "SELECT sensor, revision, seen_updated, note FROM deliveries WHERE "
                    "tenant=? AND name=?", (tenant, name)).fetchall()}
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return new, before

    @staticmethod
    def _next(old: Desired | None, tenant: str, name: str, action: str, actor: str,
              role: str, body: dict[str, Any] | None, definition: dict[str, Any] | None,
              covered: list[str] | None, now: float) -> Desired | None:
        revision = 1 if old is None else old.revision + 1
        if action in ("created", "edited"):
            assert body is not None and definition is not None and covered is not None
            live = old if old is not None and not old.deleted else None
            if (action == "created") == (live is not None):
                return None  # a taken name (the sensors refuse it); an edit of no record
            return Desired(tenant, name, revision, body, definition, tuple(covered),
                           revision, now, actor, role, live.paused if live else False, False,
                           live.state_at if live else now, live.state_by if live else actor,
                           live.state_role if live else role,
                           live.abort if live else NO_ABORT)
        if old is None or old.deleted:
            return None
        if action == "abort":
            return replace(old, revision=revision,
                           abort=Abort(revision, old.body_revision, now, actor, role))
        paused = action == "pause" if action in ("pause", "resume") else old.paused
        return Desired(tenant, name, revision, old.body, old.definition, old.sensors,
                       old.body_revision, old.body_at, old.body_by, old.body_role, paused,
                       action == "delete", now, actor, role, old.abort)

    def delivered(self, tenant: str, name: str, sensor: str, revision: int,
                  seen_updated: float | None, note: str | None) -> None:
        """The sensor has ``revision`` (never lowers it); the trigger's ``updated`` there
        after the central's action (None: not known, the last one seen is kept)."""
        with self._db() as db:
            db.execute("UPDATE deliveries SET revision=MAX(revision, ?), "
                       "seen_updated=COALESCE(?, seen_updated), "
                       "note=? WHERE tenant=? AND name=? AND sensor=?",
                       (revision, seen_updated, note, tenant, name, sensor))

    def failed(self, tenant: str, name: str, sensor: str, note: str,
               seen_updated: float | None = None) -> None:
        """The sensor stays pending, with why (and what the central last saw there)."""
        with self._db() as db:
            db.execute("UPDATE deliveries SET note=?, seen_updated=COALESCE(?, seen_updated) "
                       "WHERE tenant=? AND name=? AND sensor=?",
                       (note, seen_updated, tenant, name, sensor))
