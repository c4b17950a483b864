"""From matches to a triage outcome, and the set of stores a data directory consults.

Outcome of a file (or a hash): **known-bad** when any deny list holds one of its digests
(severity: the highest of those deny lists), else **known-good** when an allow list holds
one (severity: the highest of those allow lists, ``info`` by default), else **unknown**
(``info``). A deny list wins over an allow list: a hash on both is known-bad, and the
allow-list matches stay in the evidence.

Scopes (tenant isolation): a data directory's own ``hashlists.sqlite`` holds its lists
(scope ``tenant``). A server keeps one store per tenant under ``DATA/tenants/<tenant>/``;
``DATA/hashlists.sqlite`` then holds the **global** lists (scope ``global``: NSRL, a
vendor feed) that every tenant consults and none can change through the API; the
operator manages them with ``pcapwire --data-dir DATA hashlist ...``. A tenant's own lists
are seen by that tenant only.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcapwire.hashlist.digests import parse_digest
from pcapwire.hashlist.model import HashList, Match
from pcapwire.hashlist.store import DB_NAME, HashListStore
from pcapwire.records import SEVERITIES

VERDICTS: tuple[str, ...] = ("known-good", "known-bad", "unknown")
#: Directory name under a server's data directory that holds the tenants' stores
#: (:meth:`pcapwire.api.ApiConfig.tenant_dir`).
TENANTS_DIR = "tenants"


@dataclass(frozen=True)
class Triage:
    verdict: str
    severity: str
    matches: tuple[Match, ...] = ()

    @property
    def lists(self) -> list[str]:
        return list(dict.fromkeys(m.list.name for m in self.matches))

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "severity": self.severity,
                "matches": [m.to_dict() for m in self.matches]}


def classify(matches: Sequence[Match]) -> Triage:
    """The outcome for a file or hash whose digests matched ``matches``."""
    deny = [m for m in matches if m.list.kind == "deny"]
    allow = [m for m in matches if m.list.kind == "allow"]
    ordered = tuple(deny + allow)
    if deny:
        return Triage("known-bad", _highest(deny), ordered)
    if allow:
        return Triage("known-good", _highest(allow), ordered)
    return Triage("unknown", "info", ())


def _highest(matches: list[Match]) -> str:
    return max((m.list.severity for m in matches), key=SEVERITIES.index)


def databases_for(data_dir: str | Path) -> list[tuple[str, Path]]:
    """``[(scope, path)]`` of the stores a data directory consults: its own, and the
    server's global store when the directory is a tenant's (``DATA/tenants/<t>``)."""
    root = Path(data_dir).resolve()
    out = [("tenant", root / DB_NAME)]
    if root.parent.name == TENANTS_DIR:
        out.append(("global", root.parent.parent / DB_NAME))
    return out


class HashListSet:
    """Read-only view over several stores (a tenant's and the global one)."""

    def __init__(self, stores: Sequence[HashListStore]) -> None:
        self.stores = list(stores)

    @classmethod
    def for_data_dir(cls, data_dir: str | Path, refresh_interval: float = 0.0) -> HashListSet:
        """See :attr:`HashListStore.refresh_interval` (a long-running reader such as the
        analyzer trades a second of delay in seeing a new list for faster lookups)."""
        return cls([HashListStore(p, readonly=True, scope=scope,
                                  refresh_interval=refresh_interval)
                    for scope, p in databases_for(data_dir)])

    @classmethod
    def open(cls, paths: Sequence[str | Path], refresh_interval: float = 0.0) -> HashListSet:
        return cls([HashListStore(p, readonly=True, refresh_interval=refresh_interval)
                    for p in paths])

    def close(self) -> None:
        for s in self.stores:
            s.close()

    def lists(self) -> list[HashList]:
        return [hl for s in self.stores for hl in s.lists()]

    def lookup(self, digests: Sequence[bytes], names: Collection[str] | None = None
               ) -> dict[bytes, list[Match]]:
        out: dict[bytes, list[Match]] = {}
        for s in self.stores:
            for digest, matches in s.lookup(digests, names).items():
                out.setdefault(digest, []).extend(matches)
        return out

    def triage(self, digests: Sequence[bytes], names: Collection[str] | None = None) -> Triage:
        """The outcome for one file given its digests (MD5, SHA-1, SHA-256: any subset)."""
        found = self.lookup(digests, names)
        return classify([m for d in digests for m in found.get(d, [])])

    def triage_hex(self, hashes: Sequence[str]) -> list[dict[str, Any]]:
        """Per hex hash (each on its own): ``{hash, algorithm, verdict, severity,
        matches}``; :class:`ValueError` for a value that is not a digest."""
        digests = [parse_digest(h) for h in hashes]
        found = self.lookup(digests)
        out = []
        for h, d in zip(hashes, digests, strict=True):
            t = classify(found.get(d, []))
            out.append({"hash": h.strip().lower(), "algorithm": _ALG[len(d)], **t.to_dict()})
        return out


_ALG = {16: "md5", 20: "sha1", 32: "sha256"}
