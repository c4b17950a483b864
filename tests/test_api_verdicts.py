"""Workflows run by the API on a query's chunks, with the real Suricata: verdicts arrive on
the live stream, are kept in the tenant's case store (so they survive a restart), drive the
case search by severity, and go into the bundle as ECS JSON lines."""

from __future__ import annotations

import io
import json
import shutil
import zipfile

import pytest
from apiutil import Tokens, bearer, suricata_workflow_dir, upload, wait_done
from conftest import corpus_file
from pcapwire.api import ApiConfig, create_app
from pcapwire.records import FlowKey

HTTP_CASE = "zeek-http-get"
HTTP_FLOW = FlowKey(6, "141.142.228.5", 59856, "192.150.187.43", 80)
pytestmark = pytest.mark.skipif(shutil.which("suricata") is None,
                                reason="needs suricata (scripts/setup.sh installs it)")


async def test_suricata_workflow_verdicts_through_the_api(aiohttp_client, tmp_path):
    data = tmp_path / "data"
    config = ApiConfig(data_dir=data, workflow_dirs=[suricata_workflow_dir(tmp_path)])
    tokens = Tokens(data)
    client = await aiohttp_client(create_app(config))
    tok = tokens["acme", "analyst"]
    await upload(client, corpus_file(HTTP_CASE), tok)
    q = await (await client.post("/api/v1/queries", json={
        "bpf": "tcp", "case": "ir-9", "event": "beacon", "workflows": ["ids"]},
        headers=bearer(tok))).json()
    end = await wait_done(client, q["id"], tok)
    assert (end["status"], end["verdicts"]) == ("done", 1)
    (run,) = end["runs"]
    assert (run["workflow"], run["status"], run["verdicts"]) == ("ids", "ok", 1)
    (v,) = (await (await client.get(q["links"]["verdicts"], params={"format": "native"},
                                    headers=bearer(tok))).json())["verdicts"]
    assert (v["analyzer"], v["signature_id"], v["signature"]) == (
        "suricata", "1000001", "pcapwire GET")
    assert FlowKey.from_dict(v["flow"]) in (HTTP_FLOW, HTTP_FLOW.reversed())
    assert (v["case"], v["query_id"], v["run_id"]) == ("ir-9", q["id"], run["run_id"])
    (e,) = (await (await client.get(q["links"]["verdicts"], headers=bearer(tok))).json()
            )["verdicts"]  # ECS by default, as `pcapwire run --json` prints it
    assert (e["rule"]["id"], e["rule"]["name"], e["pcapwire"]["analyzer"]) == (
        "1000001", "pcapwire GET", "suricata")
    assert (e["pcapwire"]["case"], e["pcapwire"]["query_id"], e["pcapwire"]["run_id"]) == (
        "ir-9", q["id"], run["run_id"])
    await client.close()

    # A new server on the same data directory: the verdicts come from the case store.
    client = await aiohttp_client(create_app(config))
    viewer = tokens.headers("acme", "viewer")
    stored = await (await client.get(q["links"]["verdicts"], params={"format": "native"},
                                     headers=viewer)).json()
    assert stored["verdicts"] == [v]
    stored = await (await client.get(q["links"]["verdicts"], headers=viewer)).json()
    assert stored["verdicts"] == [e]
    again = await (await client.get(q["links"]["self"], headers=viewer)).json()
    assert (again["live"], again["verdicts"], again["runs"][0]["status"]) == (False, 1, "ok")
    sev = v["severity"]
    found = await (await client.get("/api/v1/cases", params={"severity": sev},
                                    headers=viewer)).json()
    assert [c["case"] for c in found["cases"]] == ["ir-9"]
    assert found["cases"][0]["max_severity"] == sev
    higher = {"info": "low", "low": "medium", "medium": "high", "high": "critical"}.get(sev)
    if higher:
        none = await (await client.get("/api/v1/cases", params={"severity": higher},
                                       headers=viewer)).json()
        assert none["cases"] == []
    bundle = zipfile.ZipFile(io.BytesIO(await (await client.get(
        "/api/v1/cases/ir-9/bundle", headers=viewer)).read()))
    (line,) = bundle.read("verdicts.jsonl").decode().splitlines()
    ecs = json.loads(line)
    assert (ecs["rule"]["id"], ecs["pcapwire"]["query_id"]) == ("1000001", q["id"])
    case_json = json.loads(bundle.read("case.json"))
    assert case_json["queries"][0]["runs"][0]["workflow"] == "ids"


async def test_live_stream_replays_from_last_event_id(aiohttp_client, tmp_path):
    data = tmp_path / "data"
    tokens = Tokens(data)
    client = await aiohttp_client(create_app(ApiConfig(
        data_dir=data, workflow_dirs=[suricata_workflow_dir(tmp_path)])))
    tok = tokens["acme", "analyst"]
    await upload(client, corpus_file(HTTP_CASE), tok)
    q = await (await client.post("/api/v1/queries", json={"workflows": ["ids"]},
                                 headers=bearer(tok))).json()
    await wait_done(client, q["id"], tok)
    url = q["links"]["verdict_stream"]
    first = await (await client.get(url, headers=bearer(tok))).text()
    assert first.count("event: verdict\n") == 1 and "id: 0\n" in first
    resumed = await (await client.get(url, headers={**bearer(tok), "Last-Event-ID": "0"})
                     ).text()
    assert "event: verdict\n" not in resumed and "event: end\n" in resumed


async def test_workflows_on_a_stored_result(aiohttp_client, tmp_path):
    data = tmp_path / "data"
    tokens = Tokens(data)
    client = await aiohttp_client(create_app(ApiConfig(
        data_dir=data, workflow_dirs=[suricata_workflow_dir(tmp_path)])))
    tok = tokens["acme", "analyst"]
    await upload(client, corpus_file(HTTP_CASE), tok)
    q = await (await client.post("/api/v1/queries", json={"bpf": "tcp", "case": "c2"},
                                 headers=bearer(tok))).json()
    assert (await wait_done(client, q["id"], tok))["verdicts"] == 0
    resp = await client.post(f"/api/v1/queries/{q['id']}/run", json={"workflows": ["ids"]},
                             headers=bearer(tok))
    rerun = await resp.json()
    assert resp.status == 202 and rerun["id"] != q["id"]
    assert (rerun["case"], rerun["spec"]["rerun_of"]) == ("c2", q["id"])
    end = await wait_done(client, rerun["id"], tok)
    assert (end["status"], end["verdicts"], end["packets"]) == ("done", 1, 14)
    original = await (await client.get(q["links"]["pcap"], headers=bearer(tok))).read()
    assert await (await client.get(rerun["links"]["pcap"], headers=bearer(tok))).read() \
        == original
    # The rerun's result is the original's bytes: the case counts them once.
    tl = await (await client.get("/api/v1/cases/c2/timeline", headers=bearer(tok))).json()
    listed = await (await client.get("/api/v1/cases", headers=bearer(tok))).json()
    assert sum(tl["packets"]) == listed["cases"][0]["packets"] == 14
    case = await (await client.get("/api/v1/cases/c2", headers=bearer(tok))).json()
    assert len(case["queries"]) == 2 and len(case["files"]) == 1
    assert [v["pcapwire"]["query_id"] for v in case["verdicts"]] == [rerun["id"]]
    for body, status, code in (({"workflows": []}, 400, "invalid_body"),
                               ({"workflows": ["nope"]}, 400, "unknown_workflow")):
        bad = await client.post(f"/api/v1/queries/{q['id']}/run", json=body,
                                headers=bearer(tok))
        assert (bad.status, (await bad.json())["code"]) == (status, code)


async def test_workflows_triggered_by_case_name(aiohttp_client, tmp_path):
    wf_dir = suricata_workflow_dir(tmp_path)
    doc = (wf_dir / "ids.yaml").read_text()
    (wf_dir / "ids.yaml").write_text(doc.replace("steps:", '"on":\n  query:\n'
                                                 '    case: "ir-*"\nsteps:', 1))
    data = tmp_path / "data"
    tokens = Tokens(data)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=data, workflow_dirs=[wf_dir])))
    tok = tokens["acme", "analyst"]
    await upload(client, corpus_file(HTTP_CASE), tok)
    for body, runs in (({"case": "ir-7"}, ["ids"]), ({"case": "other"}, []),
                       ({"case": "ir-8", "workflows": []}, [])):
        q = await (await client.post("/api/v1/queries", json=body, headers=bearer(tok))).json()
        assert q["workflows"] == runs
        end = await wait_done(client, q["id"], tok)
        assert [r["workflow"] for r in end["runs"]] == runs
        assert end["verdicts"] == len(runs)
