"""The triggers page in a real headless Chromium (Debian's /usr/bin/chromium driven by
Playwright): a trigger created through the API on ingested data is listed with its hunt's
state and progress; its matches arrive live on the page (EventSource); pause, resume and
abort go through the buttons (with the session's CSRF header); a match pivots to a query
of its flow.

The server's trigger service runs the hunt (the real runner); one match of the watch is
inserted with TriggerDB.add_watch_hits (what the watch records) to see a match arrive at a
moment the test chooses. Screenshots are kept under ``artifacts/screenshots/``."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from apiutil import PCAP_TYPE, ServerThread, Tokens
from chromiumutil import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, UI_TIMEOUT_MS, login, shot
from conftest import corpus_file
from pcapwire.api import ApiConfig
from pcapwire.triggers.db import Hit, TriggerDB

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="needs Debian's chromium (scripts/setup.sh installs it)")


def _post(url: str, body: dict, headers: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={
        "Content-Type": "application/json", **headers})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def test_triggers_page_progress_live_matches_and_controls(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tokens = Tokens(tmp_path)
    analyst = tokens.headers("acme", "analyst")
    with ServerThread(ApiConfig(data_dir=tmp_path)) as srv:
        req = urllib.request.Request(f"{srv.url}/api/v1/ingest",
                                     data=corpus_file("zeek-http-get").read_bytes(),
                                     headers={"Content-Type": PCAP_TYPE, **analyst})
        with urllib.request.urlopen(req, timeout=60) as resp:
            summary = json.loads(resp.read())
        # the one segment, a classic pcap: 24-byte header, 16 bytes before each packet
        segment_bytes = 24 + 16 * summary["packets"] + summary["bytes"]
        made = _post(f"{srv.url}/api/v1/triggers", {
            "name": "c2-web", "indicators": {"ips": ["192.150.187.0/24"]}}, analyst)
        tid, hunt_id = made["trigger"]["id"], made["trigger"]["hunt"]["id"]
        db = TriggerDB(tmp_path / "tenants" / "acme")

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            login(page, srv.url, tokens["acme", "analyst"])
            page.click("nav a[href='/ui/triggers']")
            page.wait_for_url(f"{srv.url}/ui/triggers")
            row = page.locator("#triggers tbody tr")
            expect(row).to_have_count(1)
            expect(row.locator("td").nth(0)).to_have_text("c2-web")
            row.locator("button", has_text="Watch").click()
            expect(page.locator("#t-live")).to_have_text("live")
            # the server's trigger service hunts through the index: its match and its end
            matches = page.locator("#t-matches tbody tr")
            expect(matches).to_have_count(1)
            expect(matches.locator("td")).to_have_text([
                "1", "2013-03-07T21:42:06.869Z", "ip:192.150.187.0/24",
                "tcp 141.142.228.5:59856 → 192.150.187.43:80", "hunt", "1", "Query PCAP"])
            expect(page.locator("#t-hunt")).to_have_text(f"finished (hunt {hunt_id}, version 1)")
            expect(page.locator("#t-units")).to_have_text(
                f"1 of 1 done, {segment_bytes} of {segment_bytes} bytes")
            expect(page.locator("#t-progress")).to_have_js_property("value", 1)
            expect(row.locator("td").nth(4)).to_have_text("finished")
            expect(row.locator("td").nth(7)).to_have_text("1")
            expect(page.locator("#t-abort")).to_be_disabled()
            shot(page, "trigger-01-hunted")

            # a match of the watch arrives live
            db.add_watch_hits(tid, [Hit("ip:192.150.187.0/24", 17, "141.142.228.5", 5353,
                                        "192.150.187.43", 53, 1362692527.0, {})], 1, None)
            expect(matches).to_have_count(2)
            expect(matches.nth(1).locator("td").nth(4)).to_have_text("watch")
            expect(page.locator("#t-match-count")).to_have_text("2")

            # buttons: pause; an edit while paused gets a paused hunt; abort it; resume
            page.click("#t-pause")
            expect(page.locator("#t-state")).to_have_text("paused")
            assert db.get(tid).state == "paused"
            req = urllib.request.Request(
                f"{srv.url}/api/v1/triggers/{tid}", method="PUT", data=json.dumps(
                    {"name": "c2-web", "indicators": {"ips": ["10.0.0.0/8"]}}).encode(),
                headers={"Content-Type": "application/json", **analyst})
            urllib.request.urlopen(req, timeout=60).close()
            expect(page.locator("#t-hunt")).to_have_text(
                f"paused (hunt {hunt_id + 1}, version 2)")
            shot(page, "trigger-02-paused")
            page.click("#t-abort")
            expect(page.locator("#t-hunt")).to_have_text(
                f"aborted (hunt {hunt_id + 1}, version 2)")
            assert db.hunt(hunt_id + 1).status == "aborted"
            page.click("#t-resume")
            expect(page.locator("#t-state")).to_have_text("active")
            expect(page.locator("#t-resume")).to_be_disabled()

            # the match's pivot: a query of its flow, followed on the live query page
            matches.first.locator("button", has_text="Query PCAP").click()
            page.wait_for_url("**/ui/queries/*")
            expect(page.locator("#q-status")).to_have_text("done")
            expect(page.locator("#q-packets")).to_have_text("14")
            shot(page, "trigger-03-pivot")
            browser.close()
        db.close()
