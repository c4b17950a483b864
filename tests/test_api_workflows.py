"""Workflows and plugins over the API: the plugin host's analyzers (the built-in plugins,
loaded through their entry points), workflow directories, validation with line:column."""

from __future__ import annotations

import pytest
from apiutil import Tokens, bearer
from pcapwire.api import ApiConfig, create_app

GOOD = """\
name: ids-only
description: Suricata on every query
"on":
  query: true
steps:
  - id: ids
    uses: suricata
    input: pcap
"""
BAD_ANALYZER = """\
name: broken
steps:
  - id: one
    uses: no-such-analyzer
"""


@pytest.fixture
async def env(aiohttp_client, tmp_path):
    wf_dir = tmp_path / "workflows"
    wf_dir.mkdir()
    (wf_dir / "ids.yaml").write_text(GOOD)
    (wf_dir / "broken.yaml").write_text(BAD_ANALYZER)
    tokens = Tokens(tmp_path / "data")
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path / "data",
                                                       workflow_dirs=[wf_dir])))
    return client, tokens, wf_dir


async def test_plugins_lists_the_built_in_analyzers(env):
    client, tokens, _ = env
    body = await (await client.get("/api/v1/plugins",
                                   headers=tokens.headers("acme", "viewer"))).json()
    names = {a["name"] for a in body["analyzers"]}
    assert "suricata" in names and body["failures"] == []
    plugin = next(p for p in body["plugins"] if p["name"] == "suricata")
    assert plugin["analyzers"] == ["suricata"]
    assert plugin["source"].startswith("entry point pcapwire.plugins.suricata")


async def test_workflow_directory_listing(env):
    client, tokens, wf_dir = env
    body = await (await client.get("/api/v1/workflows",
                                   headers=tokens.headers("acme", "viewer"))).json()
    assert [w["name"] for w in body["workflows"]] == ["ids-only"]
    assert body["workflows"][0]["steps"] == [{"id": "ids", "uses": "suricata", "input": "pcap"}]
    (broken,) = body["invalid"]
    assert broken["file"] == str(wf_dir / "broken.yaml")
    assert (broken["problems"][0]["line"], broken["problems"][0]["column"]) == (4, 11)


@pytest.mark.parametrize(("text", "line", "column", "fragment"), [
    (BAD_ANALYZER, 4, 11, "unknown analyzer 'no-such-analyzer'"),
    ("name: x\nsteps:\n  - uses: suricata\n    colour: red\n", 4, 5, "unknown key 'colour'"),
    ("name: x\nsteps: [\n", 3, 1, ""),
])
async def test_validate_reports_line_and_column(env, text, line, column, fragment):
    client, tokens, _ = env
    resp = await client.post("/api/v1/workflows/validate", data=text.encode(),
                             params={"name": "mine.yaml"},
                             headers={**tokens.headers("acme", "viewer"),
                                      "Content-Type": "application/yaml"})
    body = await resp.json()
    assert resp.status == 200 and body["valid"] is False
    first = body["problems"][0]
    assert (first["line"], first["column"]) == (line, column)
    assert fragment in first["message"]
    assert first["text"].startswith(f"mine.yaml:{line}:{column}: ")


async def test_validate_accepts_a_good_document_and_refuses_other_types(env):
    client, tokens, _ = env
    headers = tokens.headers("acme", "viewer")
    ok = await (await client.post("/api/v1/workflows/validate", data=GOOD.encode(),
                                  headers={**headers, "Content-Type": "application/yaml"})
                ).json()
    assert ok == {"valid": True, "name": "ids-only", "problems": []}
    wrong = await client.post("/api/v1/workflows/validate", json={"x": 1}, headers=headers)
    assert (wrong.status, (await wrong.json())["code"]) == (415, "unsupported_media_type")
    latin = await client.post("/api/v1/workflows/validate", data=b"name: caf\xe9\n",
                              headers={**headers, "Content-Type": "application/yaml"})
    assert (latin.status, (await latin.json())["message"]) == (
        400, "the document is not UTF-8 (byte 9)")


async def test_unknown_workflow_is_refused_before_the_query_starts(env):
    client, tokens, _ = env
    resp = await client.post("/api/v1/queries", json={"workflows": ["nope"]},
                             headers=bearer(tokens["acme", "analyst"]))
    body = await resp.json()
    assert (resp.status, body["code"]) == (400, "unknown_workflow")
    assert body["details"] == {"unknown": ["nope"], "available": ["ids-only"]}
    listed = await (await client.get("/api/v1/queries",
                                     headers=tokens.headers("acme", "viewer"))).json()
    assert listed["total"] == 0
