"""Rule sources (files, directories, globs) compiled once and cached.

A rule set is keyed by the *contents* of its files (a BLAKE2 digest of each file, and of
every file it pulls in with ``include``) and the external variables: a run whose rules
did not change reuses the compiled set; editing, adding or removing a rule file (or an
included one) recompiles it on the next run. Reading the files for the key is cheap
next to compiling them, and unlike a size/mtime check it cannot miss an edit made
within the file system's timestamp granularity.

Namespaces: each file is compiled in its own namespace, its path relative to the source
that named it (``rules/`` holding ``web/php.yar`` -> namespace ``web/php.yar``; a file or
a glob match -> its file name). When two sources give the same namespace to different
files, the later one is named by its full path; a file named twice is compiled once.

Errors name the file and the line: a syntax error (``rules/web.yar:12: YARA syntax
error: ...``), an invalid ``severity`` or ``score`` in a rule's meta, a source that
matches nothing.
"""

from __future__ import annotations

import glob
import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yara
from pcapwire.errors import ConfigError
from pcapwire.records import SEVERITIES
from pcapwire.workflow.confine import MAX_CONFINED_FILE_BYTES, Confinement
from pcapwire.workflow.severity import check_score

#: File name suffixes taken from a directory (recursively).
RULE_SUFFIXES = (".yar", ".yara")
#: Most rule files one rule set may name.
MAX_RULE_FILES = 10_000
#: Compiled rule sets kept per analyzer (least recently used dropped first).
MAX_CACHED_RULESETS = 16
#: Deepest chain of ``include`` directives followed for the cache key.
MAX_INCLUDE_DEPTH = 16
_SYNTAX = re.compile(r"^(?P<file>.*)\((?P<line>\d+)\): (?P<msg>.*)$", re.S)
_INCLUDE = re.compile(rb'^\s*include\s+"((?:[^"\\]|\\.)+)"', re.M)


class RuleError(ConfigError):
    """A rule source that cannot be used; the message names file and line."""


@dataclass(frozen=True)
class RuleSet:
    rules: Any  # yara.Rules
    files: dict[str, str]  # namespace -> path
    fingerprint: tuple[tuple[str, str], ...]  # (path, digest) of every file read
    count: int  # rules compiled


def _add(out: dict[str, str], namespace: str, path: Path) -> None:
    text = str(path)
    if text in out.values():
        return
    out[namespace if namespace not in out else text] = text


def resolve_sources(sources: list[str], base_dir: Path | None) -> dict[str, str]:
    """namespace -> file for every rule file named by ``sources`` (files, directories,
    globs; relative ones start at ``base_dir``)."""
    out: dict[str, str] = {}
    for src in sources:
        p = Path(src).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        text = str(p)
        if any(ch in src for ch in "*?["):
            files = [Path(m) for m in sorted(glob.glob(text, recursive=True))
                     if Path(m).is_file()]
            if not files:
                raise RuleError(f"rules: {src!r} matches no file (looked for {text})")
            for f in files:
                _add(out, f.name, f)
        elif p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix in RULE_SUFFIXES and f.is_file())
            if not files:
                raise RuleError(f"rules: directory {text} holds no "
                                f"{'/'.join(RULE_SUFFIXES)} file")
            for f in files:
                _add(out, str(f.relative_to(p)), f)
        elif p.is_file():
            _add(out, p.name, p)
        else:
            raise RuleError(f"rules: {text} does not exist")
        if len(out) > MAX_RULE_FILES:
            raise RuleError(f"rules: more than MAX_RULE_FILES={MAX_RULE_FILES} files")
    return out


def fingerprint(files: dict[str, str], confinement: Confinement | None = None
                ) -> tuple[tuple[str, str], ...]:
    """(path, digest) of every rule file and, transitively, every file it includes
    (confined: only includes inside the confinement's roots are read)."""
    out: dict[str, str] = {}

    def visit(path: Path, depth: int) -> None:
        key = str(path)
        if key in out or depth > MAX_INCLUDE_DEPTH:
            return
        if depth and confinement is not None and not confinement.allows(path):
            out[key] = "refused"
            return
        try:
            data = path.read_bytes()
        except OSError as exc:
            if depth == 0:
                raise RuleError(f"rules: {path}: {exc.strerror}") from None
            out[key] = "missing"  # libyara reports the include error with its line
            return
        out[key] = hashlib.blake2b(data, digest_size=16).hexdigest()
        for m in _INCLUDE.finditer(data):
            inc = Path(m.group(1).decode("utf-8", "replace"))
            visit(inc if inc.is_absolute() else path.parent / inc, depth + 1)

    for ns, path in sorted(files.items()):
        out.setdefault(f"namespace {ns}", path)
        visit(Path(path), 0)
    return tuple(sorted(out.items()))


def _confined_includes(confinement: Confinement) -> Any:
    """yara-python's ``include_callback``: the text of an included file inside the roots
    (and under the size limit), else ``None`` (libyara then reports the include with its
    line, quoting nothing of the file)."""
    def include(requested: str, including: str | None, _namespace: str) -> str | None:
        path = Path(requested)
        if not path.is_absolute() and including:
            path = Path(including).parent / path
        if not confinement.allows(path):
            return None
        try:
            if path.stat().st_size > MAX_CONFINED_FILE_BYTES:
                return None
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    return include


def _syntax_error(exc: Exception) -> RuleError:
    text = str(exc)
    m = _SYNTAX.match(text)
    if m:
        return RuleError(f"{m['file']}:{m['line']}: YARA syntax error: {m['msg']}")
    return RuleError(f"YARA: {text}")


def _rule_location(identifier: str, files: dict[str, str]) -> str:
    """``file:line`` of ``rule <identifier>`` (compiled rules do not keep their file)."""
    pattern = re.compile(rf"^\s*(?:(?:private|global)\s+)*rule\s+{re.escape(identifier)}\b")
    for path in files.values():
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for no, line in enumerate(lines, 1):
            if pattern.match(line):
                return f"{path}:{no}"
    return "?"


def _check_meta(rules: Any, files: dict[str, str]) -> int:
    count = 0
    for rule in rules:
        count += 1
        meta = rule.meta or {}
        sev = meta.get("severity")
        if sev is not None and str(sev).lower() not in SEVERITIES:
            raise RuleError(f"{_rule_location(rule.identifier, files)}: rule "
                            f"{rule.identifier}: meta severity {sev!r} is not one of "
                            f"{', '.join(SEVERITIES)}")
        if meta.get("score") is not None:
            try:
                check_score(meta["score"])
            except Exception as exc:
                raise RuleError(f"{_rule_location(rule.identifier, files)}: rule "
                                f"{rule.identifier}: meta score: {exc}") from None
    return count


class RuleCache:
    """Compiled rule sets keyed by their sources' contents; thread-safe.

    ``compiles`` counts actual compilations (the tests and ``plugins list`` use it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sets: OrderedDict[tuple[Any, ...], RuleSet] = OrderedDict()
        self.compiles = 0

    def get(self, sources: list[str], base_dir: Path | None,
            externals: dict[str, Any] | None = None,
            confinement: Confinement | None = None) -> RuleSet:
        """The compiled rules for ``sources``; compiles only when no cached set has the
        same file contents and externals. :class:`RuleError` names file and line.
        With a ``confinement``, ``include`` reads only files inside its roots."""
        if not sources:
            raise RuleError("rules: no rule file, directory or glob given")
        files = resolve_sources(sources, base_dir)
        fp = fingerprint(files, confinement)
        key = (fp, tuple(sorted((externals or {}).items())), confinement)
        with self._lock:
            cached = self._sets.get(key)
            if cached is not None:
                self._sets.move_to_end(key)
                return cached
        try:
            extra = ({} if confinement is None
                     else {"include_callback": _confined_includes(confinement)})
            rules = yara.compile(filepaths=files, externals=externals or {}, **extra)
        except yara.SyntaxError as exc:
            raise _syntax_error(exc) from None
        except yara.Error as exc:
            raise RuleError(f"YARA: {exc}") from None
        count = _check_meta(rules, files)
        rs = RuleSet(rules, files, fp, count)
        with self._lock:
            self.compiles += 1
            self._sets[key] = rs
            while len(self._sets) > MAX_CACHED_RULESETS:
                self._sets.popitem(last=False)
        return rs
