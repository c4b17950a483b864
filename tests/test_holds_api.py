"""Legal holds over the API: create (analyst), list and show (viewer), download a part,
release (admin, with a reason), the custody log's actor, other tenants."""

from __future__ import annotations

import json

from apiutil import PCAP_TYPE, Tokens, bearer, upload
from conftest import corpus_file
from pcaputil import read_records, sha256, tcpdump
from pcapwire import custody
from pcapwire.api import ApiConfig, create_app
from pcapwire.api.authdb import TOKEN_RE


async def test_hold_lifecycle_over_the_api(aiohttp_client, tmp_path) -> None:
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    cap = corpus_file("zeek-http-get")
    analyst, admin = tokens["acme", "analyst"], tokens.headers("acme", "admin")
    await upload(client, cap, analyst)
    resp = await client.post("/api/v1/holds", headers=bearer(analyst), json={
        "case": "IR 9/x", "reason": "subpoena 12", "bpf": "tcp", "ports": [80]})
    hold = await resp.json()
    assert resp.status == 201, hold
    expected = tcpdump(cap, "tcp and port 80")
    assert (hold["case"], hold["state"], hold["packets"]) == (
        "IR 9/x", "open", len(read_records(expected)[1]))
    assert hold["selection"] == {"bpf": "tcp", "ports": [80]}
    part = hold["parts"][0]
    assert part["url"] == f"/api/v1/holds/{hold['id']}/parts/1"
    assert part["sha256"] == sha256(expected) and part["size"] == len(expected)

    viewer = tokens.headers("acme", "viewer")
    got = await client.get(part["url"], headers=viewer)
    assert got.status == 200 and got.content_type == PCAP_TYPE
    assert await got.read() == expected
    assert (await client.get(f"/api/v1/holds/{hold['id']}/parts/2", headers=viewer)
            ).status == 404
    listed = await (await client.get("/api/v1/holds", headers=viewer)).json()
    assert [h["id"] for h in listed["holds"]] == [hold["id"]]
    assert (await (await client.get("/api/v1/holds", params={"state": "released"},
                                    headers=viewer)).json())["holds"] == []

    # other tenants see nothing of it
    globex = tokens.headers("globex", "admin")
    for url in (f"/api/v1/holds/{hold['id']}", part["url"]):
        assert (await client.get(url, headers=globex)).status == 404
    assert (await client.post(f"/api/v1/holds/{hold['id']}/release", json={"reason": "x"},
                              headers=globex)).status == 404
    assert (await (await client.get("/api/v1/holds", headers=globex)).json())["holds"] == []

    # release: admin only, with a reason, once
    url = f"/api/v1/holds/{hold['id']}/release"
    assert (await client.post(url, json={"reason": "x"}, headers=bearer(analyst))
            ).status == 403
    for body in ({}, {"reason": ""}, {"reason": "   "}):
        assert (await client.post(url, json=body, headers=admin)).status == 400, body
    done = await client.post(url, json={"reason": "case closed"}, headers=admin)
    released = await done.json()
    assert done.status == 200 and released["state"] == "released"
    assert released["released"]["reason"] == "case closed"
    assert (await client.post(url, json={"reason": "again"}, headers=admin)).status == 409
    assert await (await client.get(part["url"], headers=viewer)).read() == expected

    root = tmp_path / "tenants" / "acme"
    log = [json.loads(line) for line in custody.read(root, "IR 9/x")]
    analyst_id = TOKEN_RE.fullmatch(analyst)[1]
    admin_id = TOKEN_RE.fullmatch(tokens["acme", "admin"])[1]
    viewer_id = TOKEN_RE.fullmatch(tokens["acme", "viewer"])[1]
    download = ("export", f"token:{viewer_id} (acme/viewer)")
    assert [(e["action"], e["actor"]) for e in log] == [
        ("hold.create", f"token:{analyst_id} (acme/analyst)"), download,
        ("hold.release", f"token:{admin_id} (acme/admin)"), download]
    assert log[1]["objects"] == [{"kind": "export", "path": log[0]["objects"][0]["path"],
                                  "sha256": sha256(expected), "size": len(expected)}]


async def test_bad_holds_are_refused(aiohttp_client, tmp_path) -> None:
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    analyst = tokens["acme", "analyst"]
    await upload(client, corpus_file("zeek-http-get"), analyst)
    for body, code in (({"case": "c", "reason": "r"}, "invalid_query"),
                       ({"case": "c", "reason": "r", "flow_ids": [99]}, "invalid_query"),
                       ({"case": "c", "reason": "r", "bpf": "udp", "end": 1}, "invalid_query"),
                       ({"case": "c", "bpf": "udp"}, "invalid_body")):
        resp = await client.post("/api/v1/holds", json=body, headers=bearer(analyst))
        assert (resp.status, (await resp.json())["code"]) == (400, code), body
    for url in ("/api/v1/holds/x", "/api/v1/holds/0", "/api/v1/holds/1/parts/x"):
        assert (await client.get(url, headers=bearer(analyst))).status == 400, url
    assert (await client.get("/api/v1/holds/1", headers=bearer(analyst))).status == 404
