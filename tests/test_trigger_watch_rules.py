"""Rules change, history is hunted again: ``pcapwire rules update`` (the real
suricata-update, offline) changing the rule set a trigger's workflow uses gives the trigger
a new version with the same definition and a queued hunt; an update that changes nothing,
and a trigger whose workflows do not use the set, keep their version."""

from __future__ import annotations

from pcapwire.api.workflows import WorkflowService
from pcapwire.cli import main
from pcapwire.triggers import rulesets
from pcapwire.triggers.db import TriggerDB
from pcapwire.triggers.model import from_dict

RULE = ('alert udp any any -> any 53 (msg:"pcapwire test dns {n}"; sid:{sid}; rev:1;)\n')
WORKFLOW = """name: ids-{name}
steps:
  - id: ids
    uses: suricata
    input: pcap
    with:
      rules:
        - "{rules}"
"""


def test_rules_update_makes_a_new_version(tmp_path, capsys):
    data = tmp_path / "data"
    local = tmp_path / "local.rules"
    local.write_text(RULE.format(n=1, sid=9100001))
    assert main(["--data-dir", str(data), "rules", "update", "--local", str(local),
                 "--no-test"]) == 0
    merged = data / "rules" / "suricata.rules"
    other = tmp_path / "other.rules"
    other.write_text(RULE.format(n=2, sid=9100002))
    wf_dir = tmp_path / "workflows"
    wf_dir.mkdir()
    (wf_dir / "a.yaml").write_text(WORKFLOW.format(name="merged", rules="{data_dir}/rules/"
                                                   "suricata.rules"))
    (wf_dir / "b.yaml").write_text(WORKFLOW.format(name="other", rules=str(other)))
    service = WorkflowService([wf_dir])
    service.start()
    assert sorted(service.loaded) == ["ids-merged", "ids-other"]
    db = TriggerDB(data)
    uses, _ = db.create(from_dict({"name": "uses-it", "bpf": "udp port 53",
                                   "workflows": ["ids-merged"]}), "test")
    not_it, _ = db.create(from_dict({"name": "not-it", "bpf": "udp port 53",
                                     "workflows": ["ids-other"]}), "test")
    assert rulesets.record(db, data, service.loaded, "test") == 0  # first look: recorded
    assert [r[0] for r in db.db.execute("SELECT path FROM trigger_rule_sets WHERE "
                                        "trigger_id=?", (uses.id,))] == [str(merged.resolve())]
    capsys.readouterr()

    # the same rules again: the file's digest is unchanged, no version
    assert main(["--data-dir", str(data), "rules", "update", "--local", str(local),
                 "--no-test"]) == 0
    assert "trigger" not in capsys.readouterr().out
    assert db.get(uses.id).version == 1

    local.write_text(RULE.format(n=1, sid=9100001) + RULE.format(n=3, sid=9100003))
    assert main(["--data-dir", str(data), "rules", "update", "--local", str(local),
                 "--no-test"]) == 0
    out = capsys.readouterr().out
    assert f"trigger uses-it: new version (rules update: {merged} changed), hunt queued" in out
    after = db.get(uses.id)
    assert after.version == 2
    assert after.definition == uses.definition
    reason = db.db.execute("SELECT reason FROM trigger_versions WHERE trigger_id=? AND "
                           "version=2", (uses.id,)).fetchone()[0]
    assert reason == f"rules update: {merged.resolve()} changed"
    assert [(h.version, h.status) for h in db.hunts(uses.id)] == [(1, "aborted"),
                                                                  (2, "queued")]
    assert db.get(not_it.id).version == 1
    # the service's next look sees the digest it recorded: nothing more
    assert rulesets.record(db, data, service.loaded, "test") == 0
    assert db.get(uses.id).version == 2
    db.close()
