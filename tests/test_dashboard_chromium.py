"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium driven by
Playwright): log in with a token, submit a query on data the test ingested, watch the live
page, download the PCAP and compare its bytes with tcpdump's, browse the case.

Screenshots are kept under ``artifacts/screenshots/`` (CI keeps them as artefacts)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import urllib.request
from pathlib import Path

import pytest
from apiutil import PCAP_TYPE, ServerThread, Tokens, suricata_workflow_dir
from chromiumutil import CHROMIUM, UI_TIMEOUT_MS, launch, shot
from conftest import CASES, corpus_file
from pcaputil import tcpdump
from pcapwire.api import ApiConfig

HTTP_CASE = "zeek-http-get"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() or shutil.which("suricata") is None,
    reason="needs Debian's chromium and suricata (scripts/setup.sh installs them)")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = tmp_path_factory.mktemp("dashboard")
    tokens = Tokens(data)
    config = ApiConfig(data_dir=data, workflow_dirs=[suricata_workflow_dir(
        tmp_path_factory.mktemp("workflows"))])
    with ServerThread(config) as srv:
        req = urllib.request.Request(
            f"{srv.url}/api/v1/ingest", data=corpus_file(HTTP_CASE).read_bytes(),
            headers={"Content-Type": PCAP_TYPE, **tokens.headers("acme", "analyst")})
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 200
        yield srv, tokens


@pytest.fixture(scope="module")
def browser():
    yield from launch()


def test_login_query_live_download_and_case(served, browser, tmp_path):
    from playwright.sync_api import expect

    srv, tokens = served
    ctx = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(f"{srv.url}/ui/")
    assert page.url.endswith("/ui/login")
    page.fill("#token", "pwt_000000000000_" + "A" * 43)
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_have_text("Unknown or revoked token.")
    page.fill("#token", tokens["acme", "analyst"])
    shot(page, "01-login")
    page.click("#login-submit")
    page.wait_for_url(f"{srv.url}/ui/")
    expect(page.locator("#whoami")).to_contain_text("acme · analyst")

    page.fill("#bpf", "tcp port")
    expect(page.locator("#bpf-status")).to_have_class("error")
    expect(page.locator("#bpf-status")).to_contain_text("syntax error")
    page.fill("#bpf", "tcp port 80")
    expect(page.locator("#bpf-status")).to_have_class("ok")
    page.fill("#case", "browser-case")
    page.fill("#event", "chromium")
    page.check("input[name=workflow][value=ids]")
    shot(page, "02-query-form")
    page.click("#query-submit")
    page.wait_for_url("**/ui/queries/*")
    expect(page.locator("#q-status")).to_have_text("done")
    expected = tcpdump(corpus_file(HTTP_CASE), "tcp port 80")
    expect(page.locator("#q-packets")).to_have_text(str(_count(expected)))
    verdict = page.locator("#verdicts tbody tr")
    expect(verdict).to_have_count(1)
    expect(verdict.locator("td").nth(3)).to_have_text("pcapwire GET")
    expect(verdict.locator("td").first).to_have_class(re.compile(r"\bsev sev-(low|medium|high)\b"))
    expect(page.locator("#verdict-count")).to_have_text("1")
    shot(page, "03-live-query")
    with page.expect_download() as dl:
        page.click("#pcap-link")
    saved = tmp_path / "result.pcap"
    dl.value.save_as(saved)
    assert saved.read_bytes() == expected

    page.click("#q-case")
    page.wait_for_url("**/ui/cases/browser-case")
    expect(page.locator("#case-queries tbody tr")).to_have_count(1)
    expect(page.locator("#timeline-note")).to_contain_text(  # drawn by uPlot (charts.js)
        f"{_count(expected)} packets, {len(expected) - 24 - 16 * _count(expected)} bytes in")
    expect(page.locator("#case-flows tbody tr")).to_have_count(1)
    expect(page.locator("#case-verdicts tbody tr")).to_have_count(1)
    expected_file = CASES[HTTP_CASE]["expect"]["files"][0]["sha256"]
    expect(page.locator("#case-files tbody tr td.hash")).to_have_text(expected_file)
    with page.expect_download() as dl:
        page.locator("#case-files tbody tr a").click()
    carved = tmp_path / "carved.bin"
    dl.value.save_as(carved)
    assert hashlib.sha256(carved.read_bytes()).hexdigest() == expected_file
    shot(page, "04-case")
    page.locator("#case-verdicts button.pivot").click()  # pivot: a new query on that flow
    page.wait_for_url("**/ui/queries/*")
    expect(page.locator("#q-status")).to_have_text("done")
    expect(page.locator("#q-packets")).to_have_text(str(_count(expected)))
    expect(page.locator("#q-case")).to_have_text("browser-case")
    shot(page, "05-pivot")
    page.goto(f"{srv.url}/ui/cases")
    expect(page.locator("#cases tbody tr")).to_have_count(1)
    expect(page.locator("#cases tbody tr td a")).to_have_text("browser-case")
    shot(page, "06-cases")
    ctx.close()


def _count(pcap: bytes) -> int:
    from pcaputil import read_records

    return len(read_records(pcap)[1])


def test_live_page_a_late_snapshot_never_overwrites_the_final_status(served, browser):
    """Regression (CI, stop 17): the live page read a snapshot and opened the stream at the
    same time; on a loaded machine the snapshot ("running") landed after the stream's
    ``end`` ("done") and the page stayed at "running". Here the snapshot is made stale on
    purpose: the page must still end at the stream's final status."""
    from playwright.sync_api import expect

    srv, tokens = served
    headers = {"Content-Type": "application/json", **tokens.headers("acme", "analyst")}
    req = urllib.request.Request(f"{srv.url}/api/v1/queries", method="POST",
                                 data=b'{"bpf": "tcp port 80", "case": "stale-snapshot"}',
                                 headers=headers)
    with urllib.request.urlopen(req, timeout=60) as resp:
        qid = json.loads(resp.read())["id"]
    stream = urllib.request.Request(f"{srv.url}/api/v1/queries/{qid}/verdicts/stream",
                                    headers=tokens.headers("acme", "analyst"))
    with urllib.request.urlopen(stream, timeout=60) as resp:  # ends with the query
        assert b"event: end" in resp.read()
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(f"{srv.url}/ui/login")
    page.fill("#token", tokens["acme", "analyst"])
    page.click("#login-submit")
    page.wait_for_url(f"{srv.url}/ui/")

    def stale(route):
        snapshot = route.fetch().json()
        assert snapshot["status"] == "done"
        route.fulfill(json={**snapshot, "status": "running", "progress": 0.1})

    page.route(f"{srv.url}/api/v1/queries/{qid}", stale)
    page.goto(f"{srv.url}/ui/queries/{qid}")
    expect(page.locator("#q-status")).to_have_text("done")
    expect(page.locator("#q-case")).to_have_text("stale-snapshot")
    ctx.close()
