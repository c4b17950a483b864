"""Helpers for the API tests: tokens, a server on a loopback port in a background thread
(for clients that are not asyncio: Playwright's sync API, schemathesis), uploads."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcapwire.api import ApiConfig, server
from pcapwire.api.authdb import AuthDB

PCAP_TYPE = "application/vnd.tcpdump.pcap"
# One Suricata rule that fires once on the corpus capture zeek-http-get (its GET request).
GET_RULE = ('alert http any any -> any any (msg:"pcapwire GET"; http.method; content:"GET"; '
            'classtype:trojan-activity; sid:1000001; rev:1;)\n')


def suricata_workflow_dir(tmp: Path) -> Path:
    """A workflow directory with ``ids``: the real Suricata with :data:`GET_RULE`."""
    rules = tmp / "t.rules"
    rules.write_text(GET_RULE)
    d = tmp / "workflows"
    d.mkdir()
    (d / "ids.yaml").write_text(f"""\
name: ids
description: Suricata with one test rule
steps:
  - id: ids
    uses: suricata
    input: pcap
    with:
      rules: ["{rules}"]
      args: ["-k", "none"]
      warm_spares: 0
      keep_dir: "{tmp / 'keep'}"
""")
    return d


@dataclass
class Tokens:
    """One token per (tenant, role): ``tokens["acme", "admin"]``."""

    data_dir: Path
    by_key: dict[tuple[str, str], str] = field(default_factory=dict)

    def __getitem__(self, key: tuple[str, str]) -> str:
        if key not in self.by_key:
            db = AuthDB(self.data_dir / "auth.sqlite")
            try:
                self.by_key[key], _ = db.create_token(key[0], key[1], f"test {key[1]}")
            finally:
                db.close()
        return self.by_key[key]

    def headers(self, tenant: str, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self[tenant, role]}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class ServerThread:
    """``create_app(config)`` served on 127.0.0.1:<free port> by a thread with its own loop,
    the way ``pcapwire serve`` serves it (connection guard, log throttle, TLS if configured)."""

    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="api-server", daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None or not self.url:
            raise RuntimeError(f"server did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to __enter__
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        running = await server.start(self.config, "127.0.0.1", 0)  # as `pcapwire serve`
        self.url = running.url
        self._ready.set()
        await self._stop.wait()
        await running.close()


async def upload(client: Any, path: Path, token: str, **params: str) -> dict[str, Any]:
    """POST a capture to /api/v1/ingest; returns the summary (asserts 200)."""
    resp = await client.post("/api/v1/ingest", data=path.read_bytes(), params=params,
                             headers={**bearer(token), "Content-Type": PCAP_TYPE})
    body = await resp.json()
    assert resp.status == 200, body
    return body


async def wait_done(client: Any, query_id: str, token: str) -> dict[str, Any]:
    """Follow the query's SSE stream to its ``end`` event (no polling, no sleeps)."""
    resp = await client.get(f"/api/v1/queries/{query_id}/verdicts/stream", headers=bearer(token))
    assert resp.status == 200
    import json

    event = ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "end":
            resp.release()
            return json.loads(line[6:])
    raise AssertionError("verdict stream ended without an 'end' event")
