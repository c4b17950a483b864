"""The public plugin marker (tox's ``tox.plugin``): what a plugin imports to hook in.

::

    from pcapwire.hooks import RegisterAnalyzer, impl

    @impl
    def pcapwire_register_analyzers(register: RegisterAnalyzer) -> None:
        register(MyAnalyzer)

Plugins are found through the ``pcapwire`` entry-point group (built-in plugins too)::

    [project.entry-points.pcapwire]
    myplugin = "myplugin"          # a module (or any object) with ``@impl`` functions

Names:

* :data:`NAME` -- the pluggy project name and entry-point group;
* :data:`impl` -- the marker of hook implementations;
* :class:`RegisterAnalyzer` -- the type of the ``register`` callback of
  ``pcapwire_register_analyzers``: ``register(AnalyzerClassOrInstance)``;
* :class:`RegisterCommand` -- the type of the ``register`` callback of
  ``pcapwire_register_commands``: ``register(name, setup, help=...)``.

Both callback types are real run-time names (usable in annotations evaluated at run time,
``typing.get_type_hints`` aside). The hooks, their arguments and when they run:
:mod:`pcapwire.hooks.spec`. The analyzer contract: :mod:`pcapwire.workflow.analyzer`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from pcapwire.workflow.analyzer import Analyzer

#: pluggy project name and entry-point group
NAME = "pcapwire"
#: marker for hook implementations
impl = pluggy.HookimplMarker(NAME)


class RegisterAnalyzer(Protocol):
    """``register(analyzer)``, handed to ``pcapwire_register_analyzers``: declare one
    analyzer, an :class:`~pcapwire.workflow.Analyzer` subclass (the host instantiates it
    with no arguments) or an instance. An invalid or duplicate one is reported as a
    failure of the plugin; it never raises."""

    def __call__(self, analyzer: type[Analyzer[Any]] | Analyzer[Any], /) -> None: ...


#: ``setup(parser)`` of a plugin command: adds its arguments and sub-actions to the
#: subcommand's :class:`argparse.ArgumentParser` and sets ``func`` with
#: ``parser.set_defaults(func=handler)``; ``handler(args) -> int`` is the exit status.
CommandSetup = Callable[[argparse.ArgumentParser], None]


class RegisterCommand(Protocol):
    """``register(name, setup, help="...")``, handed to ``pcapwire_register_commands``:
    add the subcommand ``pcapwire NAME``. ``setup`` is called only when the command line
    needs the subcommand's parser (``pcapwire NAME ...`` or ``pcapwire --help``). A name
    that a core command or another plugin already has is reported as a failure of the
    plugin; it never raises."""

    def __call__(self, name: str, setup: CommandSetup, /, *, help: str = "") -> None: ...


__all__ = ["NAME", "CommandSetup", "RegisterAnalyzer", "RegisterCommand", "impl"]
