"""Rule groups: a data directory's Suricata rules grouped by classtype, rule set (the file a
rule comes from) or a metadata key; a group enabled, disabled or thresholded without
editing a rule file.

- enable/disable: a line per group in suricata-update's ``enable.conf`` / ``disable.conf``
  (in ``<data-dir>/suricata-update/``), then suricata-update runs again, offline, on the
  sources ``pcapwire rules update`` recorded (:mod:`.rulesources`), rewriting
  ``<data-dir>/rules/suricata.rules``. The selector of a group is a suricata-update
  matcher that also takes the group's future rules: ``re:`` on the ``classtype`` option
  (suricata-update has no classtype matcher), ``group:`` for a rule file, ``metadata:``
  for a metadata key and value. Before a selector is written it is evaluated over the
  whole rule set with suricata-update's own semantics (:meth:`GroupKey.selects`) and must
  select exactly the group's rules. suricata-update applies every disable line first and
  every enable line after, so a rule in an enabled and in a disabled group is enabled.
  ``modify.conf`` is written empty (suricata-update then reads no system-wide one).
- threshold: Suricata's ``threshold.config`` beside the merged rules
  (``<data-dir>/rules/threshold.config``, which the engine includes, see
  :mod:`.config`), one ``threshold gen_id G, sig_id S, ...`` line per enabled rule of the
  group; a rule in two thresholded groups takes the one set last. A global threshold
  replaces a rule's own ``threshold:`` keyword. It is rewritten after every update.

The settings live in ``<data-dir>/suricata-update/groups.json``; the conf files and the
threshold file are always rewritten whole from it.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcapwire.errors import ConfigError
from pcapwire.plugins.suricata import rulefile, rulesources
from pcapwire.plugins.suricata.config import THRESHOLD_FILE
from pcapwire.plugins.suricata.rulefile import Rule, RuleSet

KINDS = ("classtype", "ruleset", "metadata")
#: The value of a rule that has no classtype (or not the metadata key grouped by).
NONE = "(none)"
STATES = ("default", "enabled", "disabled")
THRESHOLD_TYPES = ("limit", "threshold", "both")
THRESHOLD_TRACKS = ("by_src", "by_dst", "by_rule", "by_both")
MAX_THRESHOLD_COUNT = 1_000_000
#: Longest threshold period (seconds): Suricata keeps a tracker entry that long.
MAX_THRESHOLD_SECONDS = 7 * 86400
MAX_GROUP_NAME_CHARS = 512
STATE_FILE = "groups.json"
CONF_HEADER = ("# Written by pcapwire from groups.json ('pcapwire rules group'); "
               "changes made here are lost.")
THRESHOLD_HEADER = ("# Written by pcapwire from suricata-update/groups.json ('pcapwire rules "
                    "group threshold'); changes made here are lost.")
_CLASSTYPE = re.compile(r"^[a-z0-9_.-]+$")


class UnknownGroup(ConfigError):
    """No rule of the rule set is in the group."""


class NotManaged(ConfigError):
    """The rule set was not built by ``pcapwire rules update``: nothing rewrites it."""


@dataclass(frozen=True, order=True)
class GroupKey:
    kind: str
    key: str  # the metadata key ("" for the other kinds)
    value: str

    @property
    def name(self) -> str:
        if self.kind == "metadata":
            return f"metadata:{self.key}={self.value}"
        return f"{self.kind}:{self.value}"

    @classmethod
    def parse(cls, name: str) -> GroupKey:
        """``classtype:NAME``, ``ruleset:FILE.rules`` or ``metadata:KEY=VALUE``."""
        kind, sep, rest = name.partition(":")
        if not sep or kind not in KINDS or not rest or len(name) > MAX_GROUP_NAME_CHARS:
            raise UnknownGroup(f"group {name[:80]!r}: expected classtype:NAME, "
                              "ruleset:FILE.rules or metadata:KEY=VALUE")
        if kind == "metadata":
            key, eq, value = rest.partition("=")
            if not eq or not key or not value or " " in key:
                raise UnknownGroup(f"group {name[:80]!r}: expected metadata:KEY=VALUE")
            return cls(kind, key.lower(), value.lower())
        return cls(kind, "", rest.lower() if kind == "classtype" else rest)

    def members(self, rule: Rule) -> bool:
        return self.value in values(rule, self.kind, self.key)

    def selector(self) -> str:
        """The suricata-update matcher line that selects this group's rules."""
        if self.value == NONE:
            raise ConfigError(f"{self.name}: rules without a "
                              f"{'classtype' if self.kind == 'classtype' else self.key} "
                              "cannot be selected by suricata-update; threshold them instead")
        if self.kind == "classtype":
            if not _CLASSTYPE.match(self.value):
                raise ConfigError(f"{self.name}: a classtype of letters, digits, '_', '-' and "
                                  "'.' can be selected")
            return r"re:[(;]\s*classtype\s*:\s*" + self.value.replace(".", r"\.") + r"\s*;"
        if self.kind == "ruleset":
            escaped = re.sub(r"([*?\[])", r"[\1]", self.value)
            return f"group:{escaped}"
        if "#" in self.value or self.value.endswith(".rules"):
            raise ConfigError(f"{self.name}: a metadata value with '#' or ending in '.rules' "
                              "cannot be written as a suricata-update matcher")
        return f"metadata: {self.key} {self.value}"

    def selects(self, rule: Rule) -> bool:
        """Whether suricata-update's matcher for :meth:`selector` matches ``rule``
        (``suricata.update.matchers``: ReRuleMatcher, GroupMatcher, MetadataRuleMatch)."""
        line = self.selector()
        if self.kind == "classtype":
            return re.search(line[3:], rule.raw, re.I) is not None
        if self.kind == "ruleset":
            base = os.path.basename(rule.group)
            pattern = line[6:]
            return fnmatch.fnmatch(base, pattern) or \
                fnmatch.fnmatch(os.path.splitext(base)[0], pattern)
        return (self.key, self.value) in rule.metadata_pairs()


def values(rule: Rule, kind: str, key: str = "") -> list[str]:
    """The groups of one kind a rule is in (several for a repeated metadata key)."""
    if kind == "classtype":
        return [rule.classtype or NONE]
    if kind == "ruleset":
        return [os.path.basename(rule.group)]
    found = sorted({v for k, v in rule.metadata_pairs() if k == key})
    return found or [NONE]


def parse_by(by: str) -> tuple[str, str]:
    """``classtype``, ``ruleset`` or ``metadata:KEY`` as (kind, key)."""
    kind, sep, key = by.partition(":")
    if kind in ("classtype", "ruleset") and not sep:
        return kind, ""
    if kind == "metadata" and key and " " not in key:
        return kind, key.lower()
    raise ConfigError(f"--by {by!r}: expected classtype, ruleset or metadata:KEY")


# ---- settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Threshold:
    type: str
    track: str
    count: int
    seconds: int

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Threshold:
        if set(raw) != {"type", "track", "count", "seconds"}:
            raise ConfigError("threshold: give exactly type, track, count and seconds")
        if raw["type"] not in THRESHOLD_TYPES:
            raise ConfigError(f"threshold type must be one of {', '.join(THRESHOLD_TYPES)}")
        if raw["track"] not in THRESHOLD_TRACKS:
            raise ConfigError(f"threshold track must be one of {', '.join(THRESHOLD_TRACKS)}")
        for name, top in (("count", MAX_THRESHOLD_COUNT), ("seconds", MAX_THRESHOLD_SECONDS)):
            value = raw[name]
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
                raise ConfigError(f"threshold {name} must be an integer from 1 to {top}")
        return cls(str(raw["type"]), str(raw["track"]), int(raw["count"]), int(raw["seconds"]))

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "track": self.track, "count": self.count,
                "seconds": self.seconds}

    def line(self, gid: int, sid: int) -> str:
        return (f"threshold gen_id {gid}, sig_id {sid}, type {self.type}, track {self.track}, "
                f"count {self.count}, seconds {self.seconds}")


@dataclass
class GroupSettings:
    """groups.json: per group its state and threshold, in the order they were set."""

    states: dict[str, str] = field(default_factory=dict)
    thresholds: dict[str, Threshold] = field(default_factory=dict)

    @classmethod
    def load(cls, data_dir: Path) -> GroupSettings:
        path = rulesources.state_dir(data_dir) / STATE_FILE
        try:
            raw = json.loads(path.read_text())
            return cls(dict(raw["states"]), {g: Threshold.from_dict(t)
                                             for g, t in raw["thresholds"].items()})
        except FileNotFoundError:
            return cls()
        except (ValueError, KeyError, TypeError, AttributeError, ConfigError) as exc:
            raise ConfigError(f"{path}: not a groups file written by pcapwire ({exc})") \
                from None

    def save(self, data_dir: Path) -> None:
        path = rulesources.state_dir(data_dir) / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"states": self.states, "thresholds": {
            g: t.to_dict() for g, t in self.thresholds.items()}}, indent=1) + "\n")
        os.replace(tmp, path)

    def conf_lines(self, state: str) -> list[str]:
        """The lines of enable.conf (``enabled``) or disable.conf (``disabled``)."""
        lines = [CONF_HEADER]
        for name, st in sorted(self.states.items()):
            if st == state:
                lines += [f"# {name}", GroupKey.parse(name).selector()]
        return lines

    def write_confs(self, data_dir: Path) -> dict[str, Path]:
        out = {}
        sdir = rulesources.state_dir(data_dir)
        sdir.mkdir(parents=True, exist_ok=True)
        for kind, lines in (("enable", self.conf_lines("enabled")),
                            ("disable", self.conf_lines("disabled")),
                            ("modify", [CONF_HEADER, "# rule groups modify no rule: "
                                        f"thresholds are in rules/{THRESHOLD_FILE}"])):
            out[kind] = sdir / f"{kind}.conf"
            out[kind].write_text("\n".join(lines) + "\n")
        return out


@contextmanager
def locked(data_dir: Path) -> Iterator[None]:
    """One writer of a data directory's group settings at a time (across processes)."""
    sdir = rulesources.state_dir(data_dir)
    sdir.mkdir(parents=True, exist_ok=True)
    with open(sdir / "groups.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


# ---- the rule set and its groups ---------------------------------------------------------
@dataclass
class Loaded:
    managed: bool
    rules: RuleSet
    enabled: set[tuple[int, int]]


def load(data_dir: Path) -> Loaded:
    """The rule set (sources when managed) and which rules are enabled: in the merged
    output when suricata-update wrote one, else as the files say."""
    managed, files = rulesources.rule_files(data_dir)
    rules = rulefile.load(files)
    merged = data_dir / "rules" / rulesources.MERGED_RULES
    if managed and merged.is_file():
        enabled = {(r.gid, r.sid) for r in rulefile.parse_lines(
            merged.read_bytes(), file=str(merged), group="")
            if isinstance(r, Rule) and r.enabled}
    else:
        enabled = {k for k, r in rules.rules.items() if r.enabled}
    return Loaded(managed, rules, enabled)


@dataclass
class GroupRow:
    group: str
    kind: str
    key: str
    value: str
    rules: int = 0
    enabled: int = 0
    alerts: int = 0
    state: str = "default"
    threshold: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def group_rows(loaded: Loaded, by: str, settings: GroupSettings,
               alerts: Mapping[int, int] | None = None) -> tuple[list[GroupRow], int]:
    """Rows of one grouping (most alerts, then most rules first) and the alerts whose sid
    is in no rule of the set."""
    kind, key = parse_by(by)
    rows: dict[str, GroupRow] = {}
    alerts = alerts or {}
    seen: set[int] = set()
    for rid, rule in loaded.rules.rules.items():
        for value in values(rule, kind, key):
            gk = GroupKey(kind, key, value)
            row = rows.get(gk.name)
            if row is None:
                thr = settings.thresholds.get(gk.name)
                row = rows[gk.name] = GroupRow(gk.name, kind, key, value,
                                               state=settings.states.get(gk.name, "default"),
                                               threshold=thr.to_dict() if thr else None)
            row.rules += 1
            row.enabled += rid in loaded.enabled
            if rule.gid == 1:
                row.alerts += alerts.get(rule.sid, 0)
        if rule.gid == 1:
            seen.add(rule.sid)
    unmatched = sum(n for sid, n in alerts.items() if sid not in seen)
    ordered = sorted(rows.values(), key=lambda r: (-r.alerts, -r.rules, r.group))
    return ordered, unmatched


def check_selector(loaded: Loaded, gk: GroupKey) -> int:
    """The group's rule count, once its selector is known to select exactly its rules."""
    gk.selector()
    members = {k for k, r in loaded.rules.rules.items() if gk.members(r)}
    if not members:
        raise UnknownGroup(f"{gk.name}: no rule of this rule set is in the group")
    selected = {k for k, r in loaded.rules.rules.items() if gk.selects(r)}
    if selected != members:
        extra = sorted(selected ^ members)
        r = loaded.rules.rules[extra[0]]
        raise ConfigError(f"{gk.name}: suricata-update's matcher {gk.selector()!r} would select "
                          f"{len(selected)} rules, the group has {len(members)} (e.g. "
                          f"{r.gid}:{r.sid} at {r.file}:{r.line}); nothing was written")
    return len(members)


def threshold_lines(loaded: Loaded, settings: GroupSettings) -> list[str]:
    """threshold.config: per thresholded group (in the order set; a later group takes a
    shared rule), a comment and a line per enabled rule, by gid and sid."""
    owner: dict[tuple[int, int], str] = {}
    for name in settings.thresholds:
        gk = GroupKey.parse(name)
        for rid, rule in loaded.rules.rules.items():
            if rid in loaded.enabled and gk.members(rule):
                owner[rid] = name
    lines = [THRESHOLD_HEADER]
    for name, thr in settings.thresholds.items():
        mine = sorted(rid for rid, g in owner.items() if g == name)
        lines.append(f"# {name}: {len(mine)} rules")
        lines += [thr.line(gid, sid) for gid, sid in mine]
    return lines


def write_thresholds(data_dir: Path, loaded: Loaded, settings: GroupSettings) -> Path | None:
    """Rewrite (or, with no threshold set, remove) ``<data-dir>/rules/threshold.config``;
    a file there that pcapwire did not write is left alone and is an error."""
    path = data_dir / "rules" / THRESHOLD_FILE
    if path.exists() and not path.read_text(errors="replace").startswith(THRESHOLD_HEADER):
        raise ConfigError(f"{path} was not written by pcapwire; move it away (or name it in "
                          "the suricata step's threshold_file) before thresholding groups")
    if not settings.thresholds:
        path.unlink(missing_ok=True)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(threshold_lines(loaded, settings)) + "\n")
    os.replace(tmp, path)
    return path


# ---- changing a group ---------------------------------------------------------------------
@dataclass
class Applied:
    """A group after a change, and what was run for it."""

    group: GroupRow
    updated: bool  # suricata-update rewrote the merged rules
    total: int | None = None
    enabled: int | None = None
    threshold_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group.to_dict(), "updated": self.updated, "total": self.total,
                "enabled_rules": self.enabled, "threshold_file": self.threshold_file}


def _rerun(data_dir: Path, confs: Mapping[str, Path], test: bool) -> tuple[int, int]:
    from pcapwire.plugins.suricata.update import update_rules

    sources = rulesources.recorded(data_dir)
    assert sources is not None
    result = update_rules(data_dir / "rules", rulesources.state_dir(data_dir),
                          local=sources.local, urls=sources.urls, etopen=sources.etopen,
                          suricata_conf=sources.suricata_conf, test=test, offline=True,
                          confs=confs)
    if result.returncode != 0 or result.errors:
        raise ConfigError("suricata-update failed: " + "; ".join(
            result.errors or [f"exit status {result.returncode}"]))
    assert result.sources is not None
    rulesources.record(data_dir, result.sources)
    return result.total, result.enabled


def set_group(data_dir: Path, name: str, *, state: str | None = None,
              threshold: Threshold | None = None, clear_threshold: bool = False,
              test: bool = True) -> Applied:
    """Enable, disable (or return to the rule files' own ``default``) and/or threshold a
    group, and apply it: suricata-update runs again when the state changed; the
    threshold file is rewritten."""
    gk = GroupKey.parse(name)
    if state is not None and state not in STATES:
        raise ConfigError(f"state must be one of {', '.join(STATES)}")
    with locked(data_dir):
        loaded = load(data_dir)
        if not any(gk.members(r) for r in loaded.rules.rules.values()):
            raise UnknownGroup(f"{gk.name}: no rule of this rule set is in the group")
        settings = GroupSettings.load(data_dir)
        changed = False
        if state is not None:
            if not loaded.managed:
                raise NotManaged("enabling or disabling a group rewrites the rule set with "
                                 "suricata-update: build it with 'pcapwire rules update' "
                                 "(--local DIR for rule files) first")
            if state != "default":
                check_selector(loaded, gk)
            changed = settings.states.get(gk.name, "default") != state
            settings.states.pop(gk.name, None)
            if state != "default":
                settings.states[gk.name] = state
        if threshold is not None or clear_threshold:
            settings.thresholds.pop(gk.name, None)
        if threshold is not None:
            settings.thresholds[gk.name] = threshold
        confs = settings.write_confs(data_dir)
        total = enabled = None
        if changed:
            try:
                total, enabled = _rerun(data_dir, confs, test)
            except BaseException:
                GroupSettings.load(data_dir).write_confs(data_dir)
                raise
            loaded = load(data_dir)
        settings.save(data_dir)
        written = write_thresholds(data_dir, loaded, settings)
        rows, _ = group_rows(loaded, gk.kind if gk.kind != "metadata" else f"metadata:{gk.key}",
                             settings)
        row = next(r for r in rows if r.group == gk.name)
        return Applied(row, changed, total, enabled, str(written) if written else None)


def refresh_thresholds(data_dir: Path) -> Path | None:
    """After ``pcapwire rules update``: the threshold file for the new rule set."""
    with locked(data_dir):
        settings = GroupSettings.load(data_dir)
        if not settings.thresholds:
            return None
        return write_thresholds(data_dir, load(data_dir), settings)


def alert_counts(cases: Any, case: str | None = None) -> dict[int, int]:
    """Suricata alerts per sid in a case store (:class:`pcapwire.cases.CaseStore`)."""
    counts: dict[str, int] = cases.signature_counts("suricata", case)
    return {int(sid): n for sid, n in counts.items() if sid.isdigit()}
