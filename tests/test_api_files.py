"""Files and emails carved from a query's result, over the API: hashes equal the peer
tools' (corpus manifest), downloads are attachments a browser never renders, .eml is the
message as carried, and everything is reachable only through the caller's tenant."""

from __future__ import annotations

import email
import hashlib

import pytest
from apiutil import Tokens, bearer, upload, wait_done
from conftest import CASES, corpus_file
from pcapwire.api import ApiConfig, create_app


@pytest.fixture
async def env(aiohttp_client, tmp_path):
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    return client, tokens


async def _query(client, tokens, case_id: str, case: str) -> dict:
    tok = tokens["acme", "analyst"]
    await upload(client, corpus_file(case_id), tok)
    q = await (await client.post("/api/v1/queries", json={"case": case},
                                 headers=bearer(tok))).json()
    assert (await wait_done(client, q["id"], tok))["status"] == "done"
    return q


async def test_http_file_hash_and_safe_download(env):
    client, tokens = env
    q = await _query(client, tokens, "zeek-http-get", "web")
    viewer = tokens.headers("acme", "viewer")
    body = await (await client.get(f"/api/v1/queries/{q['id']}/files", headers=viewer)).json()
    expected = CASES["zeek-http-get"]["expect"]["files"][0]
    (f,) = [f for f in body["files"] if f["sha256"] == expected["sha256"]]
    assert (f["size"], f["protocol"], f["query_id"]) == (expected["size"], "http", q["id"])
    assert "path" not in f and f["triage"] == {"verdicts": 0, "max_severity": None,
                                               "analyzers": []}
    resp = await client.get(f"/api/v1/queries/{q['id']}/files/{f['sha256']}/content",
                            headers=viewer)
    data = await resp.read()
    assert hashlib.sha256(data).hexdigest() == expected["sha256"]
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Disposition"].startswith("attachment; filename=")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Security-Policy"].startswith("sandbox")
    meta = await (await client.get(f"/api/v1/queries/{q['id']}/files/{f['sha256']}",
                                   headers=viewer)).json()
    assert [r["id"] for r in meta["records"]] == [f["id"]]
    case = await (await client.get("/api/v1/cases/web", headers=viewer)).json()
    assert f["sha256"] in {x["sha256"] for x in case["files"]}
    found = await (await client.get("/api/v1/cases", params={"hash": expected["sha256"]},
                                    headers=viewer)).json()
    assert [c["case"] for c in found["cases"]] == ["web"]
    missing = await client.get(f"/api/v1/queries/{q['id']}/files/{'0' * 64}/content",
                               headers=viewer)
    assert missing.status == 404
    other = await client.get(f"/api/v1/queries/{q['id']}/files/{f['sha256']}/content",
                             headers=tokens.headers("globex", "admin"))
    assert other.status == 404


async def test_smtp_email_and_attachment(env):
    client, tokens = env
    q = await _query(client, tokens, "arkime-smtp-base64-zip", "mail")
    viewer = tokens.headers("acme", "viewer")
    expected = CASES["arkime-smtp-base64-zip"]["expect"]["emails"][0]
    (mail,) = (await (await client.get(f"/api/v1/queries/{q['id']}/emails",
                                       headers=viewer)).json())["emails"]
    assert (mail["subject"], mail["mail_from"], mail["rcpt_to"]) == (
        expected["subject"], expected["mail_from"], expected["rcpt_to"])
    eml = await client.get(f"/api/v1/queries/{q['id']}/emails/{mail['id']}/eml",
                           headers=viewer)
    raw = await eml.read()
    assert eml.headers["Content-Type"] == "message/rfc822"
    assert eml.headers["Content-Disposition"].startswith("attachment;")
    assert hashlib.sha256(raw).hexdigest() == mail["sha256"]
    assert email.message_from_bytes(raw)["Message-ID"].strip("<>") == expected["message_id"]
    files = (await (await client.get(f"/api/v1/queries/{q['id']}/files",
                                     headers=viewer)).json())["files"]
    attachment = expected["attachments"][0]
    zipped = [f for f in files if f["sha256"] == attachment["sha256"]]
    assert [f["filename"] for f in zipped] == ["a.zip"]
    resp = await client.get(f"/api/v1/queries/{q['id']}/files/{attachment['sha256']}/content",
                            headers=viewer)
    assert 'filename="a.zip"' in resp.headers["Content-Disposition"]
    assert hashlib.md5(await resp.read()).hexdigest() == attachment["md5"]  # noqa: S324


async def test_files_of_a_running_or_failed_query_are_refused(aiohttp_client, tmp_path):
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path,
                                                       max_query_result_bytes=100)))
    tok = tokens["acme", "analyst"]
    await upload(client, corpus_file("zeek-http-get"), tok)
    q = await (await client.post("/api/v1/queries", json={}, headers=bearer(tok))).json()
    assert (await wait_done(client, q["id"], tok))["status"] == "error"
    resp = await client.get(f"/api/v1/queries/{q['id']}/files", headers=bearer(tok))
    assert (resp.status, (await resp.json())["code"]) == (409, "no_result")
