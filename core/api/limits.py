"""Every limit the API enforces, named, with the per-tenant query counter.

Defaults live here; an operator changes them through :class:`~pcapwire.api.config.ApiConfig`
(``pcapwire serve`` flags). Each limit answers with a JSON error naming it.
"""

from __future__ import annotations

import ssl
from collections import Counter

from pcapwire.api.errors import ApiError

MAX_JSON_BODY_BYTES = 1 * 2**20  # any JSON/YAML/form body
MAX_JSON_DEPTH = 64  # arrays/objects nested in a JSON body (no request needs 5)
MAX_UPLOAD_BYTES = 2 * 2**30  # one pcap upload to POST /api/v1/ingest
# What an ingest (upload or server-side path) may add (pcapwire.store.limits; 0 turns one
# off). Over one: 413 or 507; the packets before it stay stored and the reply says which.
MAX_DECOMPRESSED_BYTES = 16 * 2**30  # one gzip'd capture decompressed (8 × the upload limit)
MAX_DECOMPRESSION_RATIO = 200.0  # decompressed per compressed byte, after the first MiB
TENANT_QUOTA_BYTES = 100 * 2**30  # all files of one tenant's directory (uploads included)
MAX_CONCURRENT_QUERIES_PER_TENANT = 4  # running queries of one tenant at once
MAX_QUERY_RESULT_BYTES = 2 * 2**30  # packet bytes in one query result
MAX_HASHES_PER_LOOKUP = 10_000
MAX_HASHLIST_UPLOAD_BYTES = 512 * 2**20  # one hash-list upload (larger: `pcapwire hashlist`)
# Importing an uploaded hash list (pcapwire.hashlist.limits; over one: 413, nothing kept):
MAX_HASHLIST_ROWS = 10_000_000  # rows of an RDSv3 FILE (a full upload holds ~2.5 million)
MAX_HASHLIST_SQLITE_STEPS = 2_000_000_000  # SQLite instructions reading it (~15 a row)
HASHLIST_IMPORT_TIMEOUT_S = 600.0  # one import, after its upload
HASHLIST_IMPORT_KILL_GRACE_S = 5.0  # a stopped import's cleanup before it is killed
CLIENT_GONE_POLL_S = 0.5  # how often a running import checks its client is still there
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
# Connections (enforced per connection by pcapwire.api.connections, before the app runs;
# 0 turns a limit off):
HEADER_TIMEOUT_S = 15.0  # a request's headers (and a TLS handshake) must be complete in this
KEEPALIVE_TIMEOUT_S = 75.0  # idle keep-alive connections close after (0: after each answer)
BODY_MIN_BYTES_PER_S = 500  # a request body slower than this over a window: 408, closed
BODY_RATE_WINDOW_S = 20.0  # the window that rate is averaged over (paused reads not counted)
MAX_CONNECTIONS_PER_CLIENT = 64  # open connections of one client address (more: 429, closed)
# Logging of the HTTP layer (access log, aiohttp and asyncio errors), per kind of message:
LOG_BURST_LINES = 200  # lines of one kind written at once before throttling starts
LOG_LINES_PER_S = 20.0  # then at most this many per second; the rest are counted, not written
# TLS served by pcapwire itself (--tls-cert/--tls-key):
HSTS_MAX_AGE_S = 365 * 86_400  # Strict-Transport-Security max-age sent over TLS
TLS_MIN_VERSION = ssl.TLSVersion.TLSv1_2  # oldest TLS version a client may use
# libpcap's BPF compiler (compiled off the event loop, one compile at a time per process):
MAX_BPF_PORT_TERMS = 64  # port/portrange terms in one query BPF (128 portranges: libpcap 5 s)


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
