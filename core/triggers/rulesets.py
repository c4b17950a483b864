"""Rule sets a trigger's workflows use, and a new version when one changes.

The trigger service (:mod:`.service`), which has the workflows loaded, records for every
trigger the Suricata rule files of its workflows' ``suricata`` steps (``with: rules``:
files, directories of ``*.rules``, relative to the workflow file, ``{data_dir}`` the
store) with their SHA-256, in ``trigger_rule_sets``. ``pcapwire rules update`` calls
:func:`rules_updated` after a successful update: every trigger that uses the written
file, whose recorded digest differs from the file's, gets a new version with the same
definition (:meth:`~.db.TriggerDB.rehunt`, reason ``rules update: <file> changed``), so
its history is hunted again. The service makes the same check whenever it records (a
rule file edited by hand), so a change is acted on once, by whichever sees it first.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from pcapwire.triggers.db import TRIGGERS_FILE, TriggerDB

log = logging.getLogger(__name__)

SURICATA_ANALYZER = "suricata"
DATA_DIR_PLACEHOLDER = "{data_dir}"


def digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""  # gone: a change when it comes back


def workflow_rule_files(wf: Any, data_dir: Path) -> list[Path]:
    """The rule files of a loaded workflow's Suricata steps (resolved)."""
    out: list[Path] = []
    for step in wf.steps:
        if step.uses != SURICATA_ANALYZER:
            continue
        rules = step.with_.get("rules", [])
        for item in [rules] if isinstance(rules, str) else rules:
            path = Path(str(item).replace(DATA_DIR_PLACEHOLDER, str(data_dir))).expanduser()
            if not path.is_absolute() and wf.base_dir is not None:
                path = wf.base_dir / path
            if path.is_dir():
                out += sorted(p.resolve() for p in path.glob("*.rules") if p.is_file())
            else:
                out.append(path.resolve())
    return list(dict.fromkeys(out))


def _check(db: TriggerDB, trigger_id: int, files: dict[Path, str], actor: str,
           why: str) -> bool:
    """Record ``files`` (path -> digest) as the trigger's; a new version when a recorded
    one's digest changed. Returns whether it made one."""
    with db.transaction() as tx:
        known = dict(tx.execute("SELECT path, sha256 FROM trigger_rule_sets WHERE "
                                "trigger_id=?", (trigger_id,)).fetchall())
        changed = [p for p, d in files.items() if str(p) in known and known[str(p)] != d]
        tx.execute("DELETE FROM trigger_rule_sets WHERE trigger_id=?", (trigger_id,))
        tx.executemany("INSERT INTO trigger_rule_sets VALUES (?, ?, ?)",
                       [(trigger_id, str(p), d) for p, d in files.items()])
    if changed:
        trig, hunt = db.rehunt(trigger_id, actor, f"{why}: {changed[0]} changed")
        log.info("trigger %s: version %d (%s changed), hunt %d queued", trig.name,
                 trig.version, changed[0], hunt.id)
    return bool(changed)


def record(db: TriggerDB, data_dir: Path, workflows: dict[str, Any], actor: str) -> int:
    """The service's look: record every active trigger's rule files (of the workflows in
    ``workflows``, name -> loaded workflow); returns the new versions made."""
    made = 0
    for trig in db.triggers():
        if trig.state == "deleted":
            continue
        files: dict[Path, str] = {}
        for name in trig.definition.workflows:
            if name in workflows:
                for path in workflow_rule_files(workflows[name], data_dir):
                    files[path] = digest(path)
        made += _check(db, trig.id, files, actor, "rule set")
    return made


def rules_updated(data_dir: Path, rules_file: Path, actor: str) -> list[str]:
    """After ``pcapwire rules update`` wrote ``rules_file``: a new version of every trigger
    whose workflows use it and saw it differently; returns their names."""
    if not (Path(data_dir) / TRIGGERS_FILE).is_file():
        return []
    path = Path(rules_file).resolve()
    new = digest(path)
    names = []
    with TriggerDB(data_dir) as db:
        users = db.db.execute("SELECT trigger_id, sha256 FROM trigger_rule_sets WHERE path=?",
                              (str(path),)).fetchall()
        for trigger_id, old in users:
            if old == new or db.get(trigger_id).state == "deleted":
                continue
            files = dict(db.db.execute("SELECT path, sha256 FROM trigger_rule_sets WHERE "
                                       "trigger_id=?", (trigger_id,)).fetchall())
            files[str(path)] = new
            if _check(db, trigger_id, {Path(p): d for p, d in files.items()}, actor,
                      "rules update"):
                names.append(db.get(trigger_id).name)
    return names
