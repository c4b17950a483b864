"""Cases: search, case page data, timeline, flows and the bundle with its manifest."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest
from apiutil import Tokens, bearer, upload, wait_done
from conftest import CASES, corpus_file
from pcaputil import read_records, tcpdump
from pcapwire.api import ApiConfig, create_app
from pcapwire.api.downloads import safe_filename

HTTP_CASE = "zeek-http-get"
DNS_CASE = "suricata-dns-udp-cname-a"


@pytest.fixture
async def env(aiohttp_client, tmp_path):
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    tok = tokens["acme", "analyst"]
    await upload(client, corpus_file(HTTP_CASE), tok)
    await upload(client, corpus_file(DNS_CASE), tok)
    ids = {}
    for case, event, body in (("inc-7", "web", {"bpf": "tcp port 80"}),
                              ("inc-7", "dns", {"ports": [53]}),
                              ("other", "web2", {"hosts": ["192.150.187.43"]})):
        q = await (await client.post("/api/v1/queries", json={**body, "case": case,
                                                              "event": event},
                                     headers=bearer(tok))).json()
        await wait_done(client, q["id"], tok)
        ids[event] = q["id"]
    return client, tokens, ids


async def test_case_search(env):
    client, tokens, ids = env
    tok = bearer(tokens["acme", "viewer"])

    async def names(**params):
        body = await (await client.get("/api/v1/cases", params=params, headers=tok)).json()
        return [c["case"] for c in body["cases"]]

    assert sorted(await names()) == ["inc-7", "other"]
    assert await names(q="inc") == ["inc-7"]
    assert await names(q="web2") == ["other"]
    assert await names(ip="192.150.187.43") == ["other"]
    assert await names(ip="192.150.187.4") == []
    assert await names(severity="info") == []  # no verdicts without workflows
    assert await names(until="1970-01-02") == []
    case = (await (await client.get("/api/v1/cases", params={"q": "inc-7"}, headers=tok)
                   ).json())["cases"][0]
    http = len(read_records(tcpdump(corpus_file(HTTP_CASE), "tcp port 80"))[1])
    dns = len(read_records(tcpdump(corpus_file(DNS_CASE), "port 53"))[1])
    assert (case["queries"], case["events"], case["packets"]) == (2, ["dns", "web"], http + dns)
    bad = await client.get("/api/v1/cases", params={"severity": "awful"}, headers=tok)
    assert (bad.status, (await bad.json())["details"]) == (400, {"parameter": "severity"})


async def test_case_page_timeline_and_flows(env):
    client, tokens, ids = env
    tok = bearer(tokens["acme", "viewer"])
    case = await (await client.get("/api/v1/cases/inc-7", headers=tok)).json()
    assert {q["id"] for q in case["queries"]} == {ids["web"], ids["dns"]}
    http_file = CASES[HTTP_CASE]["expect"]["files"][0]["sha256"]
    assert (case["verdicts"], case["emails"]) == ([], [])
    assert [(f["sha256"], f["query_id"]) for f in case["files"]] == [(http_file, ids["web"])]
    tl = await (await client.get("/api/v1/cases/inc-7/timeline", params={"buckets": 10},
                                 headers=tok)).json()
    total = sum(q["packets"] for q in case["queries"])
    assert len(tl["packets"]) == 10 and sum(tl["packets"]) == total
    assert tl["truncated"] is False and tl["start"] <= tl["end"]
    flows = (await (await client.get("/api/v1/cases/inc-7/flows", headers=tok)).json())["flows"]
    ports = {(f["proto"], f["dest_port"]) for f in flows}
    assert ("tcp", 80) in ports and ("udp", 53) in ports
    missing = await client.get("/api/v1/cases/nope", headers=tok)
    assert (missing.status, (await missing.json())["code"]) == (404, "not_found")


async def test_bundle_has_every_file_and_a_true_manifest(env):
    client, tokens, ids = env
    tok = bearer(tokens["acme", "viewer"])
    resp = await client.get("/api/v1/cases/inc-7/bundle", headers=tok)
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/zip"
    assert 'filename="case-inc-7.zip"' in resp.headers["Content-Disposition"]
    zf = zipfile.ZipFile(io.BytesIO(await resp.read()))
    names = set(zf.namelist())
    http_file = CASES[HTTP_CASE]["expect"]["files"][0]["sha256"]
    custody = {"custody/inc-7.jsonl", "custody/store.jsonl", "custody-public-key.pem",
               "VERIFY.txt", "MANIFEST.sha256.sig"}  # tests/test_custody*.py check these
    assert names == {"case.json", "verdicts.jsonl", "MANIFEST.sha256",
                     f"pcap/{ids['web']}.pcap", f"pcap/{ids['dns']}.pcap",
                     f"files/{http_file}"} | custody
    assert hashlib.sha256(zf.read(f"files/{http_file}")).hexdigest() == http_file
    manifest = dict(reversed(line.split("  ", 1)) for line in
                    zf.read("MANIFEST.sha256").decode().splitlines())
    assert set(manifest) == names - {"MANIFEST.sha256", "MANIFEST.sha256.sig"}
    for name, digest in manifest.items():
        assert hashlib.sha256(zf.read(name)).hexdigest() == digest
    assert zf.read(f"pcap/{ids['web']}.pcap") == tcpdump(corpus_file(HTTP_CASE), "tcp port 80")
    meta = json.loads(zf.read("case.json"))
    assert meta["case"] == "inc-7" and len(meta["queries"]) == 2
    assert zf.read("verdicts.jsonl") == b""


@pytest.mark.parametrize(("raw", "safe"), [
    ("report.pdf", "report.pdf"), ("../../etc/passwd", "passwd"),
    ("C:\\Users\\x\\evil.exe", "evil.exe"), (".htaccess", "htaccess"),
    ("in<script>.html", "in_script_.html"), ("résumé.doc", "resume.doc"),
    ("", "download"), ("...", "download"), ("a" * 300 + ".txt", "a" * 116 + ".txt"),
    ('x"; filename="y.exe', "x__filename__y.exe"),
])
def test_safe_filename(raw, safe):
    assert safe_filename(raw) == safe
