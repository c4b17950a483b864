"""Traffic for the golden cases' ``make_input.py`` scripts: the crafting is the plugin
authors' kit's (:mod:`pcapwire.testing.craft`, dpkt), re-exported here with ``write``.

Everything is a pure function of the script: addresses, ports, sequence numbers and
timestamps are given, never drawn from the clock or an unseeded generator, so running a
script again writes the committed ``input.pcap`` byte for byte (tests/test_golden.py
checks that). The capture is a classic little-endian pcap, microsecond timestamps,
Ethernet, snaplen 65535 -- what tcpdump writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pcapwire.testing.craft import MSS, Capture, TcpConn, dns_query

__all__ = ["MSS", "Capture", "TcpConn", "dns_query", "write"]


def write(data: bytes, script: str) -> None:
    """``make_input.py [OUT]``: write to OUT, else to input.pcap beside the script."""
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(script).resolve().parent / "input.pcap"
    out.write_bytes(data)
