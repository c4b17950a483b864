"""The ``pcapwire`` command line. Each subcommand lives in its own module exposing
``register(subparsers)``; this module only wires them and maps errors to exit codes.

Plugins add subcommands through the ``pcapwire_register_commands`` hook (Suricata's
``pcapwire rules``, say): they are loaded only when the command line needs them
(``--help``, or a first argument that is no core command), so ``pcapwire query`` and the
other core commands import neither the plugins nor the workflow engine."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from pcapwire.errors import PcapwireError

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2

# Subcommand modules, in the order they appear in --help.
SUBCOMMANDS: tuple[str, ...] = ("ingest", "query", "flows", "extract", "run", "workflow",
                               "plugins", "serve", "token", "hashlist", "capture", "hold",
                               "segments", "retention", "custody", "case", "trigger",
                               "search", "export", "worker")


def _named_command(argv: Sequence[str]) -> str | None:
    """The first positional argument of ``argv`` (skipping global options and their
    values): a core subcommand, a plugin's, or a typo."""
    it = iter(argv)
    for arg in it:
        if arg == "--data-dir":
            next(it, None)
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv`` naming a core subcommand, only that module is imported
    (the API server, the workflow engine and the plugins cost half a second to import;
    `query` needs none of them). Otherwise every core subcommand and the plugins'."""
    named = _named_command(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="pcapwire", description="Lossless packet store, millisecond PCAP queries, "
        "analyzer workflows, carving and verdicts per case.")
    parser.add_argument("--data-dir", default=os.environ.get("PCAPWIRE_DATA_DIR", "pcapwire-data"),
                        help="store directory (env PCAPWIRE_DATA_DIR; default ./pcapwire-data)")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in (named,) if named in SUBCOMMANDS else SUBCOMMANDS:
        importlib.import_module(f"pcapwire.cli.{name}").register(sub)
    if named not in SUBCOMMANDS:
        from pcapwire.cli.plugincommands import add_plugin_commands

        add_plugin_commands(sub, named)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(levelname)s %(name)s: %(message)s")
    func = getattr(args, "func", None)
    if func is None:  # a plugin command whose setup set no handler
        parser.error(f"{args.command}: this command does nothing (its plugin's setup "
                     "sets no handler with parser.set_defaults(func=...))")
    try:
        return int(func(args) or 0)
    except PcapwireError as exc:
        print(f"pcapwire: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
