"""Hook specifications: everything a pcapwire plugin can implement (pytest's hookspec.py).

Grouped by phase. Every hook is prefixed ``pcapwire_``; implement it with the
:data:`pcapwire.hooks.impl` marker, using any subset of the arguments by name. A hook
implementation that matches no specification here is rejected when the plugin loads
(``check_pending``), and that plugin is reported as failed.

Registration hooks (``pcapwire_register_analyzers``, ``pcapwire_register_commands``) are
called once per plugin, each with a ``register`` callback of its own (typed
:class:`pcapwire.hooks.RegisterAnalyzer` and :class:`pcapwire.hooks.RegisterCommand`), so
that every declaration is attributed to its plugin; the core validates and
de-duplicates, the plugin only declares.

Broadcast hooks (``pcapwire_run_started``, ``pcapwire_verdict``,
``pcapwire_case_completed``) call every implementation; an implementation may return an
awaitable (for example be an ``async def``), which the engine awaits. An exception in a
broadcast hook is logged with the plugin's name and does not stop the run or the other
implementations. They run inside the engine's event loop: do blocking I/O in a thread
(``asyncio.to_thread``) or queue it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import pluggy
from pcapwire.hooks import NAME, RegisterAnalyzer, RegisterCommand

if TYPE_CHECKING:
    from pcapwire.records import Verdict
    from pcapwire.workflow.context import RunInfo
    from pcapwire.workflow.results import RunSummary

_spec = pluggy.HookspecMarker(NAME)

# ---------------------------------------------------------------------------------------
# Registration (called once per plugin host, when it is built)
# ---------------------------------------------------------------------------------------


@_spec
def pcapwire_register_analyzers(register: RegisterAnalyzer) -> None:
    """Declare the analyzers this plugin contributes.

    Called once, when the plugin host is built (``pcapwire plugins list``, ``pcapwire
    run``, the API server start). Call ``register(cls_or_instance)`` once per analyzer,
    passing an :class:`~pcapwire.workflow.Analyzer` subclass (the host instantiates it
    with no arguments) or an instance. Do not start engines or open files here: work
    belongs in ``open_session``/``analyze``.

    The core validates each declaration (name, input kind, outputs, version, config
    schema) and de-duplicates names across plugins: an invalid analyzer, or a name
    already taken by another plugin, is reported as a failure of this plugin and left
    out; the plugin's other analyzers and all other plugins still load.

    :param register: callback taking one analyzer class or instance
        (:class:`pcapwire.hooks.RegisterAnalyzer`).
    :return: ignored.
    """


@_spec
def pcapwire_register_commands(register: RegisterCommand) -> None:
    """Declare the ``pcapwire`` subcommands this plugin contributes.

    Called once per plugin host, when it is built: by the command line when it needs
    plugin commands (``pcapwire --help``, or a first argument that names no core
    command), and by every other host (``plugins list``, the API server), which only
    records them. ``pcapwire query`` and the other core commands never load plugins.

    Call ``register(name, setup, help="one line for --help")`` once per command. The
    core builds ``pcapwire NAME`` as an argparse subparser and calls ``setup(parser)``
    only when that parser is needed: add arguments (and sub-actions) there and set the
    handler with ``parser.set_defaults(func=handler)``; ``handler(args)`` returns the
    exit status (0 success, 1 partial, 2 usage or input error) and may raise
    :class:`pcapwire.errors.PcapwireError`, which the CLI prints as ``pcapwire: error:
    ...`` with status 2. ``args.data_dir`` is the global ``--data-dir``. Import heavy
    modules inside the handler, not at module level: ``--help`` loads every plugin.

    Results combine by name: a name that a core command or another plugin (earlier in
    loading order) already has is reported as a failure of this plugin and left out;
    its other commands and all other plugins still load. A ``setup`` that raises makes
    only that command fail (it prints the error when run).

    :param register: callback ``register(name, setup, *, help="")``
        (:class:`pcapwire.hooks.RegisterCommand`).
    :return: ignored.
    """


# ---------------------------------------------------------------------------------------
# Runs (broadcast; each implementation is called, in LIFO registration order)
# ---------------------------------------------------------------------------------------


@_spec
def pcapwire_run_started(run: RunInfo, workflow: dict[str, Any]) -> Awaitable[None] | None:
    """A workflow run is about to consume its first input.

    Called once per run, after the workflow was validated and the run was recorded in
    the case store, before any step starts.

    :param run: the run's identity (run id, workflow name, case, event, query id).
    :param workflow: the workflow document as loaded (plain data; do not modify).
    :return: ``None`` or an awaitable the engine awaits before starting the steps.
    """


@_spec
def pcapwire_verdict(verdict: Verdict, run: RunInfo) -> Awaitable[None] | None:
    """A verdict sink: called for every verdict the run keeps, as soon as it is produced.

    Called after the workflow's aggregation policy kept the verdict and after it was
    stored with the case, while the run goes on (verdicts stream: the first one arrives
    long before the run ends). Use it to forward verdicts (webhook, SIEM, message bus).
    The verdict is shared: do not modify it; ``verdict.to_dict()`` is its plain-data
    form and :func:`pcapwire.cases.verdict_to_ecs` the exported shape (ECS JSON). A slow
    sink slows the run (its awaitable is awaited, outside the analyzer's timeout), so
    queue anything that may block.

    :param verdict: the verdict (:class:`pcapwire.records.Verdict`).
    :param run: the run that produced it.
    :return: ``None`` or an awaitable the engine awaits.
    """


@_spec
def pcapwire_case_completed(run: RunInfo, summary: RunSummary) -> Awaitable[None] | None:
    """A workflow run for a case has completed (every step ended, results stored).

    Called exactly once per run, whatever its status: ``ok``, ``partial`` (some step
    failed or timed out), ``failed`` (its input failed) or ``cancelled``. Use it for
    notifications and reports; :meth:`~pcapwire.workflow.results.RunSummary.to_dict` is
    serialisable.

    :param run: the run's identity.
    :param summary: per-step results, verdict counts, the highest severity and status.
    :return: ``None`` or an awaitable the engine awaits.
    """
