"""Rule sources (files, directories, globs) compiled once and cached: a rule set is
recompiled only when one of its files changes (path, size or mtime), is added or
removed. A syntax error names the file and the line; so does an invalid ``severity`` or
``score`` in a rule's meta.

Namespaces: each file is compiled in its own namespace, the file's path relative to the
source it came from (``rules/web.yar`` listed as ``rules/`` -> namespace ``web.yar``).
Limitation: files pulled in with ``include`` are not watched for changes.
"""

from __future__ import annotations

import glob
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yara
from pcapwire.errors import ConfigError
from pcapwire.records import SEVERITIES
from pcapwire.workflow.severity import check_score

#: File name patterns taken from a directory (recursively).
RULE_SUFFIXES = (".yar", ".yara")
#: Most rule files one rule set may name.
MAX_RULE_FILES = 10_000
#: Compiled rule sets kept per analyzer (least recently used dropped first).
MAX_CACHED_RULESETS = 16
_SYNTAX = re.compile(r"^(?P<file>.*)\((?P<line>\d+)\): (?P<msg>.*)$", re.S)


class RuleError(ConfigError):
    """A rule source that cannot be used; the message names file and line."""


@dataclass(frozen=True)
class RuleSet:
    rules: Any  # yara.Rules
    files: dict[str, str]  # namespace -> path
    fingerprint: tuple[tuple[str, int, int], ...]
    count: int


def resolve_sources(sources: list[str], base_dir: Path | None) -> dict[str, str]:
    """namespace -> file for every rule file named by ``sources``."""
    out: dict[str, str] = {}
    for src in sources:
        p = Path(src).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        text = str(p)
        if any(ch in src for ch in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            files = [Path(m) for m in matches if Path(m).is_file()]
            if not files:
                raise RuleError(f"rules: {src!r} matches no file (looked for {text})")
            for f in files:
                out[f.name if f.name not in out else str(f)] = str(f)
        elif p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix in RULE_SUFFIXES and f.is_file())
            if not files:
                raise RuleError(f"rules: directory {text} holds no "
                                f"{'/'.join(RULE_SUFFIXES)} file")
            for f in files:
                out[str(f.relative_to(p))] = str(f)
        elif p.is_file():
            out[p.name if p.name not in out else str(p)] = str(p)
        else:
            raise RuleError(f"rules: {text} does not exist")
        if len(out) > MAX_RULE_FILES:
            raise RuleError(f"rules: more than MAX_RULE_FILES={MAX_RULE_FILES} files")
    return out


def _fingerprint(files: dict[str, str]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for ns, path in sorted(files.items()):
        try:
            st = Path(path).stat()
        except OSError as exc:
            raise RuleError(f"rules: {path}: {exc.strerror}") from None
        out.append((f"{ns}={path}", st.st_size, st.st_mtime_ns))
    return tuple(out)


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
        if meta.get("severity") is None and meta.get("score") is None:
            continue
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
    """Compiled rule sets keyed by their sources; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sets: OrderedDict[tuple[Any, ...], RuleSet] = OrderedDict()
        self.compiles = 0

    def get(self, sources: list[str], base_dir: Path | None,
            externals: dict[str, Any] | None = None) -> RuleSet:
        files = resolve_sources(sources, base_dir)
        fp = _fingerprint(files)
        key = (fp, tuple(sorted((externals or {}).items())))
        with self._lock:
            cached = self._sets.get(key)
            if cached is not None:
                self._sets.move_to_end(key)
                return cached
        try:
            rules = yara.compile(filepaths=files, externals=externals or {})
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
