"""A whole cluster on one machine, for tests and benchmarks: sensors (each a real ``pcapwire
serve`` process with its own data directory, loopback port, server certificate and
``--client-ca``, pinned to the central's client certificate) and a central (``pcapwire
serve --cluster FILE``, plain HTTP on loopback, or HTTPS with a server certificate of the
same CA when ``central_tls``), with certificates from :mod:`.certs`::

    parts = split_capture(capture, tmp / "parts", ["a", "b", "c"], choose)
    with Cluster(tmp / "cluster", {"a": {"acme": [parts[0]], "globex": []}, ...}) as cluster:
        token = cluster.central_token("acme", "analyst")
        ... cluster.central_url, cluster.sensor_url("a"), cluster.kill("b")

A process is ready when it logs the URL it serves (``--listen 127.0.0.1:0``: the port
the kernel gave); nothing waits by sleeping. Every tenant's captures are ingested with
``pcapwire ingest`` before its sensor starts. Each sensor issues the central one token
per tenant it serves (:data:`SERVICE_ROLE`), written to the token files the cluster file
names (``token_of`` puts another tenant's token in a file: a wrong cluster file).
:meth:`Node.wait_log` waits for a line a process logs; :meth:`Cluster.restart_central`
restarts the central on a new port, with the same data directory and cluster file.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pcapwire.api.authdb import AuthDB
from pcapwire.pcapformat import HEADER_LEN, RECORD_LEN, iter_records
from pcapwire.testing.certs import KeyPair, make_ca

SERVICE_ROLE = "analyst"  # the central's token at each sensor: the most it may do there
START_TIMEOUT_S = 60.0  # a process that has not logged its URL by then failed to start
STOP_TIMEOUT_S = 30.0
_SERVING_RE = re.compile(r"pcapwire serving .* on (https?://\S+)/ui/")


def split_capture(src: Path, out_dir: Path, names: Sequence[str],
                  choose: Callable[[int, bytes], int]) -> list[Path]:
    """Split a little-endian classic pcap into one file per name (``out_dir/NAME.pcap``,
    the same header): each record goes to ``names[choose(ts_ns, frame)]``."""
    data = src.read_bytes()
    header = data[:HEADER_LEN]
    ns = int.from_bytes(header[:4], "little") == 0xA1B23C4D
    parts: list[list[bytes]] = [[header] for _ in names]
    for sec, frac, caplen, _orig, at in iter_records(data):
        ts_ns = sec * 10**9 + (frac if ns else frac * 1000)
        parts[choose(ts_ns, data[at:at + caplen])].append(data[at - RECORD_LEN:at + caplen])
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.pcap" for name in names]
    for path, records in zip(paths, parts, strict=True):
        path.write_bytes(b"".join(records))
    return paths


@dataclass
class Node:
    """One ``pcapwire serve`` process and what it logged."""

    name: str
    data_dir: Path
    argv: list[str]
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    log: list[str] = field(default_factory=list)
    logged: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> None:
        self.log.clear()
        self.url = ""
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        ready = threading.Event()
        threading.Thread(target=self._read, args=(self.proc, ready), daemon=True).start()
        if not ready.wait(START_TIMEOUT_S) or not self.url:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {''.join(self.log)[-2000:]}")

    def _read(self, proc: subprocess.Popen[str], ready: threading.Event) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:  # until the process ends: the pipe never fills
            with self.logged:
                self.log.append(line)
                self.logged.notify_all()
            if not ready.is_set() and (m := _SERVING_RE.search(line)):
                self.url = m[1]
                ready.set()
        ready.set()

    def wait_log(self, pattern: str, timeout: float = START_TIMEOUT_S) -> str:
        """The first line logged (since the start) that ``pattern`` (a regex) matches,
        waiting for it; RuntimeError if none comes within ``timeout``."""
        regex = re.compile(pattern)

        def found() -> str | None:
            return next((line for line in self.log if regex.search(line)), None)

        with self.logged:
            if not self.logged.wait_for(lambda: found() is not None, timeout):
                raise RuntimeError(f"{self.name} logged no {pattern!r}: "
                                   f"{''.join(self.log)[-2000:]}")
            line = found()
        assert line is not None
        return line

    def stop(self) -> None:
        """SIGTERM (a graceful stop) and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(STOP_TIMEOUT_S)

    def kill(self) -> None:
        """SIGKILL: the process dies at once, mid-answer if it was answering."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)


class Cluster:
    """Sensors named by ``sensors`` (name -> {tenant it serves: captures to ingest}) and
    a central, all under ``root``; a context manager that stops them all.
    ``sensor_args``: more ``pcapwire serve`` options for every sensor; ``central_tls``: the
    central serves HTTPS (its users' clients trust :attr:`ca`), as a real central would."""

    def __init__(self, root: Path, sensors: Mapping[str, Mapping[str, Sequence[Path]]],
                 timeout_s: float = 10.0,
                 token_of: Mapping[tuple[str, str], str] | None = None,
                 sensor_args: Sequence[str] = (), central_tls: bool = False) -> None:
        self.root = root
        self.token_of = dict(token_of or {})  # (sensor, tenant) -> whose token its file holds
        self.tenants = {name: tuple(tenants) for name, tenants in sensors.items()}
        self.timeout_s = timeout_s  # the cluster file's: a sensor silent this long is missing
        self.ca = make_ca(root / "pki")
        self.client: KeyPair = self.ca.client_cert("central")
        self.sensors: dict[str, Node] = {}
        for name, tenants in sensors.items():
            data = root / name
            for tenant, files in tenants.items():
                for f in files:
                    self._pcapwire(data / "tenants" / tenant, "ingest", str(f))
            cert = self.ca.server_cert(name)
            self.sensors[name] = Node(name, data, self._serve_argv(data) + [
                "--tls-cert", str(cert.cert), "--tls-key", str(cert.key),
                "--client-ca", str(self.ca.cert), "--client-cert-sha256", self.client.sha256,
                *sensor_args])
        central = self._serve_argv(root / "central") + ["--cluster", str(root / "cluster.toml")]
        central.insert(central.index("serve"), "-v")  # its INFO lines: what tests wait on
        if central_tls:
            cert = self.ca.server_cert("central-https")  # "central" is its client certificate
            central += ["--tls-cert", str(cert.cert), "--tls-key", str(cert.key)]
        self.central = Node("central", root / "central", central)

    @staticmethod
    def _pcapwire(data_dir: Path, *args: str) -> None:
        subprocess.run([sys.executable, "-m", "pcapwire.cli", "--data-dir", str(data_dir),
                        *args], check=True, capture_output=True)

    @staticmethod
    def _serve_argv(data_dir: Path) -> list[str]:
        return [sys.executable, "-m", "pcapwire.cli", "--data-dir", str(data_dir), "serve",
                "--listen", "127.0.0.1:0"]

    def __enter__(self) -> Cluster:
        try:
            for node in self.sensors.values():
                node.start()
            self._write_cluster_file()
            self.central.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for node in (self.central, *self.sensors.values()):
            node.stop()

    def _write_cluster_file(self) -> None:
        lines = ["[central]", f'cert = "{self.client.cert}"', f'key = "{self.client.key}"',
                 f'ca = "{self.ca.cert}"', f"timeout_s = {self.timeout_s}"]
        for name, node in self.sensors.items():
            tokens = []
            for tenant in self.tenants[name]:
                path = self.root / "tokens" / f"{name}-{tenant}.token"
                path.parent.mkdir(exist_ok=True)
                owner = self.token_of.get((name, tenant), tenant)
                path.write_text(self.sensor_token(name, owner, SERVICE_ROLE) + "\n")
                tokens.append(f'{tenant} = "{path}"')
            lines += ["", "[[sensor]]", f'name = "{name}"', f'url = "{node.url}"',
                      f"tenants = {{ {', '.join(tokens)} }}"]
        (self.root / "cluster.toml").write_text("\n".join(lines) + "\n")

    @staticmethod
    def _token(data_dir: Path, tenant: str, role: str) -> str:
        db = AuthDB(data_dir / "auth.sqlite")
        try:
            return db.create_token(tenant, role, f"cluster {role}")[0]
        finally:
            db.close()

    def sensor_token(self, name: str, tenant: str, role: str) -> str:
        """A new token of sensor ``name`` (for direct calls, with the central's client
        certificate :attr:`client`)."""
        return self._token(self.sensors[name].data_dir, tenant, role)

    def central_token(self, tenant: str, role: str) -> str:
        """A new token of the central (a user's)."""
        return self._token(self.central.data_dir, tenant, role)

    @property
    def central_url(self) -> str:
        return self.central.url

    def sensor_url(self, name: str) -> str:
        return self.sensors[name].url

    def kill(self, name: str) -> None:
        self.sensors[name].kill()

    def restart_sensor(self, name: str) -> None:
        """Start sensor ``name`` again (stopped first if it runs) on the port it had, so
        that the cluster file's URL reaches it."""
        node = self.sensors[name]
        node.stop()
        node.argv[node.argv.index("--listen") + 1] = node.url.split("://", 1)[1]
        node.start()

    def restart_central(self) -> None:
        """Stop the central (SIGTERM) and start it again; it gets a new port."""
        self.central.stop()
        self.central.start()
