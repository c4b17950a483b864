"""What the benchmark scripts share: where inputs and results live, and the generated
captures (``benchmarks/data/synth-<size>m.pcap``, made by :mod:`pcapwire.synth` on first
use and kept, so later runs and other benchmarks of the same size reuse them)."""

from __future__ import annotations

import sys
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
