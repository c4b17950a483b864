"""Rule groups (``pcapwire rules groups|group``): parsing an ET-Open-like rule set, the exact
suricata-update and threshold.config lines, the real suricata-update rewriting the rule
set, and the real Suricata raising no alert for a disabled group and at most N for a
thresholded one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rulegen
from conftest import corpus_file
from pcapwire.api import schemas
from pcapwire.cases import CASES_FILE, CaseStore
from pcapwire.cli import main
from pcapwire.errors import ConfigError
from pcapwire.plugins.suricata import groups, rulefile
from pcapwire.plugins.suricata.config import SuricataSettings
from pcapwire.plugins.suricata.run import SuricataRun
from pcapwire.workflow.context import RunInfo

MALWARE = (
    'alert http any any -> any any (msg:"GW GET"; flow:established,to_server; http.method; '
    'content:"GET"; classtype:trojan-activity; metadata: signature_severity Major, '
    'former_category MALWARE; sid:9100001; rev:1;)\n'
    'alert tcp any any -> any any (msg:"GW tcp"; classtype:trojan-activity; '
    'metadata: signature_severity Minor; sid:9100002; rev:1;)\n')
POLICY = (
    'alert tcp any any -> any any (msg:"GW tcp to client"; flow:to_client; '
    'classtype:policy-violation; metadata: signature_severity Major; sid:9100003; rev:1;)\n'
    '# alert http any any -> any any (msg:"GW 200, off by default"; flow:established,'
    'to_client; http.stat_code; content:"200"; classtype:policy-violation; sid:9100004; '
    'rev:1;)\n')
GW = {9100001, 9100002, 9100003, 9100004}


def test_30000_et_like_rules_group_exactly_and_bad_lines_are_reported(tmp_path: Path) -> None:
    made = rulegen.write(tmp_path / "rules", 30_000, bad_every=5000)
    loaded = groups.load(tmp_path)  # hand-placed files: <data-dir>/rules/*.rules
    rs = loaded.rules
    print(f"parsed {len(rs.rules)} rules in {rs.files} files in {rs.seconds:.2f} s")
    assert (len(rs.rules), rs.files, loaded.managed) == (30_000, 20, False)
    assert [(p.file, p.line, p.message) for p in rs.problems] == [
        (f, n, "not a rule: expected 'ACTION HEADER (OPTIONS)'") for f, n in made.bad]
    assert len(made.bad) == 6
    assert {k[1] for k, r in rs.rules.items() if not r.enabled} == made.disabled
    assert len(loaded.enabled) == 27_000
    none = groups.GroupSettings()
    by_class = {r.group: (r.rules, r.enabled) for r in groups.group_rows(loaded, "classtype",
                                                                         none)[0]}
    assert sorted(by_class) == sorted([f"classtype:{c}" for c in rulegen.CLASSTYPES]
                                      + ["classtype:(none)"])
    assert {n for n, _ in by_class.values()} == {2500}
    # i % 10 == 3 is off: with i % 12 == c, that is 500 of the 2500 when c is odd
    assert by_class["classtype:trojan-activity"] == (2500, 2500)
    assert by_class["classtype:policy-violation"] == (2500, 2000)
    by_file = groups.group_rows(loaded, "ruleset", none)[0]
    assert {(r.group, r.rules) for r in by_file} == {(f"ruleset:{f}", 1500)
                                                     for f in rulegen.FILES}
    by_sev = groups.group_rows(loaded, "metadata:signature_severity", none)[0]
    assert {(r.group, r.rules) for r in by_sev} == {
        (f"metadata:signature_severity={s.lower()}", 7500) for s in rulegen.SEVERITIES}
    # every selector selects exactly its group over the 30,000 rules
    for name in ("classtype:trojan-activity", "ruleset:emerging-dns.rules",
                 "metadata:signature_severity=critical"):
        assert groups.check_selector(loaded, groups.GroupKey.parse(name)) in (2500, 1500, 7500)


def test_parser_follows_suricata_update_and_keeps_going(tmp_path: Path) -> None:
    text = (b'alert tcp any any -> any any (msg:"a \\; b"; sid:1; rev:1; \\\n'
            b'  classtype:Bad-Unknown; metadata: tag One, tag Two;)\n'
            b"# just a comment (with parentheses)\n"
            b'bogus tcp any any -> any any (msg:"x"; sid:2;)\n'
            b'alert tcp any any -> any any (msg:"no sid";)\n'
            b'alert tcp any any -> any any (msg:"x"; sid:3\n'
            b'alert tcp any any -> any any (msg:"\xff"; sid:4;)\n'
            b'#alert tcp any any -> any any (msg:"off"; gid:3; sid:5; rev:2;)\n'
            b'alert tcp any any -> any any (msg:"dup, newer"; sid:1; rev:2;)\n')
    rs = rulefile.load([("t.rules", "t.rules", text)])
    assert sorted(rs.rules) == [(1, 1), (3, 5)]
    one, five = rs.rules[(1, 1)], rs.rules[(3, 5)]
    assert (one.msg, one.rev, one.line, one.classtype) == ("dup, newer", 2, 9, "")
    assert (five.enabled, five.rev, five.msg) == (False, 2, "off")
    assert [str(p) for p in rs.problems] == [
        "t.rules:4: action 'bogus' is not one suricata-update keeps (activate, alert, drop, "
        "dynamic, log, pass, reject, sdrop)",
        "t.rules:5: rule has no sid",
        "t.rules:6: not a rule: expected 'ACTION HEADER (OPTIONS)'",
        "t.rules:7: not UTF-8 (byte 35 of the line)",
        "t.rules:1: duplicate of 1:1 at t.rules:9 (rev 2 is kept)"]
    first = rulefile.parse_rule(text.decode("utf-8", "replace").split("\n")[0][:-1]
                                + ' classtype:Bad-Unknown; metadata: tag One, tag Two;)')
    assert first is not None
    assert (first.msg, first.classtype, list(first.metadata_pairs())) == (
        "a \\; b", "bad-unknown", [("tag", "one"), ("tag", "two")])
    assert groups.values(first, "metadata", "tag") == ["one", "two"]
    assert groups.values(first, "metadata", "nothing") == [groups.NONE]


def test_conf_and_threshold_lines_are_exact(tmp_path: Path) -> None:
    settings = groups.GroupSettings(
        states={"ruleset:emerging-dns.rules": "disabled", "classtype:trojan-activity":
                "enabled", "metadata:signature_severity=minor": "disabled"},
        thresholds={"classtype:policy-violation": groups.Threshold("limit", "by_src", 1, 60)})
    assert settings.conf_lines("disabled") == [
        groups.CONF_HEADER,
        "# metadata:signature_severity=minor", "metadata: signature_severity minor",
        "# ruleset:emerging-dns.rules", "group:emerging-dns.rules"]
    assert settings.conf_lines("enabled") == [
        groups.CONF_HEADER, "# classtype:trojan-activity",
        r"re:[(;]\s*classtype\s*:\s*trojan-activity\s*;"]
    assert groups.GroupKey.parse("ruleset:odd[1]*.rules").selector() == \
        "group:odd[[]1][*].rules"
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "p.rules").write_text(POLICY.replace("# alert", "alert") + MALWARE)
    loaded = groups.load(tmp_path)
    settings.thresholds["metadata:signature_severity=major"] = groups.Threshold(
        "both", "by_rule", 3, 10)
    assert groups.threshold_lines(loaded, settings) == [
        groups.THRESHOLD_HEADER,
        "# classtype:policy-violation: 1 rules",
        "threshold gen_id 1, sig_id 9100004, type limit, track by_src, count 1, seconds 60",
        "# metadata:signature_severity=major: 2 rules",
        "threshold gen_id 1, sig_id 9100001, type both, track by_rule, count 3, seconds 10",
        "threshold gen_id 1, sig_id 9100003, type both, track by_rule, count 3, seconds 10"]
    # limits and names
    for bad in ({"type": "limit", "track": "by_src", "count": 0, "seconds": 60},
                {"type": "limit", "track": "by_src", "count": 1,
                 "seconds": groups.MAX_THRESHOLD_SECONDS + 1},
                {"type": "limit", "track": "by_src", "count": groups.MAX_THRESHOLD_COUNT + 1,
                 "seconds": 1},
                {"type": "rate", "track": "by_src", "count": 1, "seconds": 1}):
        with pytest.raises(ConfigError):
            groups.Threshold.from_dict(bad)
    for name in ("classtype", "nope:x", "metadata:novalue", "x" * 600):
        with pytest.raises(groups.UnknownGroup):
            groups.GroupKey.parse(name)
    with pytest.raises(ConfigError, match="cannot be selected"):
        groups.GroupKey.parse("classtype:(none)").selector()
    # a hand-written threshold.config is never overwritten
    (rules / "threshold.config").write_text("suppress gen_id 1, sig_id 1\n")
    with pytest.raises(ConfigError, match="not written by pcapwire"):
        groups.write_thresholds(tmp_path, loaded, settings)
    # the API's enums are the module's
    props = schemas.SCHEMAS["RuleGroupChange"]["properties"]
    thr = props["threshold"]["anyOf"][0]["properties"]
    assert tuple(props["state"]["enum"]) == groups.STATES
    assert (tuple(thr["type"]["enum"]), tuple(thr["track"]["enum"])) == (
        groups.THRESHOLD_TYPES, groups.THRESHOLD_TRACKS)
    assert (thr["count"]["maximum"], thr["seconds"]["maximum"]) == (
        groups.MAX_THRESHOLD_COUNT, groups.MAX_THRESHOLD_SECONDS)


def test_a_selector_that_would_take_other_rules_is_refused(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.rules").write_text('alert tcp any any -> any any (msg:"a"; sid:1;)\n')
    (rules / "a.rules.rules").write_text('alert tcp any any -> any any (msg:"b"; sid:2;)\n')
    loaded = groups.load(tmp_path)
    with pytest.raises(ConfigError, match="would select 2 rules, the group has 1"):
        groups.check_selector(loaded, groups.GroupKey.parse("ruleset:a.rules"))
    assert groups.check_selector(loaded, groups.GroupKey.parse("ruleset:a.rules.rules")) == 1


def _merged(data: Path) -> dict[int, bool]:
    text = (data / "rules" / "suricata.rules").read_bytes()
    return {r.sid: r.enabled for r in rulefile.parse_lines(text, file="m", group="")
            if isinstance(r, rulefile.Rule) and r.sid in GW}


async def _alerts(data: Path) -> dict[int, int]:
    run = SuricataRun(SuricataSettings.from_mapping(
        {"rules": [str(data / "rules" / "suricata.rules")], "args": ["-k", "none"]}))
    await run.start()
    await run.feed_bytes(corpus_file("zeek-http-get").read_bytes())
    result = await run.finish()
    assert result.errors == [] and result.rule_errors == []
    store = CaseStore(data / CASES_FILE)
    try:
        run_id = f"r{len(store.runs())}"
        store.start_run(RunInfo(run_id, "ids", case="c"))
        for verdict in result.verdicts:
            store.add_verdict(run_id, verdict)
    finally:
        store.close()
    return {sid: n for sid, n in result.sid_counts().items() if sid in GW}


async def test_real_suricata_update_and_suricata_apply_groups(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src, data = tmp_path / "src", tmp_path / "data"
    src.mkdir()
    (src / "malware.rules").write_text(MALWARE)
    (src / "policy.rules").write_text(POLICY)
    assert main(["--data-dir", str(data), "rules", "update", "--local", str(src)]) == 0
    assert _merged(data) == {9100001: True, 9100002: True, 9100003: True, 9100004: False}
    assert await _alerts(data) == {9100001: 1, 9100002: 2, 9100003: 7}

    capsys.readouterr()
    assert main(["--data-dir", str(data), "rules", "group", "disable",
                 "classtype:trojan-activity"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == \
        "classtype:trojan-activity: disabled, 0 of 2 rules enabled"
    state = data / "suricata-update"
    assert (state / "disable.conf").read_text() == (
        f"{groups.CONF_HEADER}\n# classtype:trojan-activity\n"
        "re:[(;]\\s*classtype\\s*:\\s*trojan-activity\\s*;\n")
    assert _merged(data) == {9100001: False, 9100002: False, 9100003: True, 9100004: False}
    assert main(["--data-dir", str(data), "rules", "group", "threshold",
                 "classtype:policy-violation", "--type", "limit", "--track", "by_rule",
                 "--count", "2", "--seconds", "60"]) == 0
    assert (data / "rules" / "threshold.config").read_text() == (
        f"{groups.THRESHOLD_HEADER}\n# classtype:policy-violation: 1 rules\n"
        "threshold gen_id 1, sig_id 9100003, type limit, track by_rule, count 2, seconds 60\n")
    assert await _alerts(data) == {9100003: 2}  # disabled: none; thresholded: at most 2

    # enable the policy file: its rule that ships commented out comes on, and enable wins
    # over a disabled metadata group (suricata-update applies disable first)
    assert main(["--data-dir", str(data), "rules", "group", "enable", "ruleset:policy.rules",
                 "--no-test"]) == 0
    assert main(["--data-dir", str(data), "rules", "group", "disable",
                 "metadata:signature_severity=major", "--no-test"]) == 0
    assert (state / "enable.conf").read_text().splitlines()[1:] == [
        "# ruleset:policy.rules", "group:policy.rules"]
    assert _merged(data) == {9100001: False, 9100002: False, 9100003: True, 9100004: True}
    assert "sig_id 9100004, type limit" in (data / "rules" / "threshold.config").read_text()
    assert await _alerts(data) == {9100003: 2, 9100004: 1}

    # a later 'rules update' keeps the groups
    assert main(["--data-dir", str(data), "rules", "update", "--local", str(src),
                 "--no-test"]) == 0
    assert _merged(data) == {9100001: False, 9100002: False, 9100003: True, 9100004: True}

    # alert counts per group, from the case store's verdicts of the three runs
    capsys.readouterr()
    assert main(["--data-dir", str(data), "rules", "groups", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {r["group"]: r for r in doc["groups"]}
    assert (doc["managed"], doc["alerts_unmatched"]) == (True, 0)
    assert {k: (rows[k]["rules"], rows[k]["enabled"], rows[k]["alerts"], rows[k]["state"])
            for k in ("classtype:trojan-activity", "classtype:policy-violation")} == {
        "classtype:trojan-activity": (2, 0, 3, "disabled"),
        "classtype:policy-violation": (2, 2, 7 + 2 + 2 + 1, "default")}
    assert rows["classtype:policy-violation"]["threshold"] == {
        "type": "limit", "track": "by_rule", "count": 2, "seconds": 60}
    assert main(["--data-dir", str(data), "rules", "groups", "--by", "ruleset"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["ruleset:policy.rules", "2", "2", "12", "enabled", "-"]

    # reset and clear: back to the files' own state, no threshold file
    assert main(["--data-dir", str(data), "rules", "group", "threshold",
                 "classtype:policy-violation", "--clear"]) == 0
    assert not (data / "rules" / "threshold.config").exists()
    for name in ("classtype:trojan-activity", "ruleset:policy.rules",
                 "metadata:signature_severity=major"):
        assert main(["--data-dir", str(data), "rules", "group", "reset", name,
                     "--no-test"]) == 0
    assert _merged(data) == {9100001: True, 9100002: True, 9100003: True, 9100004: False}


def test_group_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "x.rules").write_text(MALWARE)
    assert main(["--data-dir", str(tmp_path), "rules", "group", "disable",
                 "classtype:trojan-activity"]) == 2
    assert "build it with 'pcapwire rules update'" in capsys.readouterr().err
    assert main(["--data-dir", str(tmp_path), "rules", "group", "threshold",
                 "classtype:nothing-here", "--type", "limit", "--track", "by_src",
                 "--count", "1", "--seconds", "1"]) == 2
    assert "no rule of this rule set is in the group" in capsys.readouterr().err
    assert main(["--data-dir", str(tmp_path), "rules", "group", "threshold",
                 "classtype:trojan-activity", "--type", "limit"]) == 2
    assert "give --clear, or all of" in capsys.readouterr().err
    # thresholds need no rebuild: hand-placed files are thresholded as they are
    assert main(["--data-dir", str(tmp_path), "rules", "group", "threshold",
                 "classtype:trojan-activity", "--type", "limit", "--track", "by_src",
                 "--count", "1", "--seconds", "1"]) == 0
    assert (rules / "threshold.config").read_text().splitlines()[1:] == [
        "# classtype:trojan-activity: 2 rules",
        "threshold gen_id 1, sig_id 9100001, type limit, track by_src, count 1, seconds 1",
        "threshold gen_id 1, sig_id 9100002, type limit, track by_src, count 1, seconds 1"]
    (rules / "y.rules").write_text("alert tcp any any -> any any (msg:\"no end\"; sid:7\n")
    assert main(["--data-dir", str(tmp_path), "rules", "groups"]) == 1
    assert f"{rules / 'y.rules'}:1: not a rule" in capsys.readouterr().err
