"""``pcapwire token create|list|revoke``: API tokens in ``DATA_DIR/auth.sqlite``.

The token is printed once, by ``create``; only its salted SHA-256 is stored.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from pcapwire.cli import EXIT_OK, EXIT_USAGE


def register(sub: argparse._SubParsersAction) -> None:
    from pcapwire.api.authdb import ROLES

    p = sub.add_parser("token", help="create, list and revoke API tokens")
    tsub = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    c = tsub.add_parser("create", help="create a token and print it (once)")
    c.add_argument("--tenant", required=True)
    c.add_argument("--role", required=True, choices=ROLES)
    c.add_argument("--name", default="", help="a label (who or what uses it)")
    c.set_defaults(func=create)
    ls = tsub.add_parser("list", help="list tokens (never their secrets)")
    ls.add_argument("--tenant", default=None)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=list_tokens)
    r = tsub.add_parser("revoke", help="revoke a token by id")
    r.add_argument("token_id")
    r.set_defaults(func=revoke)


def _db(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from pcapwire.api.authdb import AuthDB

    return AuthDB(Path(args.data_dir).resolve() / "auth.sqlite")


def create(args: argparse.Namespace) -> int:
    db = _db(args)
    try:
        token, info = db.create_token(args.tenant, args.role, args.name)
    finally:
        db.close()
    print(token)
    print(f"token {info['id']} ({info['role']}, tenant {info['tenant']}): store it now, it "
          "cannot be shown again", file=sys.stderr)
    return EXIT_OK


def _iso(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def list_tokens(args: argparse.Namespace) -> int:
    db = _db(args)
    try:
        rows = db.tokens(args.tenant)
    finally:
        db.close()
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return EXIT_OK
    print(f"{'id':<12} {'tenant':<16} {'role':<8} {'created':<20} {'last used':<20} "
          f"{'revoked':<20} name")
    for r in rows:
        print(f"{r['id']:<12} {r['tenant']:<16} {r['role']:<8} {_iso(r['created']):<20} "
              f"{_iso(r['last_used']):<20} {_iso(r['revoked']):<20} {r['name']}")
    return EXIT_OK


def revoke(args: argparse.Namespace) -> int:
    db = _db(args)
    try:
        ok = db.revoke(args.token_id)
    finally:
        db.close()
    if not ok:
        print(f"pcapwire: error: no live token {args.token_id!r}", file=sys.stderr)
        return EXIT_USAGE
    print(f"revoked {args.token_id}", file=sys.stderr)
    return EXIT_OK
