"""Suricata rule files read the way ``suricata-update`` reads them: every rule (enabled or
commented out) with where it is and what groups it belongs to, every line that is neither a
rule nor a comment reported as ``FILE:LINE: message``.

The grammar is suricata-update's own (``suricata.update.rule``): a line, continued by a
trailing backslash, is ``[#]ACTION HEADER (OPTIONS)``; options end with an unescaped
``;``; ``metadata`` entries are comma separated ``key value`` pairs; a rule needs a
``sid``; ``gid`` defaults to 1. A commented line that does not parse is a comment. An
uncommented line that does not parse, or whose action suricata-update does not know (it
would leave the rule out of the rule set it writes), is a :class:`RuleProblem`; parsing
goes on with the next line, so nothing after a bad line is lost.

Duplicates (same gid and sid) are resolved as suricata-update resolves them: the first
rule seen is kept unless a later one has a greater ``rev``; the other one is a problem.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

#: Rule actions suricata-update keeps (``suricata.update.rule.actions``); a rule with any
#: other action is left out of the rule set it writes.
ACTIONS = frozenset({"alert", "log", "pass", "activate", "dynamic", "drop", "reject", "sdrop"})
#: Longest rule (after joining continued lines) that is parsed; longer is a problem.
MAX_RULE_CHARS = 1 << 20
#: Problems kept per rule set (a broken file can hold thousands); the rest are counted.
MAX_PROBLEMS = 1000

_RULE = re.compile(r"^(?P<hash>#)*[\s#]*(?P<raw>(?P<header>[^()]+)\((?P<options>.*)\)$)",
                   re.S)
_OPTION_END = re.compile(r"(?<!\\);")


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of a rule file. ``group`` is the name suricata-update gives the file (its
    ``group:`` matcher compares the basename); ``metadata`` keeps each entry as written."""

    gid: int
    sid: int
    rev: int
    enabled: bool
    action: str
    msg: str
    classtype: str
    metadata: tuple[str, ...]
    group: str
    file: str
    line: int
    raw: str

    def metadata_pairs(self) -> Iterator[tuple[str, str]]:
        """(key, value) of each ``metadata`` entry, both lower case as suricata-update
        compares them; an entry without a value is skipped."""
        for entry in self.metadata:
            key, _, value = entry.strip().partition(" ")
            if value.strip():
                yield key.strip().lower(), value.strip().lower()


@dataclass(frozen=True, slots=True)
class RuleProblem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class _Bad(Exception):
    pass


def parse_rule(text: str, *, group: str = "", file: str = "", line: int = 0) -> Rule | None:
    """The rule on a (joined) line; None for a comment or an empty line. Raises
    :class:`ValueError` with the reason for an uncommented line that is not a rule."""
    text = text.strip()
    if not text:
        return None
    commented = text.startswith("#")
    try:
        return _parse(text, group, file, line)
    except _Bad as exc:
        if commented:
            return None
        raise ValueError(str(exc)) from None


def _parse(text: str, group: str, file: str, line: int) -> Rule:
    m = _RULE.match(text)
    if not m:
        raise _Bad("not a rule: expected 'ACTION HEADER (OPTIONS)'")
    header = m["header"].split()
    action = header[0] if header else ""
    if action not in ACTIONS:
        raise _Bad(f"action {action!r} is not one suricata-update keeps "
                   f"({', '.join(sorted(ACTIONS))})")
    parts = _OPTION_END.split(m["options"])
    if parts[-1].strip():
        raise _Bad(f"option {parts[-1].strip()[:40]!r} does not end with ';'")
    opts: dict[str, str] = {}
    metadata: list[str] = []
    for part in parts[:-1]:
        name, _, value = part.strip().partition(":")
        name, value = name.strip(), value.strip()
        if name == "metadata":
            metadata.extend(v.strip() for v in value.split(","))
        elif name not in opts:
            opts[name] = value
    try:
        sid = int(opts["sid"])
    except KeyError:
        raise _Bad("rule has no sid") from None
    except ValueError:
        raise _Bad(f"sid {opts['sid']!r} is not a number") from None
    try:
        gid, rev = int(opts.get("gid", "1")), int(opts.get("rev", "0"))
    except ValueError:
        raise _Bad("gid or rev is not a number") from None
    msg = opts.get("msg", "")
    if len(msg) >= 2 and msg[0] == msg[-1] == '"':
        msg = msg[1:-1]
    return Rule(gid, sid, rev, not m["hash"], action, msg, opts.get("classtype", "").lower(),
                tuple(metadata), group, file, line, m["raw"].strip())


def parse_lines(data: bytes, *, file: str, group: str
                ) -> Iterator[Rule | RuleProblem]:
    """Every rule and problem of one file's bytes, in order (continued lines are one rule,
    numbered by their first line)."""
    buf: list[str] = []
    first = 0
    for number, raw in enumerate(data.splitlines(), 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield RuleProblem(file, number, f"not UTF-8 (byte {exc.start} of the line)")
            buf = []
            continue
        if not buf:
            first = number
        stripped = text.rstrip()
        if stripped.endswith("\\"):
            buf.append(stripped[:-1] + " ")
            continue
        buf.append(text)
        joined = "".join(buf)
        buf = []
        if len(joined) > MAX_RULE_CHARS:
            yield RuleProblem(file, first, f"rule longer than {MAX_RULE_CHARS} characters")
            continue
        try:
            rule = parse_rule(joined, group=group, file=file, line=first)
        except ValueError as exc:
            yield RuleProblem(file, first, str(exc))
            continue
        if rule is not None:
            yield rule
    if buf:
        yield RuleProblem(file, first, "file ends inside a continued line (trailing '\\')")


@dataclass
class RuleSet:
    """Rules by (gid, sid) as suricata-update would merge them, and what could not be read."""

    rules: dict[tuple[int, int], Rule] = field(default_factory=dict)
    problems: list[RuleProblem] = field(default_factory=list)
    dropped_problems: int = 0
    files: int = 0
    seconds: float = 0.0

    def problem(self, p: RuleProblem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(p)
        else:
            self.dropped_problems += 1

    def add(self, rule: Rule) -> None:
        key = (rule.gid, rule.sid)
        old = self.rules.get(key)
        if old is None:
            self.rules[key] = rule
            return
        keep, lose = (rule, old) if rule.rev > old.rev else (old, rule)
        self.rules[key] = keep
        self.problem(RuleProblem(lose.file, lose.line,
                                 f"duplicate of {keep.gid}:{keep.sid} at {keep.file}:{keep.line} "
                                 f"(rev {keep.rev} is kept)"))


def load(files: Iterable[tuple[str, str, bytes]]) -> RuleSet:
    """A rule set from ``(file name, group, bytes)`` entries, in the given order."""
    started = time.perf_counter()
    out = RuleSet()
    for name, group, data in files:
        out.files += 1
        for item in parse_lines(data, file=name, group=group):
            if isinstance(item, Rule):
                out.add(item)
            else:
                out.problem(item)
    out.seconds = time.perf_counter() - started
    return out
