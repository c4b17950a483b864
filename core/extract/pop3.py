"""POP3 (RFC 1939, 2449): messages carried by RETR (and TOP, kept as partial).

Replies are paired with commands in order; a reply is multi-line when its command is
RETR, TOP, CAPA, or LIST/UIDL without an argument, and it ends with a '.' line (dot-
stuffed). The message is the multi-line body after dot-unstuffing, status line and final
'.' line excluded. Lines the client sends while authenticating are paired like commands
(each gets one reply), so SASL exchanges keep the pairing intact.
"""

from __future__ import annotations

import logging

from pcapwire.extract.buffer import ByteBuffer, CarvedEmail, LineTooLong, Session
from pcapwire.extract.smtp import MAX_MESSAGE_SIZE, MAX_MESSAGES_PER_CONNECTION

log = logging.getLogger(__name__)

#: Longest command or status line read.
MAX_POP3_LINE = 16 * 1024
_TERM = b"\r\n.\r\n"


class Pop3Session(Session):
    protocol = "pop3"

    def __init__(self) -> None:
        super().__init__()
        self.cli = ByteBuffer()
        self.srv = ByteBuffer()
        self.commands: list[tuple[str, str, float]] = []  # (verb, argument, ts)
        self.replied = -1  # -1: greeting not seen yet
        self.multi: tuple[str, str, float] | None = None  # command being answered
        self.parts: list[bytes] = []
        self.size = 0
        self.dropped = 0
        self.missing: list[tuple[int, int]] = []
        self.count = 0
        self.srv_ts = 0.0
        self.cli_done = False

    def feed(self, direction: str, data: bytes, ts: float) -> None:
        if direction == "orig":
            self.cli.append(data)
            self._client(ts)
        else:
            self.srv_ts = ts
            self.srv.append(data)
        self._server()

    def gap(self, direction: str, length: int, ts: float) -> None:
        if direction == "orig":
            self.cli.clear()
            self.notes.append(f"client gap of {length} bytes")
            return
        if self.multi is not None:
            self._take(len(self.srv))
            self.missing.append((self.size + self.dropped, length))
        else:
            self.srv.clear()
        self.notes.append(f"server gap of {length} bytes")

    def close(self, ts: float) -> None:
        self.cli_done = True
        self._server()
        if self.multi is not None:
            self._take(len(self.srv))
            self._finish(complete=False)

    def _client(self, ts: float) -> None:
        while True:
            try:
                line = self.cli.readline(MAX_POP3_LINE, "MAX_POP3_LINE")
            except LineTooLong as exc:
                self.notes.append(str(exc))
                self.cli.clear()
                return
            if line is None:
                return
            verb, _, arg = line.decode("latin-1").partition(" ")
            self.commands.append((verb.upper(), arg.strip(), ts))

    def _server(self) -> None:
        while True:
            if self.multi is not None:
                if not self._body():
                    return
                continue
            if self.replied >= 0 and self.replied >= len(self.commands) and not self.cli_done:
                return  # a reply whose command has not been read yet
            try:
                line = self.srv.readline(MAX_POP3_LINE, "MAX_POP3_LINE")
            except LineTooLong as exc:
                self.notes.append(str(exc))
                self.srv.clear()
                return
            if line is None:
                return
            if self.replied < 0:
                self.replied = 0  # the greeting
                continue
            cmd = self.commands[self.replied] if self.replied < len(self.commands) else None
            self.replied += 1
            if cmd is None or not line.startswith(b"+OK"):
                continue
            verb, arg = cmd[0], cmd[1]
            if verb in ("RETR", "TOP", "CAPA") or (verb in ("LIST", "UIDL") and not arg):
                self.multi = cmd
                self.parts, self.size, self.dropped, self.missing = [], 0, 0, []
                if self.srv.peek(3) == b".\r\n":
                    self.srv.skip(3)
                    self._finish(complete=True)

    def _take(self, n: int) -> None:
        data = self.srv.read(n)
        room = MAX_MESSAGE_SIZE - self.size
        if len(data) > room:
            self.dropped += len(data) - max(room, 0)
            data = data[:max(room, 0)]
        self.parts.append(data)
        self.size += len(data)

    def _body(self) -> bool:
        i = self.srv.find(_TERM)
        if i < 0:
            if len(self.srv) > 4:
                self._take(len(self.srv) - 4)
            return False
        self._take(i + 2)
        self.srv.skip(3)
        self._finish(complete=True)
        return True

    def _finish(self, complete: bool) -> None:
        cmd = self.multi
        assert cmd is not None
        self.multi = None
        verb, arg, ts = cmd
        if verb not in ("RETR", "TOP"):
            return
        data = b"".join(self.parts)
        if data.startswith(b".."):
            data = data[1:]
        data = data.replace(b"\r\n..", b"\r\n.")
        if self.count >= MAX_MESSAGES_PER_CONNECTION:
            self.notes.append(f"MAX_MESSAGES_PER_CONNECTION={MAX_MESSAGES_PER_CONNECTION} "
                              "reached; message dropped")
            return
        self.count += 1
        extra = {"command": f"{verb} {arg}".strip()}
        if verb == "TOP":
            extra["partial"] = "TOP returns the headers and the first lines only"
        if self.dropped:
            extra["truncated_by_limit"] = f"MAX_MESSAGE_SIZE={MAX_MESSAGE_SIZE}"
        self.out.append(CarvedEmail(
            data=data, protocol="pop3", ts=ts,
            incomplete=not complete or verb == "TOP" or bool(self.missing or self.dropped),
            missing_ranges=list(self.missing), extra=extra))
