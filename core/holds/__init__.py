"""Legal holds (being written: the interface retention and the maintenance loop use)."""

from __future__ import annotations

from typing import Any


def protected_segment_ids(store: Any) -> set[int]:
    """Segments retention must not delete yet: those an open hold still has to copy."""
    return set()


def feed(store: Any) -> int:
    """Copy packets of newly committed segments into the evidence of open holds whose
    window reaches them; returns the packets copied."""
    return 0
