"""What the hash-list store deals in: lists, matches, import reports, and the errors an
import or a lookup can end with (:mod:`.store` holds the store itself)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pcapwire.hashlist.digests import ALGORITHM_BY_BYTES, ALGORITHMS
from pcapwire.hashlist.formats import BadLine, HashListError

KINDS: tuple[str, ...] = ("allow", "deny")
#: Severity of a list when the import does not name one.
DEFAULT_SEVERITY: dict[str, str] = {"allow": "info", "deny": "critical"}
MODES: tuple[str, ...] = ("create", "replace", "append")
#: Bad lines listed in an import report (all are counted).
MAX_REPORTED_ERRORS = 100
#: List names: like tenant names (1-63 of a-z 0-9 _ -, starting with a letter or digit).
NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-"


class ImportFailed(HashListError):
    """Nothing was imported (no valid entry at all); ``report`` lists the bad lines."""

    def __init__(self, message: str, report: ImportReport) -> None:
        super().__init__(message)
        self.report = report


class ImportBusy(HashListError):
    """Another import into the same store is running."""

    code = "hashlist_import_busy"


class ListExists(HashListError):
    """``create`` found a list of that name."""

    code = "hashlist_exists"


class ListNotFound(HashListError):
    """No list of that name (``append``, ``remove``)."""

    code = "hashlist_not_found"


def check_list_name(name: str) -> str:
    if not (1 <= len(name) <= 63 and set(name) <= set(NAME_CHARS) and name[0] not in "_-"):
        raise HashListError(f"invalid list name {name!r}: use 1-63 characters a-z 0-9 _ -, "
                            "starting with a letter or digit")
    return name


@dataclass(frozen=True)
class HashList:
    """One list as stored; ``scope`` says which store it came from (``tenant`` or
    ``global``, see :func:`pcapwire.hashlist.databases_for`)."""

    id: int
    name: str
    kind: str
    severity: str
    description: str
    source: str
    format: str
    created: float
    updated: float
    counts: dict[str, int]
    scope: str = "tenant"

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "severity": self.severity,
                "description": self.description, "source": self.source,
                "format": self.format, "created": self.created, "updated": self.updated,
                "counts": dict(self.counts), "total": self.total, "scope": self.scope}


@dataclass(frozen=True)
class Match:
    """A digest found in a list (``label``: the entry's label, if the list has one)."""

    list: HashList
    digest: bytes
    label: str | None = None

    @property
    def algorithm(self) -> str:
        return ALGORITHM_BY_BYTES[len(self.digest)]

    def to_dict(self) -> dict[str, Any]:
        return {"list": self.list.name, "kind": self.list.kind,
                "severity": self.list.severity, "scope": self.list.scope,
                "algorithm": self.algorithm, "hash": self.digest.hex(), "label": self.label}


@dataclass
class ImportReport:
    """What an import did: per file how it was read; entries added per algorithm,
    duplicates (already in the list, or repeated), digests skipped (an algorithm not asked
    for), bad lines (all counted, the first :data:`MAX_REPORTED_ERRORS` listed)."""

    name: str
    kind: str
    severity: str
    mode: str
    files: list[dict[str, Any]] = field(default_factory=list)
    records: int = 0
    added: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    skipped: int = 0
    bad: int = 0
    errors: list[BadLine] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def added_total(self) -> int:
        return sum(self.added.values())

    def add_error(self, err: BadLine) -> None:
        self.bad += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(err)

    def to_dict(self) -> dict[str, Any]:
        return {"list": self.name, "kind": self.kind, "severity": self.severity,
                "mode": self.mode, "files": self.files, "records": self.records,
                "added": {a: self.added.get(a, 0) for a in ALGORITHMS},
                "added_total": self.added_total, "duplicates": self.duplicates,
                "skipped": self.skipped, "bad_lines": self.bad,
                "errors": [e.to_dict() for e in self.errors],
                "errors_not_listed": self.bad - len(self.errors),
                "seconds": round(self.seconds, 3)}

    def summary(self) -> str:
        by_alg = ", ".join(f"{a} {self.added.get(a, 0)}" for a in ALGORITHMS)
        out = (f"list {self.name} ({self.kind}, {self.severity}): {self.added_total} added "
               f"({by_alg}), {self.duplicates} duplicate(s), {self.bad} bad line(s), "
               f"{self.records} record(s) read in {self.seconds:.2f} s")
        if self.skipped:
            out += f", {self.skipped} digest(s) of other algorithms skipped"
        return out
