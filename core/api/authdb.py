"""The server's auth database (``DATA_DIR/auth.sqlite``): API tokens, sensors, sessions.

A token is ``pwt_<id>_<secret>``. Only ``sha256(salt || secret)`` and a per-token random
salt are stored, so the token is shown once, at creation, and can never be shown again.
``<id>`` is public (it names the token in lists and logs). Dashboard sessions are stored
hashed too, and die with their token (revocation ends them at once). Sensor names are
per tenant: two tenants may each have a sensor ``edge1``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcapwire.errors import ConfigError
from pcapwire.names import NAME_RE

ROLES: tuple[str, ...] = ("viewer", "analyst", "admin")
TOKEN_RE = re.compile(r"pwt_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
LAST_USED_RESOLUTION_S = 60  # last_used is written at most once a minute per token

SENSORS_TABLE = """CREATE TABLE IF NOT EXISTS sensors (
  name TEXT NOT NULL, tenant TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (tenant, name))"""
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS tokens (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, tenant TEXT NOT NULL, role TEXT NOT NULL,
  salt BLOB NOT NULL, hash BLOB NOT NULL, created REAL NOT NULL, last_used REAL,
  revoked REAL);
{SENSORS_TABLE};
CREATE TABLE IF NOT EXISTS sessions (
  hash BLOB PRIMARY KEY, token_id TEXT NOT NULL REFERENCES tokens(id), csrf TEXT NOT NULL,
  created REAL NOT NULL, expires REAL NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's id, tenant and role (and the session's CSRF secret)."""

    token_id: str
    tenant: str
    role: str
    csrf: str | None = None  # set when authenticated by session cookie

    def has(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def check_name(kind: str, name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise ConfigError(f"invalid {kind} name {name!r}: use 1-63 characters a-z 0-9 _ -, "
                          "starting with a letter or digit")
    return name


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


class AuthDB:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        self._migrate_sensors()

    def _migrate_sensors(self) -> None:
        """Rebuild a sensors table keyed by name alone (global names) as one keyed by
        (tenant, name), keeping every row; once, in one transaction."""
        if not self._sensor_names_global():
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if self._sensor_names_global():  # not migrated meanwhile by another process
                self.db.execute("ALTER TABLE sensors RENAME TO sensors_global")
                self.db.execute(SENSORS_TABLE)
                self.db.execute("INSERT INTO sensors (name, tenant, created) "
                                "SELECT name, tenant, created FROM sensors_global")
                self.db.execute("DROP TABLE sensors_global")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _sensor_names_global(self) -> bool:
        """Whether the sensors table is keyed by name alone (as before names were per
        tenant): ``tenant`` is not part of its primary key."""
        key = {r[1]: r[5] for r in self.db.execute("PRAGMA table_info(sensors)")}
        return key.get("tenant", 0) == 0

    def close(self) -> None:
        self.db.close()

    # -- tokens ----------------------------------------------------------------------------
    def create_token(self, tenant: str, role: str, name: str = "") -> tuple[str, dict[str, Any]]:
        """Returns ``(token, info)``; the token string exists only in this return value."""
        check_name("tenant", tenant)
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        now = time.time()
        self.db.execute("INSERT INTO tokens (id, name, tenant, role, salt, hash, created) "
                        "VALUES (?,?,?,?,?,?,?)",
                        (token_id, name[:200], tenant, role, salt, _digest(salt, secret), now))
        return f"pwt_{token_id}_{secret}", self.token_info(token_id) or {}

    def authenticate(self, token: str) -> Principal | None:
        m = TOKEN_RE.fullmatch(token.strip())
        if m is None:
            return None
        row = self.db.execute("SELECT tenant, role, salt, hash, last_used FROM tokens "
                              "WHERE id=? AND revoked IS NULL", (m[1],)).fetchone()
        if row is None or not hmac.compare_digest(_digest(row[2], m[2]), row[3]):
            return None
        self._touch(m[1], row[4])
        return Principal(m[1], row[0], row[1])

    def _touch(self, token_id: str, last_used: float | None) -> None:
        now = time.time()
        if last_used is None or now - last_used >= LAST_USED_RESOLUTION_S:
            self.db.execute("UPDATE tokens SET last_used=? WHERE id=?", (now, token_id))

    def token_info(self, token_id: str) -> dict[str, Any] | None:
        rows = self.tokens(where="id=?", args=(token_id,))
        return rows[0] if rows else None

    def tokens(self, tenant: str | None = None, where: str = "1=1",
               args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        if tenant is not None:
            where, args = f"({where}) AND tenant=?", (*args, tenant)
        keys = ("id", "name", "tenant", "role", "created", "last_used", "revoked")
        rows = self.db.execute(f"SELECT {', '.join(keys)} FROM tokens WHERE {where} "
                               "ORDER BY created", args)
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def revoke(self, token_id: str, tenant: str | None = None) -> bool:
        """Revoke a live token (of ``tenant`` when given) and end its sessions; False, with
        nothing changed, when there is no such token."""
        sql, args = "UPDATE tokens SET revoked=? WHERE id=? AND revoked IS NULL", [time.time(),
                                                                                   token_id]
        if tenant is not None:
            sql += " AND tenant=?"
            args.append(tenant)
        changed = self.db.execute(sql, args).rowcount > 0
        if changed:  # another tenant's id: its sessions are not this caller's to end
            self.db.execute("DELETE FROM sessions WHERE token_id=?", (token_id,))
        return changed

    # -- sensors ---------------------------------------------------------------------------
    def add_sensor(self, name: str, tenant: str) -> dict[str, Any]:
        check_name("sensor", name)
        check_name("tenant", tenant)
        try:
            self.db.execute("INSERT INTO sensors (name, tenant, created) VALUES (?,?,?)",
                            (name, tenant, time.time()))
        except sqlite3.IntegrityError:
            raise ConfigError(f"sensor {name!r} already exists in tenant {tenant!r}; pick "
                              "another name") from None
        return {"name": name, "tenant": tenant}

    def has_sensor(self, name: str, tenant: str) -> bool:
        """Whether ``tenant`` has a sensor ``name`` (other tenants' sensors are not seen)."""
        return self.db.execute("SELECT 1 FROM sensors WHERE tenant=? AND name=?",
                               (tenant, name)).fetchone() is not None

    def sensors(self, tenant: str) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT name, tenant, created FROM sensors WHERE tenant=? "
                               "ORDER BY name", (tenant,))
        return [{"name": r[0], "tenant": r[1], "created": r[2]} for r in rows]

    def remove_sensor(self, name: str, tenant: str) -> bool:
        return self.db.execute("DELETE FROM sensors WHERE name=? AND tenant=?",
                               (name, tenant)).rowcount > 0

    # -- dashboard sessions ----------------------------------------------------------------
    def create_session(self, token_id: str, ttl_s: float) -> tuple[str, str]:
        """Returns ``(session id for the cookie, CSRF token for forms)``."""
        sid, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(24), time.time()
        self.db.execute("DELETE FROM sessions WHERE expires < ?", (now,))
        self.db.execute("INSERT INTO sessions VALUES (?,?,?,?,?)",
                        (hashlib.sha256(sid.encode()).digest(), token_id, csrf, now, now + ttl_s))
        return sid, csrf

    def session(self, sid: str) -> Principal | None:
        row = self.db.execute(
            "SELECT t.id, t.tenant, t.role, s.csrf, t.last_used FROM sessions s "
            "JOIN tokens t ON t.id = s.token_id WHERE s.hash=? AND s.expires > ? "
            "AND t.revoked IS NULL", (hashlib.sha256(sid.encode()).digest(), time.time())
        ).fetchone()
        if row is None:
            return None
        self._touch(row[0], row[4])
        return Principal(row[0], row[1], row[2], csrf=row[3])

    def end_session(self, sid: str) -> None:
        self.db.execute("DELETE FROM sessions WHERE hash=?",
                        (hashlib.sha256(sid.encode()).digest(),))
