"""``pcapwire serve [--listen HOST:PORT] [--tls-cert F --tls-key F] [--client-ca F]
[--cluster FILE]``: the REST API and the dashboard, behind the connection guard
(:mod:`pcapwire.api.connections`); a cluster sensor with ``--client-ca``, the central API
with ``--cluster`` (:mod:`pcapwire.cluster`).

The data directory holds ``auth.sqlite`` and one store per tenant (``tenants/<tenant>/``).
Create the first token with ``pcapwire token create --tenant T --role admin``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pcapwire.api import limits
from pcapwire.api.config import ApiConfig, HttpLimits
from pcapwire.cli.ingest import non_negative
from pcapwire.errors import ConfigError

log = logging.getLogger(__name__)
DEFAULT_LISTEN = "127.0.0.1:8750"


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"invalid --listen {text!r}; use HOST:PORT, e.g. 127.0.0.1:8750 or "
                          "[::1]:8750")
    return host.strip("[]") or "127.0.0.1", int(port)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the REST API and the dashboard")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"address to listen on (default {DEFAULT_LISTEN})")
    p.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve Prometheus metrics of every tenant's recorder at /metrics on "
                   "this address of its own (unauthenticated: loopback or the monitoring "
                   "network only; default off, never on --listen)")
    p.add_argument("--ingest-path", action="append", default=[], metavar="DIR",
                   help="server directory admins may ingest from by path (repeatable)")
    p.add_argument("--workflows", action="append", default=[], metavar="DIR",
                   help="directory of workflow YAML documents to offer (repeatable)")
    p.add_argument("--hunts-by-workers", action="store_true",
                   help="run no retro-hunt here: leave them queued for `hunt` jobs (a "
                   "cluster sensor's `pcapwire worker --nats`); watching and notifying go on; "
                   "each new hunt is queued as a job: on --nats, else run in a local worker")
    p.add_argument("--nats", metavar="URL", help="with --hunts-by-workers: queue hunt jobs "
                   "on this NATS server for this sensor's workers (needs --sensor-name)")
    p.add_argument("--sensor-name", default="", metavar="NAME",
                   help="this sensor's name in the cluster file: triggers whose scope.sensor "
                   "names only other sensors do nothing here")
    p.add_argument("--max-upload-mb", type=int, default=limits.MAX_UPLOAD_BYTES // 2**20)
    p.add_argument("--max-decompressed-mb", type=non_negative,
                   default=limits.MAX_DECOMPRESSED_BYTES // 2**20,
                   help="largest decompressed size of one gzip'd capture, in MiB (default "
                   f"{limits.MAX_DECOMPRESSED_BYTES // 2**20}; 0: no limit)")
    p.add_argument("--max-decompression-ratio", type=non_negative,
                   default=limits.MAX_DECOMPRESSION_RATIO, metavar="N",
                   help="largest decompressed/compressed ratio of a gzip'd capture after its "
                   f"first MiB (default {limits.MAX_DECOMPRESSION_RATIO:g}; 0: no limit)")
    p.add_argument("--tenant-quota-gb", type=non_negative,
                   default=limits.TENANT_QUOTA_BYTES / 2**30,
                   help="bytes of one tenant's directory an ingest may fill, in GiB (default "
                   f"{limits.TENANT_QUOTA_BYTES / 2**30:g}; 0: no quota)")
    p.add_argument("--max-hashlist-mb", type=int,
                   default=limits.MAX_HASHLIST_UPLOAD_BYTES // 2**20,
                   help="largest hash-list upload in MiB (bigger lists: `pcapwire hashlist`)")
    p.add_argument("--max-hashlist-rows", type=int, default=limits.MAX_HASHLIST_ROWS,
                   help="rows one hash-list import may read (an NSRL RDSv3 FILE view included)")
    p.add_argument("--hashlist-import-timeout", type=float,
                   default=limits.HASHLIST_IMPORT_TIMEOUT_S, metavar="SECONDS",
                   help="seconds one hash-list import may take (then it is stopped, nothing kept)")
    p.add_argument("--max-result-mb", type=int,
                   default=limits.MAX_QUERY_RESULT_BYTES // 2**20,
                   help="largest query result in MiB (bigger queries fail with a clear error)")
    p.add_argument("--max-queries", type=int, default=limits.MAX_CONCURRENT_QUERIES_PER_TENANT,
                   help="concurrent queries per tenant")
    p.add_argument("--event-margin", type=float, default=limits.DEFAULT_EVENT_MARGIN_S,
                   metavar="SECONDS", help="event-to-PCAP time margin before and after")
    p.add_argument("--tls-cert", type=Path, metavar="FILE",
                   help="serve HTTPS with this PEM certificate chain (needs --tls-key)")
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="the certificate's PEM key")
    p.add_argument("--client-ca", type=Path, metavar="FILE",
                   help="a cluster sensor: require a client certificate signed by this PEM CA "
                   "(the central's; needs --tls-cert); only then are the central's "
                   "on-behalf-of headers honoured (docs/cluster.md)")
    p.add_argument("--client-cert-sha256", action="append", default=[], metavar="HEX",
                   help="accept only the client certificate with this SHA-256 fingerprint "
                   "(needs --client-ca; repeatable, e.g. old and new during a rotation)")
    p.add_argument("--cluster", type=Path, metavar="FILE",
                   help="serve as the central API of the sensors this TOML file lists "
                   "(docs/cluster.md)")
    p.add_argument("--behind-tls-proxy", action="store_true",
                   help="a TLS-terminating proxy is in front (cookies become Secure)")
    p.add_argument("--secure-cookies", action=argparse.BooleanOptionalAction, default=None,
                   help="mark the session cookie Secure (default: on with --tls-cert or "
                   "--behind-tls-proxy, else off)")
    p.add_argument("--hsts-max-age", type=int, default=limits.HSTS_MAX_AGE_S,
                   metavar="SECONDS", help="Strict-Transport-Security max-age sent with "
                   f"--tls-cert (default {limits.HSTS_MAX_AGE_S}; 0 makes browsers forget it)")
    http = p.add_argument_group("connection limits (0 turns one off)")
    http.add_argument("--header-timeout", type=float, default=limits.HEADER_TIMEOUT_S,
                      metavar="SECONDS", help="request headers (and TLS handshake) must "
                      f"arrive within this (default {limits.HEADER_TIMEOUT_S:g})")
    http.add_argument("--keepalive-timeout", type=float, default=limits.KEEPALIVE_TIMEOUT_S,
                      metavar="SECONDS", help="close idle keep-alive connections after this "
                      f"(default {limits.KEEPALIVE_TIMEOUT_S:g}; 0: after each response)")
    http.add_argument("--body-min-rate", type=int, default=limits.BODY_MIN_BYTES_PER_S,
                      metavar="BYTES_PER_S", help="slower request bodies get 408 (default "
                      f"{limits.BODY_MIN_BYTES_PER_S})")
    http.add_argument("--body-rate-window", type=float, default=limits.BODY_RATE_WINDOW_S,
                      metavar="SECONDS", help="window the body rate is averaged over "
                      f"(default {limits.BODY_RATE_WINDOW_S:g})")
    http.add_argument("--max-connections-per-client", type=int,
                      default=limits.MAX_CONNECTIONS_PER_CLIENT, metavar="N",
                      help="open connections per client address (IPv6: per /64; default "
                      f"{limits.MAX_CONNECTIONS_PER_CLIENT}; behind a proxy: raise it)")
    http.add_argument("--log-burst", type=int, default=limits.LOG_BURST_LINES, metavar="LINES",
                      help="log lines of one kind written before throttling (default "
                      f"{limits.LOG_BURST_LINES})")
    http.add_argument("--log-rate", type=float, default=limits.LOG_LINES_PER_S,
                      metavar="LINES_PER_S", help="then at most this many per second "
                      f"(default {limits.LOG_LINES_PER_S:g})")
    p.set_defaults(func=run)


def config_from(args: argparse.Namespace) -> ApiConfig:
    return ApiConfig(
        data_dir=args.data_dir, ingest_paths=args.ingest_path, workflow_dirs=args.workflows,
        hunts_by_workers=args.hunts_by_workers, nats_url=args.nats,
        sensor_name=args.sensor_name,
        max_upload_bytes=args.max_upload_mb * 2**20,
        max_decompressed_bytes=int(args.max_decompressed_mb * 2**20),
        max_decompression_ratio=args.max_decompression_ratio,
        tenant_quota_bytes=int(args.tenant_quota_gb * 2**30),
        max_hashlist_bytes=args.max_hashlist_mb * 2**20,
        max_hashlist_rows=args.max_hashlist_rows,
        hashlist_import_timeout_s=args.hashlist_import_timeout,
        max_query_result_bytes=args.max_result_mb * 2**20,
        max_concurrent_queries=args.max_queries, event_margin_s=args.event_margin,
        tls_cert=args.tls_cert, tls_key=args.tls_key, behind_tls_proxy=args.behind_tls_proxy,
        client_ca=args.client_ca, client_cert_sha256=tuple(args.client_cert_sha256),
        cluster_file=args.cluster,
        secure_cookies=args.secure_cookies, hsts_max_age_s=args.hsts_max_age,
        http=HttpLimits(
            header_timeout_s=args.header_timeout, keepalive_timeout_s=args.keepalive_timeout,
            body_min_bytes_per_s=args.body_min_rate, body_rate_window_s=args.body_rate_window,
            max_connections_per_client=args.max_connections_per_client,
            log_burst_lines=args.log_burst, log_lines_per_s=args.log_rate))


def run(args: argparse.Namespace) -> int:
    import asyncio

    from pcapwire.api import server

    host, port = parse_listen(args.listen)
    metrics = parse_listen(args.metrics_listen) if args.metrics_listen else None
    if metrics is not None and metrics[1] == port and port:
        raise ConfigError("--metrics-listen needs a port other than --listen's: the metrics "
                          "name every tenant, the API's port must not serve them")
    config = config_from(args)

    def started(running: server.Running) -> None:
        log.warning("pcapwire serving %s on %s/ui/ (secure cookies %s)", config.data_dir,
                    running.url, "on" if config.secure_cookies else "off")

    asyncio.run(server.serve(config, host, port, started, metrics))
    return 0
