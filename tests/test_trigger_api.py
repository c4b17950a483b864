"""The triggers API (core/api/routes_triggers.py) on a real tenant store: the lifecycle
with exact bodies (create with indicator files, list, show, edit -> new version, pause,
resume, abort, delete), secrets never returned and kept on edit, matches with pivots and
the live event stream, another tenant's trigger a 404, bad input a 400 naming the field or
the file and line.

The server's trigger service runs the hunts (the real runner, through the flow index); one
match of the watch is inserted with TriggerDB.add_watch_hits (what the watch records) to
see a match arrive on an open stream at a moment the test chooses."""

from __future__ import annotations

import json

from apiutil import Tokens, bearer, upload
from conftest import REPO, corpus_file
from pcapwire.api import ApiConfig, create_app
from pcapwire.triggers.db import Hit, TriggerDB

MISP_EVENT = REPO / "tests" / "data" / "triggers" / "misp-event.json"
SECRET = "hmac-key-0123456789"
VOLATILE = ("created", "updated", "started", "finished", "found", "rate_bytes_s", "digest",
            "created_by")


def strip(doc):
    if isinstance(doc, dict):
        return {k: strip(v) for k, v in doc.items() if k not in VOLATILE}
    if isinstance(doc, list):
        return [strip(v) for v in doc]
    return doc


def _hunt(hid, version, status):
    return {"id": hid, "version": version, "status": status, "units_total": 0,
            "units_done": 0, "units_failed": 0, "bytes_total": 0, "bytes_done": 0,
            "progress": 0.0, "eta_s": None, "error": None, "failed_units": []}


def _inds(**given):
    return {**{k: [] for k in ("ips", "domains", "urls", "ja3", "ja4", "sha256", "md5",
                               "sha1")}, **given}


async def _until(resp, done):
    """(event, data) pairs of an SSE response up to the first for which ``done`` holds."""
    out, event = [], ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            out.append((event, json.loads(line[6:])))
            if done(*out[-1]):
                return out
    raise AssertionError(f"stream ended after {out}")


def _finished(version):
    return lambda e, d: e == "hunt" and d["version"] == version and \
        d["hunt"]["status"] == "finished"


async def test_create_imports_indicator_files_and_keeps_secrets(aiohttp_client, tmp_path):
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    analyst, viewer = tokens["acme", "analyst"], tokens["acme", "viewer"]
    body = {"name": "c2", "bpf": "tcp port 80", "indicators": {"ips": ["192.150.187.43"]},
            "scope": {"start": "2030-01-01T00:00:00Z"}, "workflows": ["ids"],
            "notify": [{"type": "webhook", "url": "http://127.0.0.1:9/h", "secret": SECRET}],
            "indicator_files": [{"format": "text", "content": "# intel\nc2.example\n",
                                 "name": "intel.txt"},
                                {"content": MISP_EVENT.read_text()}]}
    resp = await client.post("/api/v1/triggers", json=body, headers=bearer(analyst))
    assert resp.status == 201, await resp.text()
    made = await resp.json()
    assert SECRET not in json.dumps(made)
    tid = made["trigger"]["id"]
    definition = {
        "name": "c2", "suricata_rules": "", "yara_rules": "", "bpf": "tcp port 80",
        "indicators": _inds(
            ips=["192.150.187.43", "198.51.100.9", "203.0.113.5", "2001:db8::10"],
            domains=["c2.example", "bro.icir.org", "update.example"],
            urls=["http://bro.icir.org/download/bro-2.1.tar.gz"],
            ja3=["e7eca2baf4458d095b7f45da28c16c34"],
            sha256=["6f1b8e5bb1f5f9d4a0ba4e2a13f1e8c08fda8f5b2c4fa3e0e1a38c6d6a8a7f11"],
            md5=["0123456789abcdef0123456789abcdef"],
            sha1=["da39a3ee5e6b4b0d3255bfef95601890afd80709"]),
        "scope": {"start_ns": 1893456000 * 10**9, "end_ns": None, "bpf": "", "sensor": ""},
        "workflows": ["ids"],
        "notify": [{"type": "webhook", "url": "http://127.0.0.1:9/h", "secret": "(set)"}]}
    view = {"id": tid, "name": "c2", "state": "active", "version": 1,
            "looks_for": ["bpf", "ips", "domains", "urls", "ja3", "sha256", "md5", "sha1"],
            "definition": definition, "matches": 0}
    # the server's trigger service may have taken the hunt up already
    assert made["trigger"]["hunt"]["status"] in ("queued", "running", "finished")
    assert strip({**made["trigger"], "hunt": None, "hunts": None}) == {
        **view, "hunt": None, "hunts": None, "versions": [{"version": 1, "reason": "created"}]}
    assert [(i["file"], i["format"], len(i["ignored"])) for i in made["imports"]] == [
        ("intel.txt", "text", 0), ("indicator_files[1]", "misp", 5)]
    listed = await (await client.get("/api/v1/triggers", headers=bearer(viewer))).json()
    assert strip({**listed["triggers"][0], "hunt": None}) == {**view, "hunt": None}
    # edit with the definition as shown: the secret "(set)" keeps the stored one
    shown = made["trigger"]["definition"]
    resp = await client.put(f"/api/v1/triggers/{tid}", json={**shown, "workflows": []},
                            headers=bearer(analyst))
    assert (resp.status, (await resp.json())["trigger"]["version"]) == (200, 1)
    with TriggerDB(tmp_path / "tenants" / "acme") as db:
        assert db.get(tid).definition.notify[0].secret == SECRET
        assert db.get(tid).definition.workflows == []


async def test_lifecycle_matches_stream_and_tenants(aiohttp_client, tmp_path):
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    analyst, viewer = tokens["acme", "analyst"], tokens["acme", "viewer"]
    await upload(client, corpus_file("zeek-http-get"), analyst)
    resp = await client.post("/api/v1/triggers", json={
        "name": "web", "indicators": {"ips": ["192.150.187.0/24"]}}, headers=bearer(analyst))
    assert resp.status == 201, await resp.text()
    tid = (await resp.json())["trigger"]["id"]
    # the server's trigger service hunts: the match and the end arrive on the stream
    stream = await client.get(f"/api/v1/triggers/{tid}/events", headers=bearer(viewer))
    assert stream.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    seen = await _until(stream, _finished(1))
    match = {"id": 1, "rule": "ip:192.150.187.0/24",
             "flow_key": "6 141.142.228.5 59856 192.150.187.43 80", "flow_id": 1, "proto": 6,
             "src_ip": "141.142.228.5", "src_port": 59856, "dest_ip": "192.150.187.43",
             "dest_port": 80, "ts": 1362692526.869344, "segment_id": 1, "source": "hunt",
             "evidence": {"address": "192.150.187.43", "indicator": "192.150.187.0/24"},
             "versions": [1], "hits": 1,
             "pivots": {"query": {"flow_ids": [1], "case": "trigger-web", "event": "match-1"},
                        "flow_id": 1, "bpf": "tcp and host 141.142.228.5 and host "
                        "192.150.187.43 and port 59856 and port 80",
                        "trigger_path": f"/api/v1/triggers/{tid}",
                        "case_path": "/api/v1/cases/trigger-web"}}
    assert [strip(d) for e, d in seen if e == "match"] == [match]
    size = seen[-1][1]["hunt"]["bytes_total"]
    assert strip(seen[-1][1]) == {"trigger_id": tid, "name": "web", "state": "active",
                                  "version": 1, "matches": 1, "hunt": {
                                      **_hunt(1, 1, "finished"), "units_total": 1,
                                      "units_done": 1, "bytes_total": size,
                                      "bytes_done": size, "progress": 1.0, "eta_s": 0.0}}
    matches = await (await client.get(f"/api/v1/triggers/{tid}/matches?version=1",
                                      headers=bearer(viewer))).json()
    assert strip(matches) == {"matches": [match], "next_after": 1}
    after = await (await client.get(f"/api/v1/triggers/{tid}/matches?after=1",
                                    headers=bearer(viewer))).json()
    assert after == {"matches": [], "next_after": 1}
    # the pivot is a query body the API takes
    q = await client.post("/api/v1/queries", json=matches["matches"][0]["pivots"]["query"],
                          headers=bearer(analyst))
    assert q.status == 202, await q.text()

    # a match of the watch arrives live on the open stream
    with TriggerDB(tmp_path / "tenants" / "acme") as db:
        assert db.add_watch_hits(tid, [Hit("ip:192.150.187.0/24", 17, "141.142.228.5", 5353,
                                           "192.150.187.43", 53, 1362692527.0, {})], 1,
                                 None) == [2]
    live = await _until(stream, lambda e, d: e == "match")
    assert [(e, d["id"], d["source"]) for e, d in live] == [("match", 2, "watch")]
    stream.close()

    # pause, edit while paused (version 2, its hunt paused), abort it, resume
    r = await client.post(f"/api/v1/triggers/{tid}/pause", headers=bearer(analyst))
    assert ((await r.json())["state"], (await r.json())["hunt"]["status"]) == \
        ("paused", "finished")
    resp = await client.put(f"/api/v1/triggers/{tid}", json={
        "name": "web", "indicators": {"ips": ["10.0.0.0/8"]}}, headers=bearer(analyst))
    v2 = (await resp.json())["trigger"]
    assert (resp.status, v2["version"], [(h["version"], h["status"]) for h in v2["hunts"]]) \
        == (200, 2, [(1, "finished"), (2, "paused")])
    r = await client.post(f"/api/v1/triggers/{tid}/abort", headers=bearer(analyst))
    assert (r.status, (await r.json())["hunt"]["status"]) == (200, "aborted")
    again = await client.post(f"/api/v1/triggers/{tid}/abort", headers=bearer(analyst))
    assert (again.status, (await again.json())["code"]) == (409, "trigger_conflict")
    r = await client.post(f"/api/v1/triggers/{tid}/resume", headers=bearer(analyst))
    assert (r.status, (await r.json())["state"]) == (200, "active")
    v2_matches = await (await client.get(f"/api/v1/triggers/{tid}/matches?version=2",
                                         headers=bearer(viewer))).json()
    assert v2_matches == {"matches": [], "next_after": 0}

    # another tenant sees nothing of it
    globex = tokens.headers("globex", "admin")
    for path in ("", "/matches", "/events"):
        r = await client.get(f"/api/v1/triggers/{tid}{path}", headers=globex)
        assert (r.status, (await r.json())["code"]) == (404, "not_found")
    assert await (await client.get("/api/v1/triggers", headers=globex)).json() == \
        {"triggers": []}
    # delete (admin): gone from list and show
    assert (await client.delete(f"/api/v1/triggers/{tid}", headers=bearer(analyst))).status \
        == 403
    assert (await client.delete(f"/api/v1/triggers/{tid}",
                                headers=tokens.headers("acme", "admin"))).status == 204
    assert (await client.get(f"/api/v1/triggers/{tid}", headers=bearer(viewer))).status == 404
    assert await (await client.get("/api/v1/triggers", headers=bearer(viewer))).json() == \
        {"triggers": []}


async def test_bad_input_names_the_field_or_the_line(aiohttp_client, tmp_path):
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    h = tokens.headers("acme", "analyst")

    async def post(body):
        r = await client.post("/api/v1/triggers", json=body, headers=h)
        return r.status, await r.json()

    status, err = await post({"name": "x", "indicators": {"ips": ["10.0.0.1", "300.1.1.1"]}})
    assert (status, err) == (400, {
        "code": "invalid_trigger", "message": "body: indicators.ips[1]: '300.1.1.1' is no IP "
        "address or CIDR network", "details": {"field": "indicators.ips[1]"}})
    status, err = await post({"name": "x"})
    assert (status, err["message"]) == (400, "body: looks for nothing: give suricata_rules, "
                                        "yara_rules, bpf or indicators")
    status, err = await post({"name": "x", "indicator_files": [
        {"format": "text", "content": "10.0.0.1\nbad..name\n", "name": "feed.txt"}]})
    assert (status, err["code"], err["details"]) == (400, "invalid_indicators", {
        "problems": [{"file": "feed.txt", "where": "2", "line": 2, "message":
                      "domain: 'bad..name' is no domain name (a leading '*.' matches "
                      "subdomains)"}], "more_problems": 0})
    status, made = await post({"name": "x", "indicator_files": [
        {"format": "text", "content": "10.0.0.1\nbad..name\n", "skip_bad": True}]})
    assert (status, made["trigger"]["definition"]["indicators"]["ips"],
            len(made["imports"][0]["problems"])) == (201, ["10.0.0.1"], 1)
    status, err = await post({"name": "x", "bpf": "tcp"})
    assert (status, err["code"]) == (409, "trigger_conflict")
    status, err = await post({"name": "y", "bpf": "tcp", "suricata_file": "/etc/passwd"})
    assert (status, err["code"]) == (400, "invalid_body")
    r = await client.put("/api/v1/triggers/1", json={
        "name": "x", "bpf": "tcp", "notify": [{"type": "webhook", "url": "http://127.0.0.1/h",
                                               "secret": "(set)"}]}, headers=h)
    assert (r.status, (await r.json())["message"]) == (
        400, "notify: webhook 'http://127.0.0.1/h': secret '(set)' keeps a stored secret, "
        "and this webhook has none")
    r = await client.get("/api/v1/triggers/0", headers=h)
    assert (r.status, (await r.json())["details"]) == (400, {"parameter": "trigger_id"})
