"""FTP (RFC 959, 2428): control and data connections paired; RETR/STOR files named.

The control session pairs replies with commands (1xx replies are preliminary), learns
each data channel from PORT/EPRT (active) or from the 227/229 reply to PASV/EPSV
(passive), and binds the next transfer command (RETR, STOR, STOU, APPE; LIST/NLST/MLSD
for listings) to it. The driver asks :class:`FtpRegistry` whether a new connection is an
announced data channel; its bytes then become the named file. Passwords are never kept.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from pcapwire.extract.buffer import ByteBuffer, CarvedFile, LineTooLong, Session
from pcapwire.records import FlowKey

log = logging.getLogger(__name__)

#: Longest command or reply line read on the control connection.
MAX_FTP_LINE = 16 * 1024
#: Largest file kept from one data connection (the rest is counted, not kept).
MAX_FTP_FILE_SIZE = 512 * 1024 * 1024
#: Most announced data channels waiting for their connection, per registry.
MAX_PENDING_CHANNELS = 10_000

TRANSFER_COMMANDS = {"RETR": "resp", "STOR": "orig", "STOU": "orig", "APPE": "orig"}
LISTING_COMMANDS = {"LIST", "NLST", "MLSD"}
_H6 = re.compile(r"(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})")
_EPSV = re.compile(r"\((.)\1\1(\d{1,5})\1\)")


@dataclass
class FtpChannel:
    """A data channel announced on a control connection."""

    control: FlowKey
    hosts: tuple[str, ...]  # acceptable responder addresses of the data connection
    port: int
    passive: bool
    ts: float
    command: str = ""  # transfer bound to it (RETR, STOR, LIST, ...)
    argument: str = ""
    user: str = ""
    reply: int = 0  # final reply to the transfer command (226 = complete)
    used: bool = False
    index: int = -1  # index of the transfer command on the control connection


def parse_host_port(text: str) -> tuple[str, int] | None:
    """``h1,h2,h3,h4,p1,p2`` (PORT argument, 227 reply)."""
    m = _H6.search(text)
    if m is None:
        return None
    n = [int(x) for x in m.groups()]
    if any(x > 255 for x in n):
        return None
    return ".".join(map(str, n[:4])), n[4] * 256 + n[5]


def parse_eprt(arg: str) -> tuple[str, int] | None:
    """``|af|addr|port|`` with any delimiter (RFC 2428)."""
    if len(arg) < 5:
        return None
    parts = arg.split(arg[0])
    if len(parts) < 5 or not (parts[3].isascii() and parts[3].isdigit()):
        return None
    return parts[2], int(parts[3])


class FtpRegistry:
    """Data channels announced by every control session of one carving run."""

    def __init__(self) -> None:
        self.pending: list[FtpChannel] = []

    def announce(self, channel: FtpChannel) -> None:
        if len(self.pending) >= MAX_PENDING_CHANNELS:
            self.pending.pop(0)
        self.pending.append(channel)

    def match(self, flow: FlowKey) -> FtpChannel | None:
        """The channel a new connection (``flow`` oriented initiator -> responder) opens."""
        for i in range(len(self.pending) - 1, -1, -1):
            ch = self.pending[i]
            if ch.port == flow.dport and flow.dst in ch.hosts:
                del self.pending[i]
                ch.used = True
                return ch
        return None


class FtpControlSession(Session):
    protocol = "ftp"

    def __init__(self, flow: FlowKey, registry: FtpRegistry) -> None:
        super().__init__()
        self.flow = flow
        self.registry = registry
        self.cli = ByteBuffer()
        self.srv = ByteBuffer()
        self.commands: list[tuple[str, str, float]] = []
        self.replied = -1  # -1 until the greeting
        self.user = ""
        self.channels: dict[int, FtpChannel] = {}  # by index of the command that set it up
        self.setups: list[int] = []  # indices of PORT/EPRT/PASV/EPSV commands
        self.transfers: list[int] = []  # indices of transfer commands not yet bound
        self.log: list[dict[str, object]] = []

    def feed(self, direction: str, data: bytes, ts: float) -> None:
        if direction == "orig":
            self.cli.append(data)
            self._client(ts)
        else:
            self.srv.append(data)
            self._server(ts)

    def gap(self, direction: str, length: int, ts: float) -> None:
        (self.cli if direction == "orig" else self.srv).clear()
        self.notes.append(f"{direction}: gap of {length} bytes on the control connection")

    def close(self, ts: float) -> None:
        self._server(ts)

    def _lines(self, buf: ByteBuffer) -> list[str]:
        out = []
        while True:
            try:
                line = buf.readline(MAX_FTP_LINE, "MAX_FTP_LINE")
            except LineTooLong as exc:
                self.notes.append(str(exc))
                buf.clear()
                break
            if line is None:
                break
            out.append(line.decode("utf-8", "replace"))
        return out

    def _client(self, ts: float) -> None:
        for line in self._lines(self.cli):
            verb, _, arg = line.partition(" ")
            verb, arg = verb.upper(), arg.strip()
            index = len(self.commands)
            self.commands.append((verb, arg, ts))
            if verb == "USER":
                self.user = arg
            elif verb in ("PORT", "EPRT"):
                self.setups.append(index)
                hp = parse_host_port(arg) if verb == "PORT" else parse_eprt(arg)
                if hp is None:
                    self.notes.append(f"unparseable {verb} argument")
                    continue
                self._announce(index, hp[0], hp[1], passive=False, ts=ts)
            elif verb in ("PASV", "EPSV"):
                self.setups.append(index)
            elif verb in TRANSFER_COMMANDS or verb in LISTING_COMMANDS:
                self.transfers.append(index)
        self._server(ts)
        self._bind()

    def _announce(self, index: int, host: str, port: int, passive: bool, ts: float) -> None:
        if passive:
            hosts = tuple({host, self.flow.dst} - {""})
        else:
            hosts = tuple({host, self.flow.src} - {""})
        ch = FtpChannel(self.flow, hosts, port, passive, ts, user=self.user)
        self.channels[index] = ch
        self.registry.announce(ch)

    def _bind(self) -> None:
        """Give each transfer command the channel set up by the last PORT/EPRT/PASV/EPSV
        before it. By command index, so it holds however the two directions were
        interleaved when they were fed."""
        while self.transfers:
            index = self.transfers[0]
            setup = max((s for s in self.setups if s < index), default=None)
            ch = self.channels.get(setup) if setup is not None else None
            if ch is None:
                if setup is not None and self.replied <= setup:
                    return  # the PASV/EPSV reply has not been read yet
                verb = self.commands[index][0]
                self.notes.append(f"{verb} without an announced data channel")
                self.transfers.pop(0)
                continue
            self.transfers.pop(0)
            if ch.command:
                self.notes.append(f"data channel on port {ch.port} reused by "
                                  f"{self.commands[index][0]}")
                continue
            verb, arg, ts = self.commands[index]
            ch.command, ch.argument, ch.index = verb, arg, index
            self.log.append({"command": verb, "argument": arg, "ts": ts,
                             "data_port": ch.port, "passive": ch.passive})

    def _server(self, ts: float) -> None:
        while True:
            if self.replied >= 0 and self.replied >= len(self.commands):
                break  # wait for the command this reply answers
            try:
                line = self.srv.readline(MAX_FTP_LINE, "MAX_FTP_LINE")
            except LineTooLong as exc:
                self.notes.append(str(exc))
                self.srv.clear()
                break
            if line is None:
                break
            text = line.decode("utf-8", "replace")
            if len(text) < 4 or not (text[:3].isascii() and text[:3].isdigit()) \
                    or text[3] == "-":
                continue  # continuation of a multi-line reply
            code = int(text[:3])
            if self.replied < 0:
                self.replied = 0
                continue
            if code < 200:
                continue  # preliminary: the command gets another reply
            index = self.replied
            verb = self.commands[index][0]
            self.replied += 1
            if verb == "PASV" and code == 227:
                hp = parse_host_port(text[4:])
                if hp:
                    self._announce(index, hp[0], hp[1], passive=True, ts=ts)
            elif verb == "EPSV" and code == 229:
                m = _EPSV.search(text)
                if m:
                    self._announce(index, "", int(m.group(2)), passive=True, ts=ts)
            elif verb in TRANSFER_COMMANDS or verb in LISTING_COMMANDS:
                self._bind()
                for ch in self.channels.values():
                    if ch.index == index:
                        ch.reply = code
        self._bind()


class FtpDataSession(Session):
    """The bytes of one data connection, named by its channel."""

    protocol = "ftp-data"

    def __init__(self, channel: FtpChannel, flow: FlowKey) -> None:
        super().__init__()
        self.channel = channel
        self.flow = flow
        self.parts: dict[str, list[bytes]] = {"orig": [], "resp": []}
        self.sizes = {"orig": 0, "resp": 0}
        self.dropped = 0
        self.missing: dict[str, list[tuple[int, int]]] = {"orig": [], "resp": []}
        self.first_ts = 0.0

    def feed(self, direction: str, data: bytes, ts: float) -> None:
        if not self.first_ts:
            self.first_ts = ts
        room = MAX_FTP_FILE_SIZE - self.sizes[direction]
        if len(data) > room:
            self.dropped += len(data) - max(room, 0)
            data = data[:max(room, 0)]
        self.parts[direction].append(data)
        self.sizes[direction] += len(data)

    def gap(self, direction: str, length: int, ts: float) -> None:
        self.missing[direction].append((self.sizes[direction], length))

    def close(self, ts: float) -> None:
        ch = self.channel
        # The direction that carried bytes is the file; a transfer with no bytes is empty.
        direction = max(("resp", "orig"), key=lambda d: self.sizes[d])
        data = b"".join(self.parts[direction])
        if not data and not self.missing[direction]:
            return
        if ch.command in LISTING_COMMANDS:
            self.notes.append(f"{ch.command} listing of {len(data)} bytes (not a file)")
            return
        missing = self.missing[direction]
        extra: dict[str, Any] = {"ftp": {
            "command": ch.command, "argument": ch.argument, "user": ch.user,
            "passive": ch.passive, "reply": ch.reply, "control": ch.control.to_dict()}}
        if self.dropped:
            extra["truncated_by_limit"] = f"MAX_FTP_FILE_SIZE={MAX_FTP_FILE_SIZE}"
        if not ch.command:
            extra["ftp"]["note"] = "no transfer command seen for this channel"
        incomplete = bool(missing or self.dropped) or (ch.reply not in (0, 226, 250))
        # Direction is named from the control connection's point of view: a RETR is a
        # download (server to client), a STOR an upload.
        self.out.append(CarvedFile(
            data=data, protocol="ftp", ts=self.first_ts or ts,
            direction=TRANSFER_COMMANDS.get(ch.command, direction),
            filename=ch.argument.rsplit("/", 1)[-1] if ch.argument else "",
            incomplete=incomplete, missing_ranges=missing, extra=extra, flow=self.flow))
