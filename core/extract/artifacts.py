"""Content-addressed artifact store: every carved file is kept once, by SHA-256.

Layout under ``root``::

    <sha256[:2]>/<sha256>                the bytes (``.eml`` suffix for emails)
    <sha256[:2]>/<sha256>.json           what the bytes are: hashes, size, libmagic type
    <sha256[:2]>/<sha256>.sightings.jsonl   one JSON line per time it was carved
                                            (filename, protocol, direction, flow, time)

Writes are atomic (temporary file + rename) and idempotent, so several carvers may share
one store. Names from the wire are metadata only; :func:`sanitize_filename` makes the
safe form used whenever a name must become a path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import magic
from pcapwire.errors import ConfigError

log = logging.getLogger(__name__)

#: Bytes of the head of a file given to libmagic (it reads no further for most types).
MAX_MAGIC_BYTES = 1024 * 1024
#: Longest sanitised filename, in UTF-8 bytes (ext4 allows 255).
MAX_FILENAME_BYTES = 200
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.I)
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"|?*\\/]')
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def sanitize_filename(name: str, default: str = "unnamed") -> str:
    """A single safe path component for a name seen on the wire.

    Drops any directory part (``/`` and ``\\``), control characters and characters that
    are special on common filesystems, leading dots and spaces (no hidden files, no
    ``..``), Windows device names; keeps the extension when shortening to
    :data:`MAX_FILENAME_BYTES`.
    """
    name = unicodedata.normalize("NFC", name or "")
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("_", name).strip(" .")
    if not name:
        return default
    if _WINDOWS_RESERVED.match(name):
        name = "_" + name
    raw = name.encode("utf-8")
    if len(raw) > MAX_FILENAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        ext = ext if dot and 0 < len(ext.encode()) <= 16 else ""
        room = MAX_FILENAME_BYTES - (len(ext.encode()) + 1 if ext else 0)
        stem = (stem if ext else name).encode("utf-8")[:room].decode("utf-8", "ignore")
        name = f"{stem}.{ext}" if ext else stem
    return name


def artifact_path(root: str | os.PathLike[str], sha256: str, suffix: str = "") -> Path:
    """Where an artifact store under ``root`` keeps the bytes with this SHA-256 (whether
    or not it has them); ValueError for anything but 64 lower-case hex digits."""
    if not _HEX64.fullmatch(sha256):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    return Path(root) / sha256[:2] / (sha256 + suffix)


@dataclass(frozen=True)
class StoredArtifact:
    sha256: str
    md5: str
    sha1: str
    size: int
    path: str
    mime_type: str
    magic: str
    new: bool  # False when the store already had these bytes


class ArtifactStore:
    """Files by content under ``root`` (created if missing)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create artifact directory {self.root}: {exc}") from exc
        self._magic = threading.local()  # libmagic cookies, one pair per thread

    def path_for(self, sha256: str, suffix: str = "") -> Path:
        return artifact_path(self.root, sha256, suffix)

    def identify(self, data: bytes, describe: bool = True) -> tuple[str, str]:
        """(MIME type, description) from libmagic; ``describe=False`` skips the
        description (returned empty)."""
        head = data[:MAX_MAGIC_BYTES]
        cookies = getattr(self._magic, "cookies", None)
        if cookies is None:  # a libmagic cookie is not thread-safe: one per thread
            cookies = self._magic.cookies = (magic.Magic(mime=True), magic.Magic())
        try:
            return (cookies[0].from_buffer(head),
                    cookies[1].from_buffer(head) if describe else "")
        except magic.MagicException as exc:  # libmagic refuses some inputs
            log.warning("libmagic failed: %s", exc)
            return "application/octet-stream", "data" if describe else ""

    def put(self, data: bytes, suffix: str = "") -> StoredArtifact:
        sha256 = hashlib.sha256(data).hexdigest()
        md5 = hashlib.md5(data).hexdigest()  # noqa: S324 - an identifier, not security
        sha1 = hashlib.sha1(data).hexdigest()  # noqa: S324
        path = self.path_for(sha256, suffix)
        meta_path = path.with_name(path.name + ".json")
        if path.exists() and meta_path.exists():
            meta = json.loads(meta_path.read_text())
            return StoredArtifact(sha256, md5, sha1, len(data), str(path),
                                  meta.get("mime_type", ""), meta.get("magic", ""), False)
        mime_type, desc = self.identify(data)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, data, mode=0o444)  # carved bytes: read-only, never executable
        meta = {"sha256": sha256, "md5": md5, "sha1": sha1, "size": len(data),
                "mime_type": mime_type, "magic": desc}
        _atomic_write(meta_path, json.dumps(meta, indent=1).encode())
        return StoredArtifact(sha256, md5, sha1, len(data), str(path), mime_type, desc, True)

    def add_sighting(self, path: str | os.PathLike[str], sighting: dict[str, Any]) -> None:
        """Append one JSON line (a single write in append mode: atomic for lines this small
        on a local filesystem)."""
        line = (json.dumps(sighting, sort_keys=True, default=str) + "\n").encode()
        fd = os.open(str(path) + ".sightings.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                     0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def add_sightings(self, sightings: list[tuple[str, dict[str, Any]]]) -> None:
        """:meth:`add_sighting` for each (path, sighting), in order."""
        for path, sighting in sightings:
            self.add_sighting(path, sighting)

    def sightings(self, path: str | os.PathLike[str]) -> list[dict[str, Any]]:
        p = Path(str(path) + ".sightings.jsonl")
        if not p.exists():
            return []
        return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
