"""Running the application: ``pcapwire serve`` and the tests' server thread both use
:func:`start`, so what is tested is what is served (connection guard, log throttle, TLS)."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from pcapwire.api.app import create_app
from pcapwire.api.config import ApiConfig
from pcapwire.api.connections import Guard, GuardedSite
from pcapwire.api.limits import SERVER_HANDLER_ARGS
from pcapwire.api.logthrottle import install
from pcapwire.cluster.tls import sensor_server_context

ACCESS_LOG = "pcapwire.api.access"


def tls_context(cert: Any, key: Any, client_ca: Any = None,
                client_sha256: Sequence[str] = ()) -> ssl.SSLContext:
    """A server context for the PEM certificate chain and key: TLS 1.2 or later, Python's
    default (secure) ciphers; with ``client_ca`` (``--client-ca``) client certificates
    signed by it are required, pinned by ``client_sha256`` if given
    (:mod:`pcapwire.cluster.tls`)."""
    return sensor_server_context(cert, key, client_ca, client_sha256)


def handler_args(config: ApiConfig) -> dict[str, Any]:
    """Keyword arguments of each connection's aiohttp ``RequestHandler``."""
    return {**SERVER_HANDLER_ARGS, "keepalive_timeout": config.http.keepalive_timeout_s,
            "access_log": logging.getLogger(ACCESS_LOG)}


class Running:
    """A started server: its URL and :meth:`close`."""

    def __init__(self, runner: web.AppRunner, site: GuardedSite,
                 uninstall: Callable[[], None]) -> None:
        self.runner, self.site, self._uninstall = runner, site, uninstall

    @property
    def url(self) -> str:
        host, port = self.runner.addresses[0][:2]
        scheme = "https" if self.site.guard.ssl_context else "http"
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"

    async def close(self) -> None:
        try:
            await self.runner.cleanup()
        finally:
            self._uninstall()


async def start(config: ApiConfig, host: str, port: int) -> Running:
    """Serve ``create_app(config)`` on host:port (0: any free port) behind the guard."""
    ssl_context = (tls_context(config.tls_cert, config.tls_key, config.client_ca,
                               config.client_cert_sha256) if config.tls_cert else None)
    args = handler_args(config)
    uninstall = install(config.http.log_burst_lines, config.http.log_lines_per_s)
    runner = web.AppRunner(create_app(config), handle_signals=False, **args)
    try:
        await runner.setup()
        site = GuardedSite(runner, host, port, Guard(config.http, ssl_context), args)
        await site.start()
    except BaseException:
        await runner.cleanup()
        uninstall()
        raise
    return Running(runner, site, uninstall)


async def start_metrics(config: ApiConfig, host: str, port: int) -> web.AppRunner:
    """The Prometheus metrics listener (:mod:`.metrics`): ``/metrics`` only, on an
    address of its own."""
    from pcapwire.api.metrics import create_metrics_app

    runner = web.AppRunner(create_metrics_app(config.data_dir), handle_signals=False,
                           access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def serve(config: ApiConfig, host: str, port: int,
                started: Callable[[Running], None] = lambda _: None,
                metrics: tuple[str, int] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully; with ``metrics``
    (host, port), the metrics listener too."""
    running = await start(config, host, port)
    try:
        metrics_runner = await start_metrics(config, *metrics) if metrics else None
    except BaseException:
        await running.close()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        started(running)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await running.close()
