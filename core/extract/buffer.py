"""The byte buffer every protocol parser reads from, and the parser contract.

Parsers follow Scapy's reassembly contract: they are fed the bytes of one direction of a
connection (in order, with gaps announced, never invented) and either need more or hand
out messages. They never see packets, so they do not depend on how bytes were reassembled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pcapwire.records import FlowKey

#: Compact the buffer once this many consumed bytes sit at its front.
_COMPACT_AT = 256 * 1024


class LineTooLong(Exception):  # noqa: N818 - a control-flow signal inside parsers
    """A line passed its parser's limit; ``limit`` names the constant."""

    def __init__(self, limit: str, value: int) -> None:
        self.limit = limit
        self.value = value
        super().__init__(f"{limit}={value} exceeded")


class ByteBuffer:
    """Unread bytes of one direction plus the stream offset of the first of them."""

    __slots__ = ("_buf", "_pos", "offset")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.offset = 0  # stream offset of the next unread byte

    def __len__(self) -> int:
        return len(self._buf) - self._pos

    def append(self, data: bytes) -> None:
        if self._pos >= _COMPACT_AT and self._pos * 2 >= len(self._buf):
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data

    def clear(self) -> None:
        self.offset += len(self)
        self._buf.clear()
        self._pos = 0

    def skip(self, n: int) -> None:
        n = min(n, len(self))
        self._pos += n
        self.offset += n

    def read(self, n: int) -> bytes:
        n = min(n, len(self))
        out = bytes(self._buf[self._pos:self._pos + n])
        self._pos += n
        self.offset += n
        return out

    def peek(self, n: int) -> bytes:
        return bytes(self._buf[self._pos:self._pos + n])

    def find(self, needle: bytes, start: int = 0, limit: int | None = None) -> int:
        """Index of ``needle`` relative to the unread start, or -1."""
        end = len(self._buf) if limit is None else min(len(self._buf),
                                                        self._pos + limit + len(needle))
        i = self._buf.find(needle, self._pos + start, end)
        return -1 if i < 0 else i - self._pos

    def readline(self, limit: int, limit_name: str) -> bytes | None:
        """One line without its terminator (LF or CRLF), or None if incomplete.

        Raises :class:`LineTooLong` when no terminator appears within ``limit`` bytes.
        """
        i = self.find(b"\n", 0, limit)
        if i < 0:
            if len(self) > limit:
                raise LineTooLong(limit_name, limit)
            return None
        line = self.read(i + 1)
        return line[:-2] if line.endswith(b"\r\n") else line[:-1]


@dataclass
class CarvedFile:
    """A file a protocol parser found; the driver stores it and makes a FileRecord."""

    data: bytes
    protocol: str
    direction: str  # "orig" (client to server) or "resp"
    ts: float
    filename: str = ""
    incomplete: bool = False
    #: (offset, length) in file coordinates of bytes never seen; they are absent from
    #: ``data`` (never invented), like StreamRecord gaps.
    missing_ranges: list[tuple[int, int]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    #: set when the file travelled on another flow than the session's (FTP data).
    flow: FlowKey | None = None
    #: the body as transferred, when ``data`` is its Content-Encoding decoded form (only
    #: so libmagic can name both; not stored).
    transferred: bytes | None = None


@dataclass
class CarvedEmail:
    """A message rebuilt byte for byte from SMTP, POP3 or IMAP."""

    data: bytes
    protocol: str
    ts: float
    mail_from: str = ""
    rcpt_to: list[str] = field(default_factory=list)
    incomplete: bool = False
    missing_ranges: list[tuple[int, int]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


Carved = CarvedFile | CarvedEmail


class Session:
    """One application-protocol conversation on one TCP connection.

    The driver calls ``feed``/``gap`` per direction ("orig" = initiator) in any interleaving
    that keeps each direction in order, then ``close`` once; ``take`` drains what was found.
    """

    protocol = ""

    def __init__(self) -> None:
        self.out: list[Carved] = []
        self.notes: list[str] = []

    def feed(self, direction: str, data: bytes, ts: float) -> None:
        raise NotImplementedError

    def gap(self, direction: str, length: int, ts: float) -> None:
        raise NotImplementedError

    def end(self, direction: str, ts: float) -> None:
        """One direction ended (FIN or RST); the other may go on."""

    def close(self, ts: float) -> None:
        raise NotImplementedError

    def take(self) -> list[Carved]:
        out, self.out = self.out, []
        return out
