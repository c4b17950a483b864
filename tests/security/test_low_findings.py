"""Security issue 9, the low findings: 7 (a foreign admin's token DELETE ends nothing),
8 (pathological input is a clear 400 / exit 2, never a 500 or a traceback; every limit named
and tested at its boundary) and 9 (sensor names are per tenant)."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from apiutil import PCAP_TYPE, Tokens, bearer, upload, wait_done
from conftest import corpus_file
from pcaputil import tcpdump
from pcapwire.api import ApiConfig, create_app
from pcapwire.api.authdb import TOKEN_RE, AuthDB
from pcapwire.api.bodies import json_depth
from pcapwire.api.limits import MAX_JSON_DEPTH
from pcapwire.errors import ConfigError, QueryError
from pcapwire.query import QuerySpec
from pcapwire.query.bpfplan import (
    MAX_BPF_NESTING,
    MAX_PLAN_DEPTH,
    MAX_PLAN_TERMS,
    candidate_sql,
    nesting,
)
from pcapwire.query.spec import MAX_FILTER_VALUES
from pcapwire.store import Store

# An IPv6 FTP session: 6 TCP flows between two hosts, the data connections on ports
# 57086..57088 (client side 49185..49190).
CAPTURE = "zeek-ftp-ipv6-epsv-eprt"
DATA_PORT = 57086  # one flow of the capture (its first data connection)
SERVER = "host 2001:470:4867:99::21"  # an endpoint of every flow of the capture


def _doc_hosts(n: int) -> list[str]:
    """``n`` IPv6 documentation addresses (no packet of the capture has them)."""
    return [f"host 2001:db8::{i + 1:x}" for i in range(n)]


def _parens(depth: int, inner: str) -> str:
    return "(" * depth + inner + ")" * depth


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    return Tokens(tmp_path)


@pytest.fixture
async def client(aiohttp_client, tmp_path: Path):
    return await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))


@pytest.fixture(scope="module")
def ftp6(tmp_path_factory: pytest.TempPathFactory):
    """(store, capture): the capture ingested into a fresh store."""
    path = corpus_file(CAPTURE)
    store = Store(tmp_path_factory.mktemp("low") / "store")
    store.ingest([path])
    yield store, path
    store.close()


def _same_as_tcpdump(store: Store, path: Path, expr: str) -> int | None:
    """Asserts the query's bytes are tcpdump's; returns the planner's candidate flows
    (None: the index did not narrow the query)."""
    engine = store.query_engine()
    spec = QuerySpec(bpf=expr)
    plan = engine.plan(spec)
    got = engine.to_bytes(spec)
    assert got == tcpdump(path, expr), expr[:200]
    return plan.candidate_flows


# -- 7: DELETE /api/v1/tokens/{id} by another tenant's admin ------------------------------

async def _login(client, token: str):
    page = await client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text())[1]
    return await client.post("/ui/login", data={"csrf": csrf, "token": token},
                             allow_redirects=False)


async def test_foreign_admins_token_delete_leaves_the_owners_sessions(client, tokens):
    owner = tokens["globex", "analyst"]
    assert (await _login(client, owner)).status == 303
    session = await (await client.get("/api/v1/whoami")).json()  # by the session cookie
    assert (session["tenant"], session["role"]) == ("globex", "analyst") and session["csrf"]
    owner_id = TOKEN_RE.fullmatch(owner)[1]

    cross = await client.delete(f"/api/v1/tokens/{owner_id}",
                                headers=tokens.headers("acme", "admin"))
    assert cross.status == 404
    assert (await cross.json())["code"] == "not_found"

    # The owner's dashboard session still works, for reads and CSRF-checked writes alike,
    assert (await client.get("/api/v1/whoami")).status == 200
    check = await client.post("/api/v1/queries/check", json={"bpf": "tcp"},
                              headers={"X-CSRF-Token": session["csrf"]})
    assert (check.status, await check.json()) == (200, {"valid": True, "error": None})
    # and so does the token itself.
    assert (await client.get("/api/v1/whoami", headers=bearer(owner))).status == 200
    # The owner's own admin still revokes it, and that ends the session at once.
    mine = await client.delete(f"/api/v1/tokens/{owner_id}",
                               headers=tokens.headers("globex", "admin"))
    assert mine.status == 204
    assert (await client.get("/api/v1/whoami")).status == 401


def test_revoke_for_another_tenant_changes_nothing(tmp_path: Path):
    db = AuthDB(tmp_path / "auth.sqlite")
    try:
        _token, info = db.create_token("globex", "viewer")
        sid, _csrf = db.create_session(info["id"], 3600)
        assert db.revoke(info["id"], tenant="acme") is False
        assert db.session(sid) is not None
        assert db.token_info(info["id"])["revoked"] is None
        assert db.revoke(info["id"], tenant="globex") is True
        assert db.session(sid) is None
        assert db.revoke(info["id"], tenant="globex") is False  # already revoked
    finally:
        db.close()


# -- 8: pathological BPF, numbers, JSON ----------------------------------------------------

PATHOLOGICAL_BPF = {
    "parentheses x1500": _parens(1500, "tcp"),
    "not x1000": "not " * 1000 + "tcp",
    "port beyond 64 bits": "port 99999999999999999999999",
    "portrange beyond 64 bits": "portrange 1-99999999999999999999999",
    "port 2**64": f"tcp port {2**64}",
}
REFUSED_BY = {  # what the 400's message says for each
    "parentheses x1500": f"1500 levels deep, more than the limit of {MAX_BPF_NESTING} "
                         "(max_bpf_nesting)",
    "not x1000": f"1000 levels deep, more than the limit of {MAX_BPF_NESTING} "
                 "(max_bpf_nesting)",
    "port beyond 64 bits": "number 99999999999999999999999 overflows 32 bits",
    "portrange beyond 64 bits": "illegal port number",
    "port 2**64": f"number {2**64} overflows 32 bits",
}


@pytest.mark.parametrize("name", PATHOLOGICAL_BPF)
async def test_api_refuses_pathological_bpf_with_a_400(client, tokens, name):
    bpf = PATHOLOGICAL_BPF[name]
    analyst = tokens.headers("acme", "analyst")
    resp = await client.post("/api/v1/queries", json={"bpf": bpf}, headers=analyst)
    body = await resp.json()
    assert (resp.status, body["code"]) == (400, "invalid_query")
    assert REFUSED_BY[name] in body["message"]
    check = await client.post("/api/v1/queries/check", json={"bpf": bpf}, headers=analyst)
    result = await check.json()
    assert check.status == 200 and result["valid"] is False
    assert REFUSED_BY[name] in result["error"]


def test_bpf_nesting_limit_boundary(ftp6):
    store, path = ftp6
    for deepest in (_parens(MAX_BPF_NESTING, f"port {DATA_PORT}"),
                    "not " * MAX_BPF_NESTING + "udp",  # an even number: "udp"
                    "not " * (MAX_BPF_NESTING - 2) + _parens(2, "tcp")):
        assert nesting(deepest) == MAX_BPF_NESTING
        _same_as_tcpdump(store, path, deepest)
    for too_deep in (_parens(MAX_BPF_NESTING + 1, f"port {DATA_PORT}"),
                     "not " * (MAX_BPF_NESTING + 1) + "udp",
                     f"port {DATA_PORT} and " + "not " * (MAX_BPF_NESTING - 1)
                     + _parens(2, "tcp")):
        assert nesting(too_deep) == MAX_BPF_NESTING + 1
        with pytest.raises(QueryError, match=re.escape(
                f"{MAX_BPF_NESTING + 1} levels deep, more than the limit of "
                f"{MAX_BPF_NESTING} (max_bpf_nesting); remove redundant parentheses")):
            QuerySpec(bpf=too_deep)


async def test_api_bpf_nesting_boundary(client, tokens):
    tok = tokens["acme", "analyst"]
    await upload(client, corpus_file(CAPTURE), tok)
    ok = await client.post("/api/v1/queries", json={"bpf": _parens(MAX_BPF_NESTING, "tcp")},
                           headers=bearer(tok))
    assert ok.status == 202
    assert (await wait_done(client, (await ok.json())["id"], tok))["status"] == "done"
    refused = await client.post("/api/v1/queries",
                                json={"bpf": _parens(MAX_BPF_NESTING + 1, "tcp")},
                                headers=bearer(tok))
    body = await refused.json()
    assert (refused.status, body.get("code")) == (400, "invalid_query")
    assert f"limit of {MAX_BPF_NESTING} (max_bpf_nesting)" in body["message"]


def test_long_ipv6_or_list_falls_back_to_a_scan_identical_to_tcpdump(ftp6):
    store, path = ftp6
    expr = " or ".join([f"port {DATA_PORT}", *_doc_hosts(599)])  # 600 terms
    assert _same_as_tcpdump(store, path, expr) is None  # not narrowed: every packet checked
    assert len(tcpdump(path, expr)) > 24  # and the data connection's packets are there


def test_plan_terms_limit_boundary(ftp6):
    store, path = ftp6
    at_limit = " or ".join([f"port {DATA_PORT}", *_doc_hosts(MAX_PLAN_TERMS - 1)])
    assert _same_as_tcpdump(store, path, at_limit) == 1  # narrowed to the one flow
    over = " or ".join([f"port {DATA_PORT}", *_doc_hosts(MAX_PLAN_TERMS)])
    assert _same_as_tcpdump(store, path, over) is None  # a scan, same result


def test_plan_depth_limit_boundary(ftp6):
    store, path = ftp6
    port = f"port {DATA_PORT}"
    hosts = _doc_hosts(MAX_PLAN_DEPTH + 2)

    def alternating(switches: int) -> str:  # ((p or h1) and S) or h2 ...: a level each
        expr = port
        for i in range(switches):
            expr += f" or {hosts[i]}" if i % 2 == 0 else f" and {SERVER}"
        return expr

    def right_nested(levels: int) -> str:  # p or (h1 and (h2 or (... (hN))))
        expr = hosts[levels - 1]
        for i in range(levels - 1, 0, -1):
            expr = f"{hosts[i - 1]} {'and' if i % 2 else 'or'} ({expr})"
        return f"{port} or ({expr})"

    def nots(n: int) -> str:
        return f"{port} and " + "not " * n + "udp"

    for build in (lambda d: _parens(d, port), nots, alternating, right_nested):
        assert _same_as_tcpdump(store, path, build(MAX_PLAN_DEPTH)) is not None
        assert candidate_sql(build(MAX_PLAN_DEPTH)) is not None
        assert _same_as_tcpdump(store, path, build(MAX_PLAN_DEPTH + 1)) is None


def test_portrange_written_high_to_low_is_tcpdumps(ftp6):
    store, path = ftp6
    expr = f"portrange {DATA_PORT + 1}-{DATA_PORT}"  # libpcap swaps the ends
    assert _same_as_tcpdump(store, path, expr) == 2
    assert len(tcpdump(path, expr)) > 24


def test_filter_values_limit_boundary():
    hosts = [f"10.0.0.{i}" for i in range(MAX_FILTER_VALUES + 1)]
    assert QuerySpec(hosts=hosts[:MAX_FILTER_VALUES]).hosts == hosts[:MAX_FILTER_VALUES]
    with pytest.raises(QueryError, match=re.escape(
            f"{MAX_FILTER_VALUES + 1} host filters are more than the limit of "
            f"{MAX_FILTER_VALUES} (max_filter_values)")):
        QuerySpec(hosts=hosts)


async def test_api_flows_host_list_boundary(client, tokens):
    viewer = tokens.headers("acme", "viewer")
    hosts = ",".join(f"10.0.{i // 256}.{i % 256}" for i in range(MAX_FILTER_VALUES + 1))
    ok = await client.get("/api/v1/flows", params={"host": hosts.rsplit(",", 1)[0]},
                          headers=viewer)
    assert (ok.status, await ok.json()) == (200, {"flows": []})
    many = ",".join(f"::{i:x}" for i in range(1200))  # once too deep for SQLite: a 500
    for value in (hosts, many):
        resp = await client.get("/api/v1/flows", params={"host": value}, headers=viewer)
        body = await resp.json()
        assert (resp.status, body.get("code")) == (400, "invalid_query")
        assert f"more than the limit of {MAX_FILTER_VALUES} (max_filter_values)" in \
            body["message"]


async def test_json_depth_limit_boundary(client, tokens):
    analyst = {**tokens.headers("acme", "analyst"), "Content-Type": "application/json"}
    at_limit = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert json_depth(json.loads(at_limit), MAX_JSON_DEPTH) == MAX_JSON_DEPTH
    resp = await client.post("/api/v1/queries", data=at_limit, headers=analyst)
    assert (resp.status, (await resp.json())["code"]) == (400, "invalid_body")  # not a query
    nested_obj = '{"bpf": "tcp", "x": ' + "[" * (MAX_JSON_DEPTH - 1) + "]" * (
        MAX_JSON_DEPTH - 1) + "}"
    assert json_depth(json.loads(nested_obj), MAX_JSON_DEPTH) == MAX_JSON_DEPTH
    for too_deep in ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
                     '{"bpf": "tcp", "x": ' + "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH + "}",
                     "[" * 200_000 + "]" * 200_000):  # deeper than Python's parser goes
        resp = await client.post("/api/v1/queries", data=too_deep, headers=analyst)
        body = await resp.json()
        assert (resp.status, body["code"]) == (400, "json_too_deep")
        assert body["details"] == {"limit": MAX_JSON_DEPTH, "limit_name": "max_json_depth"}
        assert (f"more than {MAX_JSON_DEPTH} levels deep (the limit max_json_depth); send a "
                "flatter document") in body["message"]


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pcapwire.cli", "--data-dir", str(data_dir),
                           *args], capture_output=True, text=True, timeout=120)


def test_cli_pathological_input_exits_2_with_one_line(tmp_path: Path):
    data = tmp_path / "store"
    with Store(data) as store:
        store.ingest([corpus_file(CAPTURE)])
    huge = "99999999999999999999999"
    cases = [
        (("query", "--bpf", _parens(1500, "tcp")), "(max_bpf_nesting)"),
        (("query", "--bpf", "not " * 1000 + "tcp"), "(max_bpf_nesting)"),
        (("query", "--bpf", f"port {huge}"), f"number {huge} overflows 32 bits"),
        (("query", "--bpf", f"portrange 1-{huge}"), "illegal port number"),
        (("query", "--five-tuple", f"tcp:[::1]:{huge}:[::2]:80"),
         f"five-tuple port {huge} is outside 0..65535"),
        (("query", "--start", huge), f"time {huge} (Unix seconds) is outside"),
        (("flows", "--port", huge), f"port {huge} is outside 0..65535"),
        (("flows", "--five-tuple", f"tcp:1.2.3.4:{huge}:5.6.7.8:80"),
         f"five-tuple port {huge} is outside 0..65535"),
        (("flows", "--limit", huge), f"--limit {huge} is outside 0.."),
        (("flows", *[a for i in range(MAX_FILTER_VALUES + 1) for a in ("--host", f"::{i}")]),
         f"limit of {MAX_FILTER_VALUES} (max_filter_values)"),
    ]
    for args, message in cases:
        if args[0] == "query":
            args = (*args, "-w", str(tmp_path / "out.pcap"))
        r = _cli(data, *args)
        assert r.returncode == 2, (args[:3], r.stderr[-300:])
        assert "Traceback" not in r.stderr
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith("pcapwire: error: ") and message in line, line
        assert not (tmp_path / "out.pcap").exists()
    big = " or ".join([f"port {DATA_PORT}", *_doc_hosts(599)])
    r = subprocess.run([sys.executable, "-m", "pcapwire.cli", "--data-dir", str(data),
                        "query", "--bpf", big, "-w", "-"], capture_output=True, timeout=120)
    assert r.returncode == 0 and r.stdout == tcpdump(corpus_file(CAPTURE), big)


# -- 9: sensor names per tenant ------------------------------------------------------------

async def test_sensor_names_are_per_tenant(client, tokens):
    acme, globex = tokens.headers("acme", "admin"), tokens.headers("globex", "admin")
    assert (await client.post("/api/v1/sensors", json={"name": "edge1"},
                              headers=acme)).status == 201
    made = await client.post("/api/v1/sensors", json={"name": "edge1"}, headers=globex)
    assert made.status == 201  # not 409: acme's names are not globex's business
    assert {k: v for k, v in (await made.json()).items() if k != "created"} == {
        "name": "edge1", "tenant": "globex"}
    again = await client.post("/api/v1/sensors", json={"name": "edge1"}, headers=globex)
    body = await again.json()
    assert (again.status, body["code"]) == (409, "sensor_exists")
    assert body["message"] == "sensor 'edge1' already exists in your tenant"
    for headers, tenant in ((acme, "acme"), (globex, "globex")):
        listed = (await (await client.get("/api/v1/sensors", headers=headers)).json())
        assert [(s["name"], s["tenant"]) for s in listed["sensors"]] == [("edge1", tenant)]
    ingested = await upload(client, corpus_file(CAPTURE), tokens["globex", "analyst"],
                            sensor="edge1")
    assert ingested["sensor"] == "edge1"
    assert (await client.delete("/api/v1/sensors/edge1", headers=globex)).status == 204
    listed = await (await client.get("/api/v1/sensors", headers=acme)).json()
    assert [s["name"] for s in listed["sensors"]] == ["edge1"]  # acme's survived
    gone = await client.post("/api/v1/ingest", params={"sensor": "edge1"},
                             data=corpus_file(CAPTURE).read_bytes(),
                             headers={**tokens.headers("globex", "analyst"),
                                      "Content-Type": PCAP_TYPE})
    assert (gone.status, (await gone.json())["code"]) == (404, "not_found")
    assert (await upload(client, corpus_file(CAPTURE), tokens["acme", "analyst"],
                         sensor="edge1"))["sensor"] == "edge1"


OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, tenant TEXT NOT NULL, role TEXT NOT NULL,
  salt BLOB NOT NULL, hash BLOB NOT NULL, created REAL NOT NULL, last_used REAL,
  revoked REAL);
CREATE TABLE IF NOT EXISTS sensors (
  name TEXT PRIMARY KEY, tenant TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
  hash BLOB PRIMARY KEY, token_id TEXT NOT NULL REFERENCES tokens(id), csrf TEXT NOT NULL,
  created REAL NOT NULL, expires REAL NOT NULL);
"""


def test_existing_auth_db_is_migrated_keeping_its_rows(tmp_path: Path):
    path = tmp_path / "auth.sqlite"
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    old.executemany("INSERT INTO sensors VALUES (?,?,?)",
                    [("edge1", "acme", 1000.5), ("core", "globex", 2000.25)])
    old.commit()
    old.close()
    db = AuthDB(path)  # an auth.sqlite written before sensor names were per tenant
    try:
        token, _info = db.create_token("acme", "admin")
        assert db.sensors("acme") == [{"name": "edge1", "tenant": "acme", "created": 1000.5}]
        assert db.sensors("globex") == [{"name": "core", "tenant": "globex",
                                         "created": 2000.25}]
        assert db.has_sensor("edge1", "acme") and not db.has_sensor("edge1", "globex")
        db.add_sensor("edge1", "globex")
        with pytest.raises(ConfigError, match="sensor 'edge1' already exists in tenant 'acme'"):
            db.add_sensor("edge1", "acme")
    finally:
        db.close()
    again = AuthDB(path)  # opening it again changes nothing
    try:
        assert [s["name"] for s in again.sensors("globex")] == ["core", "edge1"]
        assert again.authenticate(token) is not None
        key = {r[1]: r[5] for r in again.db.execute("PRAGMA table_info(sensors)")}
        assert key == {"name": 2, "tenant": 1, "created": 0}
        tables = {r[0] for r in again.db.execute("SELECT name FROM sqlite_master")}
        assert "sensors_global" not in tables
    finally:
        again.close()
