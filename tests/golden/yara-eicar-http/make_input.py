"""Regenerate input.pcap of the golden case yara-eicar-http (deterministic: running it
again writes the same bytes; tests/test_golden.py checks that).

    .venv/bin/python tests/golden/yara-eicar-http/make_input.py [OUT]

Two HTTP sessions written with pcapwire.synth._tcp_session (the demo traffic's session
writer), random seed 42, one after the other: 10.0.0.5:49152 -> 192.0.2.80:80 asks for a
file named after the EICAR test string and gets it back (600 bytes of it);
10.0.0.6:49153 -> 192.0.2.81:8080 fetches a harmless one (900 bytes).
"""

from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

from pcapwire.synth import _tcp_session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from goldencraft import write  # noqa: E402

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def main() -> None:
    rng = random.Random(42)
    sessions = [
        _tcp_session(rng, bytes([10, 0, 0, 5]), bytes([192, 0, 2, 80]), 49152, 80, 600, EICAR),
        _tcp_session(rng, bytes([10, 0, 0, 6]), bytes([192, 0, 2, 81]), 49153, 8080, 900,
                     b"harmless-")]
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    ts_us = 1_700_000_000 * 1_000_000
    for session in sessions:
        for frame, delay in session:
            ts_us += max(1, delay)
            out.append(struct.pack("<IIII", ts_us // 1_000_000, ts_us % 1_000_000, len(frame),
                                   len(frame)) + frame)
    write(b"".join(out), __file__)


if __name__ == "__main__":
    main()
