"""Subcommands contributed by plugins (``pcapwire_register_commands``): each becomes a
subparser; its ``setup(parser)`` runs only for the command actually named on the command
line (``--help`` shows every command's one-line help without running any setup)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pcapwire.errors import PluginError


def _failed(name: str, plugin: str, exc: BaseException) -> Any:
    def handler(args: argparse.Namespace) -> int:
        raise PluginError(f"command {name!r} of plugin {plugin!r} failed to set up: "
                          f"{type(exc).__name__}: {exc}")
    return handler


def add_plugin_commands(sub: argparse._SubParsersAction, named: str | None) -> None:
    """Add every plugin command to ``sub``; set up the one named ``named``."""
    from pcapwire.hooks.host import build_host

    host = build_host()
    commands = host.commands()
    if named is not None and named not in commands:
        for f in host.failures:  # the command may belong to a plugin that failed
            print(f"pcapwire: warning: plugin {f.name}: {f.error}", file=sys.stderr)
    for name, entry in commands.items():
        help_text = f"{entry.help} [plugin {entry.plugin}]".lstrip()
        parser = sub.add_parser(name, help=help_text, description=entry.help or None)
        if name != named:
            continue
        try:
            entry.setup(parser)
        except Exception as exc:  # a plugin must not break the command line
            parser.set_defaults(func=_failed(name, entry.plugin, exc))
