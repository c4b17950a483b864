"""The API's work runs as jobs in ``pcapwire worker`` children: the job's error codes
become the same HTTP answers as before (a store another process ingests into: 409
``ingest_busy``; a stored result that is no capture: 422 ``carve_failed`` naming it)."""

from __future__ import annotations

from apiutil import Tokens, bearer, upload, wait_done
from conftest import corpus_file
from pcapwire.api import ApiConfig, create_app
from pcapwire.store import Store

PCAP_TYPE = "application/vnd.tcpdump.pcap"


async def test_ingest_into_a_store_another_process_ingests_into_is_busy(aiohttp_client,
                                                                         tmp_path):
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    headers = {**tokens.headers("acme", "analyst"), "Content-Type": PCAP_TYPE}
    data = corpus_file("zeek-http-get").read_bytes()
    assert (await client.get("/api/v1/hashlists", headers=headers)).status == 200  # store made
    with Store(tmp_path / "tenants" / "acme") as store, store.ingest_lock():
        resp = await client.post("/api/v1/ingest", data=data, headers=headers)
        body = await resp.json()
    assert (resp.status, body["code"]) == (409, "ingest_busy")
    assert "another ingest is running" in body["message"]
    again = await client.post("/api/v1/ingest", data=data, headers=headers)
    assert (again.status, (await again.json())["packets"]) == (200, 14)
    assert list((tmp_path / "tenants" / "acme" / "uploads").iterdir()) == []


async def test_a_result_that_is_no_capture_fails_to_carve_with_422(aiohttp_client, tmp_path):
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    tok = tokens["acme", "analyst"]
    await upload(client, corpus_file("zeek-http-get"), tok)
    q = await (await client.post("/api/v1/queries", json={"case": "web"},
                                 headers=bearer(tok))).json()
    assert (await wait_done(client, q["id"], tok))["status"] == "done"
    result = tmp_path / "tenants" / "acme" / "results" / f"{q['id']}.pcap"
    result.write_bytes(b"damaged on disk" * 10)
    resp = await client.get(f"/api/v1/queries/{q['id']}/files", headers=bearer(tok))
    body = await resp.json()
    assert (resp.status, body["code"]) == (422, "carve_failed")
    assert body["message"].startswith("carving the result failed: ")
    assert f"{q['id']}.pcap" in body["message"], body
