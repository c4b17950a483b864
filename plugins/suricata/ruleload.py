"""What Suricata says while it loads rules: failures by file and line, and the summary.

Suricata prints, for every rule it rejects, the reason and then the location::

    E: detect-parse: unknown rule keyword 'foo'.
    E: detect: error parsing signature "alert ... sid:2; rev:1;)" from file /r/x.rules at line 3

then ``N rule files processed. X rules successfully loaded, Y rules failed`` and, once the
detection engine is built, ``N signatures processed`` (or ``No signatures supplied``).
:class:`RuleLoadLog` is fed the engine's output line by line and turns that into
:class:`RuleError` records and a ``done`` flag.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

_LOCATION = re.compile(
    r'error parsing signature "(?P<rule>.*)" from file (?P<file>.+?) at line (?P<line>\d+)\s*$')
_LEVEL_PREFIX = re.compile(r"^\s*(?:E|Error|W|Warning)\s*:\s*(?:[\w.-]+:\s*)?")
_SUMMARY = re.compile(r"(?P<files>\d+) rule files processed\. (?P<loaded>\d+) rules "
                      r"successfully loaded, (?P<failed>\d+) rules failed")
_MISSING = re.compile(r"No rule files match the pattern (?P<file>.+)$")
_DONE = re.compile(r"(?P<sigs>\d+) signatures processed\.|No signatures supplied")
#: Rule errors kept per engine (a broken rule file can hold thousands).
MAX_RULE_ERRORS = 1000


@dataclass(frozen=True, slots=True)
class RuleError:
    """One rule Suricata refused: where it is, what Suricata said, and the rule text."""

    file: str
    line: int
    message: str
    rule: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RuleLoadLog:
    errors: list[RuleError] = field(default_factory=list)
    dropped: int = 0
    loaded: int | None = None
    failed: int | None = None
    missing_files: list[str] = field(default_factory=list)
    signatures: int | None = None
    done: bool = False
    _reason: str = ""

    def feed(self, line: str) -> None:
        m = _LOCATION.search(line)
        if m:
            err = RuleError(m["file"], int(m["line"]), self._reason or "rule rejected",
                            m["rule"])
            self._reason = ""
            if len(self.errors) < MAX_RULE_ERRORS:
                self.errors.append(err)
            else:
                self.dropped += 1
            return
        if line.lstrip().startswith(("E:", "Error:")):
            self._reason = _LEVEL_PREFIX.sub("", line, count=1).strip()
            return
        m = _SUMMARY.search(line)
        if m:
            self.loaded, self.failed = int(m["loaded"]), int(m["failed"])
            return
        m = _MISSING.search(line)
        if m:
            self.missing_files.append(m["file"].strip())
            return
        m = _DONE.search(line)
        if m:
            self.signatures = int(m["sigs"]) if m["sigs"] else 0
            self.done = True

    def summary(self) -> str:
        lines = [str(e) for e in self.errors]
        if self.dropped:
            lines.append(f"... and {self.dropped} more")
        return "\n".join(lines)
