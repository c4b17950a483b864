"""A Zeek step with ``keep_dir``, run by the API against a FAKE Zeek
(tests/data/fake_zeek/zeek: Zeek is not packaged for Debian and there is no zeek binary
here; the stand-in writes one conn record at ts 1.5 for the first packet's 5-tuple): the
engine records where the step kept its logs, and the session view and the metadata index
read its ``metadata.json`` from there. The capture is crafted to start at t = 1 s, so the
fake's record falls inside the flow's time."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from apiutil import PCAP_TYPE, ServerThread, Tokens
from pcapwire.api import ApiConfig
from pcapwire.cases import CASES_FILE, CaseStore
from pcapwire.testing import http_download, write_capture

FAKE_ZEEK = Path(__file__).parent / "data" / "fake_zeek" / "zeek"
CASE = "zk-case"
CLIENT, SERVER = ("10.0.0.1", 40000), ("10.0.0.2", 80)


def _call(srv: ServerThread, tokens: Tokens, method: str, path: str, body: Any = None,
          data: bytes | None = None, ctype: str = "application/json") -> Any:
    payload = data if data is not None else (json.dumps(body).encode()
                                             if body is not None else None)
    req = urllib.request.Request(f"{srv.url}{path}", data=payload, method=method, headers={
        "Content-Type": ctype, **tokens.headers("acme", "analyst")})
    with urllib.request.urlopen(req, timeout=120) as resp:
        raw = resp.read()
    return json.loads(raw) if resp.headers.get_content_type() == "application/json" else raw


def test_fake_zeek_logs_in_keep_dir_reach_the_session_view_and_search(tmp_path) -> None:
    flows = tmp_path / "workflows"
    flows.mkdir()
    (flows / "zeek.yaml").write_text(f"""\
name: zeek-fake
description: FAKE Zeek (tests/data/fake_zeek) keeping its logs in keep_dir
steps:
  - id: zeek
    uses: zeek
    input: pcap
    with:
      binary: "{FAKE_ZEEK}"
      keep_dir: "{{data_dir}}/zeek-kept"
""")
    pcap = write_capture(tmp_path / "get.pcap", [http_download(
        f"{CLIENT[0]}:{CLIENT[1]} > {SERVER[0]}:{SERVER[1]}", "/a.bin", b"x" * 100)],
        start=1.0)
    data = tmp_path / "data"
    tokens = Tokens(data)
    with ServerThread(ApiConfig(data_dir=data, workflow_dirs=[flows])) as srv:
        _call(srv, tokens, "POST", "/api/v1/ingest", data=pcap.read_bytes(), ctype=PCAP_TYPE)
        q = _call(srv, tokens, "POST", "/api/v1/queries", {"case": CASE,
                                                           "workflows": ["zeek-fake"]})
        assert b"event: end" in _call(srv, tokens, "GET",
                                      f"/api/v1/queries/{q['id']}/verdicts/stream")
        (run,) = _call(srv, tokens, "GET", f"/api/v1/queries/{q['id']}")["runs"]
        assert run["status"] == "ok", run

        tenant = data / "tenants" / "acme"
        cases = CaseStore(tenant / CASES_FILE, interrupt_running=False)
        try:
            (step,) = cases.steps(run["run_id"])
        finally:
            cases.close()
        kept = tenant / "zeek-kept" / CASE / f"{q['id']}-zeek"
        assert step.kept == [str(kept)]
        assert sorted(p.name for p in kept.iterdir()) == [
            "argv.json", "conn.log", "fake-zeek.pid", "metadata.json", "notice.log",
            "pcapwire.zeek", "stdin.pcap", "weird.log"]

        (flow,) = _call(srv, tokens, "GET", f"/api/v1/cases/{CASE}/flows")["flows"]
        view = _call(srv, tokens, "GET", f"/api/v1/cases/{CASE}/sessions/{flow['flow_id']}")
        assert view["zeek"] == {
            "conn": [{"ts": 1.5, "uid": "CFake1", "id.orig_h": CLIENT[0],
                      "id.orig_p": CLIENT[1], "id.resp_h": SERVER[0],
                      "id.resp_p": SERVER[1], "proto": "tcp", "tunnel_parents": []}],
            "http": [], "dns": [], "ssl": [], "files": [], "smtp": []}

        _session_page_shows_zeek(srv, tokens, f"/ui/cases/{CASE}/sessions/{flow['flow_id']}")

        hits = _call(srv, tokens, "GET", "/api/v1/search?" + urllib.parse.urlencode(
            {"q": "event.dataset:zeek.conn"}))["hits"]
        assert [(h["pivots"]["run_id"], h["pivots"]["flow_id"], h["doc"]["zeek"]["uid"])
                for h in hits] == [(run["run_id"], flow["flow_id"], "CFake1")]


def _session_page_shows_zeek(srv: ServerThread, tokens: Tokens, url: str) -> None:
    """The dashboard's session page draws the Zeek record (Chromium)."""
    from chromiumutil import launch, login, shot
    from playwright.sync_api import expect

    for browser in launch():
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        login(page, srv.url, tokens["acme", "analyst"])
        page.goto(f"{srv.url}{url}")
        expect(page.locator("#s-zeek tbody tr td")).to_have_text([
            "conn", "1970-01-01T00:00:01.500Z", "CFake1", "proto=tcp"])
        expect(page.locator("#s-zeek-count")).to_have_text("1")
        shot(page, "session-zeek-fake")
        page.close()
