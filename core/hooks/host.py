"""The plugin host: a typed facade over pluggy's ``PluginManager`` (tox's
``tox.plugin.manager``), built by :func:`build_host` in an app factory, never at import.

Loading (:func:`build_host`):

1. every entry point of the group ``pcapwire`` (built-in plugins are entry points too), in
   name order; ``PCAPWIRE_LOAD_PLUGINS`` (comma-separated entry-point names; empty value:
   none) keeps only those, ``PCAPWIRE_BLOCK_PLUGINS`` drops those;
2. then any ``extra`` plugin objects the caller passes (tests, embedding applications);
3. ``check_pending``: a plugin with a ``pcapwire_*`` function matching no hook spec is
   unregistered and reported;
4. ``pcapwire_register_analyzers`` of each plugin, separately, so each analyzer is
   attributed to its plugin; invalid and duplicate analyzers are reported. Analyzer names
   are unique across plugins: the first plugin (in loading order) keeps a name, a later
   one that declares it again is reported and that analyzer left out;
5. ``pcapwire_register_commands`` of each plugin, the same way: command names are unique
   across plugins and never a core command's (:data:`pcapwire.cli.SUBCOMMANDS`).

Shutdown: :meth:`PluginHost.aclose` calls every analyzer's ``aclose()`` (the API server
at shutdown, the CLI after its run).

A plugin that fails at any step (import error, bad hook, bad analyzer) is listed in
:attr:`PluginHost.failures` with the reason; everything else still loads. Core code calls
hooks only through this class's typed methods.
"""

from __future__ import annotations

import importlib.metadata as md
import inspect
import logging
import os
import re
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy
from pcapwire.cli import SUBCOMMANDS as CORE_COMMANDS
from pcapwire.errors import PluginError
from pcapwire.hooks import NAME, CommandSetup, spec
from pcapwire.records import Verdict
from pcapwire.workflow.analyzer import Analyzer, check_analyzer
from pcapwire.workflow.config import AnalyzerConfig
from pcapwire.workflow.context import RunInfo
from pcapwire.workflow.results import RunSummary

log = logging.getLogger(__name__)

#: entry-point group plugins register in
ENTRY_POINT_GROUP = NAME
#: allowlist of entry-point names (comma-separated); unset: all; empty: none
ENV_LOAD = "PCAPWIRE_LOAD_PLUGINS"
#: blocklist of entry-point names (comma-separated)
ENV_BLOCK = "PCAPWIRE_BLOCK_PLUGINS"
#: plugin command names (``pcapwire NAME``)
COMMAND_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin, for ``pcapwire plugins list`` and the API."""

    name: str
    source: str  # "entry point <value> (<dist> <version>)" or "registered by caller"
    module: str = ""
    dist: str = ""
    dist_version: str = ""
    hooks: list[str] = field(default_factory=list)
    analyzers: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "module": self.module,
                "dist": self.dist, "dist_version": self.dist_version, "hooks": self.hooks,
                "analyzers": self.analyzers, "commands": self.commands, "error": self.error}


@dataclass
class AnalyzerEntry:
    name: str
    plugin: str
    analyzer: Analyzer

    def describe(self) -> dict[str, Any]:
        out = type(self.analyzer).describe()
        out["plugin"] = self.plugin
        out["unavailable"] = self.analyzer.unavailable()
        return out


@dataclass
class CommandEntry:
    """A ``pcapwire NAME`` subcommand a plugin declared (``pcapwire_register_commands``)."""

    name: str
    plugin: str
    setup: CommandSetup
    help: str = ""


def _env_list(env: Mapping[str, str], key: str) -> set[str] | None:
    if key not in env:
        return None
    return {p.strip() for p in env[key].split(",") if p.strip()}


def _short_error(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


class PluginHost:
    """Loaded plugins, their analyzers, and typed calls of the broadcast hooks."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(NAME)
        self.pm.add_hookspecs(spec)
        self.plugins: dict[str, PluginInfo] = {}
        self.failures: list[PluginInfo] = []
        self._analyzers: dict[str, AnalyzerEntry] = {}
        self._commands: dict[str, CommandEntry] = {}

    # ---- loading ----------------------------------------------------------------------
    def load_entry_points(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        allow, block = _env_list(env, ENV_LOAD), _env_list(env, ENV_BLOCK) or set()
        eps = sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
        for ep in eps:
            if (allow is not None and ep.name not in allow) or ep.name in block:
                log.info("plugin %s not loaded (%s/%s)", ep.name, ENV_LOAD, ENV_BLOCK)
                continue
            dist = getattr(ep, "dist", None)
            info = PluginInfo(name=ep.name, source=f"entry point {ep.value}",
                              dist=dist.name if dist else "",
                              dist_version=dist.version if dist else "")
            if dist:
                info.source += f" ({dist.name} {dist.version})"
            try:
                obj = ep.load()
            except (Exception, SystemExit) as exc:  # a plugin must not kill the host
                self._fail(info, f"import failed: {_short_error(exc)}")
                continue
            self._register(obj, info)

    def add_plugin(self, obj: Any, name: str | None = None) -> None:
        """Register a plugin object directly (tests, embedding applications)."""
        name = name or getattr(obj, "__name__", None) or type(obj).__name__
        self._register(obj, PluginInfo(name=name, source="registered by caller"))

    def _register(self, obj: Any, info: PluginInfo) -> None:
        if info.name in self.plugins:
            self._fail(info, f"a plugin named {info.name!r} is already loaded "
                             f"({self.plugins[info.name].source})")
            return
        info.module = getattr(obj, "__name__", type(obj).__module__)
        try:
            self.pm.register(obj, name=info.name)
        except Exception as exc:  # pluggy.PluginValidationError, ValueError
            self._fail(info, f"registration failed: {exc}")
            return
        self.plugins[info.name] = info

    def _fail(self, info: PluginInfo, reason: str) -> None:
        info.error = reason
        self.failures.append(info)
        log.warning("plugin %s: %s", info.name, reason)

    def check_pending(self) -> None:
        """Reject plugins whose ``pcapwire_*`` hooks match no spec (each is reported)."""
        while True:
            try:
                self.pm.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                name = self.pm.get_name(exc.plugin) or "?"
                self.pm.unregister(exc.plugin)
                info = self.plugins.pop(name, PluginInfo(name=name, source="?"))
                self._fail(info, f"unknown hook: {exc}")

    def _collect(self, hook_name: str, make: Any) -> None:
        """Call each plugin's registration hook ``hook_name`` with a callback of its own,
        ``make(plugin, problems)``; what goes wrong is reported as the plugin's failure."""
        for hookimpl in getattr(self.pm.hook, hook_name).get_hookimpls():  # loading order
            plugin_name = hookimpl.plugin_name
            info = self.plugins[plugin_name]
            problems: list[str] = []
            try:
                hookimpl.function(register=make(plugin_name, problems))
            except Exception as exc:
                problems.append(f"{hook_name} raised {_short_error(exc)}")
            if problems:
                info.error = "; ".join(filter(None, [info.error, *problems]))
                if info not in self.failures:
                    self.failures.append(info)
                log.warning("plugin %s: %s", plugin_name, "; ".join(problems))

    def collect_analyzers(self) -> None:
        """Call each plugin's ``pcapwire_register_analyzers`` with its own callback."""
        def make(plugin: str, problems: list[str]) -> Any:
            def register(obj: Any) -> None:
                self._add_analyzer(obj, plugin, problems)
            return register

        self._collect("pcapwire_register_analyzers", make)
        self._update_hooks()

    def collect_commands(self) -> None:
        """Call each plugin's ``pcapwire_register_commands`` with its own callback."""
        def make(plugin: str, problems: list[str]) -> Any:
            def register(name: Any, setup: Any, *, help: str = "") -> None:
                self._add_command(name, setup, help, plugin, problems)
            return register

        self._collect("pcapwire_register_commands", make)
        self._update_hooks()

    def _update_hooks(self) -> None:
        for info in self.plugins.values():
            info.hooks = sorted(h.name for h in self.pm.get_hookcallers(
                self.pm.get_plugin(info.name)) or [])

    def _add_command(self, name: Any, setup: Any, help: str, plugin: str,
                     problems: list[str]) -> None:
        if not isinstance(name, str) or not COMMAND_RE.match(name):
            problems.append(f"command {name!r}: a name must match {COMMAND_RE.pattern}")
        elif not callable(setup):
            problems.append(f"command {name!r}: setup {setup!r} is not callable")
        elif name in CORE_COMMANDS:
            problems.append(f"command {name!r} is a core pcapwire command")
        elif name in self._commands:
            problems.append(f"command {name!r} is already registered by plugin "
                            f"{self._commands[name].plugin!r}")
        else:
            self._commands[name] = CommandEntry(name, plugin, setup, str(help))
            self.plugins[plugin].commands.append(name)

    def _add_analyzer(self, obj: Any, plugin: str, problems: list[str]) -> None:
        label = getattr(obj, "name", None) or repr(obj)
        bad = check_analyzer(obj)
        if bad:
            problems.append(f"analyzer {label!r}: " + "; ".join(bad))
            return
        if obj.name in self._analyzers:
            problems.append(f"analyzer {obj.name!r} is already registered by plugin "
                            f"{self._analyzers[obj.name].plugin!r}")
            return
        try:
            instance = obj() if isinstance(obj, type) else obj
        except Exception as exc:
            problems.append(f"analyzer {label!r}: constructor raised {_short_error(exc)}")
            return
        config_cls = type(instance).Config
        if config_cls.secret_fields():  # a dataclass repr would print secrets
            config_cls.__repr__ = AnalyzerConfig.__repr__  # type: ignore[method-assign]
        self._analyzers[instance.name] = AnalyzerEntry(instance.name, plugin, instance)
        self.plugins[plugin].analyzers.append(instance.name)

    # ---- queries ----------------------------------------------------------------------
    def analyzers(self) -> dict[str, AnalyzerEntry]:
        return dict(sorted(self._analyzers.items()))

    def commands(self) -> dict[str, CommandEntry]:
        """The plugins' subcommands, by name."""
        return dict(sorted(self._commands.items()))

    def analyzer(self, name: str) -> Analyzer:
        """The analyzer registered as ``name``; :class:`PluginError` lists the known ones."""
        try:
            return self._analyzers[name].analyzer
        except KeyError:
            known = ", ".join(sorted(self._analyzers)) or "(none: no plugin loaded)"
            raise PluginError(f"unknown analyzer {name!r}; available: {known}") from None

    def describe(self) -> dict[str, Any]:
        return {"plugins": [p.to_dict() for p in self.plugins.values()],
                "failures": [p.to_dict() for p in sorted(self.failures,
                                                          key=lambda f: f.name)],
                "analyzers": [a.describe() for a in self.analyzers().values()]}

    # ---- broadcast hooks (typed) ------------------------------------------------------
    async def _broadcast(self, hook_name: str, **kwargs: Any) -> None:
        hook = getattr(self.pm.hook, hook_name)
        for hookimpl in reversed(hook.get_hookimpls()):
            args = {k: v for k, v in kwargs.items() if k in hookimpl.argnames}
            try:
                result = hookimpl.function(**args)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("plugin %s: %s failed", hookimpl.plugin_name, hook_name)

    async def run_started(self, run: RunInfo, workflow: dict[str, Any]) -> None:
        await self._broadcast("pcapwire_run_started", run=run, workflow=workflow)

    async def verdict(self, verdict: Verdict, run: RunInfo) -> None:
        await self._broadcast("pcapwire_verdict", verdict=verdict, run=run)

    async def case_completed(self, run: RunInfo, summary: RunSummary) -> None:
        await self._broadcast("pcapwire_case_completed", run=run, summary=summary)

    def has_impls(self, hook_name: str) -> bool:
        return bool(getattr(self.pm.hook, hook_name).get_hookimpls())

    # ---- shutdown -----------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close every analyzer (:meth:`Analyzer.aclose`: engines kept between runs are
        stopped, nothing is started for later runs). Call it in the event loop the runs
        used, once no more workflows will run; an analyzer that fails is logged and the
        others are still closed."""
        for entry in self.analyzers().values():
            try:
                result = entry.analyzer.aclose()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("analyzer %s (plugin %s): aclose() failed", entry.name,
                              entry.plugin)


def build_host(*, entry_points: bool = True, extra: Iterable[Any] = (),
               env: Mapping[str, str] | None = None, strict: bool = False) -> PluginHost:
    """Build a :class:`PluginHost` (call it in an app factory or a CLI command).

    ``extra``: plugin objects (modules, classes, instances) registered after the entry
    points. ``strict``: raise :class:`PluginError` if any plugin failed.
    """
    host = PluginHost()
    if entry_points:
        host.load_entry_points(env)
    for obj in extra:
        host.add_plugin(obj)
    host.check_pending()
    host.collect_analyzers()
    host.collect_commands()
    if strict and host.failures:
        raise PluginError("; ".join(f"{f.name}: {f.error}" for f in host.failures))
    return host
