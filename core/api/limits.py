"""Every limit the API enforces, named, with the per-tenant query counter.

Defaults live here; an operator changes them through :class:`~pcapwire.api.config.ApiConfig`
(``pcapwire serve`` flags). Each limit answers with a JSON error naming it.
"""

from __future__ import annotations

from collections import Counter

from pcapwire.api.errors import ApiError

MAX_JSON_BODY_BYTES = 1 * 2**20  # any JSON/YAML/form body
MAX_UPLOAD_BYTES = 2 * 2**30  # one pcap upload to POST /api/v1/ingest
MAX_CONCURRENT_QUERIES_PER_TENANT = 4  # running queries of one tenant at once
MAX_QUERY_RESULT_BYTES = 2 * 2**30  # packet bytes in one query result
MAX_HASHES_PER_LOOKUP = 10_000
MAX_HASHLIST_UPLOAD_BYTES = 512 * 2**20  # one hash-list upload (larger: `pcapwire hashlist`)
MAX_PAGE_SIZE = 1000  # rows in one list response
DEFAULT_PAGE_SIZE = 100
DEFAULT_EVENT_MARGIN_S = 60.0  # event-to-pcap: seconds before and after the event
MAX_EVENT_MARGIN_S = 86_400.0
SESSION_TTL_S = 12 * 3600  # dashboard session lifetime
SSE_HEARTBEAT_S = 15.0  # comment line on idle verdict streams (keeps proxies from closing)
RUNNING_JOBS_KEPT = 1000  # finished queries kept in memory for live pages (oldest dropped)
# HTTP layer (aiohttp's parser answers these with a plain-text 400 before the app runs):
MAX_REQUEST_LINE_BYTES = 16 * 1024  # method + URL + version
MAX_HEADER_FIELD_BYTES = 16 * 1024
SERVER_HANDLER_ARGS = {"max_line_size": MAX_REQUEST_LINE_BYTES,
                       "max_field_size": MAX_HEADER_FIELD_BYTES}


class QuerySlots:
    """Counts running queries per tenant; refuses (429) above the limit instead of queueing,
    so one tenant's burst never delays another tenant's queries."""

    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self.running: Counter[str] = Counter()

    def acquire(self, tenant: str) -> None:
        if self.running[tenant] >= self.per_tenant:
            raise ApiError(429, "too_many_queries",
                           f"tenant {tenant!r} already runs {self.per_tenant} queries "
                           "(the per-tenant limit); wait for one to finish or cancel one",
                           {"limit": self.per_tenant, "limit_name": "max_concurrent_queries"})
        self.running[tenant] += 1

    def release(self, tenant: str) -> None:
        self.running[tenant] -= 1
        if self.running[tenant] <= 0:
            del self.running[tenant]
