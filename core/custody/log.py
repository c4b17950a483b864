"""Append-only, hash-chained custody logs: one per case, one for the store.

A log is a JSON-lines file under ``<data-dir>/custody/``: ``store.jsonl`` (segments sealed,
compressed, deleted by retention) and ``cases/<case>.jsonl`` (queries, exports,
extractions, holds, releases, bundle downloads). Each line is one entry in canonical JSON
(sorted keys, no spaces)::

    {"action": "hold.create", "actor": "cli:alice@sensor1", "case": "IR-42",
     "details": {...}, "objects": [{"kind": "evidence", "path": "evidence/...",
     "sha256": "...", "size": 123}], "prev": "<sha256 of the previous line>", "seq": 7,
     "time": "2026-12-06T23:59:01.123456Z"}

``prev`` of the first entry is :data:`GENESIS`. Changing, removing or reordering any line
breaks the chain at that line (:mod:`pcapwire.custody.verify` names it). Appends from
several processes (recorder, server, CLI) are serialised by an ``flock`` on the log and
``fsync``-ed before :func:`append` returns.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

CUSTODY_DIR = "custody"
STORE_LOG = "store.jsonl"
GENESIS = "0" * 64
#: One entry's line, at most (its objects and details are bounded by the caller; a longer
#: entry is refused rather than cut).
MAX_ENTRY_BYTES = 1 * 2**20
_TAIL_READ = 64 * 2**10
_MAX_CASE_FILE_CHARS = 150


def entry_hash(line: bytes) -> str:
    """The SHA-256 of one entry's line (without its newline): the next entry's ``prev``."""
    return hashlib.sha256(line).hexdigest()


def canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def case_log_name(case: str) -> str:
    """The file name of a case's log: the case name percent-encoded, or for a long one a
    hash of it (case names come from API callers: never a path)."""
    name = quote(case, safe="-_")
    if not name or len(name) > _MAX_CASE_FILE_CHARS:
        name = "h-" + hashlib.sha256(case.encode()).hexdigest()
    return name + ".jsonl"


def log_path(data_dir: str | os.PathLike[str], case: str | None) -> Path:
    """``case`` None: the store's log."""
    base = Path(data_dir) / CUSTODY_DIR
    return base / STORE_LOG if case is None else base / "cases" / case_log_name(case)


def actor_cli() -> str:
    """Who runs a command: ``cli:<user>@<host>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"cli:{user}@{socket.gethostname()}"


def actor_token(token_id: str, tenant: str, role: str) -> str:
    """An API caller: the token's public id (never the secret), tenant and role."""
    return f"token:{token_id} ({tenant}/{role})"


def file_object(kind: str, path: Path, data_dir: Path | None = None,
                sha256: str | None = None) -> dict[str, Any]:
    """An object entry for a file (hashed now unless ``sha256`` is given); ``path`` is
    kept relative to ``data_dir`` when inside it, so a moved data directory verifies."""
    if sha256 is None:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(2**20):
                h.update(block)
        sha256 = h.hexdigest()
    shown = str(path)
    if data_dir is not None:
        try:
            shown = str(path.resolve().relative_to(data_dir.resolve()))
        except ValueError:
            pass
    return {"kind": kind, "path": shown, "sha256": sha256, "size": path.stat().st_size}


@dataclass(frozen=True)
class Appended:
    seq: int
    hash: str


def append(data_dir: str | os.PathLike[str], case: str | None, action: str, actor: str,
           objects: list[dict[str, Any]] | None = None,
           details: dict[str, Any] | None = None) -> Appended:
    """Append one entry to a case's log (``case`` None: the store's); returns its sequence
    number and hash."""
    path = log_path(data_dir, case)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        seq, prev = _last(fd, path)
        entry = {"seq": seq + 1, "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                 "actor": actor, "action": action, "case": case,
                 "objects": objects or [], "details": details or {}, "prev": prev}
        line = canonical(entry)
        if len(line) > MAX_ENTRY_BYTES:
            raise ValueError(f"custody entry of {len(line)} bytes is above the limit of "
                             f"{MAX_ENTRY_BYTES}")
        os.write(fd, line + b"\n")
        os.fsync(fd)
        return Appended(seq + 1, entry_hash(line))
    finally:
        os.close(fd)  # releases the lock


def _last(fd: int, path: Path) -> tuple[int, str]:
    """(seq, hash) of the log's last entry, (0, GENESIS) for an empty log."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0, GENESIS
    start = max(0, size - _TAIL_READ)
    while True:
        tail = os.pread(fd, size - start, start)
        body = tail[:-1] if tail.endswith(b"\n") else tail
        cut = body.rfind(b"\n")
        if cut >= 0 or start == 0:
            line = body[cut + 1:]
            break
        start = max(0, start - MAX_ENTRY_BYTES)
    try:
        seq = int(json.loads(line)["seq"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: the last line is not a custody entry; run `pcapwire "
                         "custody verify` and keep the file for examination") from None
    return seq, entry_hash(line)


def read(data_dir: str | os.PathLike[str], case: str | None) -> list[bytes]:
    """The log's lines (without newlines); [] when there is none."""
    data = snapshot(data_dir, case)
    if not data:
        return []
    return data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n")


def snapshot(data_dir: str | os.PathLike[str], case: str | None) -> bytes:
    """The log file's bytes, read under a shared lock (no append half-way in it); b""
    when there is none."""
    try:
        fd = os.open(log_path(data_dir, case), os.O_RDONLY)
    except FileNotFoundError:
        return b""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    finally:
        os.close(fd)
