"""The connection guard: limits a client cannot dodge by being slow or by opening many
connections, enforced on the socket before any request reaches the application.

- at most ``max_connections_per_client`` open connections per client address; one more is
  answered ``429`` and closed at once (over TLS: closed before the handshake);
- a request's headers must be complete within ``header_timeout_s`` of their first byte (or
  of the connection, or of the TLS handshake, which has the same bound); else ``408``;
- a request body must arrive at ``body_min_bytes_per_s`` or faster, averaged over
  ``body_rate_window_s`` (windows in which the server paused reading do not count); else the
  handler reading it gets ``408 body_too_slow`` and the connection closes after that answer.

:class:`GuardedSite` listens like aiohttp's ``TCPSite`` and hands each admitted connection to
a :class:`GuardedHandler` (aiohttp's ``RequestHandler`` plus the timers). The handler reads
attributes of aiohttp's protocol (``_messages``, ``_lingering_time``, ``_reading_paused``)
and relies on ``log_access`` being called once per answered request;
``tests/security/test_http_layer.py`` checks the behaviour end to end.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import ssl
from collections import Counter
from typing import Any

from aiohttp import streams, web
from pcapwire.api.config import HttpLimits
from pcapwire.api.errors import ApiError, error_body

log = logging.getLogger(__name__)


def _response(status: str, body: dict[str, Any] | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else b""
    head = (f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {len(data)}\r\n"
            + ("Content-Type: application/json; charset=utf-8\r\n" if data else ""))
    return head.encode() + b"\r\n" + data


HEADERS_TIMED_OUT = _response("408 Request Timeout")


def client_key(peername: Any) -> str:
    """The address a connection counts against: the client's IPv4 address, or the /64 its
    IPv6 address belongs to (one host or network often has a whole /64 to pick from)."""
    host = str(peername[0]) if isinstance(peername, tuple) else str(peername)
    try:
        addr = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class Guard:
    """One server's limits and its count of open connections per client address."""

    def __init__(self, limits: HttpLimits, ssl_context: ssl.SSLContext | None = None) -> None:
        self.limits = limits
        self.ssl_context = ssl_context
        self.open: Counter[str] = Counter()
        self._handshakes: set[asyncio.Task[None]] = set()
        cap = limits.max_connections_per_client
        self.refusal = _response("429 Too Many Requests", error_body(
            "too_many_connections", f"this address already has {cap} open connections "
            "to the server (the per-client limit); reuse or close one",
            {"limit": cap, "limit_name": "max_connections_per_client"}))

    def admit(self, peer: str) -> bool:
        cap = self.limits.max_connections_per_client
        if cap and self.open[peer] >= cap:
            return False
        self.open[peer] += 1
        return True

    def release(self, peer: str) -> None:
        self.open[peer] -= 1
        if self.open[peer] <= 0:
            del self.open[peer]

    def start_tls(self, transport: asyncio.Transport, handler: GuardedHandler) -> None:
        task = asyncio.get_running_loop().create_task(self._handshake(transport, handler))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, transport: asyncio.Transport, handler: GuardedHandler) -> None:
        assert self.ssl_context is not None
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport, handler, self.ssl_context, server_side=True,
                ssl_handshake_timeout=self.limits.header_timeout_s or None)
        except asyncio.CancelledError:
            handler.abandon()
            raise
        except Exception as exc:  # refused, reset, timed out: nothing more to do
            log.info("TLS handshake with %s failed: %r", handler.peer, exc)
            handler.abandon()
            return
        if tls is None or tls.is_closing():
            handler.abandon()
            return
        handler.connection_made(tls)


class _Acceptor(asyncio.Protocol):
    """The listening socket's protocol: admits or refuses a new connection, then hands the
    transport (or its TLS layer) to a :class:`GuardedHandler`."""

    def __init__(self, guard: Guard, server: web.Server, handler_args: dict[str, Any]) -> None:
        self.guard = guard
        self.server = server
        self.handler_args = handler_args

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = client_key(transport.get_extra_info("peername"))
        if not self.guard.admit(peer):
            log.warning("refused a connection from %s: %d already open (limit)", peer,
                        self.guard.open[peer])
            if self.guard.ssl_context is None:
                transport.write(self.guard.refusal)
                transport.close()
            else:
                transport.abort()
            return
        handler = GuardedHandler(self.server, self.guard, peer, loop=asyncio.get_running_loop(),
                                 **self.handler_args)
        if self.guard.ssl_context is None:
            transport.set_protocol(handler)
            handler.connection_made(transport)
        else:
            self.guard.start_tls(transport, handler)


class GuardedHandler(web.RequestHandler):
    """aiohttp's per-connection protocol with a header deadline, a body rate check and the
    release of its slot in the per-client count."""

    def __init__(self, manager: web.Server, guard: Guard, peer: str, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.peer = peer
        self._released = False
        self._made = False
        self._early: list[bytes] = []  # TLS data that arrived before connection_made
        self._unanswered = 0  # requests whose headers arrived and whose answer is not done
        self._header_timer: asyncio.TimerHandle | None = None
        self._body: streams.StreamReader | None = None  # the request body still arriving
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_bytes = 0  # received in the current window
        self._paused_in_window = False

    # -- lifecycle ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._released:  # lost between the TLS handshake and now
            transport.close()
            return
        self._made = True
        super().connection_made(transport)
        self._start_header_timer()
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timers()
        if self._made:
            super().connection_lost(exc)
        self.abandon()

    def abandon(self) -> None:
        """Give back this connection's slot in the per-client count (once)."""
        if not self._released:
            self._released = True
            self.guard.release(self.peer)

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    # -- reading --------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if not self._made:
            if not self._released:
                self._early.append(data)
            return
        had_body = self._body is not None
        if had_body:
            self._body_bytes += len(data)
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) > queued:  # headers of one or more requests complete
            self._unanswered += len(self._messages) - queued
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            self._watch_body(self._messages[-1][1])
        elif self._body is not None and self._body.is_eof():
            self._watch_body(None)
        elif data and not had_body:  # the first bytes of a request's headers
            self._start_header_timer()

    def pause_reading(self) -> None:
        self._paused_in_window = True  # the server, not the client, is slow: not counted
        super().pause_reading()

    def log_access(self, request: web.BaseRequest, response: web.StreamResponse,
                   time: float | None) -> None:
        self._unanswered -= 1  # called once per request, when its answer is complete
        super().log_access(request, response, time)

    # -- header deadline ------------------------------------------------------------------
    def _start_header_timer(self) -> None:
        timeout = self.guard.limits.header_timeout_s
        if timeout and self._header_timer is None and self.transport is not None:
            self._header_timer = self._loop.call_later(timeout, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        log.info("closed a connection from %s: request headers not complete within %g s",
                 self.peer, self.guard.limits.header_timeout_s)
        if self.transport is not None and not self._unanswered:  # never inside an answer
            self.transport.write(HEADERS_TIMED_OUT)
        self.force_close()

    # -- body rate ------------------------------------------------------------------------
    def _watch_body(self, payload: Any) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._body = payload if isinstance(payload, streams.StreamReader) and \
            not payload.is_eof() else None
        limits = self.guard.limits
        if self._body is not None and limits.body_min_bytes_per_s and limits.body_rate_window_s:
            self._new_window()

    def _new_window(self) -> None:
        self._body_bytes = 0
        self._paused_in_window = bool(self._reading_paused)
        self._body_timer = self._loop.call_later(self.guard.limits.body_rate_window_s,
                                                 self._check_body)

    def _check_body(self) -> None:
        self._body_timer = None
        body, limits = self._body, self.guard.limits
        if body is None or body.is_eof() or self.transport is None:
            self._body = None
            return
        if self._paused_in_window or \
                self._body_bytes >= limits.body_min_bytes_per_s * limits.body_rate_window_s:
            self._new_window()
            return
        self._body = None
        log.info("cut off a request body from %s: %d bytes in %g s (minimum %d bytes/s)",
                 self.peer, self._body_bytes, limits.body_rate_window_s,
                 limits.body_min_bytes_per_s)
        if not self._unanswered:  # answered already; nobody will read it: just close
            self.force_close()
            return
        # The handler reading the body answers 408; the connection closes after that answer
        # instead of lingering for the rest of the body.
        self._lingering_time = 0.0
        self.close()
        body.set_exception(ApiError(
            408, "body_too_slow", f"the request body arrived slower than "
            f"{limits.body_min_bytes_per_s} bytes/s over {limits.body_rate_window_s:g} s",
            {"limit": limits.body_min_bytes_per_s, "limit_name": "body_min_bytes_per_s"}))


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a :class:`Guard` (TLS included: the guard
    counts the connection before its handshake)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: Guard,
                 handler_args: dict[str, Any], backlog: int = 128) -> None:
        super().__init__(runner, backlog=backlog)
        self.host, self.port, self.guard, self.handler_args = host, port, guard, handler_args

    @property
    def name(self) -> str:
        scheme = "https" if self.guard.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Acceptor(self.guard, server, self.handler_args), self.host, self.port,
            backlog=self._backlog, reuse_address=True)
