"""Tokens (hashed, shown once, revocable), roles, dashboard sessions, CSRF, the token CLI."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import subprocess
import sys

import pytest
from apiutil import Tokens, bearer
from pcapwire.api import ApiConfig, create_app
from pcapwire.api.authdb import TOKEN_RE, AuthDB


@pytest.fixture
def tokens(tmp_path):
    return Tokens(tmp_path)


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))


def test_only_a_salted_hash_is_stored(tmp_path):
    db = AuthDB(tmp_path / "auth.sqlite")
    token, info = db.create_token("acme", "analyst", "ci")
    db.close()
    m = TOKEN_RE.fullmatch(token)
    assert m is not None and m[1] == info["id"]
    raw = (tmp_path / "auth.sqlite").read_bytes()
    assert m[2].encode() not in raw and token.encode() not in raw
    salt, digest = sqlite3.connect(tmp_path / "auth.sqlite").execute(
        "SELECT salt, hash FROM tokens WHERE id=?", (info["id"],)).fetchone()
    assert len(salt) == 16 and digest == hashlib.sha256(salt + m[2].encode()).digest()


async def test_whoami_and_bad_tokens(client, tokens):
    tok = tokens["acme", "viewer"]
    who = await (await client.get("/api/v1/whoami", headers=bearer(tok))).json()
    assert (who["tenant"], who["role"], who["csrf"]) == ("acme", "viewer", None)
    forged = tok[:-4] + ("AAAA" if not tok.endswith("AAAA") else "BBBB")
    for headers in ({}, bearer(forged), bearer("nonsense"), {"Authorization": "Basic eDp5"}):
        resp = await client.get("/api/v1/whoami", headers=headers)
        body = await resp.json()
        assert resp.status == 401 and body["code"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"] == "Bearer"


async def test_roles_are_ordered(client, tokens):
    for role, status in (("viewer", 403), ("analyst", 403), ("admin", 201)):
        resp = await client.post("/api/v1/sensors", json={"name": f"s-{role}"},
                                 headers=bearer(tokens["acme", role]))
        assert resp.status == status
        if status == 403:
            body = await resp.json()
            assert body["details"] == {"required_role": "admin", "role": role}


async def test_admin_manages_tokens_of_its_tenant_only(client, tokens):
    admin = bearer(tokens["acme", "admin"])
    created = await client.post("/api/v1/tokens", json={"role": "viewer", "name": "soc"},
                                headers=admin)
    body = await created.json()
    assert created.status == 201 and body["info"]["tenant"] == "acme"
    new = body["token"]
    assert (await client.get("/api/v1/whoami", headers=bearer(new))).status == 200
    listed = (await (await client.get("/api/v1/tokens", headers=admin)).json())["tokens"]
    assert {t["tenant"] for t in listed} == {"acme"}
    assert all(set(t) == {"id", "name", "tenant", "role", "created", "last_used", "revoked"}
               for t in listed)
    other = tokens["globex", "viewer"]
    other_id = TOKEN_RE.fullmatch(other)[1]
    cross = await client.delete(f"/api/v1/tokens/{other_id}", headers=admin)
    assert cross.status == 404
    assert (await client.get("/api/v1/whoami", headers=bearer(other))).status == 200
    own = await client.delete(f"/api/v1/tokens/{TOKEN_RE.fullmatch(tokens['acme', 'admin'])[1]}",
                              headers=admin)
    assert (own.status, (await own.json())["code"]) == (409, "own_token")
    gone = await client.delete(f"/api/v1/tokens/{body['info']['id']}", headers=admin)
    assert gone.status == 204
    assert (await client.get("/api/v1/whoami", headers=bearer(new))).status == 401


async def _login(client, token: str):
    page = await client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text())[1]
    return await client.post("/ui/login", data={"csrf": csrf, "token": token},
                             allow_redirects=False)


async def test_dashboard_session_cookie_and_csrf(client, tokens):
    tok = tokens["acme", "analyst"]
    resp = await _login(client, tok)
    assert resp.status == 303 and resp.headers["Location"] == "/ui/"
    cookie = resp.headers["Set-Cookie"]
    assert "pcapwire_session=" in cookie and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie and "Path=/" in cookie
    who = await (await client.get("/api/v1/whoami")).json()
    assert who["tenant"] == "acme" and who["csrf"]
    page = await client.get("/ui/")
    assert page.status == 200 and 'data-page="query"' in await page.text()
    no_csrf = await client.post("/api/v1/queries/check", json={"bpf": "tcp"})
    assert (no_csrf.status, (await no_csrf.json())["code"]) == (403, "csrf_failed")
    wrong = await client.post("/api/v1/queries/check", json={"bpf": "tcp"},
                              headers={"X-CSRF-Token": "x" + who["csrf"]})
    assert wrong.status == 403
    ok = await client.post("/api/v1/queries/check", json={"bpf": "tcp"},
                           headers={"X-CSRF-Token": who["csrf"]})
    assert ok.status == 200
    out = await client.post("/ui/logout", data={"csrf": who["csrf"]}, allow_redirects=False)
    assert out.status == 303
    assert (await client.get("/api/v1/whoami")).status == 401
    assert (await client.get("/ui/", allow_redirects=False)).headers["Location"] == "/ui/login"


async def test_login_refuses_bad_token_and_missing_form_csrf(client, tokens):
    bad = await _login(client, "pwt_000000000000_" + "A" * 43)
    assert bad.status == 401 and "Unknown or revoked token" in await bad.text()
    forged = await client.post("/ui/login", data={"csrf": "guess",
                                                  "token": tokens["acme", "viewer"]},
                               allow_redirects=False)
    assert forged.status == 403
    assert (await client.get("/api/v1/whoami")).status == 401


async def test_revoking_a_token_ends_its_sessions(client, tokens, tmp_path):
    tok = tokens["acme", "viewer"]
    await _login(client, tok)
    assert (await client.get("/api/v1/whoami")).status == 200
    db = AuthDB(tmp_path / "auth.sqlite")
    assert db.revoke(TOKEN_RE.fullmatch(tok)[1]) is True
    db.close()
    assert (await client.get("/api/v1/whoami")).status == 401


def test_token_cli(tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pcapwire.cli", "--data-dir", str(tmp_path),
                               "token", *args], capture_output=True, text=True, timeout=60)

    made = cli("create", "--tenant", "acme", "--role", "analyst", "--name", "siem")
    assert made.returncode == 0 and "cannot be shown again" in made.stderr
    token = made.stdout.strip()
    m = TOKEN_RE.fullmatch(token)
    assert m is not None
    db = AuthDB(tmp_path / "auth.sqlite")
    assert db.authenticate(token).role == "analyst"
    listed = cli("list", "--json")
    rows = [__import__("json").loads(line) for line in listed.stdout.splitlines()]
    assert [(r["id"], r["tenant"], r["name"]) for r in rows] == [(m[1], "acme", "siem")]
    assert token not in listed.stdout
    assert cli("revoke", m[1]).returncode == 0
    assert db.authenticate(token) is None
    assert cli("revoke", m[1]).returncode == 2
    bad = cli("create", "--tenant", "Bad Tenant", "--role", "admin")
    assert bad.returncode == 2 and "invalid tenant name" in bad.stderr
    db.close()
