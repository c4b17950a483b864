"""REST API: ingest by upload, queries, PCAP streaming, cancel, flows, BPF check.

Results are compared byte for byte with tcpdump on the same capture."""

from __future__ import annotations

import aiohttp
import pytest
from apiutil import PCAP_TYPE, Tokens, bearer, upload, wait_done
from conftest import corpus_file
from pcaputil import read_records, tcpdump
from pcapwire.api import ApiConfig, create_app
from pcapwire.api.keys import QUERIES
from pcapwire.records import FlowKey
from pcapwire.synth import generate

HTTP_CASE = "zeek-http-get"


@pytest.fixture
def tokens(tmp_path):
    return Tokens(tmp_path)


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))


async def test_upload_counts_every_packet(client, tokens):
    path = corpus_file(HTTP_CASE)
    summary = await upload(client, path, tokens["acme", "analyst"], filename="x.pcap")
    assert summary["packets"] == len(read_records(tcpdump(path))[1])
    assert summary["errors"] == [] and summary["sensor"] is None
    again = await upload(client, path, tokens["acme", "analyst"])
    assert again["already_ingested"] == 1 and again["packets"] == 0


async def test_bpf_query_result_is_tcpdumps(client, tokens):
    path = corpus_file(HTTP_CASE)
    tok = tokens["acme", "analyst"]
    await upload(client, path, tok)
    resp = await client.post("/api/v1/queries", headers=bearer(tok),
                             json={"bpf": "tcp port 80", "case": "c1", "event": "e1"})
    assert resp.status == 202
    q = await resp.json()
    assert resp.headers["Location"] == f"/api/v1/queries/{q['id']}"
    assert (q["case"], q["event"], len(q["id"])) == ("c1", "e1", 32)
    pcap = await client.get(q["links"]["pcap"], headers=bearer(tok))
    assert pcap.status == 200 and pcap.headers["Content-Type"] == PCAP_TYPE
    assert pcap.headers["Content-Disposition"].startswith("attachment;")
    expected = tcpdump(path, "tcp port 80")
    assert await pcap.read() == expected
    done = await wait_done(client, q["id"], tok)
    assert done["status"] == "done"
    assert done["packets"] == len(read_records(expected)[1])
    again = await client.get(q["links"]["pcap"], headers=bearer(tok))  # from the stored result
    assert await again.read() == expected


async def test_five_tuple_query_from_flow_index(client, tokens):
    path = corpus_file(HTTP_CASE)
    tok = tokens["acme", "viewer"]
    await upload(client, path, tokens["acme", "analyst"])
    flows = (await (await client.get("/api/v1/flows", params={"proto": "tcp"},
                                     headers=bearer(tok))).json())["flows"]
    assert flows and all(f["proto"] == "tcp" for f in flows)
    f = flows[0]
    ft = {k: f[k] for k in ("proto", "src_ip", "src_port", "dest_ip", "dest_port")}
    resp = await client.post("/api/v1/queries", json={"five_tuple": ft},
                             headers=bearer(tokens["acme", "analyst"]))
    q = await resp.json()
    got = await (await client.get(q["links"]["pcap"], headers=bearer(tok))).read()
    assert got == tcpdump(path, FlowKey.from_dict(ft).bpf())


async def test_bad_bpf_is_a_400_with_libpcaps_message(client, tokens):
    tok = tokens["acme", "analyst"]
    resp = await client.post("/api/v1/queries", json={"bpf": "tcp port"}, headers=bearer(tok))
    body = await resp.json()
    assert resp.status == 400 and body["code"] == "invalid_query"
    assert "syntax error" in body["message"] and body["details"] == {}
    check = await client.post("/api/v1/queries/check", json={"bpf": "tcp port"},
                              headers=bearer(tokens["acme", "viewer"]))
    result = await check.json()
    assert result["valid"] is False and "syntax error" in result["error"]
    ok = await client.post("/api/v1/queries/check", json={"bpf": "tcp and port 80"},
                           headers=bearer(tokens["acme", "viewer"]))
    assert await ok.json() == {"valid": True, "error": None}


@pytest.mark.parametrize(("body", "headers", "status", "code"), [
    ({"bpf": "tcp", "colour": "red"}, {}, 400, "invalid_body"),
    ({"hosts": ["not-an-ip"]}, {}, 400, "invalid_body"),
    ({"nets": ["10.0.0.0/99"]}, {}, 400, "invalid_query"),
    ({"start": "yesterday"}, {}, 400, "invalid_query"),
    ({"start": "9999-01-01T00:00:00"}, {}, 400, "invalid_query"),
    ({"start": 20, "end": 10}, {}, 400, "invalid_query"),
    ("{not json", {"Content-Type": "application/json"}, 400, "invalid_json"),
    ("bpf=tcp", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
])
async def test_bad_query_bodies(client, tokens, body, headers, status, code):
    kw = {"json": body} if isinstance(body, dict) else {"data": body}
    resp = await client.post("/api/v1/queries", headers={**bearer(tokens["acme", "analyst"]),
                                                         **headers}, **kw)
    err = await resp.json()
    assert (resp.status, err["code"]) == (status, code)
    assert set(err) == {"code", "message", "details"}
    if code == "invalid_body":
        assert err["details"]["errors"][0]["path"] in ("/", "/hosts/0")


async def test_pcap_streams_while_the_query_runs_and_cancel_cuts_it(client, tokens, tmp_path):
    """The first PCAP bytes arrive while the query is still running; cancelling it then
    ends the download without a final chunk (so no client takes it for a whole result)."""
    cap = tmp_path / "big.pcap"
    generate(cap, 48 * 2**20, seed=3)
    tok = tokens["acme", "analyst"]
    await upload(client, cap, tok)
    resp = await client.post("/api/v1/queries", headers=bearer(tok),
                             json={"protos": ["tcp"], "chunk_bytes": 4096})
    q = await resp.json()
    job = client.app[QUERIES].get("acme", q["id"])
    pcap = await client.get(q["links"]["pcap"], headers=bearer(tok))
    assert pcap.headers["Transfer-Encoding"] == "chunked"
    first = await pcap.content.readexactly(24 + 16)
    assert first[:4] == bytes.fromhex("d4c3b2a1")
    assert job.status == "running" and client.app[QUERIES].slots.running["acme"] == 1
    cancel = await client.post(f"/api/v1/queries/{q['id']}/cancel", headers=bearer(tok))
    assert cancel.status == 200 and (await cancel.json())["status"] == "cancelled"
    with pytest.raises(aiohttp.ClientPayloadError):
        await pcap.read()
    assert client.app[QUERIES].slots.running["acme"] == 0
    again = await client.post(f"/api/v1/queries/{q['id']}/cancel", headers=bearer(tok))
    assert (again.status, (await again.json())["code"]) == (409, "query_finished")
    gone = await client.get(q["links"]["pcap"], headers=bearer(tok))
    assert (gone.status, (await gone.json())["code"]) == (409, "query_cancelled")


async def test_history_lists_and_filters(client, tokens):
    tok = tokens["acme", "analyst"]
    await upload(client, corpus_file(HTTP_CASE), tok)
    ids = {}
    for case, event in (("inc-1", "alert-a"), ("inc-1", "alert-b"), ("inc-2", "other")):
        r = await client.post("/api/v1/queries", json={"case": case, "event": event,
                                                       "bpf": "tcp"}, headers=bearer(tok))
        q = await r.json()
        await wait_done(client, q["id"], tok)
        ids[event] = q["id"]
    body = await (await client.get("/api/v1/queries", params={"case": "inc-1"},
                                   headers=bearer(tok))).json()
    assert body["total"] == 2
    assert {q["id"] for q in body["queries"]} == {ids["alert-a"], ids["alert-b"]}
    body = await (await client.get("/api/v1/queries", params={"q": "ther"},
                                   headers=bearer(tok))).json()
    assert [q["id"] for q in body["queries"]] == [ids["other"]]
    paged = await (await client.get("/api/v1/queries", params={"limit": 1, "offset": 1},
                                    headers=bearer(tok))).json()
    assert paged["total"] == 3 and len(paged["queries"]) == 1
    one = await (await client.get(f"/api/v1/queries/{ids['other']}",
                                  headers=bearer(tok))).json()
    assert (one["status"], one["spec"]["bpf"], one["progress"]) == ("done", "tcp", 1.0)


async def test_query_without_workflows_has_an_empty_verdict_list(client, tokens):
    tok = tokens["acme", "analyst"]
    await upload(client, corpus_file(HTTP_CASE), tok)
    q = await (await client.post("/api/v1/queries", json={}, headers=bearer(tok))).json()
    end = await wait_done(client, q["id"], tok)
    assert end["status"] == "done" and end["verdicts"] == 0
    body = await (await client.get(q["links"]["verdicts"], headers=bearer(tok))).json()
    assert body == {"verdicts": []}


async def test_flows_filters(client, tokens):
    path = corpus_file("suricata-dns-udp-cname-a")
    await upload(client, path, tokens["acme", "analyst"])
    tok = tokens["acme", "viewer"]
    all_flows = (await (await client.get("/api/v1/flows", headers=bearer(tok))).json())["flows"]
    udp = (await (await client.get("/api/v1/flows", params={"proto": "udp", "port": "53"},
                                   headers=bearer(tok))).json())["flows"]
    assert udp and all(f["proto"] == "udp" and 53 in (f["src_port"], f["dest_port"])
                       for f in udp)
    assert len(all_flows) >= len(udp)
    bad = await client.get("/api/v1/flows", params={"host": "nope"}, headers=bearer(tok))
    assert (bad.status, (await bad.json())["code"]) == (400, "invalid_query")
