"""Shared fixtures: the corpus beside the checkout (``../shared/corpus``, or
``$PCAPWIRE_CORPUS``), its manifest, and fresh stores."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("PCAPWIRE_CORPUS", REPO.parent / "shared" / "corpus"))


def _manifest() -> dict[str, Any]:
    path = CORPUS / "manifest.json"
    if not path.exists():
        raise RuntimeError(f"test corpus not found at {CORPUS}; set PCAPWIRE_CORPUS")
    return json.loads(path.read_text())


MANIFEST = _manifest()
CASES: dict[str, dict[str, Any]] = {c["id"]: c for c in MANIFEST["cases"]}


def corpus_file(case_id: str) -> Path:
    return CORPUS / CASES[case_id]["file"]


@pytest.fixture(scope="session")
def manifest() -> dict[str, Any]:
    return MANIFEST


@pytest.fixture
def store(tmp_path: Path):
    from pcapwire.store import Store

    with Store(tmp_path / "store") as s:
        yield s
