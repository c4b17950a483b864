"""What rules from an API caller may not do, checked on the rule text before any engine
sees it: a trigger's rules, and the rule files of a workflow posted through the API (they
are rule *text*, never a way to name files on the server).

The engine's configuration already refuses Lua rules and dataset writes
(:data:`pcapwire.plugins.suricata.config.RULE_SAFETY`). Suricata 7.0.10 still opens a
dataset's ``load`` file by absolute or ``..`` path whatever
``datasets.rules.allow-absolute-filenames`` says (that setting guards ``save`` and
``state`` only; measured: ``load /etc/passwd`` is opened), so a dataset or datarep
keyword naming any file (``load``, ``save``, ``state``) is refused here, as are the Lua
keywords (with a clearer message than Suricata's) and, for triggers, signature ids
reserved for their generated indicator rules (``reserved_sids``).
"""

from __future__ import annotations

import re
from pathlib import Path

#: Problems listed per rule text (the rest are counted).
MAX_PROBLEMS = 50
_FILE_OPTIONS = re.compile(r"(?:^|,)\s*(load|save|state)\b")
_SID = re.compile(r"^\s*(\d+)\s*$")


def _options(rule: str) -> list[tuple[str, str]]:
    """(keyword, value) of each option between the rule's outer parentheses, split on
    ``;`` outside quotes and backslash escapes."""
    start, end = rule.find("("), rule.rfind(")")
    if start < 0 or end < start:
        return []
    out, cur, quoted, escaped = [], [], False, False
    for ch in rule[start + 1:end]:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\":
            cur.append(ch)
            escaped = True
        elif ch == '"':
            cur.append(ch)
            quoted = not quoted
        elif ch == ";" and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    pairs = []
    for opt in out:
        key, _, value = opt.partition(":")
        if key.strip():
            pairs.append((key.strip().lower(), value.strip()))
    return pairs


def _rules(text: str) -> list[tuple[int, str]]:
    """(first line number, rule) of each rule; backslash-continued lines joined, blank
    lines and ``#`` comments skipped."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    first = 0
    for no, line in enumerate(text.splitlines(), 1):
        if not pending:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            first = no
        if line.rstrip().endswith("\\"):
            pending.append(line.rstrip()[:-1])
            continue
        pending.append(line)
        out.append((first, " ".join(pending)))
        pending = []
    if pending:
        out.append((first, " ".join(pending)))
    return out


def suricata_rule_problems(text: str, where: str = "suricata_rules",
                           reserved_sids: range = range(0)) -> list[str]:
    """``WHERE:LINE: what`` for every rule of ``text`` that may not run for an API caller
    (``reserved_sids``: signature ids the caller's rules may not use)."""
    problems: list[str] = []
    for line, rule in _rules(text):
        for key, value in _options(rule):
            what = ""
            if key in ("lua", "luajit"):
                what = "Lua rules are not allowed (they run scripts on the server)"
            elif key in ("dataset", "datarep") and _FILE_OPTIONS.search(value):
                what = (f"{key} with load/save/state is not allowed (it names a file on "
                        "the server); give the values as indicators instead")
            elif key == "sid":
                m = _SID.match(value)
                if m and int(m[1]) in reserved_sids:
                    what = (f"sid {m[1]} is reserved for generated indicator rules "
                            f"({reserved_sids.start}-{reserved_sids.stop - 1})")
            if what:
                problems.append(f"{where}:{line}: {what}")
    if len(problems) > MAX_PROBLEMS:
        return [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more"]
    return problems


def confined_rule_problems(files: list[Path]) -> list[str]:
    """:func:`suricata_rule_problems` of each rule file of a confined workflow, named by
    its file name only (the server's paths are not the caller's business)."""
    problems: list[str] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            problems.append(f"{path.name}: cannot be read: {exc.strerror}")
            continue
        problems += suricata_rule_problems(text, where=path.name)
    return problems
