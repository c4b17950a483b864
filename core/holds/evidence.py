"""Evidence files: ``<data-dir>/evidence/<case>/hold-<id>/part-0001.pcap``, ...

Each part is the hold's query run over the segments it copies (standard pcap; pcapng
only when the link types of its packets really mix), written as ``.part``, hashed while
written, ``fsync``-ed, renamed into place and made read-only. A part is never rewritten,
so its SHA-256 stays valid; the case directory is the case name as its custody log names
it (:func:`pcapwire.custody.log.case_log_name`: case names come from API callers, never
a path).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pcapwire.cases import CASES_FILE
from pcapwire.custody.log import case_log_name
from pcapwire.holds.table import HoldsDB
from pcapwire.query.engine import QueryEngine
from pcapwire.query.spec import QuerySpec

EVIDENCE_DIR = "evidence"


def case_dir(data_dir: Path, case: str) -> Path:
    """The case's evidence directory (its name percent-encoded; a leading dot too, so
    that "." and ".." name directories of their own)."""
    name = case_log_name(case).removesuffix(".jsonl")
    if name.startswith("."):
        name = "%2E" + name[1:]
    return data_dir / EVIDENCE_DIR / name


def part_path(data_dir: Path, case: str, hold_id: int, n: int) -> Path:
    return case_dir(data_dir, case) / f"hold-{hold_id}" / f"part-{n:04d}.pcap"


@dataclass(frozen=True)
class Written:
    sha256: str
    size: int
    packets: int
    damage: list[str]  # what could not be read (QueryStats.damage): missing from the part


class _Hashing:
    """A file that hashes what is written to it."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh, self.hash, self.size = fh, hashlib.sha256(), 0

    def write(self, data: bytes | memoryview) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.fh.write(data)


def write_part(engine: QueryEngine, spec: QuerySpec, segment_ids: Collection[int],
               path: Path) -> Written | None:
    """Write the packets of ``segment_ids`` that ``spec`` matches to ``path``; None (and
    no file) when none matches."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        with open(tmp, "wb") as fh:
            out = _Hashing(fh)
            stats = engine.write(spec, out, record=False,  # type: ignore[arg-type]
                                 plan=engine.plan(spec, segment_ids=segment_ids))
            if stats.packets == 0:
                tmp.unlink()
                return None
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, stat.S_IMODE(os.stat(tmp).st_mode) & ~0o222)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return Written(out.hash.hexdigest(), out.size, stats.packets, list(stats.damage))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def evidence_files(data_dir: str | os.PathLike[str], case: str) -> list[tuple[str, Path]]:
    """The evidence parts of every hold of ``case`` (released ones too: releasing keeps the
    evidence), as (name in a bundle, path): ``evidence/hold-<id>/part-0001.pcap``; only
    parts whose file exists."""
    root = Path(data_dir)
    if not (root / CASES_FILE).exists():
        return []
    with HoldsDB(root / CASES_FILE) as db:
        holds = db.holds(case=case)
    return [(f"{EVIDENCE_DIR}/hold-{h.id}/{Path(p.path).name}", root / p.path)
            for h in holds for p in h.parts if (root / p.path).is_file()]
