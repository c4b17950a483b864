"""The entries the store's actions append (one place for their shape), and the helpers
that hash what those actions write while they write it.

Object kinds: ``segment`` (``path`` relative to the data directory, or absolute for a file
indexed in place; ``sha256`` of the plain pcap, ``size``, ``id`` the catalog's; in a
case's log without ``sha256``: the store log's seal entry holds it), ``result`` (a query's
stored result), ``artifact`` (a carved file or email), ``export`` (bytes handed out: a
``-w`` file, a download; never re-hashed), ``evidence`` (a hold's copy), ``bundle``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO, Any

from pcapwire.custody.log import actor_cli, append, file_object

#: Objects in one entry, at most: an action naming more (a query over thousands of
#: segments, a carve of thousands of files) appends consecutive entries, each with
#: ``details.part`` and ``details.parts``, so every object is still named.
MAX_OBJECTS_PER_ENTRY = 2000
SEAL = "segment.seal"


def record(data_dir: str | os.PathLike[str], case: str | None, action: str, actor: str,
           objects: list[dict[str, Any]] | None = None,
           details: dict[str, Any] | None = None) -> None:
    """Append ``action`` with its objects, split into parts above MAX_OBJECTS_PER_ENTRY."""
    objects = objects or []
    step = MAX_OBJECTS_PER_ENTRY
    if len(objects) <= step:
        append(data_dir, case, action, actor, objects, details)
        return
    parts = (len(objects) + step - 1) // step
    for i in range(parts):
        append(data_dir, case, action, actor, objects[i * step:(i + 1) * step],
               {**(details or {}), "part": i + 1, "parts": parts})


def segment_object(path: str, sha256: str | None = None, size: int | None = None,
                   segment_id: int | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"kind": "segment", "path": path}
    if sha256 is not None:
        obj["sha256"] = sha256
    if size is not None:
        obj["size"] = size
    if segment_id is not None:
        obj["id"] = segment_id
    return obj


def sealed(data_dir: str | os.PathLike[str], segments: list[dict[str, Any]],
           actor: str | None = None, details: dict[str, Any] | None = None) -> None:
    """Segments sealed (``segment_object`` with sha256 and size): one store-log entry
    each, so retention's deletion of one names one entry."""
    who = actor or actor_cli()
    for obj in segments:
        append(data_dir, None, SEAL, who, [obj], details)


def query(data_dir: str | os.PathLike[str], case: str, actor: str, query_id: str,
          spec: dict[str, Any], status: str, stats: Any, segments: list[dict[str, Any]],
          result: dict[str, Any] | None = None) -> None:
    """A query ended (once per query): its spec, what it returned (``stats``: a
    :class:`pcapwire.query.QueryStats`), the segments its plan read (``segment_object``
    without hashes) and its stored result, if any."""
    objects = ([result] if result is not None else []) + segments
    record(data_dir, case, "query", actor, objects,
           {"query_id": query_id, "spec": spec, "status": status, "packets": stats.packets,
            "bytes": stats.bytes, "segments_scanned": stats.segments_scanned})


def bundle(data_dir: str | os.PathLike[str], case: str, actor: str, manifest_sha256: str,
           zip_bytes: int) -> None:
    """A case bundle handed out: the SHA-256 of its (signed) ``MANIFEST.sha256``."""
    append(data_dir, case, "bundle", actor, [{"kind": "bundle", "path": "MANIFEST.sha256",
                                              "sha256": manifest_sha256}],
           {"zip_bytes": zip_bytes})


def plan_segments(plan: Any) -> list[dict[str, Any]]:
    """The segments a query plan reads, as objects (:class:`pcapwire.query.engine.Plan`)."""
    return [segment_object(p.segment.path, segment_id=p.segment.id) for p in plan.segments]


def carve_objects(carve_dir: Path, data_dir: Path | None = None) -> list[dict[str, Any]]:
    """The distinct files and emails a carve directory holds (their recorded hashes)."""
    from pcapwire.extract.layout import CarveDir

    carved = CarveDir(carve_dir)
    seen: dict[str, dict[str, Any]] = {}
    for suffix, records in (("", carved.files()), (".eml", carved.emails())):
        for rec in records:
            sha = rec.get("sha256", "")
            path = carved.content(sha, suffix)
            if path is not None and (sha + suffix) not in seen:
                seen[sha + suffix] = file_object("artifact", path, data_dir, sha256=sha)
    return list(seen.values())


class HashingWriter:
    """A binary writer that hashes and counts what passes through it."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()

    def object(self, kind: str, path: str) -> dict[str, Any]:
        return {"kind": kind, "path": path, "sha256": self.sha.hexdigest(), "size": self.size}
