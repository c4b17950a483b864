"""Chain of custody over the API: queries, PCAP downloads, carving and bundle downloads
land in the tenant's case log with the caller's token id; GET …/custody, POST
…/custody/verify and GET /api/v1/custody/public-key; the installation's key (not a
tenant's) signs bundles."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

from apiutil import Tokens, bearer, upload, wait_done
from conftest import corpus_file
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pcapwire.api import ApiConfig, create_app
from pcapwire.api.authdb import TOKEN_RE
from pcapwire.custody import signing

CASE = "IR-7"


def token_id(token: str) -> str:
    match = TOKEN_RE.fullmatch(token)
    assert match is not None
    return match[1]


async def test_api_actions_are_logged_and_verified(aiohttp_client, tmp_path: Path,
                                                   monkeypatch) -> None:
    monkeypatch.delenv(signing.KEY_ENV, raising=False)
    tokens = Tokens(tmp_path)
    analyst, viewer = tokens["acme", "analyst"], tokens["acme", "viewer"]
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    await upload(client, corpus_file("arkime-smtp-base64-zip"), analyst)
    q = await (await client.post("/api/v1/queries", json={"bpf": "tcp port 25", "case": CASE},
                                 headers=bearer(analyst))).json()
    await wait_done(client, q["id"], analyst)
    pcap = await (await client.get(f"/api/v1/queries/{q['id']}/pcap",
                                   headers=bearer(viewer))).read()
    files = await client.get(f"/api/v1/queries/{q['id']}/files", headers=bearer(viewer))
    assert files.status == 200
    bundle = await client.get(f"/api/v1/cases/{CASE}/bundle", headers=bearer(viewer))
    assert bundle.status == 200
    zipped = zipfile.ZipFile(io.BytesIO(await bundle.read()))

    log = await (await client.get(f"/api/v1/cases/{CASE}/custody",
                                  headers=bearer(viewer))).json()
    entries = log["entries"]
    assert [e["action"] for e in entries] == ["query", "export", "extract", "bundle"]
    assert log["total"] == 4
    who = {"analyst": f"token:{token_id(analyst)} (acme/analyst)",
           "viewer": f"token:{token_id(viewer)} (acme/viewer)"}
    assert [e["actor"] for e in entries] == [who["analyst"]] + [who["viewer"]] * 3
    assert analyst not in json.dumps(entries) and viewer not in json.dumps(entries)
    result = entries[0]["objects"][0]
    root = tmp_path / "tenants" / "acme"
    assert result == {"kind": "result", "path": f"results/{q['id']}.pcap",
                      "sha256": hashlib.sha256(pcap).hexdigest(), "size": len(pcap)}
    assert entries[1]["objects"][0]["sha256"] == hashlib.sha256(pcap).hexdigest()
    assert {o["path"].split("/")[0] for o in entries[2]["objects"]} == {"results"}
    manifest = zipped.read("MANIFEST.sha256")
    assert entries[3]["objects"][0]["sha256"] == hashlib.sha256(manifest).hexdigest()
    seals = [json.loads(line) for line in (root / "custody" / "store.jsonl").read_bytes()
             .splitlines()]
    assert [s["action"] for s in seals] == ["segment.seal"]
    assert entries[0]["objects"][1]["path"] == seals[0]["objects"][0]["path"]

    # the installation's key signs the tenant's bundle; the tenant has none of its own
    key = await (await client.get("/api/v1/custody/public-key", headers=bearer(viewer))).json()
    assert key["public_key_pem"].encode() == zipped.read("custody-public-key.pem")
    load_pem_public_key(zipped.read("custody-public-key.pem")).verify(  # type: ignore
        zipped.read("MANIFEST.sha256.sig"), manifest)
    assert (tmp_path / "custody" / signing.KEY_FILE).exists()
    assert not (root / "custody" / signing.KEY_FILE).exists()

    url = f"/api/v1/cases/{CASE}/custody/verify"
    assert (await client.post(url, headers=bearer(viewer))).status == 403
    ok = await (await client.post(url, headers=bearer(analyst))).json()
    assert ok["verified"] is True and ok["entries"] == 4, ok
    assert ok["files_checked"] == 1 + len(entries[2]["objects"]) + 1  # result, carved, segment
    stored = root / "results" / f"{q['id']}.pcap"
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))
    bad = await (await client.post(url, headers=bearer(analyst))).json()
    assert bad["verified"] is False
    assert bad["problems"][0]["path"] == f"results/{q['id']}.pcap"
    assert bad["problems"][0]["seq"] == 1 and bad["problems"][0]["action"] == "query"
    assert (await client.get("/api/v1/cases/nope/custody", headers=bearer(viewer))).status \
        == 404


async def test_a_stored_result_download_is_an_export(aiohttp_client, tmp_path: Path) -> None:
    """After a restart the PCAP comes from the stored result; what was sent is logged."""
    tokens = Tokens(tmp_path)
    analyst = tokens["acme", "analyst"]
    first = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    await upload(first, corpus_file("arkime-imap-inbox"), analyst)
    q = await (await first.post("/api/v1/queries", json={"case": CASE},
                                headers=bearer(analyst))).json()
    await wait_done(first, q["id"], analyst)
    await first.close()
    second = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    resp = await second.get(f"/api/v1/queries/{q['id']}/pcap", headers=bearer(analyst))
    body = await resp.read()
    assert resp.status == 200 and len(body) == int(resp.headers["Content-Length"])
    log = await (await second.get(f"/api/v1/cases/{CASE}/custody",
                                  headers=bearer(analyst))).json()
    export = log["entries"][-1]
    assert export["action"] == "export"
    assert export["objects"][0]["sha256"] == hashlib.sha256(body).hexdigest()
    assert export["objects"][0]["sha256"] == log["entries"][0]["objects"][0]["sha256"]
