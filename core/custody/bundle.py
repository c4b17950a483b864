"""What a case bundle carries for its chain of custody, and how it is sealed.

Besides the case's content (:func:`pcapwire.api.bundle.write_bundle`), a bundle holds
``custody/<case>.jsonl`` (the case's log), ``custody/store.jsonl`` (the store's log: the
seal, compression and deletion of the segments the case read; whole, so that its chain
verifies), ``evidence/…`` (what the case's legal holds copied), ``custody-public-key.pem``
and ``VERIFY.txt``; ``MANIFEST.sha256`` names the SHA-256 of every one of them in
``sha256sum -c`` format, and ``MANIFEST.sha256.sig`` is the installation key's detached
Ed25519 signature of the manifest (raw 64 bytes).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pcapwire.custody import signing
from pcapwire.custody.log import STORE_LOG, case_log_name, snapshot

MANIFEST = "MANIFEST.sha256"
SIGNATURE = MANIFEST + ".sig"
PUBLIC_KEY = "custody-public-key.pem"
VERIFY = "VERIFY.txt"

_VERIFY_TEXT = """\
Case bundle of {case!r}, made by pcapwire.

1. Every file is named in MANIFEST.sha256 with its SHA-256. In the unpacked bundle:

     sha256sum -c MANIFEST.sha256

2. MANIFEST.sha256.sig is the detached Ed25519 signature (raw, 64 bytes) of
   MANIFEST.sha256 by the installation's custody key. custody-public-key.pem is that
   key's public half (SHA-256 fingerprint of the raw key: {fingerprint}); compare it
   with the key published for the installation (`pcapwire custody pubkey`,
   GET /api/v1/custody/public-key) before trusting it. With OpenSSL 3:

     openssl pkeyutl -verify -pubin -inkey custody-public-key.pem -rawin \\
       -in MANIFEST.sha256 -sigfile MANIFEST.sha256.sig

   or in Python (package cryptography):

     from cryptography.hazmat.primitives.serialization import load_pem_public_key
     key = load_pem_public_key(open("custody-public-key.pem", "rb").read())
     key.verify(open("MANIFEST.sha256.sig", "rb").read(),
                open("MANIFEST.sha256", "rb").read())   # raises InvalidSignature

3. custody/{log} is the case's chain of custody: one JSON entry per line, each
   with the SHA-256 of the line before it ("prev"). custody/{store} is the store's
   (segments sealed, compressed, deleted). Check both chains with

     pcapwire custody verify --log custody/{log}
     pcapwire custody verify --log custody/{store}

   The case log was copied when the bundle was made; the download of this bundle is
   its next entry ("bundle", with the SHA-256 of MANIFEST.sha256).
"""


def log_members(data_dir: Path, case: str) -> list[tuple[str, bytes]]:
    """The case's log and the store's, as (name in bundle, bytes)."""
    return [(f"custody/{case_log_name(case)}", snapshot(data_dir, case)),
            (f"custody/{STORE_LOG}", snapshot(data_dir, None))]


def hold_evidence(data_dir: Path, case: str) -> list[tuple[str, Path]]:
    """What the case's legal holds copied: (name in bundle, path)."""
    from pcapwire.holds.evidence import evidence_files

    return evidence_files(data_dir, case)


def key_members(key_dir: Path, case: str) -> list[tuple[str, bytes]]:
    """The public key and the instructions (both named in the manifest)."""
    pem = signing.public_pem(key_dir)
    text = _VERIFY_TEXT.format(case=case, fingerprint=signing.fingerprint(pem),
                               log=case_log_name(case), store=STORE_LOG)
    return [(PUBLIC_KEY, pem), (VERIFY, text.encode())]


def manifest_line(name: str, sha256: str) -> str:
    if "\n" in name or "\\" in name:
        raise ValueError(f"bundle member name {name!r} cannot be written in a manifest")
    return f"{sha256}  {name}"


def seal(key_dir: Path, manifest: bytes) -> tuple[bytes, str]:
    """The manifest's signature and its SHA-256 (what the custody log records)."""
    return signing.sign(key_dir, manifest), hashlib.sha256(manifest).hexdigest()
