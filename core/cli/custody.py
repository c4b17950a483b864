"""``pcapwire custody verify|log|pubkey``: check and read the chain of custody.

``verify CASE`` recomputes the case log's chain and the store log's, and hashes again
every file they name that the store still keeps (:mod:`pcapwire.custody.verify`); exit 0
when everything matches, 1 naming the first entry or file that does not. ``--store``:
the store log and every segment; ``--log FILE``: one log file's chain alone (the logs of
an unpacked case bundle, whose files ``sha256sum -c MANIFEST.sha256`` checks).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pcapwire.cli import EXIT_OK, EXIT_PARTIAL
from pcapwire.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("custody", help="verify and read the chain of custody of cases")
    cmds = p.add_subparsers(dest="custody_command", required=True, metavar="SUBCOMMAND")
    v = cmds.add_parser("verify", help="recompute a log's chain and its files' hashes")
    _which(v)
    v.add_argument("--log", metavar="FILE", type=Path,
                   help="check one log file's chain (from a case bundle), no files")
    v.add_argument("--json", action="store_true", help="the result as JSON")
    v.set_defaults(func=verify)
    lg = cmds.add_parser("log", help="print a case's (or the store's) custody log")
    _which(lg)
    lg.add_argument("--json", action="store_true", help="the entries as JSON lines, as kept")
    lg.set_defaults(func=show_log)
    k = cmds.add_parser("pubkey", help="print the installation's public key (PEM) that "
                        "verifies bundle signatures; its fingerprint goes to stderr")
    k.set_defaults(func=pubkey)


def _which(p: argparse.ArgumentParser) -> None:
    p.add_argument("case", nargs="?", metavar="CASE", help="case name")
    p.add_argument("--store", action="store_true", help="the store's log (segments)")


def _case(args: argparse.Namespace) -> str | None:
    if args.store == (args.case is not None) and not getattr(args, "log", None):
        raise ConfigError("name a CASE or --store (one of them)")
    return None if args.store else str(args.case)


def verify(args: argparse.Namespace) -> int:
    from pcapwire.custody.verify import Result, check_chain, describe, verify

    if args.log is not None:
        if args.case is not None or args.store:
            raise ConfigError("--log FILE checks that file alone: name no CASE or --store")
        try:
            data = args.log.read_bytes()
        except OSError as exc:
            raise ConfigError(f"--log {args.log}: {exc}") from None
        result = Result(str(args.log))
        lines = data.split(b"\n")
        result.entries = len(check_chain(lines[:-1] if data.endswith(b"\n") else lines,
                                         args.log.name, result))
    else:
        case = _case(args)
        _existing(args.data_dir)
        result = verify(args.data_dir, case)
        if case is not None and not result.entries:
            raise ConfigError(f"case {case!r} has no custody log in {args.data_dir}")
    if args.json:
        print(json.dumps(result.as_dict(), indent=1, sort_keys=True))
    else:
        print(describe(result))
    return EXIT_OK if result.ok else EXIT_PARTIAL


def show_log(args: argparse.Namespace) -> int:
    from pcapwire.custody import read

    case = _case(args)
    _existing(args.data_dir)
    lines = read(args.data_dir, case)
    if case is not None and not lines:
        raise ConfigError(f"case {case!r} has no custody log in {args.data_dir}")
    out = sys.stdout
    for line in lines:
        if args.json:
            out.write(line.decode("utf-8", "replace") + "\n")
            continue
        try:
            e = json.loads(line)
            objs = ", ".join(f"{o.get('kind')} {o.get('path')}" + (
                f" sha256 {o['sha256'][:16]}…" if o.get("sha256") else "")
                for o in e.get("objects", [])[:3])
            more = len(e.get("objects", [])) - 3
            out.write(f"{e['seq']:>6} {e['time']} {e['action']:<15} {e['actor']}"
                      f"{': ' + objs if objs else ''}{f' (+{more} more)' if more > 0 else ''}\n")
        except (ValueError, KeyError, TypeError, AttributeError):
            out.write(f"     ? (not an entry) {line[:80]!r}\n")
    return EXIT_OK


def pubkey(args: argparse.Namespace) -> int:
    from pcapwire.custody import signing

    pem = signing.public_pem(args.data_dir)
    sys.stdout.write(pem.decode())
    print(f"Ed25519 public key of {signing.key_path(args.data_dir)}; SHA-256 fingerprint "
          f"{signing.fingerprint(pem)}", file=sys.stderr)
    return EXIT_OK


def _existing(data_dir: str) -> None:
    if not (Path(data_dir) / "catalog.sqlite").is_file():
        raise ConfigError(f"data directory {data_dir} is not a pcapwire store (no "
                          "catalog.sqlite); name it with --data-dir or PCAPWIRE_DATA_DIR")
