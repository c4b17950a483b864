"""Local servers for live-traffic tests, each on 127.0.0.1 and an ephemeral port.

They record what they sent or received, so a test compares carved bytes with the bytes
that really crossed the wire.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class HttpContent:
    """What the HTTP server serves, by path: (body, options). Options: status, type,
    disposition, gzip, chunked (+ chunk size), ranges (answer Range requests with 206:
    plain for one range, multipart/byteranges for several)."""

    files: dict[str, tuple[bytes, dict[str, Any]]] = field(default_factory=dict)
    uploads: list[bytes] = field(default_factory=list)  # raw POST bodies received


def _handler(content: HttpContent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            body, opts = content.files.get(self.path, (b"not found", {"status": 404}))
            ranges = _ranges(self.headers.get("Range", ""), len(body))
            if opts.get("ranges") and ranges:
                self._partial(body, ranges, opts)
                return
            self.send_response(opts.get("status", 200))
            if opts.get("disposition"):
                self.send_header("Content-Disposition", opts["disposition"])
            self.send_header("Content-Type", opts.get("type", "application/octet-stream"))
            if opts.get("gzip"):
                body = gzip.compress(body)
                self.send_header("Content-Encoding", "gzip")
            if opts.get("chunked"):
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                step = opts.get("chunk", 1000)
                for i in range(0, len(body), step):
                    piece = body[i:i + step]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _partial(self, body: bytes, ranges: list[tuple[int, int]],
                     opts: dict[str, Any]) -> None:
            """206: one range as a plain body with Content-Range, several as
            multipart/byteranges (RFC 9110 14.6)."""
            ctype = opts.get("type", "application/octet-stream")
            self.send_response(206)
            self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()[:16]}"')
            if len(ranges) == 1:
                (first, last), = ranges
                payload = body[first:last + 1]
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Range", f"bytes {first}-{last}/{len(body)}")
            else:
                boundary = BYTERANGES_BOUNDARY
                payload = b"".join(
                    f"\r\n--{boundary}\r\nContent-Type: {ctype}\r\nContent-Range: bytes "
                    f"{first}-{last}/{len(body)}\r\n\r\n".encode() + body[first:last + 1]
                    for first, last in ranges) + f"\r\n--{boundary}--\r\n".encode()
                self.send_header("Content-Type",
                                 f"multipart/byteranges; boundary={boundary}")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:  # noqa: N802
            n = int(self.headers.get("Content-Length", "0"))
            content.uploads.append(self.rfile.read(n))
            reply = b"stored"
            self.send_response(200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    return Handler


#: The boundary of the server's multipart/byteranges responses.
BYTERANGES_BOUNDARY = "pcapwire-e2e-3d6b6a416f9b"


def _ranges(header: str, size: int) -> list[tuple[int, int]]:
    """(first, last) of each ``first-last`` of a ``Range: bytes=...`` header (no suffix
    or open ranges: the tests ask for explicit ones); [] when there is none."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes":
        return []
    out = []
    for item in spec.split(","):
        first, _, last = item.strip().partition("-")
        if first.isdigit() and last.isdigit() and int(first) <= int(last) < size:
            out.append((int(first), int(last)))
    return out


@contextmanager
def http_server(content: HttpContent) -> Iterator[int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _handler(content))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield int(srv.server_address[1])
    finally:
        srv.shutdown()
        srv.server_close()


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SmtpInbox:
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)


@contextmanager
def smtp_server(inbox: SmtpInbox) -> Iterator[int]:
    """aiosmtpd in its own thread; keeps (mail_from, rcpt_tos, original_content)."""
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            inbox.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                                   bytes(envelope.original_content)))
            return "250 OK"

    port = free_tcp_port()
    ctl = Controller(Handler(), hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield port
    finally:
        ctl.stop()


@contextmanager
def ftp_server(home: Path, user: str = "user", password: str = "secret") -> Iterator[int]:
    """pyftpdlib serving ``home`` read-write for one user."""
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import ThreadedFTPServer

    logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
    auth = DummyAuthorizer()
    auth.add_user(user, password, str(home), perm="elradfmw")

    class Handler(FTPHandler):
        authorizer = auth
        permit_foreign_addresses = True

    Handler.log_prefix = ""
    srv = ThreadedFTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, kwargs={"handle_exit": False},
                         daemon=True)
    t.start()
    try:
        yield int(srv.address[1])
    finally:
        srv.close_all()
