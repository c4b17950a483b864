"""A case as one zip: its query results (PCAP), carved files and emails, verdicts as JSON
lines (the case store's ECS export), the query history with the workflow runs, and
``MANIFEST.sha256`` (``sha256sum -c`` format) naming the SHA-256 of every other file."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

BUNDLE_BLOCK = 1 * 2**20


def _add_bytes(zf: zipfile.ZipFile, name: str, data: bytes, manifest: list[str]) -> None:
    zf.writestr(name, data)
    manifest.append(f"{hashlib.sha256(data).hexdigest()}  {name}")


def _add_file(zf: zipfile.ZipFile, name: str, path: Path, manifest: list[str]) -> None:
    h = hashlib.sha256()
    with open(path, "rb") as src, zf.open(name, "w", force_zip64=True) as dst:
        while block := src.read(BUNDLE_BLOCK):
            h.update(block)
            dst.write(block)
    manifest.append(f"{h.hexdigest()}  {name}")


def write_bundle(out: Path, case: str, queries: list[dict[str, Any]],
                 pcaps: dict[str, Path], verdict_lines: str,
                 files: list[tuple[str, Path]], emails: list[tuple[str, Path]]) -> None:
    """``pcaps``: query id -> result file; ``files``/``emails``: (name in bundle, path)."""
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
        zf.writestr("MANIFEST.sha256", "\n".join(manifest) + "\n")
