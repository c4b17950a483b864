"""``GET /api/v1/triggers/{id}/diff``: what one version found that another did not, and
what it no longer finds, exactly as ``pcapwire trigger matches --diff`` shows it (one
implementation, :func:`pcapwire.triggers.views.version_diff`); each list cut at ``limit``
(at most MAX_MATCHES_PAGE) with its total; versions outside the trigger's are a 400
naming the parameter; another tenant's trigger is a 404."""

from __future__ import annotations

import json

from apiutil import Tokens, bearer
from pcapwire.api import ApiConfig, create_app
from pcapwire.api.routes_triggers import MAX_MATCHES_PAGE
from pcapwire.cli import main
from pcapwire.triggers.db import Hit, TriggerDB


def _hit(host: int) -> Hit:
    return Hit("ip:10.0.0.0/8", 6, f"10.0.0.{host}", 40000, "10.9.9.9", 80, 1e9 + host, {})


async def test_diff_between_versions_as_the_cli_shows_it(aiohttp_client, tmp_path, capsys):
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    analyst, viewer = tokens["acme", "analyst"], tokens["acme", "viewer"]
    resp = await client.post("/api/v1/triggers", json={
        "name": "net", "indicators": {"ips": ["10.0.0.0/8"]}}, headers=bearer(analyst))
    assert resp.status == 201, await resp.text()
    tid = (await resp.json())["trigger"]["id"]
    resp = await client.put(f"/api/v1/triggers/{tid}", json={
        "name": "net", "indicators": {"ips": ["10.0.0.0/8", "192.0.2.1"]}},
        headers=bearer(analyst))
    assert (resp.status, (await resp.json())["trigger"]["version"]) == (200, 2)
    root = tmp_path / "tenants" / "acme"
    with TriggerDB(root) as db:  # what each version's watch recorded
        a, b, c = db.add_watch_hits(tid, [_hit(1), _hit(2), _hit(3)], 1, None)
        d, e = db.add_watch_hits(tid, [_hit(2), _hit(4), _hit(5)], 2, None)  # b again

    async def diff(query: str, status: int = 200) -> dict:
        r = await client.get(f"/api/v1/triggers/{tid}/diff{query}", headers=bearer(viewer))
        assert r.status == status, await r.text()
        return await r.json()

    def ids(doc: dict) -> tuple:
        return (doc["from"], doc["to"], [m["id"] for m in doc["new"]], doc["new_total"],
                [m["id"] for m in doc["gone"]], doc["gone_total"])

    current = await diff("")
    assert ids(current) == (1, 2, [d, e], 2, [a, c], 2)
    assert ids(await diff("?to=2&from=1")) == ids(current)
    assert ids(await diff("?to=1")) == (0, 1, [a, b, c], 3, [], 0)
    assert ids(await diff("?from=2&to=1")) == (2, 1, [a, c], 2, [d, e], 2)
    assert ids(await diff("?to=2&from=2")) == (2, 2, [], 0, [], 0)
    assert ids(await diff("?limit=1")) == (1, 2, [d], 2, [a], 2)
    assert current["new"][0]["pivots"]["trigger_path"] == f"/api/v1/triggers/{tid}"

    # the CLI's --diff shows the same matches
    capsys.readouterr()
    assert main(["--data-dir", str(root), "trigger", "matches", "net", "--diff", "2",
                 "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert (cli["version"], cli["new"], cli["gone"]) == (2, current["new"], current["gone"])

    for query, param in (("?to=3", "to"), ("?to=0", "to"), ("?from=3", "from"),
                         ("?from=-1", "from"), (f"?limit={MAX_MATCHES_PAGE + 1}", "limit"),
                         ("?to=x", "to")):
        bad = await diff(query, 400)
        assert (bad["code"], bad["details"]["parameter"]) == ("invalid_parameter", param)
    other = await client.get(f"/api/v1/triggers/{tid}/diff",
                             headers=tokens.headers("globex", "admin"))
    assert (other.status, (await other.json())["code"]) == (404, "not_found")
