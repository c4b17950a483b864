"""The alert-groups page (``/ui/rules``) in a real headless Chromium (Debian's chromium
driven by Playwright): a tenant's rule set, built by ``pcapwire rules update`` with the real
suricata-update, grouped by classtype, rule file and a metadata key, with its rules, enabled
rules and the alerts the real Suricata raised in a case; an admin disables a group and sets
it back with the buttons (suricata-update runs again: the merged rule file says so); a viewer
and a hand-placed rule set get the list without the buttons. No console error on any view.
Screenshots are kept under ``artifacts/screenshots/``."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest
from apiutil import PCAP_TYPE, ServerThread, Tokens
from chromiumutil import CHROMIUM, launch, login, shot
from conftest import corpus_file
from pcapwire.api import ApiConfig
from pcapwire.cli import main
from test_api_rulegroups import _enabled
from test_suricata_groups import MALWARE, POLICY

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() or shutil.which("suricata") is None
    or shutil.which("suricata-update") is None,
    reason="needs Debian's chromium, suricata and suricata-update (scripts/setup.sh)")


def _call(srv, headers: dict, method: str, path: str, body: dict | None = None,
          data: bytes | None = None, ctype: str = "application/json") -> bytes:
    payload = data if data is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{srv.url}{path}", data=payload, method=method,
                                 headers={"Content-Type": ctype, **headers})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """acme: ET-like rules from suricata-update, and a case whose query ran Suricata with
    them over an HTTP GET; globex: a hand-placed rule file."""
    data = tmp_path_factory.mktemp("rules-page")
    src = data / "src"
    src.mkdir()
    (src / "malware.rules").write_text(MALWARE)
    (src / "policy.rules").write_text(POLICY)
    acme = data / "tenants" / "acme"
    assert main(["--data-dir", str(acme), "rules", "update", "--local", str(src),
                 "--no-test"]) == 0
    globex = data / "tenants" / "globex"
    (globex / "rules").mkdir(parents=True)
    (globex / "rules" / "own.rules").write_text(MALWARE)
    flows = data / "workflows"
    flows.mkdir()
    (flows / "ids.yaml").write_text(f"""\
name: ids
description: Suricata with the tenant's merged rule set
steps:
  - id: ids
    uses: suricata
    input: pcap
    with:
      rules: ["{acme / 'rules' / 'suricata.rules'}"]
      args: ["-k", "none"]
      warm_spares: 0
""")
    tokens = Tokens(data)
    with ServerThread(ApiConfig(data_dir=data, workflow_dirs=[flows])) as srv:
        analyst = tokens.headers("acme", "analyst")
        _call(srv, analyst, "POST", "/api/v1/ingest",
              data=corpus_file("zeek-http-get").read_bytes(), ctype=PCAP_TYPE)
        q = json.loads(_call(srv, analyst, "POST", "/api/v1/queries", {
            "bpf": "tcp port 80", "case": "gw", "event": "wget", "workflows": ["ids"]}))
        stream = _call(srv, analyst, "GET", f"/api/v1/queries/{q['id']}/verdicts/stream")
        assert b"event: end" in stream  # the stream ends with the query
        yield srv, tokens, acme


@pytest.fixture(scope="module")
def browser():
    yield from launch()


def _page(browser, srv, token: str):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    login(page, srv.url, token)
    page.goto(f"{srv.url}/ui/rules")
    return ctx, page, errors


def _table(page) -> list[list[str]]:
    return [r.locator("td").all_inner_texts()[:6] for r in page.locator("#groups tbody tr").all()]


def test_alert_groups_listed_switched_and_refused(served, browser):
    from playwright.sync_api import expect

    srv, tokens, acme = served
    ctx, page, errors = _page(browser, srv, tokens["acme", "admin"])
    rows = page.locator("#groups tbody tr")
    expect(rows).to_have_count(4)
    expect(page.locator("#rules-summary")).to_contain_text("429 rules in 24 file(s), parsed in ")
    assert _table(page) == EXPECTED_CLASSTYPES
    shot(page, "rules-01-classtypes")

    trojan = page.locator("tr[data-group='classtype:trojan-activity']")
    expect(trojan.locator("button.group-default")).to_be_disabled()  # its state now
    trojan.locator("button.group-disabled").click()
    expect(trojan.locator("td").nth(4)).to_have_text("disabled")
    expect(trojan.locator("td").nth(2)).to_have_text("0")
    expect(trojan.locator("button.group-disabled")).to_be_disabled()
    assert _enabled(acme) == {9100001: False, 9100002: False, 9100003: True, 9100004: False}
    shot(page, "rules-02-disabled")

    page.select_option("select[name=by]", "metadata")  # key signature_severity
    page.click("#rules-filter button[type=submit]")
    expect(page.locator("tr[data-group='metadata:signature_severity=major']")).to_have_count(1)
    assert _table(page) == EXPECTED_SEVERITIES
    none = page.locator("tr[data-group='metadata:signature_severity=(none)']")
    for state in ("enabled", "disabled", "default"):  # rules without the key: no switch
        expect(none.locator(f"button.group-{state}")).to_be_disabled()

    page.select_option("select[name=by]", "ruleset")
    page.fill("input[name=case]", "no-such-case")  # alerts of one case: none here
    page.click("#rules-filter button[type=submit]")
    expect(page.locator("tr[data-group='ruleset:malware.rules']")).to_have_count(1)
    by_file = {r[0]: r[1:] for r in _table(page)}  # no alerts: the most rules first
    assert (len(by_file), by_file["ruleset:malware.rules"], by_file["ruleset:policy.rules"]) \
        == (23, ["2", "0", "0", "default", ""], ["2", "1", "0", "default", ""])

    page.select_option("select[name=by]", "classtype")
    page.fill("input[name=case]", "")
    page.click("#rules-filter button[type=submit]")
    expect(trojan.locator("td").nth(4)).to_have_text("disabled")
    trojan.locator("button.group-default").click()
    expect(trojan.locator("td").nth(4)).to_have_text("default")
    expect(trojan.locator("td").nth(2)).to_have_text("2")
    assert _enabled(acme) == {9100001: True, 9100002: True, 9100003: True, 9100004: False}
    assert errors == []
    ctx.close()

    # a viewer sees the groups without the buttons; so does a hand-placed rule set
    for tenant, role, hint in (
            ("acme", "viewer", "Only an admin can enable or disable a group."),
            ("globex", "admin", "These rule files were placed by hand: groups can be "
                                "listed, not enabled or disabled.")):
        ctx, page, errors = _page(browser, srv, tokens[tenant, role])
        expect(page.locator("#rules-managed")).to_have_text(hint)
        first = page.locator("#groups tbody tr").first
        expect(first.locator("td").first).to_have_text("classtype:trojan-activity")
        for state in ("enabled", "disabled", "default"):
            expect(first.locator(f"button.group-{state}")).to_be_disabled()
        shot(page, f"rules-03-{tenant}-{role}")
        assert errors == []
        ctx.close()


# (group, rules, enabled, alerts, state, threshold): suricata-update's distribution rules
# come with the set (decoder events: protocol-command-decode, or no classtype); Suricata
# raised 2 alerts of the trojan-activity rules and 1 of the policy rule over the HTTP GET.
EXPECTED_CLASSTYPES = [["classtype:trojan-activity", "2", "2", "2", "default", ""],
                       ["classtype:policy-violation", "2", "1", "1", "default", ""],
                       ["classtype:protocol-command-decode", "400", "364", "0", "default", ""],
                       ["classtype:(none)", "25", "1", "0", "default", ""]]
# ... and by signature_severity once trojan-activity (9100001 major, 9100002 minor) is off
EXPECTED_SEVERITIES = [["metadata:signature_severity=major", "2", "1", "2", "default", ""],
                       ["metadata:signature_severity=minor", "1", "0", "1", "default", ""],
                       ["metadata:signature_severity=(none)", "426", "365", "0", "default", ""]]
