"""Compressed segments (being written: the interface the maintenance loop uses)."""

from __future__ import annotations

import threading
from typing import Any


def compress_due(store: Any, policy: Any, stop: threading.Event | None = None) -> int:
    """Compress the sealed segments ``policy`` says are due, one at a time; returns how
    many were compressed."""
    return 0
