"""The carve output directory: what ``pcapwire extract --out DIR`` writes, and what the
API carves a query's result into (``results/<query id>.carve/``) and serves from::

    artifacts/<sha256[:2]>/<sha256>[.eml]   content-addressed bytes (+ .json, .sightings.jsonl)
    files.jsonl  emails.jsonl               one FileRecord / EmailRecord per line
    http.jsonl   ftp.jsonl                  transactions and transfer commands seen
    summary.json                            counts, notes, limits reached, input damage
    named/<sanitised name>                  with by_name: hard links by original name

:func:`write_carve` writes it (``summary.json`` last: a directory that has one is
complete), :class:`CarveDir` reads it back. ``summary.json`` holds ``files`` and
``emails`` (counts), ``connections`` (per detected protocol), ``notes`` (what was skipped
or odd; a limit reached names its ``MAX_`` constant) and ``input_damage``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcapwire.errors import ConfigError
from pcapwire.extract.artifacts import ArtifactStore, artifact_path, sanitize_filename

if TYPE_CHECKING:
    from pcapwire.extract.carve import CarveResult

ARTIFACTS = "artifacts"
FILES = "files.jsonl"
EMAILS = "emails.jsonl"
HTTP = "http.jsonl"
FTP = "ftp.jsonl"
SUMMARY = "summary.json"
NAMED = "named"


def artifact_store(out: str | os.PathLike[str]) -> ArtifactStore:
    """The artifact store of the carve directory ``out`` (both created if missing)."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create output directory {path}: {exc}") from exc
    return ArtifactStore(path / ARTIFACTS)


def carve_summary(result: CarveResult, damage: list[str]) -> dict[str, Any]:
    """The content of ``summary.json``."""
    return {"files": len(result.files), "emails": len(result.emails),
            "connections": result.connections, "notes": result.notes,
            "input_damage": damage}


def write_carve(out: str | os.PathLike[str], result: CarveResult, damage: list[str],
                *, by_name: bool = False) -> dict[str, Any]:
    """Write ``result`` (carved into :func:`artifact_store` of ``out``) and the input
    ``damage`` reported while reading it; returns the summary."""
    path = Path(out)
    _jsonl(path / FILES, (f.to_dict() for f in result.files))
    _jsonl(path / EMAILS, (e.to_dict() for e in result.emails))
    _jsonl(path / HTTP, result.http)
    _jsonl(path / FTP, result.ftp)
    if by_name:
        named = path / NAMED
        named.mkdir(exist_ok=True)
        for f in result.files:
            _link(named, f.filename or "", f.path, f.sha256)
    summary = carve_summary(result, damage)
    tmp = path / (SUMMARY + ".part")
    tmp.write_text(json.dumps(summary, indent=1, sort_keys=True))
    os.replace(tmp, path / SUMMARY)
    return summary


@dataclass(frozen=True)
class CarveDir:
    """A carve directory, read back (records as the JSON objects written)."""

    path: Path

    @property
    def complete(self) -> bool:
        return (self.path / SUMMARY).exists()

    def summary(self) -> dict[str, Any] | None:
        """``summary.json``; None until the directory is complete."""
        p = self.path / SUMMARY
        return json.loads(p.read_text()) if p.exists() else None

    def files(self) -> list[dict[str, Any]]:
        return _read_jsonl(self.path / FILES)

    def emails(self) -> list[dict[str, Any]]:
        return _read_jsonl(self.path / EMAILS)

    def http(self) -> list[dict[str, Any]]:
        return _read_jsonl(self.path / HTTP)

    def ftp(self) -> list[dict[str, Any]]:
        return _read_jsonl(self.path / FTP)

    def content(self, sha256: str, suffix: str = "") -> Path | None:
        """The carved bytes with this SHA-256 (``suffix`` ``.eml`` for an email), inside
        this directory's artifact store: never a path taken from a record; None when the
        digest is malformed or not there."""
        try:
            path = artifact_path(self.path / ARTIFACTS, sha256, suffix)
        except ValueError:
            return None
        return path if path.is_file() else None


def _jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _link(folder: Path, original: str, target: str, sha256: str) -> None:
    name = sanitize_filename(original, default=sha256[:16])
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    candidate, n = folder / name, 1
    while candidate.exists():
        if candidate.stat().st_ino == os.stat(target).st_ino:
            return  # the same bytes under the same name already
        candidate = folder / (f"{stem}({n}).{ext}" if ext else f"{stem}({n})")
        n += 1
    try:
        os.link(target, candidate)
    except OSError:
        candidate.write_bytes(Path(target).read_bytes())
