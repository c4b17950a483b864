"""Mutual TLS between a central and a sensor, against a real server (``ServerThread`` serves
what ``pcapwire serve`` serves): a sensor with ``--client-ca`` answers only a client whose
certificate its CA signed (and, pinned, only the central's); the central checks the
sensor's certificate and host name; the on-behalf-of headers lower a role, never raise it,
name the central's user in custody, and are refused without mutual TLS. The openssl
commands of docs/cluster.md make certificates a sensor and a central work with."""

from __future__ import annotations

import logging
import re
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from apiutil import ServerThread, Tokens, bearer, upload, wait_done
from conftest import REPO, corpus_file
from pcapwire.api import ApiConfig, create_app
from pcapwire.api.authdb import TOKEN_RE
from pcapwire.cli import build_parser
from pcapwire.cli.serve import config_from
from pcapwire.cluster import tls
from pcapwire.cluster.config import load_cluster
from pcapwire.errors import ConfigError
from pcapwire.testing.certs import CertificateAuthority, KeyPair, make_ca

BOUND = 30.0  # seconds any one network step may take before the test fails
ANALYST_ROUTE = ("POST", "/api/v1/queries")  # needs analyst; refused before its body is read


class LogWatch(logging.Handler):
    """Collects the messages of a logger; :meth:`wait_for` blocks until one matches."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.changed:
            self.lines.append(record.getMessage())
            self.changed.notify_all()

    def wait_for(self, pattern: str) -> str:
        with self.changed:
            assert self.changed.wait_for(
                lambda: any(re.search(pattern, line) for line in self.lines), BOUND), self.lines
            return next(line for line in self.lines if re.search(pattern, line))


@pytest.fixture
def handshakes() -> Iterator[LogWatch]:
    watch = LogWatch()
    logger = logging.getLogger("pcapwire.api.connections")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(watch)
    yield watch
    logger.removeHandler(watch)
    logger.setLevel(level)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("pki")
    ca, other = make_ca(d / "ca"), make_ca(d / "other", "another CA")
    return {"ca": ca, "sensor": ca.server_cert("site-a"), "central": ca.client_cert("central"),
            "intruder": ca.client_cert("intruder"), "foreign": other.client_cert("central"),
            "foreign_sensor": other.server_cert("site-a"),
            "misnamed_sensor": ca.server_cert("elsewhere", hosts=("sensor.example",))}


def sensor_config(data: Path, pki: dict[str, Any], *, pin: bool = True,
                  server: str = "sensor") -> ApiConfig:
    sensor: KeyPair = pki[server]
    return ApiConfig(data_dir=data, tls_cert=sensor.cert, tls_key=sensor.key,
                     client_ca=pki["ca"].cert,
                     client_cert_sha256=(pki["central"].sha256,) if pin else ())


def raw_whoami(url: str, ca: CertificateAuthority, client: KeyPair | None, token: str,
               version: ssl.TLSVersion) -> bytes | OSError:
    """GET /api/v1/whoami over a plain TLS socket (TLS ``version``, ``client``'s
    certificate): everything the server sent, or the error that ended the connection."""
    ctx = ssl.create_default_context(cafile=ca.cert)
    ctx.minimum_version = ctx.maximum_version = version
    if client is not None:
        ctx.load_cert_chain(client.cert, client.key)
    host, port = url.removeprefix("https://").rsplit(":", 1)
    received = b""
    try:
        with socket.create_connection((host, int(port)), timeout=BOUND) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as conn:
            conn.sendall(f"GET /api/v1/whoami HTTP/1.1\r\nHost: {host}\r\nAuthorization: "
                         f"Bearer {token}\r\nConnection: close\r\n\r\n".encode())
            while chunk := conn.recv(65536):
                received += chunk
    except OSError as exc:  # ssl.SSLError included
        assert received == b""
        return exc
    return received


def refused(result: bytes | OSError, version: ssl.TLSVersion) -> bool:
    """No HTTP byte came back. With TLS 1.2 the client's handshake itself fails; with TLS
    1.3 the client finishes its part before the server checks its certificate, and then
    the server ends the connection before reading the request."""
    if version == ssl.TLSVersion.TLSv1_2:
        return isinstance(result, ssl.SSLError)
    return result == b"" or isinstance(result, OSError)  # EOF, reset, alert: any but HTTP


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_only_the_pinned_central_gets_an_answer(tmp_path: Path, pki: dict[str, Any],
                                                handshakes: LogWatch,
                                                version: ssl.TLSVersion) -> None:
    token = Tokens(tmp_path)["acme", "viewer"]
    with ServerThread(sensor_config(tmp_path, pki)) as srv:
        for client, reason in [
                (None, r"PEER_DID_NOT_RETURN_A_CERTIFICATE"),
                (pki["foreign"], r"CERTIFICATE_VERIFY_FAILED.*unable to get local issuer"),
                (pki["intruder"], r"the client certificate is not the pinned one "
                 r"\(--client-cert-sha256\)")]:
            result = raw_whoami(srv.url, pki["ca"], client, token, version)
            assert refused(result, version), result
            handshakes.wait_for(rf"TLS handshake with 127\.0\.0\.1 failed: .*{reason}")
        answer = raw_whoami(srv.url, pki["ca"], pki["central"], token, version)
    assert isinstance(answer, bytes) and answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b'"tenant": "acme", "role": "viewer"' in answer


def test_without_a_pin_any_certificate_of_the_ca(tmp_path: Path, pki: dict[str, Any],
                                                 handshakes: LogWatch) -> None:
    token = Tokens(tmp_path)["acme", "viewer"]
    v13 = ssl.TLSVersion.TLSv1_3
    with ServerThread(sensor_config(tmp_path, pki, pin=False)) as srv:
        intruder = raw_whoami(srv.url, pki["ca"], pki["intruder"], token, v13)
        foreign = raw_whoami(srv.url, pki["ca"], pki["foreign"], token, v13)
        handshakes.wait_for(r"failed: .*CERTIFICATE_VERIFY_FAILED")
    assert isinstance(intruder, bytes) and intruder.startswith(b"HTTP/1.1 200 OK\r\n")
    assert refused(foreign, v13)


async def get_json(session: aiohttp.ClientSession, url: str, token: str,
                   headers: dict[str, str] | None = None,
                   method: str = "GET") -> tuple[int, dict[str, Any]]:
    async with session.request(method, url, headers={**bearer(token), **(headers or {})},
                               json={} if method == "POST" else None) as resp:
        return resp.status, await resp.json()


def central_session(pki: dict[str, Any], **kw: Any) -> aiohttp.ClientSession:
    """A client as the central is one: its certificate, the sensors' CA."""
    ctx = tls.central_client_context(pki["central"].cert, pki["central"].key, pki["ca"].cert)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx),
                                 timeout=aiohttp.ClientTimeout(total=BOUND), **kw)


@pytest.mark.parametrize(("server", "reason"), [
    ("foreign_sensor", "unable to get local issuer certificate"),
    ("misnamed_sensor", "IP address mismatch, certificate is not valid for '127.0.0.1'")])
async def test_the_central_checks_the_sensor(tmp_path: Path, pki: dict[str, Any],
                                             server: str, reason: str) -> None:
    token = Tokens(tmp_path)["acme", "viewer"]
    with ServerThread(sensor_config(tmp_path, pki, server=server)) as srv:
        async with central_session(pki) as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError) as caught:
                await get_json(session, f"{srv.url}/api/v1/whoami", token)
    assert reason in str(caught.value)


def custody_actor(token: str) -> str:
    match = TOKEN_RE.fullmatch(token)
    assert match is not None
    return f"token:{match[1]}"


async def test_on_behalf_of_only_lowers_and_names_the_user(tmp_path: Path,
                                                           pki: dict[str, Any]) -> None:
    tokens = Tokens(tmp_path)
    analyst, viewer, admin = (tokens["acme", r] for r in ("analyst", "viewer", "admin"))
    alice = "token:0a1b2c3d4e5f (acme/viewer) at central"
    with ServerThread(sensor_config(tmp_path, pki)) as srv:
        async with central_session(pki) as session:
            async def call(token: str, role: str | None = None, actor: str = alice,
                           route: tuple[str, str] = ("GET", "/api/v1/whoami"),
                           ) -> tuple[int, dict[str, Any]]:
                headers = {tls.ON_BEHALF_OF_HEADER: actor}
                if role is not None:
                    headers[tls.ROLE_HEADER] = role
                return await get_json(session, srv.url + route[1], token, headers, route[0])

            assert (await call(analyst, "viewer"))[1]["role"] == "viewer"
            status, body = await call(analyst, "viewer", route=ANALYST_ROUTE)
            assert (status, body["code"], body["details"]) == \
                (403, "forbidden", {"required_role": "analyst", "role": "viewer"})
            assert (await call(viewer, "analyst"))[1]["role"] == "viewer"  # never raised
            assert (await call(viewer, "admin", route=ANALYST_ROUTE))[0] == 403
            assert (await call(admin, "analyst"))[1]["role"] == "analyst"
            assert (await call(admin, "analyst", route=("GET", "/api/v1/tokens")))[0] == 403
            assert (await call(analyst))[1]["role"] == "analyst"  # no role: the token's
            assert (await call(viewer, actor="a" * tls.MAX_ACTOR_CHARS))[0] == 200

            for token, role, actor, message in [
                    (viewer, "root", alice, "unknown X-Pcapwire-Role 'root'; use one of "
                     "viewer, analyst, admin"),
                    (viewer, "viewer", "a" * (tls.MAX_ACTOR_CHARS + 1),
                     f"an on-behalf-of actor is 1-{tls.MAX_ACTOR_CHARS} printable ASCII "
                     "characters"),
                    (viewer, "viewer", "", "an on-behalf-of actor is 1-")]:
                status, body = await call(token, role, actor)
                assert (status, body["code"]) == (400, "bad_on_behalf_of")
                assert body["message"].startswith(message)
            status, body = await get_json(session, f"{srv.url}/api/v1/whoami", viewer,
                                          {tls.ROLE_HEADER: "viewer"})
            assert (status, body["message"]) == \
                (400, "X-Pcapwire-Role needs X-Pcapwire-On-Behalf-Of naming who asked")

        # The custody log names the token with the role the request ran with, and the
        # central's user.
        obo = tls.on_behalf_headers("token:77aa01020304 (acme/analyst) at central", "analyst")
        async with central_session(pki, base_url=srv.url, headers=obo) as central:
            await upload(central, corpus_file("zeek-http-get"), analyst)
            async with central.post("/api/v1/queries", headers=bearer(admin),
                                    json={"bpf": "tcp", "case": "IR-9"}) as resp:
                query = await resp.json()
                assert resp.status == 202, query
            await wait_done(central, query["id"], admin)
            status, log = await get_json(central, "/api/v1/cases/IR-9/custody", viewer)
    assert status == 200
    assert [(e["action"], e["actor"]) for e in log["entries"]] == [
        ("query", f"{custody_actor(admin)} (acme/analyst) on behalf of "
                  "token:77aa01020304 (acme/analyst) at central")]


async def test_refused_without_mutual_tls(aiohttp_client, tmp_path: Path) -> None:
    viewer = Tokens(tmp_path)["acme", "viewer"]
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    for headers in ({tls.ON_BEHALF_OF_HEADER: "someone"}, {tls.ROLE_HEADER: "viewer"}):
        resp = await client.get("/api/v1/whoami", headers={**bearer(viewer), **headers})
        body = await resp.json()
        assert (resp.status, body["code"]) == (400, "on_behalf_of_needs_mtls")
        assert body["message"] == (
            "X-Pcapwire-On-Behalf-Of and X-Pcapwire-Role are honoured only by a sensor "
            "serving mutual TLS (pcapwire serve --client-ca); send the request without them")
    resp = await client.get("/api/v1/whoami", headers=bearer(viewer))
    assert resp.status == 200


def test_fingerprints_and_pin_limit(tmp_path: Path, pki: dict[str, Any]) -> None:
    central: KeyPair = pki["central"]
    openssl = subprocess.run(["openssl", "x509", "-in", str(central.cert), "-noout",
                              "-fingerprint", "-sha256"], check=True, capture_output=True,
                             text=True).stdout
    assert tls.cert_sha256(central.cert) == central.sha256 == tls.parse_sha256(openssl)
    assert tls.parse_sha256(central.sha256.upper()) == central.sha256
    with pytest.raises(ConfigError, match=f"^cannot read a PEM certificate from "
                       f"{central.key}"):
        tls.cert_sha256(central.key)
    sensor: KeyPair = pki["sensor"]
    pins = [f"{i:064x}" for i in range(tls.MAX_PINS)]
    ctx = tls.sensor_server_context(sensor.cert, sensor.key, pki["ca"].cert, pins)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    # Only the given CA is trusted (no system CAs, which sign certificates for anyone).
    ca_subject = ((("organizationName", "pcapwire test"),), (("commonName", "pcapwire test CA"),))
    assert [c["subject"] for c in ctx.get_ca_certs()] == [ca_subject]
    central_ctx = tls.central_client_context(central.cert, central.key, pki["ca"].cert)
    assert [c["subject"] for c in central_ctx.get_ca_certs()] == [ca_subject]
    assert central_ctx.check_hostname and central_ctx.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ConfigError, match=f"^at most {tls.MAX_PINS} --client-cert-sha256 "
                       f"pins, not {tls.MAX_PINS + 1}$"):
        tls.sensor_server_context(sensor.cert, sensor.key, pki["ca"].cert, [*pins, "0" * 64])
    with pytest.raises(ConfigError, match="^cannot read the client CA certificate"):
        tls.sensor_server_context(sensor.cert, sensor.key, sensor.key)
    assert tls.sensor_server_context(sensor.cert, sensor.key).verify_mode == ssl.CERT_NONE
    with pytest.raises(ValueError, match="^an on-behalf-of actor"):
        tls.on_behalf_headers("two\r\nlines", "viewer")


def doc_block(lang: str) -> str:
    text = (REPO / "docs" / "cluster.md").read_text()
    found = re.search(rf"<!-- tests/test_cluster_tls.py runs this block as it is -->\n"
                      rf"```{lang}\n(.*?)```", text, re.S) if lang == "sh" else \
        re.search(rf"```{lang}\n(.*?)```", text, re.S)
    assert found is not None
    return found[1]


async def test_the_documented_openssl_commands(tmp_path: Path) -> None:
    made = subprocess.run(["bash", "-euo", "pipefail", "-c", doc_block("sh")], cwd=tmp_path,
                          check=True, capture_output=True, text=True)
    pin = made.stdout.strip().splitlines()[-1]
    assert pin.startswith("sha256 Fingerprint=")
    for key in ("ca.key", "site-a.key", "central.key"):
        assert (tmp_path / key).stat().st_mode & 0o777 == 0o600
    data = tmp_path / "data"
    (tmp_path / "site-a-acme.token").write_text(Tokens(data)["acme", "analyst"] + "\n")
    argv = ["--data-dir", str(data), "serve", "--tls-cert", str(tmp_path / "site-a.crt"),
            "--tls-key", str(tmp_path / "site-a.key"), "--client-ca",
            str(tmp_path / "ca.crt"), "--client-cert-sha256", pin]
    with ServerThread(config_from(build_parser(argv).parse_args(argv))) as srv:
        port = srv.url.rsplit(":", 1)[1]
        (tmp_path / "cluster.toml").write_text(doc_block("toml").replace(":8441", f":{port}"))
        cluster = load_cluster(tmp_path / "cluster.toml")
        site = cluster.sensors[0]
        ctx = cluster.central.ssl_context()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            status, who = await get_json(session, f"{site.url}/api/v1/whoami",
                                         site.tenants["acme"],
                                         tls.on_behalf_headers("alice", "viewer"))
    assert (status, who["tenant"], who["role"]) == (200, "acme", "viewer")
