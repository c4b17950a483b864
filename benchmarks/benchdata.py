"""What the benchmark scripts share: where inputs and results live, and the generated
captures (``benchmarks/data/synth-<size>m.pcap``, made by :mod:`pcapwire.synth` on first
use and kept, so later runs and other benchmarks of the same size reuse them)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE / "results"


def synth_capture(size_mib: int, seed: int = 1) -> Path:
    """The generated capture of ``size_mib`` MiB (``seed`` is used only to create it);
    also makes sure the data and results directories exist."""
    from pcapwire.synth import generate

    DATA.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    capture = DATA / f"synth-{size_mib}m.pcap"
    if not capture.exists():
        print(f"generating {capture} ...", file=sys.stderr)
        generate(capture, size_mib * 2**20, seed=seed)
    return capture


def alternate(rounds: int, ours: Callable[[], float], theirs: Callable[[], float]
              ) -> tuple[list[float], list[float]]:
    """Per-round seconds of both sides, the order alternating each round (A B, B A, ...:
    page-cache writeback of one side never lands on the same side's clock every time)."""
    a, b = [], []
    for r in range(rounds):
        if r % 2:
            b.append(theirs())
            a.append(ours())
        else:
            a.append(ours())
            b.append(theirs())
    return a, b
