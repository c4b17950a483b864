"""Verify a custody log: its chain, then the files its entries name.

The chain: every line is one entry in canonical JSON; ``seq`` runs 1, 2, 3 … and each
entry's ``prev`` is the SHA-256 of the line before it (:data:`~.log.GENESIS` for the
first). A changed entry breaks the link to the entry after it, a removed or moved one the
sequence: the first break is named (line, seq, action).

The files: every object an entry names that is in the store's keeping is hashed again,
as the last entry naming its path left it: an object whose ``path`` is relative (inside
the data directory), and every ``segment`` object (a segment indexed in place is the
user's file, named by its absolute path). Not re-hashed: ``export`` and ``bundle`` objects
(bytes handed out, no longer in the store's keeping) and paths a later entry removed — by an action
ending in ``.delete``, an object with ``"deleted": true``, or an object naming the same
path plus ``.zst`` (a segment replaced by its compressed form). A compressed segment is
checked by the SHA-256 of its file, and by that of its decompressed bytes: the
``sha256_plain`` of its object, or the hash its entry records for the plain path beside
it (``segment.compress``), which must be the hash the segment was sealed with.

A case's log names the store's segments it read (``segment`` objects without a
``sha256``): those are checked against the store log's ``segment.seal`` entries, whose
chain is verified too. A segment that no seal entry names (stored before custody logs
existed) cannot be checked: it is listed as unverified, not as a mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pcapwire.custody.log import GENESIS, canonical, entry_hash, log_path, read
from pcapwire.store.segments import ZSTD_SUFFIX

HASH_BLOCK = 1 * 2**20
#: Problems a verification lists, at most (the first one is the one that matters; a log
#: edited throughout would otherwise list every line).
MAX_PROBLEMS = 100
STORE = "store"  # the store log's name in problems
#: Object kinds that describe bytes handed out of the store (never re-hashed).
HANDED_OUT = frozenset({"export", "bundle"})


@dataclass
class Problem:
    """What does not match: in ``log`` (``store`` or the case log's name) at ``line``
    (1-based) / ``seq``, or the file ``path`` (``expected`` vs ``actual`` SHA-256)."""

    log: str
    message: str
    line: int | None = None
    seq: int | None = None
    action: str | None = None
    path: str | None = None
    expected: str | None = None
    actual: str | None = None


@dataclass
class Result:
    case: str | None
    entries: int = 0
    head: str = GENESIS  # the hash of the last entry: note it down, compare it later
    store_entries: int = 0
    files_checked: int = 0
    bytes_hashed: int = 0
    problems: list[Problem] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)  # segments no seal entry names

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    def as_dict(self) -> dict[str, Any]:
        return {"case": self.case, "verified": self.ok, "entries": self.entries,
                "head": self.head, "store_entries": self.store_entries,
                "files_checked": self.files_checked, "bytes_hashed": self.bytes_hashed,
                "problems": [{k: v for k, v in asdict(p).items() if v is not None}
                             for p in self.problems],
                "unverified": self.unverified}


def sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def sha256_zstd(path: Path) -> str:
    """The SHA-256 of a zstd file's decompressed bytes."""
    import zstandard

    h = hashlib.sha256()
    with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(
            f, read_across_frames=True) as r:
        while block := r.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def check_chain(lines: list[bytes], name: str, result: Result) -> list[dict[str, Any]]:
    """Check one log's chain, adding its breaks to ``result`` and setting its head;
    returns the entries that parse (in order)."""
    entries: list[dict[str, Any]] = []
    prev_hash, before = GENESIS, None
    for n, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise ValueError("not an object")
        except ValueError:
            result.add(Problem(name, f"line {n} is not a JSON entry (changed or cut)", n))
            prev_hash, before = entry_hash(line), None
            continue
        seq, action = entry.get("seq"), entry.get("action")
        desc = f"entry seq {seq} (line {n}, {action})"
        here = Problem(name, "", n, seq if isinstance(seq, int) else None, str(action))
        if canonical(entry) != line:
            here.message = f"{desc} is not in canonical form: it was edited"
        elif seq != n:
            why = "an entry before it was removed" if isinstance(seq, int) and seq > n \
                else "entries were reordered or repeated"
            here.message = f"line {n} holds seq {seq}, expected {n}: {why}"
        elif entry.get("prev") != prev_hash and before is None:
            here.message = f"{desc}: its prev matches no line before it"
        elif entry.get("prev") != prev_hash:
            assert before is not None
            here = Problem(name, f"entry seq {before.get('seq')} (line {n - 1}, "
                           f"{before.get('action')}) does not hash to the prev of {desc}: "
                           "it was changed (or that prev was)", n - 1, before.get("seq"),
                           str(before.get("action")))
        if here.message:
            result.add(here)
        entries.append(entry)
        prev_hash, before = entry_hash(line), entry
    result.head = prev_hash
    return entries


def _removes(entry: dict[str, Any], obj: dict[str, Any]) -> bool:
    return str(entry.get("action", "")).endswith(".delete") or obj.get("deleted") is True


Expected = tuple[dict[str, Any], dict[str, Any]]  # (entry, object) a file must match


def expectations(entries: Iterable[dict[str, Any]], log: str = STORE,
                 result: Result | None = None) -> dict[str, Expected | None]:
    """path -> (entry, object) of the last entry that names the path with a hash, or None
    when a later entry removed or replaced it. A compressed form (``<path>.zst``) replaces
    its plain path; when its entry names the plain path too (with the plain bytes'
    hash), that hash must be the one recorded for the plain file before (checked into
    ``result``), and becomes the compressed file's ``sha256_plain``."""
    out: dict[str, Expected | None] = {}
    for entry in entries:
        objects = [o for o in entry.get("objects") or [] if isinstance(o, dict)
                   and isinstance(o.get("path"), str) and o.get("kind") not in HANDED_OUT]
        named = {o["path"]: o for o in objects}
        for obj in objects:
            path = obj["path"]
            if _removes(entry, obj):
                out[path] = None
            elif path.endswith(ZSTD_SUFFIX):
                plain_path = path[:-len(ZSTD_SUFFIX)]
                plain = named.get(plain_path, {}).get("sha256")
                before = out.get(plain_path)
                if result is not None and plain and before is not None \
                        and before[1].get("sha256") != plain:
                    result.add(Problem(log, f"entry seq {entry.get('seq')} "
                                       f"({entry.get('action')}) compressed {plain_path} "
                                       f"as bytes of SHA-256 {plain}, but entry seq "
                                       f"{before[0].get('seq')} recorded "
                                       f"{before[1].get('sha256')}", None, entry.get("seq"),
                                       str(entry.get("action")), plain_path,
                                       before[1].get("sha256"), plain))
                if "sha256" in obj:
                    out[path] = (entry, {"sha256_plain": plain, **obj} if plain else obj)
            elif "sha256" in obj and path + ZSTD_SUFFIX not in named:
                out[path] = (entry, obj)
        for path in named:
            if path.endswith(ZSTD_SUFFIX) and not _removes(entry, named[path]):
                out[path[:-len(ZSTD_SUFFIX)]] = None  # replaced by its compressed form
    return out


def _in_keeping(obj: dict[str, Any], path: str) -> bool:
    return obj.get("kind") == "segment" or not os.path.isabs(path)


def check_file(root: Path, log: str, path: str, entry: dict[str, Any], obj: dict[str, Any],
               result: Result) -> None:
    """Hash ``path`` (relative to ``root``, or absolute) against what ``obj`` of
    ``entry`` recorded."""
    seq, action, expected = entry.get("seq"), str(entry.get("action")), obj.get("sha256")
    named = f"entry seq {seq} ({action})"

    def mismatch(message: str, actual: str | None = None, want: str | None = expected
                 ) -> None:
        result.add(Problem(log, message, None, seq, action, path, want, actual))

    full = root / path  # an absolute path stays as it is
    try:
        actual, size = sha256_file(full)
    except FileNotFoundError:
        return mismatch(f"{path} (named by {named}) is missing and no entry removed it")
    except OSError as exc:
        return mismatch(f"{path} (named by {named}) cannot be read: {exc}")
    result.files_checked += 1
    result.bytes_hashed += size
    if actual != expected:
        return mismatch(f"{path} does not match {named}: SHA-256 {actual}, recorded "
                        f"{expected}", actual)
    plain = obj.get("sha256_plain")
    if plain and path.endswith(ZSTD_SUFFIX):
        try:
            got = sha256_zstd(full)
        except Exception as exc:  # zstandard raises its own ZstdError
            got = f"undecodable ({exc})"
        if got != plain:
            mismatch(f"{path}: its decompressed bytes have SHA-256 {got}, {named} recorded "
                     f"{plain}", got, plain)
    return None


def verify(data_dir: str | os.PathLike[str], case: str | None) -> Result:
    """Verify a case's log (``case`` None: the store's log and every segment it names)."""
    root = Path(data_dir).resolve()
    result = Result(case)
    store_entries = check_chain(read(root, None), STORE, result)
    result.store_entries = len(store_entries)
    store = expectations(store_entries, STORE, result)
    if case is None:
        result.entries = result.store_entries
        for path, found in store.items():
            if found is not None:
                check_file(root, STORE, path, *found, result=result)
        return result
    name = log_path(root, case).name
    entries = check_chain(read(root, case), name, result)
    result.entries = len(entries)
    own = expectations(entries, name, result)
    for path, found in own.items():
        if found is not None and _in_keeping(found[1], path):
            check_file(root, name, path, *found, result=result)
    segments = sorted({o["path"] for e in entries for o in e.get("objects") or []
                       if isinstance(o, dict) and o.get("kind") == "segment"
                       and "sha256" not in o and isinstance(o.get("path"), str)} - own.keys())
    for path in segments:
        if path not in store:
            result.unverified.append(path)
        elif (found := store[path] or store.get(path + ZSTD_SUFFIX)) is not None:
            check_file(root, STORE, found[1]["path"], *found, result=result)
    return result


def describe(result: Result) -> str:
    """The human form: one line of verdict, then each problem."""
    what = f"case {result.case!r}" if result.case is not None else "the store log"
    if result.ok:
        lines = [f"verified: {what}: {result.entries} entries, chain intact (head "
                 f"{result.head}); {result.files_checked} files match "
                 f"({result.bytes_hashed} bytes hashed)"]
    else:
        first = result.problems[0]
        lines = [f"MISMATCH: {what}: {first.message}"]
        lines += [f"  also: {p.message}" for p in result.problems[1:]]
    if result.unverified:
        lines.append(f"unverified: {len(result.unverified)} segments named by the case have "
                     "no segment.seal entry (stored before custody logs): "
                     + ", ".join(result.unverified[:5]) + (" …" if len(result.unverified) > 5
                                                           else ""))
    return "\n".join(lines)
