"""The analyzer contract: what a plugin implements, what the engine guarantees.

An **analyzer** is a named unit of analysis with a declared input kind (``pcap``,
``stream``, ``file``, ``email`` or ``verdict``), a version, a config schema in code and
the kinds it outputs (``verdict`` for most; producers such as a carver also output
``file``/``email``/``stream`` records that downstream steps take as input). A plugin
registers analyzers through the ``pcapwire_register_analyzers(register)`` hook
(:mod:`pcapwire.hooks.spec`).

Two ways to write one:

1. **Per record** (most analyzers)::

       @dataclass(frozen=True)
       class StringsConfig(AnalyzerConfig):
           needle: str = option(description="bytes to look for (UTF-8)", kind="text")

       class Strings(Analyzer[StringsConfig]):   # Config = StringsConfig
           name = "strings"
           input_kind = "stream"
           version = "1.0"

           async def analyze(self, record, ctx: StepContext[StringsConfig]):
               if ctx.config.needle.encode() in record.data:   # typed: no isinstance
                   yield ctx.verdict_for(record, severity="low", signature="needle")

   ``analyze`` is an async generator; everything it yields goes to ``ctx.emit``. The
   engine calls it once per input record, up to the step's ``concurrency`` at a time.

2. **Per run, with a session** (warm engines such as Suricata or Zeek): override
   :meth:`Analyzer.open_session` and return a :class:`Session`. The engine calls
   ``start()`` once when the run starts, ``feed(record)`` for each input record in order,
   ``finish()`` at the end of the input, and always ``aclose()`` last (also after an
   error, a timeout or a cancellation). Outputs go through ``await ctx.emit(...)`` at any
   time between ``start`` and the end of ``finish`` (for example from a task that reads
   the engine's event socket).

What the engine owns (Strelka's ``scan_wrapper``, Assemblyline's ``handle_task``):

* **timeout**: each call into the analyzer (one ``analyze`` of one record; a session's
  ``start``, each ``feed``, ``finish``) is bounded by the step's ``timeout``
  (:mod:`pcapwire.workflow.timeouts`: the call is cancelled when its time is up).
  Exceeding it records a ``timeout`` for the step. Time spent waiting in ``ctx.emit``
  (a full queue downstream, a slow verdict sink) is not counted.
* **exceptions**: anything raised is caught and recorded (status ``error``, the message,
  the record concerned). A per-record analyzer goes on with the next record (up to
  :data:`pcapwire.workflow.engine.MAX_STEP_ERRORS`); a session ends the step.
* **cancellation**: cancelling a run cancels every call and then awaits ``aclose()``,
  which must release everything the session started (kill and reap subprocesses).
* **state**: analyzer instances are shared by every run of a host: keep nothing per call
  or per run on ``self`` (caches keyed by config, such as compiled rules, are fine);
  per-run state lives in the session.

Config typing: :class:`Analyzer`, :class:`Session` and
:class:`~pcapwire.workflow.context.StepContext` are generic in the config type. Subclass
``Analyzer[MyConfig]`` and ``Config`` is ``MyConfig`` (set it yourself only to name a
subclass of it); ``check_config(config: MyConfig, ...)``, ``ctx: StepContext[MyConfig]``
and ``Session[MyConfig]`` are then typed for mypy, with no ``isinstance`` asserts. A plain
``Analyzer`` (config declared only as ``Config = ...``) is ``Analyzer[Any]``.

Availability: :meth:`Analyzer.unavailable` returns why it cannot run here (a missing
binary, say), ``None`` when it can. Steps of an unavailable analyzer are ``skipped`` with
that reason; ``pcapwire plugins list`` shows it.

Shutdown: :meth:`Analyzer.aclose` releases what the analyzer keeps *between* runs
(Suricata's spare engines, say). Every host calls it once it runs no more workflows: the
API server at shutdown, ``pcapwire run`` and ``pcapwire workflow test`` after their run
(:meth:`pcapwire.hooks.host.PluginHost.aclose`). A host that runs a single workflow also
sets :attr:`StepContext.keep_warm` to False: start nothing for later runs.
"""

from __future__ import annotations

import re
import typing
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pcapwire.workflow.config import AnalyzerConfig, NoConfig
from pcapwire.workflow.confine import Confinement
from pcapwire.workflow.context import INPUT_KINDS, Output, Record, StepContext

#: Analyzer names: lowercase, digits, ``_ . -``; they are the ``uses:`` values.
NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
#: The config type an analyzer, its sessions and its step contexts are generic in.
C = TypeVar("C", bound=AnalyzerConfig)


def config_argument(cls: type) -> type[AnalyzerConfig] | None:
    """``X`` when ``cls`` (or a base) derives from ``Analyzer[X]`` with a concrete X."""
    for klass in cls.__mro__:
        for base in vars(klass).get("__orig_bases__", ()):
            if typing.get_origin(base) is Analyzer:
                (arg,) = typing.get_args(base)
                if isinstance(arg, type) and issubclass(arg, AnalyzerConfig):
                    return arg
    return None


class Analyzer(Generic[C]):
    """Base class of every analyzer (see the module docstring for the contract).

    Generic in its config: ``class Mine(Analyzer[MyConfig])`` sets ``Config = MyConfig``."""

    #: the ``uses:`` name, unique across all plugins
    name: ClassVar[str] = ""
    #: one of :data:`~pcapwire.workflow.context.INPUT_KINDS`, or a tuple of them for an
    #: analyzer that accepts several (the first is the default ``input`` of a step)
    input_kind: ClassVar[str | tuple[str, ...]] = ""
    #: kinds this analyzer emits; producers add ``file``/``email``/``stream``
    outputs: ClassVar[tuple[str, ...]] = ("verdict",)
    #: the analyzer's own version (shown by ``plugins list``, stored with each step result)
    version: ClassVar[str] = "0"
    #: one line for ``plugins list``
    description: ClassVar[str] = ""
    #: the config schema (``with:``); a frozen dataclass deriving from AnalyzerConfig.
    #: Defaults to the type argument of ``Analyzer[...]``.
    Config: ClassVar[type[AnalyzerConfig]] = NoConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        arg = config_argument(cls)
        if arg is not None and "Config" not in vars(cls) and not issubclass(cls.Config, arg):
            cls.Config = arg

    def unavailable(self) -> str | None:
        """Why this analyzer cannot run on this machine, or ``None`` when it can."""
        return None

    async def aclose(self) -> None:
        """Release what this analyzer keeps between runs (engines kept warm, pools,
        connections). Called by the host once it runs no more workflows (API shutdown,
        the CLI after its run), in the event loop its runs used; runs still in flight end
        on their own (the engine closes their sessions). After it, nothing may be started
        for later runs; a later run may still start what it needs itself. The default
        keeps nothing."""

    def check_config(self, config: C, base_dir: Path | None,
                     confinement: Confinement | None = None) -> list[str]:
        """Checks that need I/O, run by ``pcapwire workflow validate`` after the schema
        passed (rule files exist and compile, say). Returns problems as messages that
        name their file and line where they have one; the default finds none.
        ``base_dir`` is the workflow file's directory (relative paths start there).

        ``confinement`` is set for a workflow submitted through the API
        (:mod:`pcapwire.workflow.confine`): the core has already resolved the ``path`` and
        ``glob`` options inside its roots; a file named *inside* a file (an include) must
        pass :meth:`Confinement.allows` before it is read, and messages must not quote the
        contents of files. An analyzer whose ``check_config`` takes no ``confinement`` is
        skipped for such workflows. These checks run in a child process with time and
        memory limits under the API."""
        return []

    def open_session(self, ctx: StepContext[C]) -> Session[C]:
        """Per-run state for one step. The default feeds each record to :meth:`analyze`."""
        return RecordSession(self, ctx)

    async def analyze(self, record: Any, ctx: StepContext[C]) -> AsyncIterator[Output]:
        """Analyze one input record; yield verdicts (and, for producers, records)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither analyze() "
                                  "nor open_session()")
        yield  # pragma: no cover - makes this an async generator

    # ---- description ------------------------------------------------------------------
    @classmethod
    def input_kinds(cls) -> tuple[str, ...]:
        """The kinds this analyzer accepts (``input_kind`` as a tuple)."""
        kind = cls.input_kind
        return (kind,) if isinstance(kind, str) else tuple(kind)

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Plain-data description (``plugins list --json``, the API)."""
        return {"name": cls.name, "input_kinds": list(cls.input_kinds()),
                "outputs": list(cls.outputs),
                "version": cls.version, "description": cls.description,
                "config_schema": cls.Config.json_schema()}


class Session(Generic[C]):
    """Per-run state of one step. Subclass for warm engines; see the module docstring.

    ``ctx`` is the step's :class:`StepContext` (``Session[MyConfig]``: ``ctx.config`` is a
    ``MyConfig``). All methods are coroutines; ``aclose`` is always called exactly once and
    must be safe after a failed ``start``.
    """

    #: True when the session handles ``concurrency`` itself (the engine then calls
    #: ``feed`` from several tasks at once); False: ``feed`` calls are sequential.
    concurrent_feed: ClassVar[bool] = False

    def __init__(self, ctx: StepContext[C]) -> None:
        self.ctx = ctx

    async def start(self) -> None:
        """Before the first record: start engines, load rules."""

    async def feed(self, record: Record) -> None:
        """One input record, in input order."""
        raise NotImplementedError

    async def finish(self) -> None:
        """End of input: flush and emit what remains."""

    async def aclose(self) -> None:
        """Release everything (always called, also on error, timeout and cancel)."""


class RecordSession(Session[C]):
    """The default session: ``feed`` runs ``analyzer.analyze(record, ctx)`` and emits
    everything it yields. Stateless, so the engine may feed it concurrently."""

    concurrent_feed = True

    def __init__(self, analyzer: Analyzer[C], ctx: StepContext[C]) -> None:
        super().__init__(ctx)
        self.analyzer = analyzer

    async def feed(self, record: Record) -> None:
        agen = self.analyzer.analyze(record, self.ctx)
        try:
            async for item in agen:
                await self.ctx.emit(item)
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()


def check_analyzer(obj: Any) -> list[str]:
    """Everything wrong with an analyzer declaration (empty list: valid)."""
    cls = obj if isinstance(obj, type) else type(obj)
    if not (isinstance(cls, type) and issubclass(cls, Analyzer)):
        return [f"{obj!r} is not an Analyzer subclass or instance"]
    out = []
    if not isinstance(cls.name, str) or not NAME_RE.match(cls.name):
        out.append(f"name {cls.name!r} must match {NAME_RE.pattern}")
    kinds = cls.input_kinds() if isinstance(cls.input_kind, (str, tuple)) else ()
    if not kinds or any(k not in INPUT_KINDS for k in kinds):
        out.append(f"input_kind {cls.input_kind!r} must be one of {', '.join(INPUT_KINDS)} "
                   "(or a tuple of them)")
    bad = [k for k in cls.outputs if k not in INPUT_KINDS or k == "pcap"]
    if bad or not cls.outputs:
        out.append(f"outputs {cls.outputs!r} must be a non-empty subset of "
                   "verdict, stream, file, email")
    if not isinstance(cls.version, str) or not cls.version:
        out.append("version must be a non-empty string")
    arg = config_argument(cls)
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, AnalyzerConfig)):
        out.append("Config must derive from pcapwire.workflow.AnalyzerConfig")
    elif arg is not None and not issubclass(cls.Config, arg):
        out.append(f"Config {cls.Config.__name__} is not the {arg.__name__} of "
                   f"Analyzer[{arg.__name__}] (or a subclass of it)")
    else:
        try:
            cls.Config.json_schema()
        except TypeError as exc:
            out.append(f"Config: {exc}")
    overrides_analyze = cls.analyze is not Analyzer.analyze
    overrides_session = cls.open_session is not Analyzer.open_session
    if not (overrides_analyze or overrides_session):
        out.append("implements neither analyze() nor open_session()")
    return out
