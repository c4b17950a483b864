"""Finding logins sent in clear text in a client's byte stream (no pcapwire needed here:
a plain function of bytes, so it is easy to test on its own).

Recognised, in the client -> server direction of a TCP stream:

=============  =============================================  ==========================
mechanism      what is looked for                             protocol (by server port)
=============  =============================================  ==========================
``user-pass``  ``USER name`` then ``PASS secret``             ftp (21), pop3 (110)
``imap-login`` ``tag LOGIN name secret`` (atoms or quoted)    imap
``auth-plain`` ``[tag] AUTH[ENTICATE] PLAIN [base64]``         smtp (25, 465, 587),
                                                              pop3 (110), imap (143)
``auth-login`` ``AUTH LOGIN`` then base64 name and secret      smtp, pop3, imap
``http-basic`` ``Authorization: Basic base64(name:secret)``   http
=============  =============================================  ==========================

The secret itself is never returned: only its length.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass

MECHANISMS = ("user-pass", "imap-login", "auth-plain", "auth-login", "http-basic")
#: server port -> protocol name used in verdicts
PORTS = {21: "ftp", 25: "smtp", 80: "http", 110: "pop3", 143: "imap", 465: "smtp",
         587: "smtp", 8080: "http"}
#: longest line looked at (longer lines are skipped: not a login command)
MAX_LINE = 4096

_IMAP_LOGIN = re.compile(rb'^(\S+) LOGIN ("(?:[^"\\]|\\.)*"|\S+) ("(?:[^"\\]|\\.)*"|\S+)$',
                         re.I)
_AUTH = re.compile(rb"^(?:\S+ )?AUTH(?:ENTICATE)? (PLAIN|LOGIN)(?: (\S+))?$", re.I)
_BASIC = re.compile(rb"^Authorization: *Basic +(\S+)$", re.I)


@dataclass(frozen=True)
class Login:
    protocol: str
    mechanism: str
    username: str
    password_length: int
    offset: int  # where the command starts in the stream's data


def _lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            end = len(data)
        line = data[start:end].rstrip(b"\r")
        if len(line) <= MAX_LINE:
            yield start, line
        start = end + 1


def _b64(text: bytes) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _unquote(atom: bytes) -> str:
    if atom.startswith(b'"') and atom.endswith(b'"') and len(atom) >= 2:
        atom = re.sub(rb"\\(.)", rb"\1", atom[1:-1])
    return atom.decode("utf-8", "replace")


def find_logins(data: bytes, server_port: int) -> list[Login]:
    """Every clear-text login in ``data`` (a client's bytes), in stream order."""
    proto = PORTS.get(server_port, "")
    out: list[Login] = []
    lines = list(_lines(data))
    user: tuple[int, str] | None = None
    i = 0
    while i < len(lines):
        off, line = lines[i]
        i += 1
        upper = line[:5].upper()
        if upper.startswith(b"USER "):
            user = (off, line[5:].decode("utf-8", "replace"))
            continue
        if upper.startswith(b"PASS ") and user is not None:
            out.append(Login(proto or "ftp/pop3", "user-pass", user[1], len(line) - 5,
                             user[0]))
            user = None
            continue
        if m := _IMAP_LOGIN.match(line):
            out.append(Login(proto or "imap", "imap-login", _unquote(m[2]),
                             len(_unquote(m[3])), off))
            continue
        if m := _AUTH.match(line):
            mech, arg = m[1].upper(), m[2]
            if mech == b"PLAIN":
                if arg is None and i < len(lines):
                    arg = lines[i][1]
                    i += 1
                parts = (_b64(arg) or b"").split(b"\0") if arg else []
                if len(parts) == 3:
                    out.append(Login(proto or "smtp", "auth-plain",
                                     parts[1].decode("utf-8", "replace"), len(parts[2]), off))
            else:
                name = _b64(arg) if arg else None
                if name is None and i < len(lines):
                    name = _b64(lines[i][1])
                    i += 1
                secret = _b64(lines[i][1]) if i < len(lines) else None
                if name is not None and secret is not None:
                    i += 1
                    out.append(Login(proto or "smtp", "auth-login",
                                     name.decode("utf-8", "replace"), len(secret), off))
            continue
        if m := _BASIC.match(line):
            pair = _b64(m[1])
            if pair is not None and b":" in pair:
                name, _, secret = pair.partition(b":")
                out.append(Login("http", "http-basic", name.decode("utf-8", "replace"),
                                 len(secret), off))
    return out
