"""``GET /api/v1/rules/groups`` and ``PUT /api/v1/rules/groups/{group}`` over a tenant's own
rule set (DATA_DIR/tenants/<tenant>/rules), with the real suricata-update."""

from __future__ import annotations

from pathlib import Path

from apiutil import Tokens
from pcapwire.api import ApiConfig, create_app
from pcapwire.cli import main
from pcapwire.plugins.suricata import rulefile
from test_suricata_groups import MALWARE, POLICY


def _enabled(root: Path) -> dict[int, bool]:
    text = (root / "rules" / "suricata.rules").read_bytes()
    return {r.sid: r.enabled for r in rulefile.parse_lines(text, file="m", group="")
            if isinstance(r, rulefile.Rule) and r.sid >= 9100001}


async def test_rule_groups_of_a_tenant(aiohttp_client, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "malware.rules").write_text(MALWARE)
    (src / "policy.rules").write_text(POLICY)
    acme = tmp_path / "tenants" / "acme"
    assert main(["--data-dir", str(acme), "rules", "update", "--local", str(src),
                 "--no-test"]) == 0
    globex = tmp_path / "tenants" / "globex"
    (globex / "rules").mkdir(parents=True)
    (globex / "rules" / "own.rules").write_text(MALWARE)
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))

    resp = await client.get("/api/v1/rules/groups", params={"by": "ruleset"},
                            headers=tokens.headers("acme", "viewer"))
    assert resp.status == 200, await resp.text()
    doc = await resp.json()
    rows = {r["group"]: r for r in doc["groups"]}
    assert (doc["managed"], doc["problems"], doc["alerts_unmatched"]) == (True, 0, 0)
    assert rows["ruleset:policy.rules"] == {
        "group": "ruleset:policy.rules", "kind": "ruleset", "key": "", "value": "policy.rules",
        "rules": 2, "enabled": 1, "alerts": 0, "state": "default", "threshold": None}

    admin = tokens.headers("acme", "admin")
    resp = await client.put("/api/v1/rules/groups/classtype:trojan-activity",
                            json={"state": "disabled"}, headers=admin)
    assert resp.status == 200, await resp.text()
    done = await resp.json()
    assert (done["updated"], done["group"]["state"], done["group"]["rules"],
            done["group"]["enabled"]) == (True, "disabled", 2, 0)
    assert _enabled(acme) == {9100001: False, 9100002: False, 9100003: True, 9100004: False}
    resp = await client.put("/api/v1/rules/groups/metadata:signature_severity=major",
                            json={"threshold": {"type": "limit", "track": "by_src",
                                                "count": 1, "seconds": 60}}, headers=admin)
    assert resp.status == 200, await resp.text()
    done = await resp.json()
    assert (done["updated"], done["threshold_file"]) == (False, "threshold.config")
    assert (acme / "rules" / "threshold.config").read_text().splitlines()[1:] == [
        "# metadata:signature_severity=major: 1 rules",
        "threshold gen_id 1, sig_id 9100003, type limit, track by_src, count 1, seconds 60"]

    for body, group, status in (({"state": "off"}, "classtype:trojan-activity", 400),
                                ({}, "classtype:trojan-activity", 400),
                                ({"threshold": {"type": "limit", "track": "by_src",
                                                "count": 0, "seconds": 1}},
                                 "classtype:trojan-activity", 400),
                                ({"state": "disabled"}, "classtype:nothing-like-it", 404),
                                ({"state": "disabled"}, "not-a-group", 404)):
        resp = await client.put(f"/api/v1/rules/groups/{group}", json=body, headers=admin)
        assert resp.status == status, (body, group, await resp.text())

    # globex sees its own hand-placed rules only, and cannot rebuild them
    gadmin = tokens.headers("globex", "admin")
    doc = await (await client.get("/api/v1/rules/groups", headers=gadmin)).json()
    assert (doc["managed"], [(r["group"], r["rules"]) for r in doc["groups"]]) == (
        False, [("classtype:trojan-activity", 2)])
    resp = await client.put("/api/v1/rules/groups/classtype:trojan-activity",
                            json={"state": "disabled"}, headers=gadmin)
    assert resp.status == 409
    assert (await resp.json())["code"] == "rules_not_managed"
    resp = await client.get("/api/v1/rules/groups", params={"by": "nonsense"},
                            headers=gadmin)
    assert resp.status == 400
