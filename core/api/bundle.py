"""A case as one zip: its query results (PCAP), carved files and emails, verdicts as JSON
lines (the case store's ECS export), the query history with the workflow runs, the chain
of custody (the case's and the store's logs, the holds' evidence: :mod:`pcapwire.custody.
bundle`), and ``MANIFEST.sha256`` (``sha256sum -c`` format) naming the SHA-256 of every
other file, signed by the installation's key (``MANIFEST.sha256.sig``)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

from pcapwire.custody import bundle as custody_bundle

BUNDLE_BLOCK = 1 * 2**20


def _add_bytes(zf: zipfile.ZipFile, name: str, data: bytes, manifest: list[str]) -> None:
    zf.writestr(name, data)
    manifest.append(custody_bundle.manifest_line(name, hashlib.sha256(data).hexdigest()))


def _add_file(zf: zipfile.ZipFile, name: str, path: Path, manifest: list[str]) -> None:
    h = hashlib.sha256()
    with open(path, "rb") as src, zf.open(name, "w", force_zip64=True) as dst:
        while block := src.read(BUNDLE_BLOCK):
            h.update(block)
            dst.write(block)
    manifest.append(custody_bundle.manifest_line(name, h.hexdigest()))


def write_bundle(out: Path, case: str, queries: list[dict[str, Any]],
                 pcaps: dict[str, Path], verdict_lines: str,
                 files: list[tuple[str, Path]], emails: list[tuple[str, Path]],
                 data_dir: Path, key_dir: Path) -> str:
    """``pcaps``: query id -> result file; ``files``/``emails``: (name in bundle, path);
    ``data_dir``: the store whose custody logs and holds go in; ``key_dir``: the
    installation's data directory (its signing key). Returns the SHA-256 of the
    manifest (what the custody log records of the bundle)."""
    manifest: list[str] = []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        _add_bytes(zf, "case.json", json.dumps({"case": case, "queries": queries}, indent=1,
                                               sort_keys=True).encode(), manifest)
        _add_bytes(zf, "verdicts.jsonl", verdict_lines.encode(), manifest)
        for qid, path in sorted(pcaps.items()):
            _add_file(zf, f"pcap/{qid}.pcap", path, manifest)
        for name, path in files:
            _add_file(zf, f"files/{name}", path, manifest)
        for name, path in emails:
            _add_file(zf, f"emails/{name}", path, manifest)
        for name, path in custody_bundle.hold_evidence(data_dir, case):
            _add_file(zf, name, path, manifest)
        for name, data in (custody_bundle.log_members(data_dir, case)
                           + custody_bundle.key_members(key_dir, case)):
            _add_bytes(zf, name, data, manifest)
        text = ("\n".join(manifest) + "\n").encode()
        signature, digest = custody_bundle.seal(key_dir, text)
        zf.writestr(custody_bundle.MANIFEST, text)
        zf.writestr(custody_bundle.SIGNATURE, signature)
    return digest
