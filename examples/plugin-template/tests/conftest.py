"""Test captures from a few lines with ``pcapwire.testing`` (the kit pcapwire ships for
plugin authors): one TCP session per login, with handshake, the client's lines, the
server's reply and FINs -- enough for pcapwire's reassembler to hand the analyzer a
complete client stream."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pcapwire.testing import tcp_session, write_capture

CLIENT, SERVER = "10.1.1.10", "10.1.1.20"
PLAIN = base64.b64encode(b"\0carol@example.org\0hunter2")
SESSIONS = [
    tcp_session(f"{CLIENT}:40001 > {SERVER}:21", b"USER anonymous\r\nPASS guest@\r\nQUIT\r\n",
                b"220 ready\r\n"),
    tcp_session(f"{CLIENT}:40002 > {SERVER}:587",
                b"EHLO me\r\nAUTH PLAIN " + PLAIN + b"\r\nQUIT\r\n", b"250 ok\r\n"),
    tcp_session(f"{CLIENT}:40003 > {SERVER}:80", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                b"HTTP/1.1 200 OK\r\n"),
]


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    """Three sessions: an anonymous FTP login, an SMTP AUTH PLAIN, and plain HTTP."""
    return write_capture(tmp_path / "logins.pcap", SESSIONS)
