"""The installation's Ed25519 key: it signs case bundles' manifests.

One key per installation: ``<data-dir>/custody/signing-key.pem`` of the top data
directory (under ``pcapwire serve``, the API's data directory, never a tenant's), or the
file env ``PCAPWIRE_CUSTODY_KEY`` names. Created on first use, mode 0600: written to a
private temporary file and linked into place (``link`` fails if the name exists), so two
processes starting at once end up with the same key and neither reads half a file.

A verifier needs only the public key (``pcapwire custody pubkey``, ``GET
/api/v1/custody/public-key``, ``custody-public-key.pem`` in every bundle) and standard
tools: ``openssl pkeyutl -verify -pubin -inkey custody-public-key.pem -rawin -in
MANIFEST.sha256 -sigfile MANIFEST.sha256.sig`` (OpenSSL 3), or the ``cryptography``
package's ``Ed25519PublicKey.verify``. Check the public key against one obtained
independently (its fingerprint is printed with it): a bundle can carry any key.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pcapwire.custody.log import CUSTODY_DIR
from pcapwire.errors import ConfigError

KEY_ENV = "PCAPWIRE_CUSTODY_KEY"
KEY_FILE = "signing-key.pem"
KEY_MODE = 0o600


def key_path(data_dir: str | os.PathLike[str]) -> Path:
    """Where the installation's key is: env PCAPWIRE_CUSTODY_KEY, or in ``data_dir``."""
    named = os.environ.get(KEY_ENV)
    return Path(named) if named else Path(data_dir) / CUSTODY_DIR / KEY_FILE


def load_key(data_dir: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The installation's private key, created on first use."""
    path = key_path(data_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = _create(path)
    except OSError as exc:
        raise ConfigError(f"cannot read the custody signing key {path}: {exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM private key ({exc}); restore the "
                          "installation's key, or name another with " + KEY_ENV) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def _create(path: Path) -> bytes:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")  # mode 0600
        try:
            try:
                os.write(fd, pem)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(tmp, path)  # atomic, and fails when another process was first
        except FileExistsError:
            return path.read_bytes()
        finally:
            os.unlink(tmp)
    except OSError as exc:
        raise ConfigError(f"cannot create the custody signing key {path}: {exc}") from None
    os.chmod(path, KEY_MODE)
    return pem


def public_pem(data_dir: str | os.PathLike[str]) -> bytes:
    """The public key as PEM (SubjectPublicKeyInfo): what ``openssl -pubin`` reads."""
    return load_key(data_dir).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(public_key_pem: bytes) -> str:
    """SHA-256 of the raw 32-byte public key, hex: short enough to compare by phone."""
    key = serialization.load_pem_public_key(public_key_pem)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def sign(data_dir: str | os.PathLike[str], data: bytes) -> bytes:
    """The raw 64-byte Ed25519 signature of ``data``."""
    return load_key(data_dir).sign(data)
