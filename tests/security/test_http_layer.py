"""Security finding 9.3 and TLS: slow or numerous clients cannot exhaust the server's
descriptors, and the HTTP layer's logging cannot fill the disk.

Every test talks to a real server on 127.0.0.1 over raw sockets (the server thread of
``apiutil``, or ``pcapwire serve`` in a child process), with small limits, and blocks on
``recv`` until the server answers or closes; the only time bound is a generous one that
says "the server closed it" rather than "it hung".
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import logging
import re
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from apiutil import PCAP_TYPE, ServerThread, Tokens
from pcapwire.api import ApiConfig, limits, server
from pcapwire.api.config import HttpLimits
from pcapwire.api.logthrottle import LogThrottle
from pcapwire.cli import build_parser
from pcapwire.cli.serve import config_from
from pcapwire.errors import ConfigError

BOUND = 30.0  # seconds: "closed by the server" versus "left open"
SUPPRESSED = re.compile(r"\[(\d+) similar messages suppressed\]")


# -- helpers --------------------------------------------------------------------------------
def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_until_closed(sock: socket.socket, bound: float = BOUND) -> bytes:
    """Everything the server sends until it closes the connection; fails if it is still
    open after ``bound`` seconds."""
    data, deadline = b"", time.monotonic() + bound
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        except TimeoutError:
            raise AssertionError(f"still open after {bound} s; received {data[:200]!r}"
                                 ) from None
        if not chunk:
            return data
        data += chunk


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One complete response with a Content-Length on a connection kept open."""
    sock.settimeout(BOUND)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(head.split()[1]), body


def status_and_body(raw: bytes) -> tuple[int, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


GET_HEALTH = b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\n\r\n"


class Drip(threading.Thread):
    """Sends one byte per ``interval`` until stopped or the connection breaks."""

    def __init__(self, sock: socket.socket, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.sock, self.interval, self.stop = sock, interval, threading.Event()
        self.sent = 0

    def run(self) -> None:
        while not self.stop.wait(self.interval):  # pacing, not synchronisation
            try:
                self.sock.send(b"x")
            except OSError:
                return
            self.sent += 1


@contextmanager
def dripping(sock: socket.socket) -> Iterator[Drip]:
    drip = Drip(sock)
    drip.start()
    try:
        yield drip
    finally:
        drip.stop.set()
        drip.join(BOUND)


def serve(tmp_path: Path, **http: float) -> ServerThread:
    return ServerThread(ApiConfig(data_dir=tmp_path, http=HttpLimits(**http)))  # type: ignore[arg-type]


# -- header deadline and keep-alive ------------------------------------------------------------
def test_partial_headers_are_cut_off_at_the_header_timeout(tmp_path):
    with serve(tmp_path, header_timeout_s=1.0) as srv:
        port = port_of(srv.url)
        partial = connect(port)
        partial.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        silent = connect(port)  # connects, sends nothing
        trickle = connect(port)  # keeps sending header bytes, never finishes
        trickle.sendall(b"GET /api/v1/health HTTP/1.1\r\n")
        with dripping(trickle):
            assert read_until_closed(trickle).startswith(b"HTTP/1.1 408 ")
        for sock in (partial, silent):
            assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")
        fine = connect(port)  # a complete request is served, and again on the same connection
        for _ in range(2):
            fine.sendall(GET_HEALTH)
            assert read_response(fine)[0] == 200
        for sock in (partial, silent, trickle, fine):
            sock.close()
    assert limits.HEADER_TIMEOUT_S == HttpLimits().header_timeout_s > 0


def test_idle_keepalive_connection_is_closed(tmp_path):
    with serve(tmp_path, keepalive_timeout_s=1.0) as srv:
        sock = connect(port_of(srv.url))
        sock.sendall(GET_HEALTH)
        assert read_response(sock)[0] == 200
        assert read_until_closed(sock) == b""  # idle after its answer: closed
        sock.close()
    assert limits.KEEPALIVE_TIMEOUT_S == HttpLimits().keepalive_timeout_s > 0


# -- connections per client ------------------------------------------------------------------
def test_connections_per_client_address_are_capped(tmp_path):
    with serve(tmp_path, max_connections_per_client=3) as srv:
        port = port_of(srv.url)
        held = [connect(port) for _ in range(3)]
        for sock in held:
            sock.sendall(GET_HEALTH)
            assert read_response(sock)[0] == 200
        extra = connect(port)
        status, body = status_and_body(read_until_closed(extra))  # answered and closed
        details = json.loads(body)
        assert (status, details["code"], details["details"]) == (429, "too_many_connections", {
            "limit": 3, "limit_name": "max_connections_per_client"})
        other = connect(port, source="127.0.0.2")  # another client is served meanwhile
        other.sendall(GET_HEALTH)
        assert read_response(other)[0] == 200
        held[0].sendall(GET_HEALTH)  # and so are the connections already open
        assert read_response(held[0])[0] == 200
        for sock in (*held, extra, other):
            sock.close()
    assert limits.MAX_CONNECTIONS_PER_CLIENT == HttpLimits().max_connections_per_client > 0


# -- request body rate -----------------------------------------------------------------------
def _slow_post(port: int, path: str, headers: str, length: int) -> tuple[int, dict, int]:
    sock = connect(port)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\n{headers}Content-Length: {length}\r\n"
                 "\r\n".encode())
    with dripping(sock) as drip:
        sock.settimeout(BOUND)
        first = sock.recv(65536)  # blocks until the server answers
        drip.stop.set()
    raw = first + read_until_closed(sock)  # and then it closes the connection
    sock.close()
    status, body = status_and_body(raw)
    return status, json.loads(body), drip.sent


def test_slow_request_bodies_are_cut_off(tmp_path):
    tokens = Tokens(tmp_path)
    with serve(tmp_path, body_min_bytes_per_s=100, body_rate_window_s=1.0) as srv:
        port = port_of(srv.url)
        # An authenticated upload at a few bytes per second: 408, nothing kept.
        status, body, sent = _slow_post(
            port, "/api/v1/ingest", f"Authorization: Bearer {tokens['acme', 'analyst']}\r\n"
            f"Content-Type: {PCAP_TYPE}\r\n", 100_000)
        assert (status, body["code"], body["details"]) == (408, "body_too_slow", {
            "limit": 100, "limit_name": "body_min_bytes_per_s"})
        assert sent < 100_000
        assert list((tmp_path / "tenants" / "acme" / "uploads").iterdir()) == []
        # An unauthenticated form post to the login page (read by aiohttp's request.post()).
        status, body, _ = _slow_post(port, "/ui/login", "Content-Type: application/"
                                     "x-www-form-urlencoded\r\n", 10_000)
        assert (status, body["code"]) == (408, "body_too_slow")
        # A body nobody reads (refused before reading): answered, then closed, not drained.
        status, body, _ = _slow_post(port, "/api/v1/ingest", "", 100_000)
        assert (status, body["code"]) == (401, "unauthorized")
        # A body at full speed is not affected (a dashboard login: 303 to the UI).
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=BOUND)
        conn.request("POST", "/ui/login", body=f"csrf=c&token={tokens['acme', 'viewer']}",
                     headers={"Content-Type": "application/x-www-form-urlencoded",
                              "Cookie": "pcapwire_login_csrf=c"})
        assert conn.getresponse().status == 303
        conn.close()
    assert (limits.BODY_MIN_BYTES_PER_S, limits.BODY_RATE_WINDOW_S) == (
        HttpLimits().body_min_bytes_per_s, HttpLimits().body_rate_window_s)


# -- logging ---------------------------------------------------------------------------------
class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.name, record.getMessage()))

    def of(self, name: str) -> list[str]:
        return [msg for n, msg in self.lines if n == name]


def _accounted(lines: list[str]) -> int:
    """Lines written plus those reported suppressed (the flush line is only a report)."""
    reported = sum(int(m[1]) for line in lines for m in [SUPPRESSED.search(line)] if m)
    return sum(1 for line in lines if not line.startswith("[")) + reported


def test_a_flood_of_requests_gives_bounded_log_output(tmp_path):
    access = logging.getLogger("pcapwire.api.access")
    handler, level = Lines(), access.level
    logging.getLogger().addHandler(handler)
    access.setLevel(logging.INFO)
    burst, rate, requests, refusals = 20, 1.0, 300, 100
    try:
        t0 = time.monotonic()
        with serve(tmp_path, log_burst_lines=burst, log_lines_per_s=rate,
                   max_connections_per_client=2) as srv:
            port = port_of(srv.url)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=BOUND)
            for _ in range(requests):  # one access-log line each
                conn.request("GET", "/api/v1/nowhere")
                conn.getresponse().read()
            other = http.client.HTTPConnection("127.0.0.1", port, timeout=BOUND)
            other.request("GET", "/api/v1/health")
            other.getresponse().read()
            for _ in range(refusals):  # one warning each
                extra = connect(port)
                assert status_and_body(read_until_closed(extra))[0] == 429
                extra.close()
            conn.close()
            other.close()
        elapsed = time.monotonic() - t0
    finally:
        logging.getLogger().removeHandler(handler)
        access.setLevel(level)
    allowed = burst + rate * elapsed + 1  # + the shutdown report
    for name, attempted in (("pcapwire.api.access", requests + 1),
                            ("pcapwire.api.connections", refusals)):
        lines = handler.of(name)
        assert len(lines) <= allowed, (name, len(lines), allowed)
        assert _accounted(lines) == attempted  # every line written or counted
        assert any(SUPPRESSED.search(line) for line in lines)


def test_log_throttle_token_bucket():
    now = [0.0]
    throttle = LogThrottle(burst=3, rate=2.0, clock=lambda: now[0])

    def record(msg: str, *args: object, name: str = "aiohttp.server") -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args or None, None)

    passed = [r for r in (record("Error handling request %s", i) for i in range(50))
              if throttle.filter(r)]
    assert len(passed) == 3
    assert throttle.filter(record("another kind %s", 1))  # kinds have their own buckets
    assert throttle.filter(record("x", name="asyncio"))
    now[0] += 1.0  # two more tokens
    a, b, c = (record("Error handling request %s", i) for i in (50, 51, 52))
    assert throttle.filter(a) and throttle.filter(b) and not throttle.filter(c)
    assert a.getMessage() == "Error handling request 50 [47 similar messages suppressed]"
    assert b.getMessage() == "Error handling request 51"
    for off in (LogThrottle(burst=0, rate=1.0), LogThrottle(burst=1, rate=0.0)):
        assert all(off.filter(record("x")) for _ in range(10))  # 0 turns throttling off
    assert limits.LOG_BURST_LINES == HttpLimits().log_burst_lines > 0
    assert limits.LOG_LINES_PER_S == HttpLimits().log_lines_per_s > 0


# -- TLS, secure cookies, HSTS ---------------------------------------------------------------
def self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        openssl = shutil.which("openssl") or pytest.skip("neither cryptography nor openssl")
        subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj",
                        "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(cert)], check=True,
                       capture_output=True)
        return cert, key
    pkey = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    crt = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
           .public_key(pkey.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(now - datetime.timedelta(hours=1))
           .not_valid_after(now + datetime.timedelta(days=1))
           .add_extension(x509.SubjectAlternativeName(
               [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
           .sign(pkey, hashes.SHA256()))
    cert.write_bytes(crt.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(pkey.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return cert, key


class ServeProcess:
    """``pcapwire serve`` in a child process; its stderr is collected."""

    def __init__(self, data: Path, *flags: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pcapwire.cli", "--data-dir", str(data), "serve",
             "--listen", "127.0.0.1:0", *flags], stderr=subprocess.PIPE, text=True)
        self.log = ""
        found = self.wait_for(r"serving .* on (https?://127\.0\.0\.1:\d+)/ui/")
        self.url, self.port = found[1], port_of(found[1])

    def wait_for(self, pattern: str) -> re.Match[str]:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + BOUND
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stderr, selectors.EVENT_READ)
            while (m := re.search(pattern, self.log)) is None:
                left = deadline - time.monotonic()
                assert left > 0 and sel.select(left), f"no {pattern!r} in {self.log!r}"
                line = self.proc.stderr.readline()
                assert line, f"server exited: {self.log}"
                self.log += line
        return m

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=BOUND)
        self.log += err
        return self.proc.returncode


def test_tls_serving_secure_cookies_and_hsts(tmp_path):
    cert, key = self_signed(tmp_path)
    data = tmp_path / "data"
    token = Tokens(data)["acme", "viewer"]
    srv = ServeProcess(data, "--tls-cert", str(cert), "--tls-key", str(key),
                       "--hsts-max-age", "600", "--header-timeout", "2",
                       "--max-connections-per-client", "2")
    try:
        assert srv.url.startswith("https://") and "secure cookies on" in srv.log
        ctx = ssl.create_default_context(cafile=str(cert))
        # Browsing from 127.0.0.2 (the per-client limit below uses 127.0.0.1).
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=BOUND,
                                           source_address=("127.0.0.2", 0))
        conn.request("GET", "/ui/login")
        page = conn.getresponse()
        page.read()
        assert page.status == 200
        assert page.headers["Strict-Transport-Security"] == "max-age=600"
        login_cookie = page.headers["Set-Cookie"]
        assert "Secure" in login_cookie
        csrf = login_cookie.split(";")[0].split("=", 1)[1]
        conn.request("POST", "/ui/login", body=f"csrf={csrf}&token={token}", headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"pcapwire_login_csrf={csrf}"})
        done = conn.getresponse()
        done.read()
        session = [c for c in done.headers.get_all("Set-Cookie") or []
                   if c.startswith("pcapwire_session=")]
        assert done.status == 303 and len(session) == 1
        assert all(attr in session[0] for attr in ("Secure", "HttpOnly", "SameSite=Strict"))
        conn.close()
        # The per-client limit counts TLS connections before their handshake.
        quiet = [connect(srv.port) for _ in range(2)]  # never start a handshake
        extra = connect(srv.port)
        assert read_until_closed(extra) == b""
        srv.wait_for(r"refused a connection from 127\.0\.0\.1")
        other = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx,
                                            timeout=BOUND, source_address=("127.0.0.3", 0))
        other.request("GET", "/api/v1/health")
        assert other.getresponse().status == 200
        other.close()
        for sock in quiet:  # the handshake has the header timeout too
            assert read_until_closed(sock) == b""
            sock.close()
        extra.close()
    finally:
        code = srv.stop()
    assert code == 0, srv.log


def test_tls_context_and_cookie_defaults(tmp_path):
    cert, key = self_signed(tmp_path)
    assert server.tls_context(cert, key).minimum_version == limits.TLS_MIN_VERSION
    assert limits.TLS_MIN_VERSION >= ssl.TLSVersion.TLSv1_2
    with pytest.raises(ConfigError):
        server.tls_context(key, key)

    def config(*flags: str) -> ApiConfig:
        argv = ["--data-dir", str(tmp_path), "serve", *flags]
        return config_from(build_parser(argv).parse_args(argv))

    tls = ("--tls-cert", str(cert), "--tls-key", str(key))
    assert config().secure_cookies is False
    assert config(*tls).secure_cookies is True
    assert config("--behind-tls-proxy").secure_cookies is True
    assert config("--behind-tls-proxy", "--no-secure-cookies").secure_cookies is False
    assert config("--secure-cookies").secure_cookies is True
    assert config(*tls).hsts_max_age_s == limits.HSTS_MAX_AGE_S
    with pytest.raises(ConfigError):
        config("--tls-cert", str(cert))  # a certificate without its key
    with pytest.raises(ConfigError):
        config("--header-timeout", "-1")
    parsed = config("--header-timeout", "3", "--keepalive-timeout", "4", "--body-min-rate",
                    "5", "--body-rate-window", "6", "--max-connections-per-client", "7",
                    "--log-burst", "8", "--log-rate", "9").http
    assert parsed == HttpLimits(3, 4, 5, 6, 7, 8, 9)


def test_no_hsts_over_plain_http(tmp_path):
    with serve(tmp_path) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", port_of(srv.url), timeout=BOUND)
        conn.request("GET", "/ui/login")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200 and "Strict-Transport-Security" not in resp.headers
        assert "Secure" not in resp.headers["Set-Cookie"]
        conn.close()
