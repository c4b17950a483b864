"""A Suricata step with ``keep_dir``: the engine records where the step kept its EVE
metadata (the step's record in the case store), and the session view and the metadata
index read it from there -- inside the tenant's directory only. A ``keep_dir`` outside it
(an operator's setting, e.g. a shared /var directory), or one inside that is a symbolic
link out of it, is refused and logged, and nothing of it reaches the API.

One real Suricata run per workflow (three workflows on one query of two corpus captures:
curl to enabled.tls13.com with its DNS lookup, and wget of a file over HTTP)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from apiutil import GET_RULE, PCAP_TYPE, ServerThread, Tokens
from conftest import corpus_file
from pcapwire.api import ApiConfig, sessions
from pcapwire.cases import CASES_FILE, CaseStore
from pcapwire.cases.kept import default_dir, kept_files, step_dirs
from pcapwire.search.sources import run_docs

pytestmark = pytest.mark.skipif(shutil.which("suricata") is None,
                                reason="needs suricata (scripts/setup.sh installs it)")

CASE = "kd-case"
TLS = ("tcp", "192.168.65.3", 46638, "104.16.125.34", 443)
DNS = ("udp", "192.168.65.3", 42060, "192.168.65.1", 53)
HTTP = ("tcp", "141.142.228.5", 59856, "192.150.187.43", 80)
#: workflow name -> keep_dir (``{data_dir}`` is the tenant's directory under the API)
KEEP = {"kept": "{data_dir}/kept-eve", "outside": "{outside}", "linked": "{data_dir}/linked"}


def _workflow(name: str, rules: Path, keep_dir: str) -> str:
    return f"""\
name: {name}
description: Suricata keeping its EVE metadata in keep_dir
steps:
  - id: ids
    uses: suricata
    input: pcap
    with:
      rules: ["{rules}"]
      args: ["-k", "none"]
      warm_spares: 0
      ja3: true
      ja4: true
      keep_dir: "{keep_dir}"
"""


class Api:
    def __init__(self, srv: ServerThread, tokens: Tokens) -> None:
        self.srv, self.tokens = srv, tokens

    def call(self, method: str, path: str, body: Any = None, data: bytes | None = None,
             ctype: str = "application/json") -> Any:
        payload = data if data is not None else (json.dumps(body).encode()
                                                 if body is not None else None)
        req = urllib.request.Request(f"{self.srv.url}{path}", data=payload, method=method,
                                     headers={"Content-Type": ctype,
                                              **self.tokens.headers("acme", "analyst")})
        with urllib.request.urlopen(req, timeout=120) as resp:
            raw = resp.read()
        return json.loads(raw) if resp.headers.get_content_type() == "application/json" \
            else raw

    def flow_id(self, proto: str, a: str, ap: int, b: str, bp: int) -> int:
        flows = self.call("GET", f"/api/v1/cases/{CASE}/flows")["flows"]
        (fid,) = [f["flow_id"] for f in flows if f["proto"] == proto and {
            (f["src_ip"], f["src_port"]), (f["dest_ip"], f["dest_port"])} == {(a, ap), (b, bp)}]
        return int(fid)

    def session(self, key: tuple[str, str, int, str, int]) -> dict[str, Any]:
        return self.call("GET", f"/api/v1/cases/{CASE}/sessions/{self.flow_id(*key)}")

    def search(self, q: str) -> list[dict[str, Any]]:
        return self.call("GET", "/api/v1/search?" + urllib.parse.urlencode(
            {"q": q, "case": CASE}))["hits"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(api, tenant dir, query id, run ids by workflow, the outside directory)."""
    tmp = tmp_path_factory.mktemp("keepdir")
    data, flows, outside = tmp / "data", tmp / "workflows", tmp / "outside"
    flows.mkdir()
    (flows / "t.rules").write_text(GET_RULE)
    for name, where in KEEP.items():
        (flows / f"{name}.yaml").write_text(
            _workflow(name, flows / "t.rules", where.replace("{outside}", str(outside))))
    tokens = Tokens(data)
    with ServerThread(ApiConfig(data_dir=data, workflow_dirs=[flows])) as srv:
        api = Api(srv, tokens)
        for case in ("arkime-tls13-ja3-ja4", "zeek-http-get"):
            api.call("POST", "/api/v1/ingest", data=corpus_file(case).read_bytes(),
                     ctype=PCAP_TYPE)
        tenant = data / "tenants" / "acme"
        (tmp / "elsewhere").mkdir()
        os.symlink(tmp / "elsewhere", tenant / "linked")  # inside by name, outside really
        q = api.call("POST", "/api/v1/queries", {"case": CASE, "event": "kept",
                                                 "workflows": list(KEEP)})
        stream = api.call("GET", f"/api/v1/queries/{q['id']}/verdicts/stream")
        assert b"event: end" in stream  # the stream ends with the query and its runs
        q = api.call("GET", f"/api/v1/queries/{q['id']}")
        assert q["status"] == "done"
        runs = {r["workflow"]: r["run_id"] for r in q["runs"]}
        assert sorted(runs) == sorted(KEEP) and {r["status"] for r in q["runs"]} == {"ok"}
        yield api, tenant, q["id"], runs, outside


def _steps(tenant: Path) -> dict[str, Any]:
    cases = CaseStore(tenant / CASES_FILE, interrupt_running=False)
    try:
        return {r.workflow: (r, cases.steps(r.run_id)[0]) for r in cases.runs(CASE)}
    finally:
        cases.close()


def test_each_step_records_where_it_kept_its_eve(served) -> None:
    _api, tenant, qid, runs, outside = served
    steps = _steps(tenant)
    real = Path(os.path.realpath(tenant))
    assert {name: step.kept for name, (_run, step) in steps.items()} == {
        "kept": [str(tenant / "kept-eve" / CASE / f"{qid}-ids")],
        "outside": [str(outside / CASE / f"{qid}-ids")],
        "linked": [str(tenant / "linked" / CASE / f"{qid}-ids")]}
    for _name, (_run, step) in steps.items():  # Suricata wrote its EVE there ...
        assert (Path(step.kept[0]) / "eve-metadata.json").stat().st_size > 0
    # ... and not in the case folder, where the view looked before
    assert not (tenant / "cases" / CASE / "suricata").exists()
    run, step = steps["kept"]
    assert step_dirs(tenant, run, step) == [Path(step.kept[0])]
    assert Path(os.path.realpath(step.kept[0])).is_relative_to(real)


def test_session_view_shows_the_flows_eve_from_keep_dir(served) -> None:
    api = served[0]
    tls = api.session(TLS)
    assert (tls["case"], tls["eve"]["http"], tls["eve"]["dns"]) == (CASE, [], [])
    (rec,) = tls["eve"]["tls"]  # one record: the kept run's, none of the refused two
    assert (rec["src_ip"], rec["src_port"], rec["dest_ip"], rec["dest_port"]) == TLS[1:]
    t = rec["tls"]
    assert (t["sni"], t["version"], t["ja3"]["hash"], t["ja3s"]["hash"], t["ja4"]) == (
        "enabled.tls13.com", "TLS 1.3", "eeadfd2f446a45ded96f804720a0c75b",
        "907bf3ecef1c987c889946b737b43de8", "t13d0413h2_16476d049b0b_ffceb19bae65")

    dns = api.session(DNS)
    assert (dns["eve"]["http"], dns["eve"]["tls"]) == ([], [])
    assert [(d["dns"]["type"], d["dns"]["rrname"], d["dns"]["rrtype"])
            for d in dns["eve"]["dns"]] == [
        ("query", "enabled.tls13.com", "A"), ("query", "enabled.tls13.com", "AAAA"),
        ("answer", "enabled.tls13.com", "A"), ("answer", "enabled.tls13.com", "AAAA")]

    http = api.session(HTTP)
    assert (http["eve"]["dns"], http["eve"]["tls"]) == ([], [])
    (h,) = http["eve"]["http"]
    assert {k: h["http"][k] for k in ("hostname", "url", "http_user_agent", "http_method",
                                      "protocol", "status", "length")} == {
        "hostname": "bro.org", "url": "/download/CHANGES.bro-aux.txt",
        "http_user_agent": "Wget/1.14 (darwin12.2.0)", "http_method": "GET",
        "protocol": "HTTP/1.1", "status": 200, "length": 4705}
    (f,) = http["eve"]["fileinfo"]
    assert (f["fileinfo"]["filename"], f["fileinfo"]["size"], f["fileinfo"]["state"]) == (
        "/download/CHANGES.bro-aux.txt", 4705, "CLOSED")


def test_search_finds_the_kept_eve_records(served) -> None:
    api, _tenant, qid, runs, _outside = served
    hits = api.search("tls.client.server_name:enabled.tls13.com")
    assert [(h["dataset"], h["pivots"]["run_id"], h["pivots"]["query_id"]) for h in hits] \
        == [("suricata.tls", runs["kept"], qid)]
    assert hits[0]["doc"]["tls"]["client"]["ja3"] == "eeadfd2f446a45ded96f804720a0c75b"
    hits = api.search('url.path:"/download/CHANGES.bro-aux.txt"')
    assert sorted((h["dataset"], h["pivots"]["run_id"]) for h in hits) == [
        ("suricata.fileinfo", runs["kept"]), ("suricata.http", runs["kept"])]
    assert {h["pivots"]["run_id"] for h in api.search("event.dataset:suricata.*")} == {
        runs["kept"]}


def test_keep_dir_outside_the_tenant_is_refused_and_logged(served, caplog) -> None:
    api, tenant, qid, runs, outside = served
    steps = _steps(tenant)
    caplog.set_level(logging.WARNING, logger="pcapwire.cases.kept")
    api.session(TLS)  # (its single TLS record: the test above)
    refused = [r.getMessage() for r in caplog.records if r.name == "pcapwire.cases.kept"]
    assert sorted(refused) == sorted(
        f"run {runs[name]} step 'ids' kept its files in {steps[name][1].kept[0]}, outside "
        f"{tenant}: not read (keep_dir must lie inside the tenant's directory to be served)"
        for name in ("outside", "linked"))
    caplog.clear()
    for name in ("outside", "linked"):  # the index: the run's verdict, no EVE record
        run, step = steps[name]
        assert step_dirs(tenant, run, step) == []
        assert [d.key.split(":")[0] for d in run_docs(tenant, runs[name])] == ["verdict"]
    assert len(caplog.records) == 4  # each refusal logged (step_dirs, then run_docs)


def test_a_file_linking_out_of_the_tenant_is_refused(served, caplog) -> None:
    _api, tenant, _qid, runs, outside = served
    run, step = _steps(tenant)["kept"]
    folder = Path(step.kept[0])
    indexed = [d.key for d in run_docs(tenant, runs["kept"])]
    link = folder / "eve-metadata-linktype228.json"
    link.symlink_to(next(outside.rglob("eve-metadata.json")))
    try:
        caplog.set_level(logging.WARNING, logger="pcapwire.cases.kept")
        assert kept_files(tenant, folder, "eve-metadata*.json") == [
            folder / "eve-metadata.json"]
        assert [r.getMessage() for r in caplog.records] == [
            f"{link} links outside {tenant}: not read"]
        caplog.clear()  # the index leaves it out too: the same documents as without it
        assert [d.key for d in run_docs(tenant, runs["kept"])] == indexed
        assert [r.getMessage() for r in caplog.records] == [
            f"{link} links outside {tenant}: not read"]
    finally:
        link.unlink()


def test_a_step_record_from_before_is_read_from_the_default_place(served) -> None:
    """A step record written before pcapwire recorded kept directories (``kept`` None)."""
    _api, tenant, qid, _runs, _outside = served
    run, step = _steps(tenant)["kept"]
    step.kept = None
    assert default_dir(tenant, run, step) == tenant / "cases" / CASE / "suricata" / \
        f"{qid}-ids"
    assert step_dirs(tenant, run, step) == []  # nothing there: this run used keep_dir


def test_session_limits(served, monkeypatch, caplog) -> None:
    api, tenant, qid, _runs, _outside = served
    assert (sessions.MAX_SESSION_RECORDS, sessions.MAX_KEPT_FILE_BYTES) == (1000, 64 * 2**20)
    monkeypatch.setattr(sessions, "MAX_SESSION_RECORDS", 2)
    assert [(d["dns"]["type"], d["dns"]["rrtype"]) for d in api.session(DNS)["eve"]["dns"]] \
        == [("query", "A"), ("query", "AAAA")]
    monkeypatch.setattr(sessions, "MAX_KEPT_FILE_BYTES", 10)
    caplog.set_level(logging.WARNING, logger="pcapwire.api.sessions")
    assert api.session(DNS)["eve"] == {t: [] for t in sessions.EVE_TYPES}
    eve = tenant / "kept-eve" / CASE / f"{qid}-ids" / "eve-metadata.json"
    assert [r.getMessage() for r in caplog.records if r.name == "pcapwire.api.sessions"] \
        == [f"{eve} is over 10 bytes: not read for a session view"]
