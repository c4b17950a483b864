"""Typed keys for application and request state (no module globals)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from pcapwire.api.authdb import AuthDB, Principal
from pcapwire.api.config import ApiConfig
from pcapwire.api.jobs import QueryManager
from pcapwire.api.tenants import TenantRegistry
from pcapwire.api.workflows import WorkflowService
from pcapwire.triggers.service import TriggerServices

CONFIG = web.AppKey("config", ApiConfig)
AUTH = web.AppKey("auth", AuthDB)
TENANTS = web.AppKey("tenants", TenantRegistry)
QUERIES = web.AppKey("queries", QueryManager)
WORKFLOWS = web.AppKey("workflows", WorkflowService)
CARVES = web.AppKey("carves", asyncio.Semaphore)  # carving child processes running
TRIGGERS = web.AppKey("triggers", TriggerServices)  # the tenants' trigger services
PRINCIPAL = web.RequestKey("principal", Principal)
