"""A real ``nats-server`` with JetStream for tests and benchmarks: on 127.0.0.1, on a port
of its own, with its own storage directory, stopped and started again on the same port and
storage (what a restart of the service does)::

    with NatsServer(tmp_path / "nats") as server:
        jobs = await NatsJobs.connect(server.url)
        ...
        server.restart()  # queued messages and KV buckets survive

Readiness is an event, not a guess: the server logs ``Server is ready`` on stderr once its
client listener (and JetStream, enabled before it) is up; a thread reads the log and the
start returns when that line arrives, then a TCP connection must get the server's ``INFO``
with JetStream on. Neither waits longer than :data:`START_TIMEOUT_S`.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path
from types import TracebackType

#: the server binary (Debian's ``nats-server`` package)
NATS_SERVER = "nats-server"
#: a start (readiness included) or a stop takes at most this long
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
_READY = "Server is ready"
_LISTENING = re.compile(r"Listening for client connections on 127\.0\.0\.1:(\d+)")


class NatsServerError(RuntimeError):
    """The server did not start or stop; the message carries its log."""


class NatsServer:
    """One ``nats-server -js`` process; :meth:`start` picks a free port the first time
    (``-p -1``: the server binds it itself, no race) and reuses it on later starts."""

    def __init__(self, store_dir: Path, binary: str = NATS_SERVER) -> None:
        found = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(
            f"/usr/sbin/{binary}").exists() else None)
        if found is None:
            raise NatsServerError(f"{binary} not found: install the Debian package "
                                  "nats-server (scripts/setup.sh does)")
        self.binary = found
        self.store_dir = store_dir
        self.port = -1
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    @property
    def url(self) -> str:
        if self.port < 0:
            raise NatsServerError("the server has not been started yet")
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        if self.proc is not None:
            raise NatsServerError("the server is already running")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log = []
        proc = self.proc = subprocess.Popen(
            [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port),
             "-sd", str(self.store_dir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        ready = threading.Event()
        threading.Thread(target=self._read_log, args=(proc, ready), daemon=True).start()
        if not ready.wait(START_TIMEOUT_S) or proc.poll() is not None:
            self._fail(f"nats-server did not log {_READY!r} within {START_TIMEOUT_S} s")
        ports = [int(m.group(1)) for line in self.log if (m := _LISTENING.search(line))]
        if not ports:
            self._fail("nats-server logged no client listener on 127.0.0.1")
        self.port = ports[-1]
        self._check_info()
        return self

    def _read_log(self, proc: subprocess.Popen[str], ready: threading.Event) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.log.append(line.rstrip("\n"))
            if _READY in line:
                ready.set()
        ready.set()  # the server exited: the waiter sees it through poll()

    def _check_info(self) -> None:
        """A client's first read: the server's ``INFO`` line, JetStream on."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=START_TIMEOUT_S) as s:
            line = s.makefile("rb").readline()
        if not line.startswith(b"INFO "):
            self._fail(f"127.0.0.1:{self.port} sent {line[:80]!r}, not a NATS INFO line")
        if not json.loads(line[5:]).get("jetstream"):
            self._fail("nats-server runs without JetStream")

    def _fail(self, why: str) -> None:
        self.stop()
        tail = "\n".join(self.log[-20:])
        raise NatsServerError(f"{why}; its log ends:\n{tail}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop (SIGTERM: a clean shutdown that flushes the store; SIGKILL: a crash)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise NatsServerError(f"nats-server did not stop within {STOP_TIMEOUT_S} s "
                                      "of SIGTERM; killed") from None

    def restart(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop and start again on the same port with the same storage directory."""
        self.stop(sig)
        self.start()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
