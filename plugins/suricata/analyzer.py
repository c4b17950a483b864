"""The Suricata analyzer under the workflow contract (:mod:`pcapwire.workflow.analyzer`):
input kind ``pcap``, a per-run :class:`SuricataSession` (warm engine taken at ``start``,
chunks fed in order, verdicts emitted the moment Suricata raises them).

Alert verdicts go out through ``ctx.emit``; the other EVE records (http, dns, tls,
fileinfo, anomaly, smtp) are case metadata: Suricata writes them itself, as EVE JSON
lines, and the file is kept as ``eve-metadata.json`` in the step's keep directory
(:mod:`..enginekit.keep`). Spare
engines (rules loaded before a run asks) live in one pool per event loop on the analyzer
instance: a cache keyed by configuration, which the contract allows. The host's
``aclose`` stops them (:meth:`SuricataAnalyzer.aclose`); a host that runs one workflow
and exits (the CLI: ``ctx.keep_warm`` is False) gets no pool and no spare at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pcapwire.errors import AnalyzerError, ConfigError
from pcapwire.plugins.enginekit.keep import keep_dir
from pcapwire.plugins.suricata.config import (
    DEFAULT_BASE_CONFIG,
    FINISH_TIMEOUT_S,
    METADATA_EVE,
    START_TIMEOUT_S,
    SuricataSettings,
)
from pcapwire.plugins.suricata.pool import EnginePool
from pcapwire.plugins.suricata.rulesafety import confined_rule_problems
from pcapwire.plugins.suricata.run import RunResult, SuricataRun
from pcapwire.plugins.suricata.update import check_rules
from pcapwire.records import PcapChunk
from pcapwire.workflow import Analyzer, AnalyzerConfig, Session, StepContext, option
from pcapwire.workflow.confine import Confinement
from pcapwire.workflow.context import DATA_DIR_PLACEHOLDER, resolve_path

VERSION = "1.0"
#: Most spare engines one step configuration keeps loaded.
MAX_WARM_SPARES = 4
METADATA_FILE = METADATA_EVE


@dataclass(frozen=True, repr=False)
class SuricataConfig(AnalyzerConfig):
    rules: list[str] = option([], kind="glob", description="rule files and directories of "
                              "*.rules, relative to the workflow file; "
                              "{data_dir}/rules/suricata.rules is what 'pcapwire rules "
                              "update' writes")
    binary: str = option("suricata", kind="server",
                         description="suricata executable (looked up on PATH)")
    base_config: str = option(DEFAULT_BASE_CONFIG, kind="server",
                              description="suricata.yaml to start from")
    set: dict[str, Any] = option({}, kind="server",
                                 description="suricata.yaml overrides, dotted keys")
    args: list[str] = option([], kind="server",
                             description="extra suricata arguments, e.g. ['-k', 'none']")
    eve_types: list[Any] | None = option(None, kind="server", description="EVE types "
                                         "(default: alert, anomaly, http, dns, tls, files, "
                                         "smtp)")
    ja3: bool = option(False, description="JA3/JA3S fingerprints in tls metadata")
    ja4: bool = option(False, description="JA4 fingerprints in tls metadata")
    start_timeout: float = option(START_TIMEOUT_S, minimum=0.001,
                                  description="seconds to load rules")
    finish_timeout: float = option(FINISH_TIMEOUT_S, minimum=0.001,
                                   description="seconds to finish after the end of input")
    on_rule_error: Literal["fail", "warn"] = option(
        "fail", description="a rule that fails to load fails the step (fail) or is logged")
    warm_spares: int = option(1, minimum=0, maximum=MAX_WARM_SPARES,
                              description="engines kept loaded for next runs")
    keep_dir: str = option("", kind="server",
                           description="where EVE metadata is kept (default: the case)")
    threshold_file: str = option("", kind="path", description="Suricata threshold file "
                                 "(threshold.config syntax); default: the threshold.config "
                                 "beside the rule files, which 'pcapwire rules group "
                                 "threshold' writes")
    checksum_validation: Literal["no", "yes", "auto"] = option(
        "no", description="validate TCP/UDP checksums: no (Suricata's -k none: captures "
        "from hosts with checksum offload are analysed), yes (-k all), auto (Suricata's "
        "own default); with validation on, the step result counts the packets Suricata "
        "found with an invalid checksum. A '-k' in args wins")


def to_settings(config: SuricataConfig, base_dir: Path | None = None,
                data_dir: Path | None = None) -> SuricataSettings:
    """The engine's settings; rule paths resolve like every ``with:`` path
    (:func:`pcapwire.workflow.context.resolve_path`: relative to the workflow file,
    ``{data_dir}`` substituted)."""
    raw = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    raw.pop("keep_dir")
    if raw["eve_types"] is None:
        raw.pop("eve_types")
    raw["rules"] = [str(resolve_path(r, base_dir, data_dir)) for r in raw["rules"]]
    if raw["threshold_file"]:
        raw["threshold_file"] = str(resolve_path(raw["threshold_file"], base_dir, data_dir))
    return SuricataSettings.from_mapping(raw)


class SuricataAnalyzer(Analyzer[SuricataConfig]):
    name = "suricata"
    input_kind = "pcap"
    outputs = ("verdict",)
    version = VERSION
    description = ("Suricata IDS on the query's PCAP stream: warm engine, one flow table per "
                   "run, alerts as verdicts the moment they fire; EVE metadata kept with "
                   "the case")

    def __init__(self) -> None:
        self._pools: dict[asyncio.AbstractEventLoop, EnginePool] = {}

    def unavailable(self) -> str | None:
        # A step may name its own binary (unavailable() sees no config): a missing one
        # fails that step at start with a ConfigError saying how to install Suricata.
        return None

    def pool(self) -> EnginePool:
        """This event loop's pool (closed once :meth:`aclose` ran in this loop)."""
        loop = asyncio.get_running_loop()
        for old in [lp for lp in self._pools if lp.is_closed()]:
            del self._pools[old]
        return self._pools.setdefault(loop, EnginePool())

    async def aclose(self) -> None:
        """Stop this loop's spare engines; from now on its pool starts no spare (runs
        still in flight, or started later in this loop, start their own engine)."""
        await self.pool().close()

    def check_config(self, config: SuricataConfig, base_dir: Path | None,
                     confinement: Confinement | None = None) -> list[str]:
        """``pcapwire workflow validate``: settings, rule paths, and every rule loaded by
        Suricata itself (``suricata -T``), refused ones as ``FILE:LINE: message``. The
        files were confined by the core; Suricata's rule keywords that read further
        files (Lua scripts, dataset files by absolute or ``..`` path) are off in the
        configuration the plugin generates, and for a confined (API) workflow refused in
        the rule text before Suricata reads it (:mod:`.rulesafety`: Suricata 7 opens a
        dataset's ``load`` file by any path)."""
        try:
            settings = to_settings(config, base_dir, None)
            settings.rule_files()
            settings.resolve_binary()
        except ConfigError as exc:
            if DATA_DIR_PLACEHOLDER in str(exc):
                return []  # known only when a run has a data directory
            return [str(exc)]
        if not settings.rules:
            return []
        if confinement is not None:  # rules from an API caller: text only, names no file
            problems = confined_rule_problems(settings.rule_files())
            if problems:
                return problems
        checked = check_rules(list(settings.rules), binary=settings.binary,
                              base_config=settings.base_config)
        problems = [f"{e.file}:{e.line}: {e.message}" for e in checked.errors]
        problems += [f"{p}: no rule file matches" for p in checked.missing_files]
        return problems

    def open_session(self, ctx: StepContext[SuricataConfig]) -> Session[SuricataConfig]:
        return SuricataSession(self, ctx)


class SuricataSession(Session[SuricataConfig]):
    def __init__(self, analyzer: SuricataAnalyzer, ctx: StepContext[SuricataConfig]
                 ) -> None:
        super().__init__(ctx)
        self.analyzer = analyzer
        self.run: SuricataRun | None = None
        self.result: RunResult | None = None

    async def start(self) -> None:
        settings = to_settings(self.ctx.config, self.ctx.base_dir, self.ctx.data_dir)
        # A host that runs only this workflow (the CLI) gets no pool: nothing warms a
        # spare engine for a run that will never come.
        pool = self.analyzer.pool() if self.ctx.keep_warm else None
        self.run = SuricataRun(settings, pool=pool, on_verdict=self.ctx.emit,
                               step=self.ctx.step, case=self.ctx.run.case,
                               query_id=self.ctx.run.query_id)
        await self.run.start()

    async def feed(self, record: Any) -> None:
        if not isinstance(record, PcapChunk):
            raise AnalyzerError(f"suricata takes pcap chunks, not {type(record).__name__}")
        assert self.run is not None
        await self.run.feed(record)

    async def finish(self) -> None:
        assert self.run is not None
        where, kept = keep_dir(self.ctx, self.ctx.config.keep_dir, "suricata")
        self.result = result = await self.run.finish(metadata_dir=where)
        for err in result.rule_errors:
            self.ctx.log.warning("rule not loaded: %s", err)
        self._report_checksums(result)
        if not kept:
            self.ctx.log.info("EVE metadata in the run's scratch directory %s (no data "
                              "directory; set keep_dir to keep it)", where)
        if result.errors:
            raise AnalyzerError("; ".join(result.errors))

    def _report_checksums(self, result: RunResult) -> None:
        """With checksum validation on: how many packets Suricata counted with an invalid
        checksum, in the step result (``stats.invalid_checksums``, and a note when any)."""
        invalid = result.invalid_checksums
        if invalid is None:
            return
        self.ctx.note(invalid_checksums=invalid)
        if invalid:
            assert self.run is not None
            mode = self.run.settings.checksum_mode()
            self.ctx.note(
                f"suricata counted {invalid} of {result.packets} packets with an invalid "
                f"TCP checksum and ignored them (checksum_validation: {mode}): alerts on "
                "their flows may be missing. Captures taken on a host with checksum "
                "offload look like this; checksum_validation: no analyses them")

    async def aclose(self) -> None:
        if self.run is not None:
            await self.run.abort()
