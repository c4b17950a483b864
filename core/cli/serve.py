"""``pcapwire serve [--listen HOST:PORT]``: the REST API and the dashboard.

The data directory holds ``auth.sqlite`` and one store per tenant (``tenants/<tenant>/``).
Create the first token with ``pcapwire token create --tenant T --role admin``.
"""

from __future__ import annotations

import argparse
import logging

from pcapwire.api import limits
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
    p.add_argument("--ingest-path", action="append", default=[], metavar="DIR",
                   help="server directory admins may ingest from by path (repeatable)")
    p.add_argument("--workflows", action="append", default=[], metavar="DIR",
                   help="directory of workflow YAML documents to offer (repeatable)")
    p.add_argument("--max-upload-mb", type=int, default=limits.MAX_UPLOAD_BYTES // 2**20)
    p.add_argument("--max-hashlist-mb", type=int,
                   default=limits.MAX_HASHLIST_UPLOAD_BYTES // 2**20,
                   help="largest hash-list upload in MiB (bigger lists: `pcapwire hashlist`)")
    p.add_argument("--max-result-mb", type=int,
                   default=limits.MAX_QUERY_RESULT_BYTES // 2**20,
                   help="largest query result in MiB (bigger queries fail with a clear error)")
    p.add_argument("--max-queries", type=int, default=limits.MAX_CONCURRENT_QUERIES_PER_TENANT,
                   help="concurrent queries per tenant")
    p.add_argument("--event-margin", type=float, default=limits.DEFAULT_EVENT_MARGIN_S,
                   metavar="SECONDS", help="event-to-PCAP time margin before and after")
    p.add_argument("--secure-cookies", action="store_true",
                   help="mark the session cookie Secure (when served behind TLS)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aiohttp import web
    from pcapwire.api import ApiConfig, create_app

    host, port = parse_listen(args.listen)
    config = ApiConfig(data_dir=args.data_dir, ingest_paths=args.ingest_path,
                       workflow_dirs=args.workflows,
                       max_upload_bytes=args.max_upload_mb * 2**20,
                       max_hashlist_bytes=args.max_hashlist_mb * 2**20,
                       max_query_result_bytes=args.max_result_mb * 2**20,
                       max_concurrent_queries=args.max_queries,
                       event_margin_s=args.event_margin, secure_cookies=args.secure_cookies)
    log.warning("pcapwire serving %s on http://%s:%d/ui/", config.data_dir, host, port)
    web.run_app(create_app(config), host=host, port=port, print=None,
                **limits.SERVER_HANDLER_ARGS,
                access_log=logging.getLogger("pcapwire.api.access"))
    return 0
