"""The trust between a central API and its sensors: mutual TLS and the on-behalf-of headers.

- A sensor (``pcapwire serve --tls-cert C --tls-key K --client-ca CA [--client-cert-sha256
  HEX]``) serves HTTPS only to clients presenting a certificate signed by ``CA``
  (:func:`sensor_server_context`); with a pin, only to a certificate whose SHA-256
  fingerprint is pinned, checked when the handshake completes, before any request is read
  (a client with no certificate, one of another CA, or an unpinned one gets no HTTP answer).
- The central (:func:`central_client_context`) presents its client certificate and trusts
  only the CA of the sensors' server certificates, checking their host names.
- The central calls a sensor with the sensor's own token for the tenant (its role is the
  ceiling) plus :data:`ON_BEHALF_OF_HEADER` (who asked at the central, named in the
  sensor's custody log) and :data:`ROLE_HEADER` (that user's role), which can only lower
  the token's role (:mod:`pcapwire.api.auth`). A sensor without ``--client-ca`` refuses
  these headers (400): without mTLS anyone holding a token could name any actor.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from collections.abc import Sequence
from pathlib import Path

from pcapwire.errors import ConfigError

ON_BEHALF_OF_HEADER = "X-Pcapwire-On-Behalf-Of"
ROLE_HEADER = "X-Pcapwire-Role"
MAX_ACTOR_CHARS = 200  # longest on-behalf-of actor a sensor accepts
ACTOR_RE = re.compile(rf"[\x20-\x7e]{{1,{MAX_ACTOR_CHARS}}}")  # printable ASCII, no CR/LF
MAX_PINS = 16  # pinned client certificate fingerprints (old and new during a rotation)
SHA256_RE = re.compile(r"[0-9a-f]{64}")


def parse_sha256(text: str) -> str:
    """A SHA-256 fingerprint as lowercase hex, from hex or ``AB:CD:…`` (openssl's form,
    with or without its ``sha256 Fingerprint=`` prefix)."""
    value = text.rpartition("=")[2].replace(":", "").strip().lower()
    if not SHA256_RE.fullmatch(value):
        raise ConfigError(f"invalid SHA-256 fingerprint {text!r}: give 64 hex digits (colons "
                          "allowed), e.g. from `openssl x509 -in central.crt -noout "
                          "-fingerprint -sha256`")
    return value


def cert_sha256(path: Path) -> str:
    """The SHA-256 fingerprint (lowercase hex) of the first certificate of a PEM file,
    the value ``openssl x509 -noout -fingerprint -sha256`` shows."""
    try:
        pem = path.read_text("ascii")
        der = ssl.PEM_cert_to_DER_cert(pem[pem.index("-----BEGIN CERTIFICATE-----"):])
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read a PEM certificate from {path}: {exc}") from None
    return hashlib.sha256(der).hexdigest()


def check_actor(actor: str) -> str:
    """``actor`` if it may be sent as :data:`ON_BEHALF_OF_HEADER`, else ValueError."""
    if not ACTOR_RE.fullmatch(actor):
        raise ValueError(f"an on-behalf-of actor is 1-{MAX_ACTOR_CHARS} printable ASCII "
                         f"characters, not {actor[:MAX_ACTOR_CHARS + 1]!r}")
    return actor


def on_behalf_headers(actor: str, role: str) -> dict[str, str]:
    """The headers the central adds to a sensor request made for ``actor`` with ``role``."""
    return {ON_BEHALF_OF_HEADER: check_actor(actor), ROLE_HEADER: role}


def _min_version(ctx: ssl.SSLContext) -> None:
    # Imported here: pcapwire.api.auth imports this module while pcapwire.api initialises.
    from pcapwire.api.limits import TLS_MIN_VERSION

    ctx.minimum_version = TLS_MIN_VERSION


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path, what: str) -> None:
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use the {what} certificate {cert} with key {key}: {exc}"
                          ) from None


def _load_ca(ctx: ssl.SSLContext, ca: Path, what: str) -> None:
    try:
        ctx.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot read the {what} CA certificate {ca}: {exc}") from None


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for the PEM certificate chain and key: TLS 1.2 or later, Python's
    default (secure) ciphers, no client certificate asked for."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _min_version(ctx)
    _load_chain(ctx, cert, key, "TLS")
    return ctx


def _pinning(pins: frozenset[str]) -> type[ssl.SSLObject]:
    """An SSLObject class whose handshake fails unless the peer's certificate is pinned.
    asyncio's TLS transports (``pcapwire serve``) use SSLObject and call ``do_handshake``
    until it completes; a blocking ``wrap_socket`` server would not check the pin."""

    class PinnedSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            der = self.getpeercert(binary_form=True)
            if der is None or hashlib.sha256(der).hexdigest() not in pins:
                raise ssl.SSLError("the client certificate is not the pinned one "
                                   "(--client-cert-sha256)")

    return PinnedSSLObject


def sensor_server_context(cert: Path, key: Path, client_ca: Path | None = None,
                          client_sha256: Sequence[str] = ()) -> ssl.SSLContext:
    """:func:`server_context`, and with ``client_ca`` a client certificate signed by it is
    required; with ``client_sha256`` (fingerprints, :func:`parse_sha256` forms) it must
    also be one of those."""
    ctx = server_context(cert, key)
    if client_ca is None:
        if client_sha256:
            raise ConfigError("--client-cert-sha256 needs --client-ca (the CA that signed "
                              "the pinned certificate)")
        return ctx
    if len(client_sha256) > MAX_PINS:
        raise ConfigError(f"at most {MAX_PINS} --client-cert-sha256 pins, not "
                          f"{len(client_sha256)}")
    _load_ca(ctx, client_ca, "client")
    ctx.verify_mode = ssl.CERT_REQUIRED
    if client_sha256:
        ctx.sslobject_class = _pinning(frozenset(parse_sha256(p) for p in client_sha256))
    return ctx


def central_client_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """The central's context for calling sensors: presents ``cert`` (its client
    certificate) and trusts only ``ca`` for the sensors' server certificates, whose host
    names (DNS or IP subjectAltName) must match the sensor URL."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname on
    _min_version(ctx)
    _load_ca(ctx, ca, "sensors'")
    _load_chain(ctx, cert, key, "central's client")
    return ctx
