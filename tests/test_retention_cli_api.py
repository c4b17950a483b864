"""Retention through its interfaces: ``pcapwire ingest`` into a full tmpfs with a policy,
``pcapwire retention set|run|status``, the expired mark in ``flows`` and the expired
window in ``query``; the API's routes per tenant, and the serve loop applying a policy."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from apiutil import Tokens, bearer, upload
from conftest import corpus_file
from pcapwire.api import ApiConfig, create_app
from pcapwire.custody.log import log_path
from pcapwire.store import Store
from pcapwire.store.config import load
from test_retention import captures, tmpfs

WAIT_S = 30.0


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pcapwire.cli", "--data-dir", str(data_dir),
                           *args], capture_output=True, text=True, timeout=120)


def test_cli_ingest_into_a_full_tmpfs_and_the_retention_commands(tmp_path: Path) -> None:
    """24 MiB through `pcapwire ingest` (default segment size) into a 16 MiB tmpfs whose
    policy is set by `retention set`: exit 0, old data deleted on the way; then status,
    a dry run with nothing to do, the expired mark in `flows` and the window in `query`."""
    inputs = captures(tmp_path, 8, 3 * 2**20, 1_700_000_000, 100)
    with tmpfs(tmp_path / "fs", "16m") as mnt:
        data = mnt / "store"
        Store(data).close()
        bad = cli(data, "retention", "set", "high_watermark=60%", "low_watermark=70%")
        assert bad.returncode == 2 and "above the high watermark" in bad.stderr
        done = cli(data, "retention", "set", "high_watermark=60%", "low_watermark=45%")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["high_watermark"] == "60%"
        ingest = cli(data, "ingest", "--json", *map(str, inputs))
        assert ingest.returncode == 0, ingest.stderr
        summary = json.loads(ingest.stdout)
        assert summary["errors"] == [] and summary["files"] == 8
        doc = json.loads(cli(data, "retention", "status", "--json").stdout)
        assert doc["usage"]["used_bytes"] <= doc["usage"]["high_bytes"]
        assert doc["expired"]["segments"] > 0 and doc["alarm"] is False
        assert doc["expired"]["by_reason"] == {"high_watermark": doc["expired"]["segments"]}
        with Store(data) as store:
            kept = store.catalog.stats()["packets"]
            exp = store.catalog.db.execute("SELECT sum(packets), count(*) FROM "
                                           "expired_segments").fetchone()
        assert kept + exp[0] == summary["packets"]
        dry = cli(data, "retention", "run", "--dry-run")
        assert dry.returncode == 0 and dry.stdout == "0 segment(s), 0 bytes would delete\n"
        flows = cli(data, "flows", "--end", "1700000000.5").stdout.splitlines()
        assert flows[1:] and all(line.endswith("packets expired") for line in flows[1:])
        query = cli(data, "query", "-w", str(tmp_path / "all.pcap"))
        assert query.returncode == 0
        assert (f"pcapwire: warning: {exp[0]} packets of this window ({exp[1]} segments) "
                "were deleted by the retention policy: 2023-11-14T22:13:20") in query.stderr
        assert query.stderr.rstrip().endswith("packets (high_watermark)")


def test_cli_run_prints_one_line_per_segment(tmp_path: Path) -> None:
    inputs = captures(tmp_path, 2, 2**20, int(time.time()) - 10 * 86400, 5 * 86400)
    data = tmp_path / "store"
    assert cli(data, "ingest", *map(str, inputs)).returncode == 0
    assert cli(data, "retention", "set", "max_age=7d").returncode == 0
    out = cli(data, "retention", "run")
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 2
    assert lines[0].startswith("deleted segments/000001/") and lines[0].endswith(": max_age")
    assert lines[1].startswith("1 segment(s), ") and lines[1].endswith(" bytes deleted")
    entries = [json.loads(x) for x in log_path(data, None).read_text().splitlines()]
    deletes = [e for e in entries if e["action"] == "segment.delete"]
    assert len(deletes) == 1 and deletes[0]["details"]["reason"] == "max_age"
    assert deletes[0]["actor"].startswith("cli:")
    assert cli(data, "retention", "set", "max_age=").returncode == 0
    assert load(data).raw == {}  # an empty [retention] is not written
    usage = cli(data, "retention", "status", "x=1")
    assert usage.returncode == 2 and "takes no KEY=VALUE" in usage.stderr


async def test_api_routes_per_tenant_and_the_serve_loop(aiohttp_client, tmp_path: Path) -> None:
    """GET (viewer), PUT (admin) and POST run (admin) act on the caller's tenant store only;
    a policy put through the API is applied by the server's maintenance loop on its own."""
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    acme, globex = tokens.headers("acme", "admin"), tokens.headers("globex", "admin")
    await upload(client, corpus_file("zeek-http-get"), tokens["acme", "analyst"])
    viewer = bearer(tokens["acme", "viewer"])
    got = await (await client.get("/api/v1/retention", headers=viewer)).json()
    assert got["usage"] is None and got["kept"]["segments"] == 1
    bad = await client.put("/api/v1/retention", headers=acme,
                           json={"high_watermark": "50%", "low_watermark": "60%"})
    body = await bad.json()
    assert bad.status == 400 and body["code"] == "invalid_policy"
    assert str(tmp_path) not in json.dumps(body)
    put = await client.put("/api/v1/retention", headers=acme, json={"max_age": "1d"})
    assert put.status == 200 and (await put.json())["policy"]["max_age_s"] == 86400
    acme_root, globex_root = tmp_path / "tenants" / "acme", tmp_path / "tenants" / "globex"
    assert load(acme_root).retention.max_age_s == 86400
    dry = await (await client.post("/api/v1/retention/run", params={"dry_run": "true"},
                                   headers=globex)).json()
    assert dry["segments"] == [] and not (globex_root / "store.toml").exists()
    dry = await (await client.post("/api/v1/retention/run", params={"dry_run": "true"},
                                   headers=acme)).json()
    assert [(s["id"], s["reason"]) for s in dry["segments"]] == [(1, "max_age")]
    # the serve loop applies the policy by itself once its interval allows
    put = await client.put("/api/v1/retention", headers=acme,
                           json={"max_age": "1d", "interval": "100ms"})
    assert put.status == 200
    deadline = time.monotonic() + WAIT_S
    while (await (await client.get("/api/v1/retention", headers=viewer)).json()
           )["expired"]["segments"] == 0:
        assert time.monotonic() < deadline, "the serve loop did not apply the policy"
        await asyncio.sleep(0.05)
    flows = (await (await client.get("/api/v1/flows", headers=viewer)).json())["flows"]
    assert flows and all(f["packets_expired"] == f["pkts_toserver"] + f["pkts_toclient"]
                         for f in flows)
    entries = [json.loads(x) for x in log_path(acme_root, None).read_text().splitlines()]
    actions = [e["action"] for e in entries]
    assert actions.count("retention.policy") == 2 and "segment.delete" in actions
    assert all("acme/admin" in e["actor"] for e in entries if e["action"] ==
               "retention.policy")
