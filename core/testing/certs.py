"""Certificates for testing a cluster's mutual TLS, made with ``cryptography``: a CA, server
certificates of sensors (subjectAltName 127.0.0.1 and localhost), client certificates of a
central. ``docs/cluster.md`` makes the same with ``openssl`` for real use::

    ca = make_ca(tmp_path / "pki")
    sensor = ca.server_cert("site-a")           # --tls-cert sensor.cert --tls-key sensor.key
    central = ca.client_cert("central")         # [central] cert/key; --client-cert-sha256
    # sensor: --client-ca ca.cert ; central: ca = ca.cert

Keys are EC P-256, written with mode 0600; certificates are valid from an hour ago for
:data:`VALID_DAYS` days.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 30
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its key, as PEM files, and the certificate's SHA-256 fingerprint
    (lowercase hex, what ``--client-cert-sha256`` pins)."""

    cert: Path
    key: Path
    sha256: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pcapwire test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey) -> KeyPair:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return KeyPair(cert_path, key_path, cert.fingerprint(hashes.SHA256()).hex())


class CertificateAuthority:
    """A CA whose certificate and key are files in ``directory``; it issues certificates
    into the same directory."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            self._builder(_name(name), self._key.public_key(), now)
            .issuer_name(_name(name))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256()))
        self.files = _write(directory, "ca", self._cert, self._key)

    @property
    def cert(self) -> Path:
        return self.files.cert

    @staticmethod
    def _builder(subject: x509.Name, public_key: ec.EllipticCurvePublicKey,
                 now: datetime.datetime) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                               critical=False))

    def _issue(self, stem: str, usage: x509.ObjectIdentifier,
               hosts: Sequence[str]) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            self._builder(_name(stem), key.public_key(), now)
            .issuer_name(self._cert.subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._key.public_key()), critical=False))
        if hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                _general_name(h) for h in hosts]), critical=False)
        return _write(self.directory, stem, builder.sign(self._key, hashes.SHA256()), key)

    def server_cert(self, name: str, hosts: Sequence[str] = LOOPBACK_HOSTS) -> KeyPair:
        """A sensor's server certificate (``name.crt``/``name.key``) for ``hosts``."""
        return self._issue(name, ExtendedKeyUsageOID.SERVER_AUTH, hosts)

    def client_cert(self, name: str) -> KeyPair:
        """A client certificate (the central's) named ``name``."""
        return self._issue(name, ExtendedKeyUsageOID.CLIENT_AUTH, ())


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_ca(directory: Path, name: str = "pcapwire test CA") -> CertificateAuthority:
    """A new CA with its files (``ca.crt``, ``ca.key``) in ``directory``."""
    return CertificateAuthority(directory, name)
