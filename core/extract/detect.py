"""Which application protocol a TCP connection speaks: by content first, port second.

:func:`sniff` looks at the first bytes of each direction. Content that is conclusive wins
over the port (HTTP on port 22 is HTTP; SSH on port 80 is not); the port decides only
when the content says nothing either way. It can also tell that the connection's
orientation is reversed (a capture that starts after the handshake, where the first
packet seen came from the server).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pcapwire.extract.http import looks_like_request, looks_like_response

#: Bytes per direction looked at before deciding (then the port decides).
SNIFF_BYTES = 4096

PORTS: dict[int, str] = {80: "http", 8080: "http", 8000: "http", 8008: "http",
                         8888: "http", 3128: "http", 3129: "http", 81: "http",
                         25: "smtp", 587: "smtp", 2525: "smtp", 110: "pop3", 143: "imap",
                         21: "ftp"}
_SMTP_CMD = re.compile(rb"^(EHLO|HELO|LHLO|MAIL FROM:)", re.I)
_FTP_CMD = re.compile(rb"^(USER|AUTH TLS|AUTH SSL|FEAT|SYST|OPTS|ACCT)\b", re.I)
_IMAP_CMD = re.compile(rb"^\S+ (CAPABILITY|LOGIN|AUTHENTICATE|STARTTLS|SELECT|NOOP)\b", re.I)
_TLS = re.compile(rb"^\x16\x03[\x00-\x04]")


@dataclass(frozen=True)
class Guess:
    protocol: str | None  # None: undecided yet (need more bytes)
    swapped: bool = False  # the "orig" side is really the server
    why: str = ""


def _line(data: bytes) -> bytes | None:
    i = data.find(b"\n")
    return data[:i + 1] if i >= 0 else None


def _client_says(data: bytes) -> str | None:
    line = _line(data)
    if line is None:
        return None
    if looks_like_request(line):
        return "http"
    if _SMTP_CMD.match(line):
        return "smtp"
    if _IMAP_CMD.match(line):
        return "imap"
    return None


def _server_says(srv: bytes, cli: bytes) -> str | None:
    line = _line(srv)
    if line is None:
        return None
    if looks_like_response(line):
        return "http"
    if line.startswith(b"+OK"):
        return "pop3"
    if line.startswith((b"* OK", b"* PREAUTH")):
        return "imap"
    if line[:3] == b"220":
        first = _line(cli)
        if first is not None:
            if _SMTP_CMD.match(first):
                return "smtp"
            if _FTP_CMD.match(first):
                return "ftp"
        upper = line.upper()
        if b"FTP" in upper:
            return "ftp"
        if b"SMTP" in upper or b"MAIL" in upper:
            return "smtp"
    return None


def sniff(orig: bytes, resp: bytes, sport: int, dport: int, final: bool = False) -> Guess:
    """Decide from the first bytes of each direction; ``final`` forces a decision (the
    connection ended or :data:`SNIFF_BYTES` were seen)."""
    if _TLS.match(orig) or _TLS.match(resp):
        return Guess("", why="TLS")
    by_client = _client_says(orig)
    if by_client:
        return Guess(by_client, why="client content")
    by_server = _server_says(resp, orig)
    if by_server:
        return Guess(by_server, why="server content")
    # Reversed orientation: the side we call "orig" answers like a server.
    rev_client = _client_says(resp)
    rev_server = _server_says(orig, resp)
    if rev_client or rev_server:
        return Guess(rev_client or rev_server, swapped=True, why="reversed content")
    decided = final or len(orig) >= SNIFF_BYTES or len(resp) >= SNIFF_BYTES or (
        _line(orig) is not None and _line(resp) is not None)
    if not decided:
        return Guess(None)
    if dport in PORTS:
        return Guess(PORTS[dport], why=f"port {dport}")
    if sport in PORTS:
        return Guess(PORTS[sport], swapped=True, why=f"port {sport} (reversed)")
    return Guess("", why="unknown")
