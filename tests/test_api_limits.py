"""Named limits: body size, upload size, concurrent queries per tenant, result size, page
size; each answers with a JSON error that names it, and refuses without side effects."""

from __future__ import annotations

import pytest
from apiutil import PCAP_TYPE, ServerThread, Tokens, bearer, upload, wait_done
from conftest import corpus_file
from pcapwire.api import ApiConfig, create_app, limits
from pcapwire.api.keys import QUERIES


@pytest.fixture
def tokens(tmp_path):
    return Tokens(tmp_path)


async def make(aiohttp_client, tmp_path, **config):
    return await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path, **config)))


async def test_json_body_limit(aiohttp_client, tmp_path, tokens):
    client = await make(aiohttp_client, tmp_path, max_body_bytes=4096)
    resp = await client.post("/api/v1/queries", data=b'{"bpf": "' + b" " * 5000 + b'"}',
                             headers={**tokens.headers("acme", "analyst"),
                                      "Content-Type": "application/json"})
    body = await resp.json()
    assert (resp.status, body["code"]) == (413, "body_too_large")
    assert client.app[QUERIES].jobs == {}
    assert limits.MAX_JSON_BODY_BYTES == ApiConfig(data_dir=tmp_path).max_body_bytes


async def test_upload_limit_keeps_the_store_untouched(aiohttp_client, tmp_path, tokens):
    path = corpus_file("zeek-http-get")
    size = path.stat().st_size
    client = await make(aiohttp_client, tmp_path, max_upload_bytes=size - 1)
    tok = tokens.headers("acme", "analyst")
    resp = await client.post("/api/v1/ingest", data=path.read_bytes(),
                             headers={**tok, "Content-Type": PCAP_TYPE})
    body = await resp.json()
    assert (resp.status, body["code"], body["details"]["limit"]) == (
        413, "upload_too_large", size - 1)

    async def chunks():
        yield path.read_bytes()  # no Content-Length: the limit applies while streaming

    streamed = await client.post("/api/v1/ingest", data=chunks(),
                                 headers={**tok, "Content-Type": PCAP_TYPE})
    assert streamed.status == 413
    flows = await (await client.get("/api/v1/flows", headers=tok)).json()
    assert flows["flows"] == []
    assert list((tmp_path / "tenants" / "acme" / "uploads").iterdir()) == []


async def test_concurrent_query_limit_is_per_tenant(aiohttp_client, tmp_path, tokens):
    client = await make(aiohttp_client, tmp_path, max_concurrent_queries=1)
    slots = client.app[QUERIES].slots
    slots.acquire("acme")  # acme already runs its one query
    resp = await client.post("/api/v1/queries", json={},
                             headers=tokens.headers("acme", "analyst"))
    body = await resp.json()
    assert (resp.status, body["code"], body["details"]["limit"]) == (429, "too_many_queries", 1)
    other = await client.post("/api/v1/queries", json={},
                              headers=tokens.headers("globex", "analyst"))
    assert other.status == 202
    await wait_done(client, (await other.json())["id"], tokens["globex", "analyst"])
    assert slots.running == {"acme": 1}
    slots.release("acme")
    again = await client.post("/api/v1/queries", json={},
                              headers=tokens.headers("acme", "analyst"))
    assert again.status == 202


async def test_result_size_cap(aiohttp_client, tmp_path, tokens):
    client = await make(aiohttp_client, tmp_path, max_query_result_bytes=1000)
    tok = tokens["acme", "analyst"]
    await upload(client, corpus_file("zeek-http-get"), tok)
    q = await (await client.post("/api/v1/queries", json={"max_bytes": 10**9},
                                 headers=bearer(tok))).json()
    assert q["spec"]["max_bytes"] == 1000  # the server's cap wins
    end = await wait_done(client, q["id"], tok)
    assert (end["status"], end["error_code"]) == ("error", "result_too_large")
    assert "exceeds the limit of 1000 bytes" in end["error"]
    pcap = await client.get(q["links"]["pcap"], headers=bearer(tok))
    body = await pcap.json()
    assert (pcap.status, body["code"]) == (422, "result_too_large")
    small = await (await client.post("/api/v1/queries", json={"bpf": "tcp[13] & 2 != 0"},
                                     headers=bearer(tok))).json()
    assert (await wait_done(client, small["id"], tok))["status"] == "done"


@pytest.mark.parametrize(("url", "param"), [
    ("/api/v1/queries?limit=1001", "limit"), ("/api/v1/queries?limit=0", "limit"),
    ("/api/v1/flows?limit=x", "limit"), ("/api/v1/cases?offset=-1", "offset"),
])
async def test_page_size_limit(aiohttp_client, tmp_path, tokens, url, param):
    client = await make(aiohttp_client, tmp_path)
    resp = await client.get(url, headers=tokens.headers("acme", "viewer"))
    body = await resp.json()
    assert (resp.status, body["code"], body["details"]) == (
        400, "invalid_parameter", {"parameter": param})
    assert limits.MAX_PAGE_SIZE == 1000


def test_request_line_limit(tmp_path):
    """Up to MAX_REQUEST_LINE_BYTES the request reaches the application (its JSON 401);
    beyond, the HTTP layer refuses it with 400 before any handler runs."""
    import urllib.error
    import urllib.request

    with ServerThread(ApiConfig(data_dir=tmp_path)) as srv:
        def status(n: int) -> tuple[int, str]:
            url = f"{srv.url}/api/v1/queries?q={'x' * n}"
            try:
                with urllib.request.urlopen(url, timeout=30) as resp:
                    return resp.status, resp.headers["Content-Type"]
            except urllib.error.HTTPError as exc:
                return exc.code, exc.headers["Content-Type"]

        assert status(limits.MAX_REQUEST_LINE_BYTES - 100) == (401, "application/json; "
                                                                    "charset=utf-8")
        assert status(limits.MAX_REQUEST_LINE_BYTES + 100)[0] == 400


async def test_server_side_ingest_paths(aiohttp_client, tmp_path, tokens):
    allowed = tmp_path / "pcaps"
    allowed.mkdir()
    (allowed / "x.pcap").write_bytes(corpus_file("zeek-http-get").read_bytes())
    client = await make(aiohttp_client, tmp_path / "data", ingest_paths=[allowed])
    tokens = Tokens(tmp_path / "data")
    admin = tokens.headers("acme", "admin")
    ok = await client.post("/api/v1/ingest", json={"path": str(allowed / "x.pcap")},
                           headers=admin)
    assert ok.status == 200 and (await ok.json())["packets"] == 14
    for raw, status, code in ((str(tmp_path / "elsewhere.pcap"), 403, "path_not_allowed"),
                              (str(allowed / ".." / "data" / "auth.sqlite"), 403,
                               "path_not_allowed"),
                              ("bad\x00path", 400, "invalid_path")):
        resp = await client.post("/api/v1/ingest", json={"path": raw}, headers=admin)
        assert (resp.status, (await resp.json())["code"]) == (status, code)
    analyst = await client.post("/api/v1/ingest", json={"path": str(allowed / "x.pcap")},
                                headers=tokens.headers("acme", "analyst"))
    assert (analyst.status, (await analyst.json())["details"]) == (
        403, {"required_role": "admin"})
