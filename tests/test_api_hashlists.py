"""Hash lists over the API: create from uploads of every format, list, show, replace,
append, remove, batch lookups; global lists (shared, read-only); limits and the stable
error shape; every response checked against its OpenAPI schema; and a workflow run by the
API that finds a known-bad download with the tenant's list and records its follow-up
query in the tenant's history."""

from __future__ import annotations

import hashlib
import sqlite3

from apiutil import PCAP_TYPE, Tokens, bearer, wait_done
from hashlistutil import http_pcap
from pcapwire.api import ApiConfig, create_app
from pcapwire.api.limits import MAX_HASHES_PER_LOOKUP
from pcapwire.api.schemas import validate
from pcapwire.hashlist import DB_NAME, HashListStore, Source

EVIL = b"MZ evil payload " * 300
BAD = hashlib.sha256(EVIL).hexdigest()
GOOD = hashlib.md5(b"good").hexdigest()  # noqa: S324
NSRL = ('"SHA-1","MD5","CRC32","FileName","FileSize","ProductCode","OpSystemCode",'
        '"SpecialCode"\n')


async def upload(client, token: str, body: bytes, ctype: str = "text/plain", **params: str):
    resp = await client.post("/api/v1/hashlists", data=body, params=params,
                             headers={**bearer(token), "Content-Type": ctype})
    return resp.status, await resp.json()


async def test_create_list_show_lookup_replace_append_remove(aiohttp_client, tmp_path) -> None:
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    analyst, viewer = tokens["acme", "analyst"], tokens["acme", "viewer"]
    status, body = await upload(client, analyst, f"{BAD}  Trojan.X\nxyz\n".encode(),
                                name="ioc", kind="deny", filename="feed.txt",
                                description="from the IR team")
    assert status == 201, body
    validate(body, "HashListImport")
    assert {k: body["list"][k] for k in ("name", "kind", "severity", "description", "source",
                                         "format", "counts", "total", "scope")} == {
        "name": "ioc", "kind": "deny", "severity": "critical",
        "description": "from the IR team", "source": "feed.txt", "format": "text",
        "counts": {"md5": 0, "sha1": 0, "sha256": 1}, "total": 1, "scope": "tenant"}
    report = body["report"]
    assert (report["added_total"], report["bad_lines"], report["records"]) == (1, 1, 2)
    assert report["errors"] == [{"file": "feed.txt", "line": 2, "unit": "line", "message":
                                 "'xyz' is not a hex digest (MD5: 32, SHA-1: 40, SHA-256: 64 "
                                 "hex digits)"}]
    assert str(tmp_path) not in str(body)  # no server path leaks

    status, body = await upload(client, analyst, f"name;md5\ncalc;{GOOD}\n".encode(),
                                "text/csv", name="gold", kind="allow", column="md5",
                                label_column="name", severity="low")
    assert status == 201 and body["report"]["files"][0]["columns"] == ["md5"]

    resp = await client.get("/api/v1/hashlists", headers=bearer(viewer))
    lists = validate(await resp.json(), "HashListList")["lists"]
    assert [(x["name"], x["kind"], x["total"]) for x in lists] == [("gold", "allow", 1),
                                                                  ("ioc", "deny", 1)]
    resp = await client.get("/api/v1/hashlists/gold", headers=bearer(viewer))
    assert validate(await resp.json(), "HashList")["severity"] == "low"

    unknown = hashlib.sha1(b"?").hexdigest()  # noqa: S324
    resp = await client.post("/api/v1/hashlists/lookup", headers=bearer(viewer),
                             json={"hashes": [BAD.upper(), GOOD, unknown]})
    found = validate(await resp.json(), "HashLookupResult")
    assert resp.status == 200
    assert [(r["hash"], r["algorithm"], r["verdict"], r["severity"]) for r in
            found["results"]] == [(BAD, "sha256", "known-bad", "critical"),
                                  (GOOD, "md5", "known-good", "low"),
                                  (unknown, "sha1", "unknown", "info")]
    assert found["results"][1]["matches"] == [{
        "list": "gold", "kind": "allow", "severity": "low", "scope": "tenant",
        "algorithm": "md5", "hash": GOOD, "label": "calc"}]
    assert found["summary"] == {"known-good": 1, "known-bad": 1, "unknown": 1}

    status, body = await upload(client, analyst, f"{GOOD}\n".encode(), name="ioc",
                                kind="deny")
    assert (status, body["code"]) == (409, "hashlist_exists")
    status, body = await upload(client, analyst, f"{GOOD}\n".encode(), name="ioc",
                                kind="deny", mode="replace")
    assert status == 200 and body["list"]["counts"] == {"md5": 1, "sha1": 0, "sha256": 0}
    status, body = await upload(client, analyst, f"{BAD}\n{GOOD}\n".encode(), name="ioc",
                                kind="deny", mode="append")
    assert status == 200 and body["list"]["total"] == 2 and body["report"]["duplicates"] == 1
    status, body = await upload(client, analyst, f"{BAD}\n".encode(), name="nope",
                                kind="deny", mode="append")
    assert (status, body["code"]) == (404, "hashlist_not_found")

    assert (await client.delete("/api/v1/hashlists/ioc", headers=bearer(analyst))).status == 204
    resp = await client.delete("/api/v1/hashlists/ioc", headers=bearer(analyst))
    assert (resp.status, (await resp.json())["code"]) == (404, "not_found")
    resp = await client.get("/api/v1/hashlists/ioc", headers=bearer(viewer))
    assert resp.status == 404


async def test_nsrl_and_rds3_uploads(aiohttp_client, tmp_path) -> None:
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    analyst = tokens["acme", "analyst"]
    sha1 = hashlib.sha1(b"k").hexdigest().upper()  # noqa: S324
    md5 = hashlib.md5(b"k").hexdigest().upper()  # noqa: S324
    legacy = (NSRL + f'"{sha1}","{md5}","0","k.dll",1,1,"WIN",""\n'
              '"BROKEN","BROKEN","0","x",1,1,"WIN",""\n').encode()
    status, body = await upload(client, analyst, legacy, name="nsrl2", kind="allow",
                                filename="NSRLFile.txt")
    assert status == 201 and body["list"]["format"] == "nsrl"
    assert body["list"]["counts"] == {"md5": 1, "sha1": 1, "sha256": 0}
    why = "'BROKEN' is not a hex digest (MD5: 32, SHA-1: 40, SHA-256: 64 hex digits)"
    assert [(e["file"], e["line"], e["message"]) for e in body["report"]["errors"]] == [
        ("NSRLFile.txt", 3, f"column 'SHA-1': {why}"), ("NSRLFile.txt", 3,
                                                        f"column 'MD5': {why}")]
    db = tmp_path / "rds.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE FILE (sha256, sha1, md5, crc32, file_name, file_size, "
                "package_id)")
    con.execute("INSERT INTO FILE VALUES (?,?,?,?,?,?,?)", (
        hashlib.sha256(b"k").hexdigest().upper(), sha1, md5, "0", "k.dll", 1, 1))
    con.commit()
    con.close()
    status, body = await upload(client, analyst, db.read_bytes(), "application/vnd.sqlite3",
                                name="rds", kind="allow")
    assert status == 201 and body["list"]["format"] == "rds3"
    assert body["list"]["counts"] == {"md5": 1, "sha1": 1, "sha256": 1}


async def test_global_lists_are_shared_and_read_only(aiohttp_client, tmp_path) -> None:
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    feed = tmp_path / "vendor.txt"
    feed.write_text(BAD + "\n")
    with HashListStore(tmp_path / DB_NAME) as glob:  # what `pcapwire hashlist` writes
        glob.import_sources([Source(feed)], name="vendor", kind="deny", severity="high")
    for tenant in ("acme", "globex"):
        headers = tokens.headers(tenant, "admin")
        lists = (await (await client.get("/api/v1/hashlists", headers=headers)).json())["lists"]
        assert [(x["name"], x["scope"], x["severity"]) for x in lists] == [
            ("vendor", "global", "high")]
        resp = await client.post("/api/v1/hashlists/lookup", json={"hashes": [BAD]},
                                 headers=headers)
        assert (await resp.json())["results"][0]["matches"][0]["scope"] == "global"
        resp = await client.delete("/api/v1/hashlists/vendor", headers=headers)
        assert (resp.status, (await resp.json())["code"]) == (403, "global_hashlist")
    resp = await client.get("/api/v1/hashlists/vendor", headers=tokens.headers("acme",
                                                                                "viewer"))
    assert (await resp.json())["scope"] == "global"


async def test_limits_and_errors(aiohttp_client, tmp_path) -> None:
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path,
                                                       max_hashlist_bytes=1000)))
    analyst = tokens["acme", "analyst"]
    status, body = await upload(client, analyst, b"0" * 1001, name="big", kind="deny")
    assert (status, body["code"], body["details"]) == (
        413, "upload_too_large", {"limit": 1000, "limit_name": "max_hashlist_bytes"})
    status, body = await upload(client, analyst, b"", name="e", kind="deny")
    assert (status, body["code"]) == (400, "empty_upload")
    status, body = await upload(client, analyst, b"x", "application/json", name="e",
                                kind="deny")
    assert (status, body["code"]) == (415, "unsupported_media_type")
    for params, parameter in (({"kind": "deny"}, "name"), ({"name": "Bad!", "kind": "deny"},
                                                            "name"),
                              ({"name": "ok", "kind": "block"}, "kind"),
                              ({"name": "ok", "kind": "deny", "severity": "x"}, "severity"),
                              ({"name": "ok", "kind": "deny", "filename": "f" * 201},
                               "filename")):
        status, body = await upload(client, analyst, b"00", **params)
        assert (status, body["code"], body["details"]) == (400, "invalid_parameter",
                                                           {"parameter": parameter}), params
    status, body = await upload(client, analyst, b"junk\nmore junk\n", name="junk",
                                kind="deny", filename="junk.txt")
    assert (status, body["code"]) == (400, "invalid_hashlist")
    assert body["message"].startswith("junk.txt: no valid hash to import (2 bad line(s))")
    assert [e["line"] for e in body["details"]["report"]["errors"]] == [1, 2]
    status, body = await upload(client, analyst, b"name,size\na,1\n", name="nocol",
                                kind="deny", format="csv", filename="x.csv")
    assert (status, body["code"]) == (400, "invalid_hashlist")
    assert body["message"].startswith("x.csv:1: no hash column found")
    viewer = tokens.headers("acme", "viewer")
    resp = await client.post("/api/v1/hashlists/lookup", headers=viewer,
                             json={"hashes": ["0" * 64] * (MAX_HASHES_PER_LOOKUP + 1)})
    assert (resp.status, (await resp.json())["code"]) == (400, "invalid_body")
    resp = await client.post("/api/v1/hashlists/lookup", headers=viewer,
                             json={"hashes": ["0" * 64, "0" * 33]})
    body = await resp.json()
    assert (resp.status, body["code"], body["details"]) == (400, "invalid_hash",
                                                            {"index": 1, "hash": "0" * 33})
    resp = await client.post("/api/v1/hashlists", headers=viewer, data=b"00",
                             params={"name": "v", "kind": "deny"})
    assert resp.status == 403


WORKFLOW = """\
name: triage
steps:
  - id: carve
    uses: carve
    input: pcap
    with: {protocols: [http]}
  - id: triage
    uses: hashlist
    input: carve
"""


async def test_a_workflow_run_by_the_api_uses_the_tenants_lists(aiohttp_client,
                                                                tmp_path) -> None:
    wfdir = tmp_path / "workflows"
    wfdir.mkdir()
    (wfdir / "triage.yaml").write_text(WORKFLOW)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path / "srv",
                                                       workflow_dirs=[wfdir])))
    analyst = Tokens(tmp_path / "srv")["acme", "analyst"]
    pcap = tmp_path / "dl.pcap"
    http_pcap(pcap, [("evil.exe", EVIL), ("other.bin", b"other " * 50)])
    resp = await client.post("/api/v1/ingest", data=pcap.read_bytes(),
                             headers={**bearer(analyst), "Content-Type": PCAP_TYPE})
    assert resp.status == 200
    status, _ = await upload(client, analyst, f"{BAD}\n".encode(), name="ioc", kind="deny")
    assert status == 201
    resp = await client.post("/api/v1/queries", headers=bearer(analyst), json={
        "bpf": "tcp port 80", "case": "IR-42", "workflows": ["triage"]})
    q = await resp.json()
    end = await wait_done(client, q["id"], analyst)
    assert end["status"] == "done"
    verdicts = (await (await client.get(f"/api/v1/queries/{q['id']}/verdicts",
                                        params={"format": "native"},
                                        headers=bearer(analyst))).json())["verdicts"]
    assert sorted(v["signature_id"] for v in verdicts) == ["hashlist:known-bad",
                                                           "hashlist:unknown"]
    (bad,) = [v for v in verdicts if v["signature_id"] == "hashlist:known-bad"]
    (follow,) = bad["evidence"]["follow_up"]
    assert (follow["status"], follow["flow"]["src_port"]) == ("done", 40000)
    history = (await (await client.get("/api/v1/queries", params={"case": "IR-42"},
                                       headers=bearer(analyst))).json())["queries"]
    assert sorted((h["event"], h["status"]) for h in history) == [
        ("", "done"), (f"hashlist:{BAD}", "done")]
    resp = await client.get(f"/api/v1/queries/{follow['query_id']}/pcap",
                            headers=bearer(analyst))
    data = await resp.read()
    assert resp.status == 200 and len(data) > 24 and follow["packets"] > 0


async def test_a_follow_up_over_the_tenants_result_limit_is_a_note_not_a_crash(
        aiohttp_client, tmp_path) -> None:
    """The follow-up query goes through the API's query function: the tenant's
    max_query_result_bytes applies to it like to any query. Here the query that carves
    the file stops before the connection's second, large download; the follow-up asks for
    the whole flow, which exceeds the limit: refused, recorded, reported -- the verdict
    still arrives and the step and the run end ok."""
    from pcapwire.cases import CaseStore
    from pcapwire.testing import T0, Capture, TcpConn, http_request, http_response

    cap = Capture(T0)
    conn = TcpConn(cap, "10.0.0.1", 40000, "10.0.0.2", 80)
    conn.send("c", http_request("/files/evil.exe"))
    conn.send("s", http_response(EVIL))
    carved_by = cap.t_us / 1e6  # the first download is over
    conn.send("c", http_request("/files/big.bin"))
    conn.send("s", http_response(b"B" * 60_000))
    conn.close()
    pcap = tmp_path / "keepalive.pcap"
    pcap.write_bytes(cap.pcap())

    wfdir = tmp_path / "workflows"
    wfdir.mkdir()
    (wfdir / "triage.yaml").write_text(WORKFLOW)
    config = ApiConfig(data_dir=tmp_path / "srv", workflow_dirs=[wfdir],
                       max_query_result_bytes=20_000)
    client = await aiohttp_client(create_app(config))
    analyst = Tokens(tmp_path / "srv")["acme", "analyst"]
    resp = await client.post("/api/v1/ingest", data=pcap.read_bytes(),
                             headers={**bearer(analyst), "Content-Type": PCAP_TYPE})
    assert resp.status == 200
    status, _ = await upload(client, analyst, f"{BAD}\n".encode(), name="ioc", kind="deny")
    assert status == 201
    resp = await client.post("/api/v1/queries", headers=bearer(analyst), json={
        "bpf": "tcp port 80", "end": carved_by + 0.0005, "case": "IR-43",
        "workflows": ["triage"]})
    q = await resp.json()
    end = await wait_done(client, q["id"], analyst)
    assert end["status"] == "done"
    verdicts = (await (await client.get(f"/api/v1/queries/{q['id']}/verdicts",
                                        params={"format": "native"},
                                        headers=bearer(analyst))).json())["verdicts"]
    (bad,) = verdicts
    assert bad["signature_id"] == "hashlist:known-bad"
    (follow,) = bad["evidence"]["follow_up"]
    assert follow["error_code"] == "result_too_large"
    assert follow["status"].startswith("error: the result exceeds the limit of 20000 bytes")
    history = (await (await client.get("/api/v1/queries", params={"case": "IR-43"},
                                       headers=bearer(analyst))).json())["queries"]
    assert sorted((h["event"], h["status"]) for h in history) == [
        ("", "done"), (f"hashlist:{BAD}", "error")]
    cases = CaseStore(config.tenant_dir("acme") / "cases.sqlite")
    try:
        (run,) = cases.runs("IR-43")
        steps = {s.step: s for s in cases.steps(run.run_id)}
    finally:
        cases.close()
    assert (run.status, steps["triage"].status) == ("ok", "ok")
    (note,) = steps["triage"].notes
    assert note.startswith(f"hashlist: follow-up query {follow['query_id']} for "
                           f"hashlist:{BAD} (tcp and host 10.0.0.1 and host 10.0.0.2 and "
                           "port 40000 and port 80) failed: the result exceeds the limit")
    assert steps["triage"].stats == {"follow_ups_failed": 1}
