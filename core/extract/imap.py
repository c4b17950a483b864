"""IMAP4rev1 (RFC 3501): messages in FETCH responses and APPEND uploads.

Both directions are read as lines in which ``{n}`` (or ``{n+}``, RFC 7888) announces an
n-byte literal. A FETCH literal for ``BODY[]``/``RFC822`` is a whole message;
``BODY[HEADER...]``/``RFC822.HEADER`` is kept as a partial message (headers only);
section fetches (``BODY[2]``) are noted, not carved (their meaning needs BODYSTRUCTURE).
APPEND literals from the client are whole messages too.
"""

from __future__ import annotations

import logging
import re

from pcapwire.extract.buffer import ByteBuffer, CarvedEmail, LineTooLong, Session
from pcapwire.extract.smtp import MAX_MESSAGE_SIZE, MAX_MESSAGES_PER_CONNECTION

log = logging.getLogger(__name__)

#: Longest line (outside literals) read from either side.
MAX_IMAP_LINE = 64 * 1024

_LITERAL = re.compile(rb"~?\{(\d{1,18})\+?\}$")
_ITEM = re.compile(rb"(BODY(?:\.PEEK)?\[([^\]]*)\](?:<\d+>)?|RFC822(?:\.HEADER|\.TEXT)?|"
                   rb"BINARY(?:\.PEEK)?\[[^\]]*\])\s*$", re.I)
_FETCH = re.compile(rb"^\*\s+(\d+)\s+FETCH\b", re.I)
_SELECT = re.compile(rb"^\S+\s+(?:SELECT|EXAMINE)\s+(.+)$", re.I)
_APPEND = re.compile(rb"^\S+\s+APPEND\s+(\"(?:[^\"\\]|\\.)*\"|\S+)", re.I)


class _Side:
    """Splits one direction into responses/commands: [(text, literal|None), ...]."""

    def __init__(self) -> None:
        self.buf = ByteBuffer()
        self.pieces: list[tuple[bytes, bytes | None]] = []
        self.literal_left = 0
        self.literal: list[bytes] = []
        self.literal_size = 0
        self.dropped = 0
        self.text = b""
        self.missing = False

    def run(self) -> list[tuple[list[tuple[bytes, bytes | None]], bool]]:
        """Complete units so far, each with a flag saying bytes were missing in it."""
        done = []
        while True:
            if self.literal_left:
                data = self.buf.read(self.literal_left)
                if not data:
                    break
                self.literal_left -= len(data)
                room = MAX_MESSAGE_SIZE - self.literal_size
                if len(data) > room:
                    self.dropped += len(data) - max(room, 0)
                    data = data[:max(room, 0)]
                self.literal.append(data)
                self.literal_size += len(data)
                if self.literal_left:
                    break
                self.pieces.append((self.text, b"".join(self.literal)))
                self.literal, self.literal_size, self.text = [], 0, b""
                continue
            line = self.buf.readline(MAX_IMAP_LINE, "MAX_IMAP_LINE")
            if line is None:
                break
            m = _LITERAL.search(line)
            if m is not None:
                self.text = line[:m.start()]
                self.literal_left = int(m.group(1))
                if self.literal_left == 0:
                    self.pieces.append((self.text, b""))
                continue
            self.pieces.append((line, None))
            done.append((self.pieces, self.missing or bool(self.dropped)))
            self.pieces, self.missing, self.dropped = [], False, 0
        return done


class ImapSession(Session):
    protocol = "imap"

    def __init__(self) -> None:
        super().__init__()
        self.cli = _Side()
        self.srv = _Side()
        self.folder = ""
        self.count = 0

    def feed(self, direction: str, data: bytes, ts: float) -> None:
        side = self.cli if direction == "orig" else self.srv
        side.buf.append(data)
        try:
            units = side.run()
        except LineTooLong as exc:
            self.notes.append(f"{direction}: {exc}; rest of the direction skipped")
            side.buf.clear()
            return
        for unit, missing in units:
            if side is self.cli:
                self._command(unit, ts, missing)
            else:
                self._response(unit, ts, missing)

    def gap(self, direction: str, length: int, ts: float) -> None:
        side = self.cli if direction == "orig" else self.srv
        if side.literal_left:
            side.literal.append(side.buf.read(len(side.buf)))
            side.literal_left = max(0, side.literal_left - length)
            side.missing = True
        else:
            side.buf.clear()
        self.notes.append(f"{direction}: gap of {length} bytes")

    def close(self, ts: float) -> None:
        for side, name in ((self.cli, "client"), (self.srv, "server")):
            if side.literal_left or side.pieces:
                self.notes.append(f"{name}: connection ended inside a response")

    def _command(self, unit: list[tuple[bytes, bytes | None]], ts: float,
                 missing: bool) -> None:
        first = unit[0][0]
        m = _SELECT.match(first)
        if m and unit[0][1] is None:
            self.folder = m.group(1).strip().strip(b'"').decode("utf-8", "replace")
        m = _APPEND.match(first)
        if m and unit[0][1] is not None:
            folder = m.group(1).strip(b'"').decode("utf-8", "replace")
            self._email(unit[0][1], ts, missing, {"command": "APPEND", "folder": folder})

    def _response(self, unit: list[tuple[bytes, bytes | None]], ts: float,
                  missing: bool) -> None:
        m = _FETCH.match(unit[0][0])
        if m is None:
            return
        seq = int(m.group(1))
        for text, literal in unit:
            if literal is None:
                continue
            im = _ITEM.search(text)
            if im is None:
                continue
            item = im.group(1).decode("ascii", "replace").upper()
            section = (im.group(2) or b"").upper()
            if item.startswith("RFC822.HEADER") or section.startswith(b"HEADER"):
                extra = {"fetch": item, "seq": seq, "folder": self.folder,
                         "partial": "headers only"}
                self._email(literal, ts, missing, extra, partial=True)
            elif item == "RFC822" or (item.startswith("BODY") and section == b""):
                extra = {"fetch": item, "seq": seq, "folder": self.folder}
                partial = bool(re.search(r"<\d+>$", item))
                if partial:
                    extra["partial"] = "byte range fetch"
                self._email(literal, ts, missing, extra, partial=partial)
            else:
                self.notes.append(f"FETCH {seq} {item}: section not carved")

    def _email(self, data: bytes, ts: float, missing: bool, extra: dict[str, object],
               partial: bool = False) -> None:
        if self.count >= MAX_MESSAGES_PER_CONNECTION:
            return
        self.count += 1
        self.out.append(CarvedEmail(data=data, protocol="imap", ts=ts,
                                    incomplete=missing or partial, extra=extra))
