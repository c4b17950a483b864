"""GET /api/v1/search: a tenant's uploads are indexed by the ingest (its child process
runs `pcapwire ingest`, whose hook indexes the new flows) and searchable by its viewers;
another tenant sees none of it; a query that does not parse is a 400 naming the column;
parameters are checked; CLI and API give the same hits."""

from __future__ import annotations

from apiutil import Tokens, bearer, upload
from conftest import CASES, corpus_file
from pcapwire.api import ApiConfig, create_app
from pcapwire.cli import main

CAPTURE = "zeek-http-get"


async def test_tenants_search_their_own_index(aiohttp_client, tmp_path, capsys) -> None:
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    await upload(client, corpus_file(CAPTURE), tokens["acme", "analyst"])
    conv = CASES[CAPTURE]["computed"]["conversations"]["conversations"][0]
    q = f"source.ip:{conv['src']} AND destination.port:{conv['dport']}"

    resp = await client.get("/api/v1/search", params={"q": q},
                            headers=bearer(tokens["acme", "viewer"]))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    (hit,) = body["hits"]
    assert (body["total"], body["total_exact"]) == (1, True)
    assert hit["dataset"] == "pcapwire.flow"
    assert hit["doc"]["network"]["packets"] == conv["packets"]
    assert hit["pivots"]["pcap"]["five_tuple"] == {
        "proto": "tcp", "src_ip": conv["src"], "src_port": conv["sport"],
        "dest_ip": conv["dst"], "dest_port": conv["dport"]}
    assert hit["pivots"]["flow_id"] == hit["doc"]["pcapwire"]["flow"]["id"]
    # the pivot is a query body the API takes as it is: it returns the flow's packets
    query = await client.post("/api/v1/queries", json=hit["pivots"]["pcap"],
                              headers=bearer(tokens["acme", "analyst"]))
    assert query.status == 202, await query.text()
    pcap = await (await client.get((await query.json())["links"]["pcap"],
                                   headers=bearer(tokens["acme", "analyst"]))).read()
    assert len(pcap) > 24

    # globex: an index of its own, empty
    globex = await client.get("/api/v1/search", params={"q": q},
                              headers=bearer(tokens["globex", "admin"]))
    assert (await globex.json()) == {"hits": [], "total": 0, "total_exact": True}
    await upload(client, corpus_file("suricata-dns-udp-cname-a"), tokens["globex", "analyst"])
    globex = await client.get("/api/v1/search", params={"q": "event.dataset:pcapwire.flow"},
                              headers=bearer(tokens["globex", "viewer"]))
    assert [h["doc"]["destination"]["port"] for h in (await globex.json())["hits"]] == [53]
    # acme's case filter: flows belong to no case
    resp = await client.get("/api/v1/search", params={"q": q, "case": "IR-1"},
                            headers=bearer(tokens["acme", "viewer"]))
    assert (await resp.json())["hits"] == []

    # the CLI over acme's directory finds the same
    acme_dir = tmp_path / "tenants" / "acme"
    assert main(["--data-dir", str(acme_dir), "search", q, "--json"]) == 0
    assert [line for line in capsys.readouterr().out.splitlines() if line]
    assert main(["--data-dir", str(acme_dir), "search", "url.domian:x"]) == 2
    assert "column 1: unknown field 'url.domian'" in capsys.readouterr().err


async def test_bad_queries_and_parameters(aiohttp_client, tmp_path) -> None:
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    await upload(client, corpus_file(CAPTURE), tokens["acme", "analyst"])
    viewer = bearer(tokens["acme", "viewer"])
    resp = await client.get("/api/v1/search", params={"q": "url.domain:x AND (b OR"},
                            headers=viewer)
    assert resp.status == 400
    err = await resp.json()
    assert err["code"] == "invalid_query"
    assert err["details"]["column"] == 23
    assert err["message"].endswith("  url.domain:x AND (b OR\n  " + " " * 22 + "^")
    for params, name in (({}, "q"), ({"q": " "}, "q"), ({"q": "x", "limit": "0"}, "limit"),
                         ({"q": "x", "limit": "many"}, "limit"), ({"q": "x", "case": ""},
                                                                   "case"),
                         ({"q": "x" * 4097}, "q")):
        resp = await client.get("/api/v1/search", params=params, headers=viewer)
        assert resp.status == 400, params
        assert (await resp.json())["details"]["parameter"] == name
    resp = await client.get("/api/v1/search", params={"q": "x"})
    assert resp.status == 401
