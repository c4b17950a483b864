"""HTTP/1.x message framing (RFC 9112): keep-alive, pipelining, Content-Length, chunked,
connection close, interim 1xx responses, HEAD/204/304, CONNECT tunnels, and gaps.

:class:`HttpParser` reads one direction; :class:`pcapwire.extract.httpfiles.HttpSession`
pairs the two and turns bodies into files. A response parser needs the method of the
request it answers (HEAD has no body); until that request has been read it waits.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from pcapwire.extract.buffer import ByteBuffer, LineTooLong

log = logging.getLogger(__name__)

#: Largest request/response header block (start line + fields), in bytes.
MAX_HEADER_BYTES = 64 * 1024
#: Most header fields in one block.
MAX_HEADER_FIELDS = 500
#: Longest chunk-size line (size, extensions, CRLF) in a chunked body.
MAX_CHUNK_LINE = 4 * 1024
#: Largest body kept per message; bytes past it are counted, not kept.
MAX_BODY_SIZE = 512 * 1024 * 1024
#: Most messages read from one direction of one connection.
MAX_MESSAGES_PER_DIRECTION = 100_000

METHODS = (b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT",
           b"TRACE", b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK",
           b"UNLOCK", b"SEARCH", b"REPORT")
_REQ_LINE = re.compile(rb"^([A-Z][A-Z_-]{1,19}) +(\S+) +HTTP/(\d)\.(\d)\s*$")
_RESP_LINE = re.compile(rb"^HTTP/(\d)\.(\d) +(\d{3})(?: (.*))?$")
_REQ_SYNC = re.compile(rb"(?:^|\n)(?:" + b"|".join(METHODS) + rb") \S+ HTTP/1\.[01]\r?\n")
_RESP_SYNC = re.compile(rb"(?:^|\n)HTTP/1\.[01] \d{3}")
_HEAD_END = re.compile(rb"\r?\n\r?\n")


def looks_like_request(data: bytes) -> bool:
    return _REQ_LINE.match(data.split(b"\n", 1)[0]) is not None and data.split(b" ", 1)[
        0] in METHODS


def looks_like_response(data: bytes) -> bool:
    return _RESP_LINE.match(data.split(b"\n", 1)[0].rstrip(b"\r")) is not None


@dataclass
class HttpMessage:
    is_request: bool
    index: int  # 0-based position among this direction's messages (interim 1xx included)
    ts: float
    start_line: str = ""
    method: str = ""
    uri: str = ""
    version: str = ""
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body_parts: list[bytes] = field(default_factory=list)
    body_size: int = 0  # bytes kept
    body_dropped: int = 0  # bytes past MAX_BODY_SIZE
    framing: str = ""  # none | length | chunked | close | tunnel
    declared_length: int | None = None
    missing: list[tuple[int, int]] = field(default_factory=list)
    complete: bool = False
    errors: list[str] = field(default_factory=list)
    end_ts: float = 0.0

    def header(self, name: str) -> str:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return ""

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def body(self) -> bytes:
        if len(self.body_parts) != 1:
            self.body_parts = [b"".join(self.body_parts)]
        return self.body_parts[0]

    @property
    def body_offset(self) -> int:
        """Where the next body byte lies in the body as sent: bytes kept, bytes past the
        size limit and bytes lost in gaps so far."""
        return self.body_size + self.body_dropped + sum(n for _, n in self.missing)

    def add_body(self, data: bytes) -> None:
        room = MAX_BODY_SIZE - self.body_size
        if len(data) > room:
            self.body_dropped += len(data) - max(room, 0)
            data = data[:max(room, 0)]
        if data:
            self.body_parts.append(data)
            self.body_size += len(data)


def _decode(raw: bytes) -> str:
    return raw.decode("latin-1")


def parse_head(block: bytes, is_request: bool, msg: HttpMessage) -> bool:
    """Fill start line and headers; False when the start line is not HTTP."""
    lines = re.split(rb"\r?\n", block)
    first = lines[0].rstrip()
    if is_request:
        m = _REQ_LINE.match(first)
        if m is None:
            return False
        msg.method, msg.uri = _decode(m.group(1)), _decode(m.group(2))
        msg.version = f"{m.group(3).decode()}.{m.group(4).decode()}"
    else:
        m = _RESP_LINE.match(first)
        if m is None:
            return False
        msg.version = f"{m.group(1).decode()}.{m.group(2).decode()}"
        msg.status = int(m.group(3))
        msg.reason = _decode(m.group(4) or b"").strip()
    msg.start_line = _decode(first)
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t") and msg.headers:  # obsolete line folding
            k, v = msg.headers[-1]
            msg.headers[-1] = (k, v + " " + _decode(line.strip()))
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name.strip():
            if line.strip():
                msg.errors.append(f"header line without a colon: {line[:60]!r}")
            continue
        if len(msg.headers) >= MAX_HEADER_FIELDS:
            msg.errors.append(f"MAX_HEADER_FIELDS={MAX_HEADER_FIELDS} reached")
            break
        msg.headers.append((_decode(name.strip()), _decode(value.strip())))
    return True


class HttpParser:
    """Frames the messages of one direction. ``method_of(i)`` gives the method of request
    ``i`` (None while unknown) to the response side; ``on_message`` gets each message."""

    def __init__(self, is_request: bool, on_message: Callable[[HttpMessage], None],
                 method_of: Callable[[int], str | None] | None = None) -> None:
        self.is_request = is_request
        self.on_message = on_message
        self.method_of = method_of
        self.buf = ByteBuffer()
        self.resync_mid_line = False  # see _resync
        self.state = "head"  # head | length | chunk_size | chunk_data | chunk_end |
        #                      trailers | close | tunnel | lost
        self.msg: HttpMessage | None = None
        self.left = 0
        self.count = 0  # messages started
        self.answered = 0  # requests answered (responses only; 1xx do not count)
        self.ts = 0.0
        self.notes: list[str] = []
        self.peer_done = False  # the request side ended (responses stop waiting)

    # ---- input ---------------------------------------------------------------------
    def feed(self, data: bytes, ts: float) -> None:
        self.ts = ts
        if self.state == "tunnel":
            return
        if self.msg is not None and not len(self.buf) and self.state in ("length",
                                                                          "chunk_data"):
            # Fast path for body bytes: no copy through the buffer.
            n = min(self.left, len(data))
            self.msg.add_body(data if n == len(data) else data[:n])
            self.left -= n
            if n == len(data):
                if self.left == 0:
                    self.run()
                return
            data = data[n:]
        self.buf.append(data)
        self.run()

    def run(self) -> None:
        while self._step():
            pass

    def gap(self, length: int, ts: float) -> None:
        self.run()
        msg = self.msg
        if msg is not None and self.state in ("length", "chunk_data") and length <= self.left:
            msg.missing.append((msg.body_offset, length))
            self.left -= length
            self.run()
            return
        if msg is not None and self.state == "close":
            msg.missing.append((msg.body_offset, length))
            return
        if msg is not None:
            if self.state in ("length", "chunk_data"):
                msg.missing.append((msg.body_offset, self.left))
            self.notes.append(f"gap of {length} bytes in state {self.state}; resynchronising")
            self._emit(complete=False, error=f"gap of {length} bytes in {self.state}")
        self.buf.clear()
        if self.state != "tunnel":
            self.state = "lost"

    def eof(self, ts: float) -> None:
        self.ts = ts
        self.run()
        if self.msg is not None:
            if self.state == "close":
                self._emit(complete=True)
            else:
                if self.state in ("length", "chunk_data") and self.left:
                    self.msg.missing.append((self.msg.body_offset, self.left))
                self._emit(complete=False, error=f"connection ended in state {self.state}")

    # ---- state machine -------------------------------------------------------------
    def _step(self) -> bool:
        st = self.state
        if st == "head":
            return self._head()
        if st == "length":
            return self._length()
        if st == "chunk_size":
            return self._chunk_size()
        if st == "chunk_data":
            return self._chunk_data()
        if st == "chunk_end":
            return self._chunk_end()
        if st == "trailers":
            return self._trailers()
        if st == "close":
            if len(self.buf):
                assert self.msg is not None
                self.msg.add_body(self.buf.read(len(self.buf)))
            return False
        if st == "lost":
            return self._resync()
        self.buf.clear()  # tunnel
        return False

    def _head(self) -> bool:
        # Tolerate stray CRLFs between messages (RFC 9112 2.2).
        while self.buf.peek(2) == b"\r\n" or self.buf.peek(1) == b"\n":
            self.buf.skip(2 if self.buf.peek(1) == b"\r" else 1)
        if not len(self.buf):
            return False
        data = self.buf.peek(MAX_HEADER_BYTES + 4)
        m = _HEAD_END.search(data)
        if m is None:
            if len(self.buf) > MAX_HEADER_BYTES:
                self.notes.append(f"MAX_HEADER_BYTES={MAX_HEADER_BYTES} exceeded at stream "
                                  f"offset {self.buf.offset}; resynchronising")
                self.buf.skip(1)
                self.state = "lost"
                return True
            return False
        if self.count >= MAX_MESSAGES_PER_DIRECTION:
            self.notes.append(f"MAX_MESSAGES_PER_DIRECTION={MAX_MESSAGES_PER_DIRECTION} "
                              "reached")
            self.state = "tunnel"
            return False
        msg = HttpMessage(self.is_request, self.count, self.ts)
        if not parse_head(data[:m.start()], self.is_request, msg):
            self.notes.append(f"not an HTTP start line at stream offset {self.buf.offset}: "
                              f"{data[:40]!r}")
            self.buf.skip(1)
            self.state = "lost"
            return True
        method = ""
        if not self.is_request and msg.status >= 200:
            known = self.method_of(self.answered) if self.method_of else "GET"
            if known is None and not self.peer_done:
                return False  # wait for the request this response answers
            method = known or "GET"
        self.buf.skip(m.end())
        self.count += 1
        self.msg = msg
        self._framing(msg, method)
        return True

    def _framing(self, msg: HttpMessage, method: str) -> None:
        te = [t.strip().lower() for v in msg.header_all("transfer-encoding")
              for t in v.split(",") if t.strip()]
        cls = msg.header_all("content-length")
        length: int | None = None
        if cls:
            values = {v.strip() for c in cls for v in c.split(",")}
            value = next(iter(values))
            if len(values) == 1 and value.isascii() and value.isdigit():  # isdigit: '¹' too
                length = int(value)
            else:
                msg.errors.append(f"invalid Content-Length {cls!r}")
        msg.declared_length = length
        if not self.is_request:
            if msg.status < 200 or msg.status in (204, 304) or method == "HEAD":
                if msg.status == 101:
                    self._emit(complete=True)
                    self.state = "tunnel"
                    msg.framing = "tunnel"
                    return
                msg.framing = "none"
                self._emit(complete=True)
                return
            if method == "CONNECT" and 200 <= msg.status < 300:
                msg.framing = "tunnel"
                self._emit(complete=True)
                self.state = "tunnel"
                return
        if te:
            if te[-1] == "chunked":
                msg.framing = "chunked"
                self.state = "chunk_size"
                return
            if not self.is_request:
                msg.framing = "close"
                self.state = "close"
                return
            msg.errors.append(f"request with Transfer-Encoding {te!r} and no chunked")
        if length is not None:
            msg.framing = "length"
            self.left = length
            self.state = "length"
            if length == 0:
                self._emit(complete=True)
            return
        if self.is_request:
            msg.framing = "none"
            self._emit(complete=True)
        else:
            msg.framing = "close"
            self.state = "close"

    def _length(self) -> bool:
        assert self.msg is not None
        if self.left:
            data = self.buf.read(self.left)
            if not data:
                return False
            self.msg.add_body(data)
            self.left -= len(data)
        if self.left == 0:
            self._emit(complete=True)
            return True
        return False

    def _chunk_size(self) -> bool:
        assert self.msg is not None
        try:
            line = self.buf.readline(MAX_CHUNK_LINE, "MAX_CHUNK_LINE")
        except LineTooLong as exc:
            self._emit(complete=False, error=str(exc))
            self.state = "lost"
            return True
        if line is None:
            return False
        size_txt = line.split(b";", 1)[0].strip()
        if not size_txt and not line.strip():
            return True  # tolerate an empty line before the size
        try:
            size = int(size_txt, 16)
        except ValueError:
            self._emit(complete=False, error=f"invalid chunk size line {line[:40]!r}")
            self.state = "lost"
            return True
        if size < 0:
            self._emit(complete=False, error=f"negative chunk size {line[:40]!r}")
            self.state = "lost"
            return True
        if size == 0:
            self.state = "trailers"
            return True
        self.left = size
        self.state = "chunk_data"
        return True

    def _chunk_data(self) -> bool:
        assert self.msg is not None
        if self.left == 0:
            self.state = "chunk_end"
            return True
        data = self.buf.read(self.left)
        if not data:
            return False
        self.msg.add_body(data)
        self.left -= len(data)
        if self.left == 0:
            self.state = "chunk_end"
            return True
        return False

    def _chunk_end(self) -> bool:
        head = self.buf.peek(2)
        if head == b"\r\n":
            self.buf.skip(2)
        elif head[:1] == b"\n":
            self.buf.skip(1)
        elif len(head) < 2 and head in (b"", b"\r"):
            return False
        else:
            assert self.msg is not None
            self.msg.errors.append("chunk data not followed by CRLF")
        self.state = "chunk_size"
        return True

    def _trailers(self) -> bool:
        try:
            line = self.buf.readline(MAX_HEADER_BYTES, "MAX_HEADER_BYTES")
        except LineTooLong as exc:
            self._emit(complete=False, error=str(exc))
            self.state = "lost"
            return True
        if line is None:
            return False
        if line:
            assert self.msg is not None
            name, _, value = line.partition(b":")
            self.msg.headers.append((_decode(name.strip()), _decode(value.strip())))
            return True
        self._emit(complete=True)
        return True

    def _resync(self) -> bool:
        pat = _REQ_SYNC if self.is_request else _RESP_SYNC
        data = self.buf.peek(len(self.buf))
        # After skipping junk, the bytes kept start mid-line unless a newline preceded
        # them: a start line may then not match there (the pattern's ^), or the result
        # would depend on where the TCP segments ended.
        m = pat.search(data)
        if m is not None and m.start() == 0 and self.resync_mid_line and data[:1] != b"\n":
            m = pat.search(data, 1)
        if m is None:
            # Keep what a start line still arriving may begin with: the bytes from the
            # last newline on (or all of them at a line start), at most MAX_HEADER_BYTES.
            nl = data.rfind(b"\n")
            if nl >= 0:
                skip = nl
            elif not self.resync_mid_line:
                skip = 0
            else:
                skip = len(data)
            if len(data) - skip > MAX_HEADER_BYTES:
                skip = len(data)
            if skip:
                self.resync_mid_line = data[skip - 1:skip] != b"\n"
            self.buf.skip(skip)
            return False
        self.resync_mid_line = False
        start = m.start() + (1 if data[m.start():m.start() + 1] == b"\n" else 0)
        self.notes.append(f"resynchronised at stream offset {self.buf.offset + start}")
        self.buf.skip(start)
        self.state = "head"
        return True

    def _emit(self, complete: bool, error: str = "") -> None:
        msg = self.msg
        if msg is None:
            return
        self.msg = None
        msg.complete = complete and not msg.missing and not msg.body_dropped
        msg.end_ts = self.ts
        if error:
            msg.errors.append(error)
        if not self.is_request and msg.status >= 200:
            self.answered += 1
        if self.state not in ("tunnel",):
            self.state = "head"
        self.left = 0
        self.on_message(msg)
