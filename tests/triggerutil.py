"""Helpers for the trigger tests: a webhook receiver on 127.0.0.1 (real HTTP, answers from a
script per path, every request kept with its arrival time), a five-segment store, a trigger."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

WAIT_S = 60.0  # bound of every wait


class Receiver:
    """``statuses``: path -> statuses answered in turn (the last one repeats; default 200)."""

    def __init__(self, statuses: dict[str, list[int]] | None = None) -> None:
        self.statuses = {k: list(v) for k, v in (statuses or {}).items()}
        self.requests: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                arrived = time.time()
                script = receiver.statuses.get(self.path, [200])
                status = script.pop(0) if len(script) > 1 else script[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver.cond:
                    receiver.requests.append({"path": self.path, "headers": self.headers,
                                              "body": body, "status": status,
                                              "arrived": arrived})
                    receiver.cond.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def wait(self, n: int, path: str | None = None, timeout: float = WAIT_S
             ) -> list[dict[str, Any]]:
        """The first ``n`` requests (to ``path``), once they have arrived."""
        def have() -> list[dict[str, Any]]:
            return [r for r in self.requests if path is None or r["path"] == path]

        with self.cond:
            if not self.cond.wait_for(lambda: len(have()) >= n, timeout):
                raise AssertionError(f"timed out waiting for {n} request(s) to {path}: "
                                     f"{len(have())} came")
            return have()[:n]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def five_segment_store(capture: Path, where: Path) -> Path:
    """A store of ``capture`` (synth 3 MiB, seed 11) in 5 segments at ``where``; the DNS
    server 10.0.0.53 has flows in every one."""
    from pcapwire.store import Store

    with Store(where) as store:
        store.ingest([capture], segment_max_bytes=2**19)
        assert len(store.catalog.segments()) == 5
    return where


def create_trigger(root: Path, name: str, defn: dict[str, Any]) -> tuple[int, int]:
    """(trigger id, hunt id) of a new trigger ``name`` with ``defn`` in the store ``root``."""
    from pcapwire.triggers import TriggerDB, from_dict

    with TriggerDB(root) as tdb:
        trigger, hunt = tdb.create(from_dict({"name": name, **defn}), "test")
    return trigger.id, hunt.id


def ip_and_port_traffic(offset: int) -> list:
    """Three exchanges from hosts 10.0.<offset>.x: one with 198.18.0.7 (an IP indicator),
    one to tcp port 4444 (a BPF), one matching neither."""
    from pcapwire.testing.craft import tcp_session, udp_exchange

    return [udp_exchange(f"10.0.{offset}.2:1001 > 198.18.0.7:53", b"q", b"a"),
            tcp_session(f"10.0.{offset}.4:5000 > 10.0.0.5:4444", b"x", b"y"),
            udp_exchange(f"10.0.{offset}.6:7 > 10.0.0.7:9", b"no", b"match")]
