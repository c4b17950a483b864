"""SMTP (RFC 5321): envelope, DATA with dot-unstuffing, BDAT (RFC 3030), STARTTLS.

The client direction carries everything that is carved; the server direction is read for
reply codes only (a DATA refused with a non-354 reply opens no message; after STARTTLS
answered 220 -- or when the client's next bytes are a TLS record -- the rest is opaque).
"""

from __future__ import annotations

import logging
import re

from pcapwire.extract.buffer import ByteBuffer, CarvedEmail, LineTooLong, Session

log = logging.getLogger(__name__)

#: Longest command line accepted (RFC 5321 says 512; extensions make them longer).
MAX_COMMAND_LINE = 16 * 1024
#: Longest reply line read from the server.
MAX_REPLY_LINE = 16 * 1024
#: Largest message kept; the rest is counted and the message marked incomplete.
MAX_MESSAGE_SIZE = 64 * 1024 * 1024
#: Most messages taken from one connection.
MAX_MESSAGES_PER_CONNECTION = 10_000

_ADDR = re.compile(rb"^(?:MAIL\s+FROM|RCPT\s+TO)\s*:\s*(<[^>]*>|\S*)", re.I)
_BDAT = re.compile(rb"^BDAT\s+(\d{1,18})(\s+LAST)?\s*$", re.I)
_TERM = b"\r\n.\r\n"


def _addr(line: bytes) -> str:
    m = _ADDR.match(line)
    if not m:
        return ""
    return m.group(1).strip(b"<>").decode("utf-8", "replace")


class _Message:
    def __init__(self, ts: float, mail_from: str, rcpt_to: list[str], transfer: str,
                 helo: str) -> None:
        self.ts = ts
        self.mail_from = mail_from
        self.rcpt_to = rcpt_to
        self.transfer = transfer
        self.helo = helo
        self.parts: list[bytes] = []
        self.size = 0
        self.dropped = 0
        self.missing: list[tuple[int, int]] = []

    def add(self, data: bytes) -> None:
        room = MAX_MESSAGE_SIZE - self.size
        if len(data) > room:
            self.dropped += len(data) - max(room, 0)
            data = data[:max(room, 0)]
        self.parts.append(data)
        self.size += len(data)


class SmtpSession(Session):
    protocol = "smtp"

    def __init__(self) -> None:
        super().__init__()
        self.cli = ByteBuffer()
        self.srv = ByteBuffer()
        self.state = "cmd"  # cmd | data_wait | data | bdat | tls | dead
        self.helo = ""
        self.mail_from = ""
        self.rcpt_to: list[str] = []
        self.msg: _Message | None = None
        self.bdat_left = 0
        self.bdat_last = False
        self.commands: list[str] = []  # verbs in order, for reply pairing
        self.replies: list[int] = []  # final reply codes in order (greeting first)
        self.tls = False
        self.count = 0
        self.last_ts = 0.0
        self._scan_from = 0
        self._after_gap = False
        self.data_cmd = -1
        self.srv_done = False

    # ---- server side: reply codes -------------------------------------------------
    def _server(self) -> None:
        while self.state != "tls":
            try:
                line = self.srv.readline(MAX_REPLY_LINE, "MAX_REPLY_LINE")
            except LineTooLong:
                self.srv.clear()
                return
            if line is None:
                return
            if len(line) >= 3 and line[:3].isdigit() and line[3:4] != b"-":
                self.replies.append(int(line[:3]))

    def _reply_to(self, index: int) -> int | None:
        """Final reply to command ``index`` (0-based), if already seen; replies[0] is the
        greeting."""
        i = index + 1
        return self.replies[i] if i < len(self.replies) else None

    # ---- client side ----------------------------------------------------------------
    def feed(self, direction: str, data: bytes, ts: float) -> None:
        self.last_ts = ts
        if direction == "resp":
            self.srv.append(data)
            self._server()
            if self.state == "data_wait":
                self._client(ts)
            return
        if self.state in ("tls", "dead"):
            return
        self.cli.append(data)
        self._client(ts)

    def gap(self, direction: str, length: int, ts: float) -> None:
        if direction == "resp":
            self.srv.clear()
            return
        self._client(ts)
        if self.state == "data_wait" and self._reply_to(self.data_cmd) in (None, 354):
            self._open(ts, "DATA")  # the bytes around the gap are most likely the message
            self.state = "data"
        if self.state in ("data", "bdat") and self.msg is not None:
            pending = len(self.cli)
            self.msg.missing.append((self.msg.size + pending, length))
            self.msg.add(self.cli.read(pending))
            self._scan_from = 0
            if self.state == "bdat":
                self.bdat_left -= min(self.bdat_left, length)
        else:
            self.cli.clear()
            self._after_gap = True
        self.notes.append(f"client gap of {length} bytes in state {self.state}")

    def end(self, direction: str, ts: float) -> None:
        if direction == "resp":
            self.srv_done = True
            self._client(ts)

    def close(self, ts: float) -> None:
        self.srv_done = True
        self._client(ts)
        if self.msg is not None and self.state in ("data", "bdat"):
            pending = self.cli.read(len(self.cli))
            self.msg.add(pending)
            self._finish(ts, complete=False)

    def _client(self, ts: float) -> None:
        while True:
            if self.state == "cmd":
                if not self._command(ts):
                    return
            elif self.state == "data":
                if not self._data(ts):
                    return
            elif self.state == "bdat":
                if not self._bdat(ts):
                    return
            elif self.state == "data_wait":
                if not self._data_wait(ts):
                    return
            else:
                return

    def _command(self, ts: float) -> bool:
        if self.commands and self.commands[-1] == "STARTTLS" and len(self.cli) >= 1:
            reply = self._reply_to(len(self.commands) - 1)
            if self.cli.peek(1) == b"\x16" or reply == 220:
                self.tls = True
                self.state = "tls"
                self.notes.append("STARTTLS: the rest of the connection is TLS")
                self.cli.clear()
                return False
        try:
            line = self.cli.readline(MAX_COMMAND_LINE, "MAX_COMMAND_LINE")
        except LineTooLong as exc:
            self.notes.append(f"{exc}; skipping to the next line")
            self.cli.clear()
            return False
        if line is None:
            return False
        verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper().decode("ascii", "replace")
        self.commands.append(verb)
        if self._after_gap and verb not in ("MAIL", "RCPT", "DATA", "BDAT", "RSET", "EHLO",
                                            "HELO", "QUIT", "NOOP", "STARTTLS"):
            return True
        self._after_gap = False
        if verb in ("HELO", "EHLO"):
            self.helo = line[5:].strip().decode("utf-8", "replace")
            self._reset()
        elif verb == "MAIL":
            self._reset()
            self.mail_from = _addr(line)
        elif verb == "RCPT":
            addr = _addr(line)
            if addr:
                self.rcpt_to.append(addr)
        elif verb == "RSET":
            self._reset()
        elif verb == "DATA":
            self.data_cmd = len(self.commands) - 1
            self.state = "data_wait"
        elif verb == "BDAT":
            m = _BDAT.match(line)
            if m is None:
                self.notes.append(f"malformed BDAT line {line[:80]!r}")
                return True
            if self.msg is None or self.msg.transfer != "BDAT":
                self._open(ts, "BDAT")
            self.bdat_left = int(m.group(1))
            self.bdat_last = bool(m.group(2))
            self.state = "bdat"
        return True

    def _data_wait(self, ts: float) -> bool:
        """DATA was sent: its reply says whether a message follows (354) or not. Without a
        server side (one-sided capture) the message is assumed accepted."""
        reply = self._reply_to(self.data_cmd)
        if reply is None and not self.srv_done:
            return False
        if reply is not None and reply != 354:
            self.notes.append(f"DATA refused with {reply}")
            self.state = "cmd"
            return True
        self._open(ts, "DATA")
        self.state = "data"
        self._scan_from = 0
        return True

    def _reset(self) -> None:
        self.mail_from = ""
        self.rcpt_to = []

    def _open(self, ts: float, transfer: str) -> None:
        self.msg = _Message(ts, self.mail_from, list(self.rcpt_to), transfer, self.helo)

    def _data(self, ts: float) -> bool:
        assert self.msg is not None
        if self.msg.size == 0 and not self.msg.parts and self.cli.peek(3) == b".\r\n":
            self.cli.skip(3)
            self._finish(ts, complete=True)
            return True
        i = self.cli.find(_TERM, self._scan_from)
        if i < 0:
            # Hand over everything that cannot be part of a terminator yet.
            keep = 4
            n = len(self.cli) - keep
            if n > 0:
                self.msg.add(self.cli.read(n))
            self._scan_from = max(0, len(self.cli) - keep)
            return False
        self.msg.add(self.cli.read(i + 2))
        self.cli.skip(3)
        self._finish(ts, complete=True)
        return True

    def _bdat(self, ts: float) -> bool:
        assert self.msg is not None
        if self.bdat_left:
            chunk = self.cli.read(self.bdat_left)
            self.msg.add(chunk)
            self.bdat_left -= len(chunk)
            if self.bdat_left:
                return False
        if self.bdat_last:
            self._finish(ts, complete=True)
        self.state = "cmd"
        return True

    def _finish(self, ts: float, complete: bool) -> None:
        msg = self.msg
        assert msg is not None
        self.msg = None
        self.state = "cmd"
        self._reset()
        data = b"".join(msg.parts)
        if msg.transfer == "DATA":
            data = _unstuff(data)
            self.commands.append("<end of data>")  # the server replies to it
        if self.count >= MAX_MESSAGES_PER_CONNECTION:
            self.notes.append(f"MAX_MESSAGES_PER_CONNECTION={MAX_MESSAGES_PER_CONNECTION} "
                              "reached; message dropped")
            return
        self.count += 1
        extra = {"transfer": msg.transfer, "helo": msg.helo, "tls": self.tls}
        if msg.dropped:
            extra["truncated_by_limit"] = f"MAX_MESSAGE_SIZE={MAX_MESSAGE_SIZE}"
            extra["dropped_bytes"] = msg.dropped
        self.out.append(CarvedEmail(
            data=data, protocol="smtp", ts=msg.ts, mail_from=msg.mail_from,
            rcpt_to=msg.rcpt_to, incomplete=not complete or bool(msg.missing or msg.dropped),
            missing_ranges=msg.missing, extra=extra))


def _unstuff(data: bytes) -> bytes:
    """RFC 5321 4.5.2: a leading '.' on a line was doubled by the client."""
    if data.startswith(b".."):
        data = data[1:]
    return data.replace(b"\r\n..", b"\r\n.")
