"""Access matrix: every API operation (read from the served OpenAPI document) refuses
anonymous callers (401), under-privileged roles (403) and other tenants (404 on the
resource, nothing of it in lists). And the routes' declared roles match the document."""

from __future__ import annotations

from apiutil import PCAP_TYPE, Tokens, bearer, upload, wait_done
from conftest import corpus_file
from pcapwire.api import ApiConfig, create_app
from pcapwire.api.auth import PUBLIC, required_role
from pcapwire.api.authdb import ROLES, TOKEN_RE
from pcapwire.api.openapi import PATHS

BODIES = {
    ("post", "/api/v1/queries"): {"bpf": "tcp"},
    ("post", "/api/v1/queries/check"): {"bpf": "tcp"},
    ("post", "/api/v1/events"): {"five_tuple": "tcp:1.2.3.4:1:5.6.7.8:2", "timestamp": 1},
    ("post", "/api/v1/events/pcap"): {"five_tuple": "tcp:1.2.3.4:1:5.6.7.8:2", "timestamp": 1},
    ("post", "/api/v1/sensors"): {"name": "intruder"},
    ("post", "/api/v1/tokens"): {"role": "admin"},
    ("post", "/api/v1/workflows/validate"): "name: x\n",
    ("post", "/api/v1/queries/{id}/run"): {"workflows": ["ids"]},
    ("post", "/api/v1/hashlists/lookup"): {"hashes": ["0" * 64]},
    ("post", "/api/v1/holds"): {"case": "intruder", "reason": "r", "bpf": "tcp"},
    ("post", "/api/v1/holds/{hold_id}/release"): {"reason": "r"},
    ("post", "/api/v1/triggers"): {"name": "intruder", "bpf": "tcp"},
    ("put", "/api/v1/triggers/{trigger_id}"): {"name": "intruder", "bpf": "udp"},
    ("put", "/api/v1/rules/groups/{group}"): {"state": "disabled"},
}


async def _trigger(client, token):
    resp = await client.post("/api/v1/triggers", json={"name": "acme-t", "bpf": "tcp"},
                             headers=bearer(token))
    assert resp.status == 201, await resp.text()
    return (await resp.json())["trigger"]["id"]


def _operations():
    for path, ops in PATHS.items():
        for method, op in ops.items():
            yield method, path, op["x-required-role"]


async def _call(client, method, path, headers, ids):
    url = path.format(**ids)
    body = BODIES.get((method, path))
    kw = {}
    if path == "/api/v1/ingest":
        kw = {"data": corpus_file("zeek-http-get").read_bytes()}
        headers = {**headers, "Content-Type": PCAP_TYPE}
    elif isinstance(body, str):
        kw = {"data": body, "headers": {**headers, "Content-Type": "application/yaml"}}
    elif body is not None:
        kw = {"json": body}
    kw.setdefault("headers", headers)
    resp = await client.request(method.upper(), url, **kw)
    status = resp.status
    text = await resp.read()
    return status, text


async def test_every_operation_refuses_anonymous_lower_roles_and_other_tenants(
        aiohttp_client, tmp_path):
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    analyst = tokens["acme", "analyst"]
    await upload(client, corpus_file("zeek-http-get"), analyst)
    q = await (await client.post("/api/v1/queries", json={"bpf": "tcp", "case": "acme-case"},
                                 headers=bearer(analyst))).json()
    await wait_done(client, q["id"], analyst)
    assert (await client.post("/api/v1/sensors", json={"name": "acme-s1"},
                              headers=tokens.headers("acme", "admin"))).status == 201
    listed = await client.post("/api/v1/hashlists", params={"name": "acme-deny",
                                                            "kind": "deny"},
                               data=("a" * 64 + "\n").encode(),
                               headers={**bearer(analyst), "Content-Type": "text/plain"})
    assert listed.status == 201, await listed.text()
    spare = TOKEN_RE.fullmatch(tokens["acme", "viewer"])[1]
    hold = await client.post("/api/v1/holds", json={"case": "acme-case", "reason": "r",
                                                    "bpf": "tcp"}, headers=bearer(analyst))
    assert hold.status == 201, await hold.text()
    ids = {"id": q["id"], "case": "acme-case", "name": "acme-s1", "token_id": spare,
           "sha256": "0" * 64, "email_id": "none", "list": "acme-deny",
           "hold_id": (await hold.json())["id"], "n": 1, "flow_id": 1,
           "trigger_id": await _trigger(client, analyst),
           "group": "classtype:trojan-activity", "unit_id": "hunt:acme:a:acme-t:v1"}
    # acme's own rules (its rules/ directory): globex has no such group
    (tmp_path / "tenants" / "acme" / "rules").mkdir(exist_ok=True)
    (tmp_path / "tenants" / "acme" / "rules" / "acme.rules").write_text(
        'alert tcp any any -> any any (msg:"acme"; classtype:trojan-activity; sid:1; rev:1;)\n')
    failures, checked = [], 0
    for method, path, need in _operations():
        if need == PUBLIC:
            continue
        checked += 1
        status, body = await _call(client, method, path, {}, ids)
        if status != 401:
            failures.append(f"{method} {path} anonymous: {status}")
        for role in ROLES[:ROLES.index(need)]:
            status, body = await _call(client, method, path, tokens.headers("acme", role), ids)
            if status != 403:
                failures.append(f"{method} {path} as acme {role}: {status} {body[:80]!r}")
        if "{" in path:
            status, body = await _call(client, method, path, tokens.headers("globex", "admin"),
                                       ids)
            if status != 404:
                failures.append(f"{method} {path} as globex admin: {status} {body[:80]!r}")
    assert failures == []
    assert checked == sum(r != PUBLIC for _m, _p, r in _operations()) >= 25

    # Nothing of acme's shows in globex's lists, and acme's things survived the attempts.
    globex = tokens.headers("globex", "admin")
    for url, key in (("/api/v1/queries", "queries"), ("/api/v1/flows", "flows"),
                     ("/api/v1/cases", "cases"), ("/api/v1/sensors", "sensors"),
                     ("/api/v1/hashlists", "lists"), ("/api/v1/holds", "holds"),
                     ("/api/v1/triggers", "triggers")):
        body = await (await client.get(url, headers=globex)).json()
        assert body[key] == [], url
    tokens_seen = (await (await client.get("/api/v1/tokens", headers=globex)).json())["tokens"]
    # acme's recorder (its status.json) is acme's alone
    (tmp_path / "tenants" / "acme" / "capture").mkdir()
    (tmp_path / "tenants" / "acme" / "capture" / "status.json").write_text(
        '{"pid": 1, "state": "running", "updated": 1e12, "interfaces": {"acme0": {}}}')
    assert (await (await client.get("/api/v1/capture/status", headers=globex)).json()
            )["recording"] is False
    assert "acme0" in (await (await client.get("/api/v1/capture/status", headers=bearer(
        tokens["acme", "viewer"]))).json())["interfaces"]
    assert {t["tenant"] for t in tokens_seen} == {"globex"}
    sensor = await client.post("/api/v1/ingest", params={"sensor": "acme-s1"},
                               data=b"\xd4\xc3\xb2\xa1", headers={**globex,
                                                                  "Content-Type": PCAP_TYPE})
    assert sensor.status == 404
    everything = await (await client.post("/api/v1/queries", json={},
                                          headers=globex)).json()
    pcap = await (await client.get(everything["links"]["pcap"], headers=globex)).read()
    assert len(pcap) == 24  # globex's store is empty: a header and no packet
    acme = tokens.headers("acme", "admin")
    assert [s["name"] for s in (await (await client.get("/api/v1/sensors", headers=acme)
                                       ).json())["sensors"]] == ["acme-s1"]
    assert (await client.get("/api/v1/whoami", headers=bearer(tokens["acme", "viewer"]))
            ).status == 200
    # acme's list survived globex's DELETE, and globex's lookups do not see it
    acme_lists = (await (await client.get("/api/v1/hashlists", headers=acme)).json())["lists"]
    assert [(hl["name"], hl["total"]) for hl in acme_lists] == [("acme-deny", 1)]
    acme_triggers = (await (await client.get("/api/v1/triggers", headers=acme)).json())
    assert [(t["name"], t["state"]) for t in acme_triggers["triggers"]] == [("acme-t", "active")]
    seen = await (await client.post("/api/v1/hashlists/lookup", json={"hashes": ["a" * 64]},
                                    headers=globex)).json()
    assert seen["summary"] == {"known-good": 0, "known-bad": 0, "unknown": 1}


def test_routes_and_document_agree():
    app = create_app(ApiConfig(data_dir="/nonexistent-not-created"))
    routes = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method == "HEAD" or not path:
            continue
        routes[(route.method.lower(), path)] = required_role(route.handler)
    assert all(role is not None for role in routes.values()), routes
    api_routes = {k: v for k, v in routes.items() if k[1].startswith("/api/")}
    documented = {(m, p): r for m, p, r in _operations()}
    assert api_routes == documented
