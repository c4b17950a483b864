"""The application factory: ``create_app(ApiConfig(data_dir=...))``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from pcapwire.api import (
    dashboard,
    openapi,
    routes_admin,
    routes_artifacts,
    routes_capture,
    routes_cases,
    routes_cluster,
    routes_custody,
    routes_events,
    routes_flows,
    routes_hashlists,
    routes_holds,
    routes_ingest,
    routes_queries,
    routes_results,
    routes_retention,
    routes_rulegroups,
    routes_search,
    routes_sessions,
    routes_triggers,
    routes_workflows,
)
from pcapwire.api.artifacts import MAX_CONCURRENT_CARVES
from pcapwire.api.auth import auth_middleware
from pcapwire.api.authdb import AuthDB
from pcapwire.api.config import ApiConfig
from pcapwire.api.errors import error_middleware
from pcapwire.api.jobs import QueryManager
from pcapwire.api.keys import AUTH, CARVES, CONFIG, QUERIES, TENANTS, TRIGGERS, WORKFLOWS
from pcapwire.api.limits import QuerySlots
from pcapwire.api.tenants import TenantRegistry
from pcapwire.api.workflows import WorkflowService
from pcapwire.store.maintenance import Maintenance
from pcapwire.triggers.hunt_jobs import hunt_queue
from pcapwire.triggers.service import TriggerServices

ROUTE_MODULES = (routes_admin, routes_queries, routes_results, routes_artifacts, routes_events,
                 routes_ingest, routes_flows, routes_cases, routes_workflows, routes_hashlists,
                 routes_capture, routes_holds, routes_custody,
                 routes_retention, routes_sessions, routes_triggers, routes_rulegroups,
                 routes_search, routes_cluster, openapi, dashboard)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'"}


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for k, v in SECURITY_HEADERS.items():
        response.headers.setdefault(k, v)
    config = request.app[CONFIG]
    if config.tls:  # served over HTTPS by this process (behind a proxy: the proxy sends it)
        response.headers.setdefault("Strict-Transport-Security",
                                    f"max-age={config.hsts_max_age_s}")


async def _state(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    config.data_dir.mkdir(parents=True, exist_ok=True)
    app[AUTH] = AuthDB(config.auth_db)
    app[TENANTS] = TenantRegistry(config)
    app[CARVES] = asyncio.Semaphore(MAX_CONCURRENT_CARVES)
    app[WORKFLOWS] = WorkflowService(config.workflow_dirs)
    app[WORKFLOWS].start()
    central = None
    if config.cluster is not None:  # a central: its queries go to the sensors
        from pcapwire.cluster.central import CENTRAL, Central

        central = app[CENTRAL] = Central(config.cluster)
        await central.start()
        from pcapwire.cluster.trigger_sync import TRIGGER_SYNC, TriggerSync

        sync = app[TRIGGER_SYNC] = await TriggerSync.open(config.data_dir, central.sensors)
        sync.start()  # cluster triggers reach the sensors that were down
    app[QUERIES] = QueryManager(QuerySlots(config.max_concurrent_queries), app[WORKFLOWS],
                                config.max_query_result_bytes,
                                central.fanout if central is not None else None)
    maintenance = Maintenance.of_tenants(config.data_dir)  # retention, holds, compression
    maintenance.start()
    triggers = TriggerServices.of_tenants(config.data_dir, app[WORKFLOWS],
                                          asyncio.get_running_loop(),  # hunts, watch, notify
                                          hunts=not config.hunts_by_workers,
                                          sensor=config.sensor_name,
                                          queue=hunt_queue(config.hunts_by_workers,
                                                           config.nats_url,
                                                           config.sensor_name))
    app[TRIGGERS] = triggers  # the trigger routes wake it
    triggers.start()
    yield
    await asyncio.to_thread(triggers.stop)
    await asyncio.to_thread(maintenance.stop)  # between two deletions at most
    await app[WORKFLOWS].stop()  # analyzers closed first: runs cancelled now warm nothing
    await app[QUERIES].close()
    if central is not None:
        await app[TRIGGER_SYNC].close()
        await central.close()
    app[TENANTS].close()
    app[AUTH].close()


def create_app(config: ApiConfig) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth_middleware],
                          client_max_size=config.max_body_bytes)
    app[CONFIG] = config
    app.cleanup_ctx.append(_state)
    app.on_response_prepare.append(_security_headers)
    for module in ROUTE_MODULES:
        app.router.add_routes(module.routes)
    return app
