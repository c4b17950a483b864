"""A trigger's Suricata rules, YARA rules and content indicators (domains, URLs, JA3,
JA4), run by the real engines over a stream of PCAP chunks, as hits.

One function serves the hunt and the watch: a hunt unit feeds the chunks of one sealed
segment (``QueryEngine.run(spec, record=False, plan=engine.plan(spec, segment_ids=[id]))``)
and collects the hits (:func:`collect_engine_hits`); the watch feeds the chunks of a
follow query and takes each hit the moment the engine raises it (:func:`engine_hits`, an
async iterator: a Suricata alert comes out while later chunks are still to come).

A hunt unit over a plain segment runs Suricata in *file mode* instead (``suricata -r
SEGMENT``, :meth:`TriggerEngines.file_hits`): its EVE events are taken raw, without
verdicts, and a worker's unit makes each alert a row of the result set at once
(:func:`alert_rows`, :meth:`TriggerEngines.file_batch`): one JSON encoding of the
evidence per alert, no object kept per alert.

The engines are the plugins' own, through the workflow engine: a workflow of one
``suricata`` step (input ``pcap``; the trigger's rules and the generated indicator rules)
and/or one ``yara`` step (input ``stream``: the engine reassembles TCP/UDP as for any
workflow), built here from server-side settings (:class:`EngineSettings`) rather than
loaded from a document, so that nothing a caller wrote chooses a program, a path or an
engine setting, Suricata loads the rules once (no ``suricata -T`` beforehand: a rule it
refuses fails the run with file and line), and YARA compiles with ``include`` refused
(the workflow's confinement has no root).

The rule texts came through the API: they are written, as text, into an engine directory
under the ``work_dir`` the service gives (one per rule content,
``engines-<digest>/``, written once and shared by parallel units). Suricata rules that
would name files (datasets with ``load``/``save``/``state``, Lua) are refused before
that (:mod:`pcapwire.plugins.suricata.rulesafety`); the engine's configuration refuses the same
(``RULE_SAFETY``). Indicator rules are generated (:mod:`.indicator_rules`).

Hits: a Suricata alert -> ``suricata:<sid>`` (a generated rule -> the ``domain:``,
``url:``, ``ja3:`` or ``ja4:`` keys of the indicators it matched); a YARA match on a
stream direction -> ``yara:<rule>``. The 5-tuple is the flow's (initiator first), the
time the verdict's (Suricata: EVE's timestamp of the packet the alert was raised on, the
flow's start for end-of-input flushes; YARA: the stream's first packet), the evidence the
verdict's, bounded to :data:`MAX_EVIDENCE_BYTES` of JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pcapwire.errors import AnalyzerError, ConfigError
from pcapwire.records import FlowKey, PcapChunk, Verdict
from pcapwire.triggers import indicator_rules
from pcapwire.triggers.db import Hit, HitBatch, evidence_json
from pcapwire.triggers.db import flow_key as db_flow_key
from pcapwire.triggers.indicator_rules import INDICATOR_SIDS, IndicatorRules
from pcapwire.triggers.model import TriggerDef, rule_key

log = logging.getLogger(__name__)

#: Seconds one engine call may take (loading rules; the end of a segment's input).
STEP_TIMEOUT_S = 3600.0
#: Largest evidence of one hit, as JSON (beyond it the app-layer records are dropped).
MAX_EVIDENCE_BYTES = 16 * 1024
#: Seconds ``suricata --list-keywords`` may take.
KEYWORDS_TIMEOUT_S = 60.0
#: Hits produced and not yet taken by the caller; beyond it the engines wait.
MAX_PENDING_HITS = 10_000
#: Suricata settings the server may give (:class:`EngineSettings`); the rest is the
#: trigger's (rules, JA3/JA4) or fixed here (alerts only, rule errors fail).
SURICATA_SERVER_KEYS = frozenset({"binary", "base_config", "set", "args",
                                  "checksum_validation", "start_timeout", "finish_timeout",
                                  "warm_spares"})
#: What the engines' EVE output holds: alerts with their app-layer records (the
#: generated indicator rules are resolved from them), no metadata files.
ALERT_EVE = [{"alert": {"tagged-packets": False, "metadata": True}}]
SURICATA_RULES, INDICATOR_RULES, YARA_RULES = "trigger.rules", "indicators.rules", "trigger.yar"
#: Suricata arguments of file mode (:meth:`TriggerEngines.file_hits`) unless the server's
#: ``args`` choose a runmode: one packet thread, as a hunt runs a unit per core (measured
#: on 2 cores: 2.7 s against autofp's 3.6 s over a 256 MiB segment, same alerts).
FILE_MODE_ARGS = ("--runmode", "single")
#: What a Suricata hit's evidence keeps when the whole is above MAX_EVIDENCE_BYTES.
SURICATA_KEPT = ("engine", "signature", "category", "gid", "sid", "rev", "flow_id",
                 "pcap_cnt", "pkt_src", "app_proto", "packet")
_END = object()


class EngineError(AnalyzerError):
    """An engine failed on this input (rules refused, engine died, a scan timed out):
    the hits of the run are incomplete."""


@dataclass(frozen=True)
class EngineSettings:
    """Server-side configuration of the engines (``pcapwire serve`` settings, never a
    caller's): ``suricata``, keys of :data:`SURICATA_SERVER_KEYS` as a workflow step's
    ``with:`` takes them (e.g. ``{"binary": "/opt/suricata/bin/suricata"}``); YARA's
    bytes scanned per stream direction and timeout per scan; each engine call's timeout."""

    suricata: Mapping[str, Any] = field(default_factory=dict)
    yara_max_bytes: int = 64 * 2**20
    yara_scan_timeout: int = 60
    step_timeout: float = STEP_TIMEOUT_S

    def __post_init__(self) -> None:
        unknown = sorted(set(self.suricata) - SURICATA_SERVER_KEYS)
        if unknown:
            raise ConfigError(f"trigger engines: suricata setting(s) {', '.join(unknown)} "
                              f"are not server settings; allowed: "
                              f"{', '.join(sorted(SURICATA_SERVER_KEYS))}")


def needs_engines(defn: TriggerDef) -> bool:
    """Whether the definition has anything only the engines find (Suricata or YARA rules,
    domain/URL/JA3/JA4 indicators); IPs, BPF and file hashes are matched elsewhere."""
    return bool(defn.suricata_rules.strip() or defn.yara_rules.strip()
                or indicator_rules.needs_content(defn.indicators))


# ---- the engine directory -----------------------------------------------------------------
@dataclass(frozen=True)
class EngineFiles:
    dir: Path
    suricata: tuple[Path, ...]  # rule files (the trigger's, the generated indicators')
    yara: Path | None
    indicators: IndicatorRules


def _digest(defn: TriggerDef, generated: IndicatorRules) -> str:
    what = [defn.suricata_rules, defn.yara_rules, generated.text,
            sorted(generated.datasets.items())]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]


def engine_files(defn: TriggerDef, work_dir: Path) -> EngineFiles:
    """The rule files of ``defn`` in ``work_dir/engines-<digest>/``: written once (into a
    temporary directory renamed into place, so parallel units never see half a file),
    reused while the rules stay the same. Refuses Suricata rules that may not run here."""
    from pcapwire.plugins.suricata.rulesafety import suricata_rule_problems

    problems = suricata_rule_problems(defn.suricata_rules, reserved_sids=INDICATOR_SIDS)
    if problems:
        raise ConfigError("trigger rules refused:\n" + "\n".join(problems))
    generated = indicator_rules.build(defn.indicators)
    final = Path(work_dir) / f"engines-{_digest(defn, generated)}"
    files: dict[str, str] = {}
    if defn.suricata_rules.strip():
        files[SURICATA_RULES] = defn.suricata_rules
    if generated.text:
        files[INDICATOR_RULES] = generated.text
        files.update({f"{name}.lst": lines for name, lines in generated.datasets.items()})
    if defn.yara_rules.strip():
        files[YARA_RULES] = defn.yara_rules
    if not final.is_dir():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".engines-", dir=final.parent))
        try:
            for name, text in files.items():
                (tmp / name).write_text(text, encoding="utf-8")
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not another unit's rename: a real failure
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    rules = tuple(final / n for n in (SURICATA_RULES, INDICATOR_RULES) if n in files)
    return EngineFiles(final, rules, final / YARA_RULES if YARA_RULES in files else None,
                       generated)


# ---- checks at trigger creation -----------------------------------------------------------
def check_engines(defn: TriggerDef, settings: EngineSettings | None = None) -> None:
    """Everything the engines would refuse, before a hunt starts: Suricata rules that may
    not run here, rules Suricata does not load (``suricata -T`` with the engines'
    configuration; ``suricata_rules:LINE: message``), YARA rules that do not compile
    (``include`` refused). Blocking (runs Suricata): call it off the event loop.
    Raises :class:`ConfigError` listing every problem."""
    from pcapwire.plugins.suricata.update import check_rules
    from pcapwire.plugins.yara.rules import RuleCache, RuleError
    from pcapwire.workflow.confine import Confinement

    settings = settings or EngineSettings()
    if not needs_engines(defn):
        return
    problems: list[str] = []
    binary = str(settings.suricata.get("binary", "suricata"))
    for kind, keyword in (("ja3", "ja3.hash"), ("ja4", "ja4.hash")):
        if getattr(defn.indicators, kind) and keyword not in suricata_keywords(binary):
            problems.append(f"indicators.{kind}: unsupported: this Suricata ({binary}) has "
                            f"no '{keyword}' keyword (built without {kind.upper()} support); "
                            "remove these indicators or install a Suricata that has it")
    if problems:
        raise ConfigError("trigger rules refused:\n" + "\n".join(problems))
    with tempfile.TemporaryDirectory(prefix="pcapwire-trigger-check-") as tmp:
        files = engine_files(defn, Path(tmp))
        if files.suricata:
            checked = check_rules([str(p) for p in files.suricata], binary=binary,
                                  base_config=settings.suricata.get("base_config"))
            names = {str(files.dir / SURICATA_RULES): "suricata_rules",
                     str(files.dir / INDICATOR_RULES): "indicators (generated rules)"}
            problems += [f"{names.get(e.file, e.file)}:{e.line}: {e.message}"
                         for e in checked.errors]
        if files.yara is not None:
            try:
                RuleCache().get([str(files.yara)], None, {},
                                Confinement(roots=(), base_dir=files.dir))
            except RuleError as exc:
                problems.append(str(exc).replace(str(files.yara), "yara_rules"))
    if problems:
        raise ConfigError("trigger rules refused:\n" + "\n".join(problems))


@functools.cache
def suricata_keywords(binary: str) -> frozenset[str]:
    """The rule keywords ``binary`` knows (``suricata --list-keywords=csv``)."""
    exe = shutil.which(binary)
    if exe is None:
        raise ConfigError(f"suricata not found: {binary!r} is not an executable on PATH")
    out = subprocess.run([exe, "--list-keywords=csv"], capture_output=True, text=True,
                         check=False, timeout=KEYWORDS_TIMEOUT_S).stdout
    return frozenset(line.split(";", 1)[0] for line in out.splitlines()[1:] if line)


# ---- running ------------------------------------------------------------------------------
def _bounded(evidence: dict[str, Any], keep: tuple[str, ...], size: int | None = None
             ) -> dict[str, Any]:
    """``evidence`` whole when its JSON (``size`` bytes, when known) fits
    :data:`MAX_EVIDENCE_BYTES`; else only the ``keep`` keys, marked ``truncated``."""
    if size is None:
        size = len(orjson.dumps(evidence, default=str, option=orjson.OPT_NON_STR_KEYS))
    if size <= MAX_EVIDENCE_BYTES:
        return evidence
    out = {k: evidence[k] for k in keep if k in evidence}
    out["truncated"] = f"{size} bytes of evidence, more than {MAX_EVIDENCE_BYTES}"
    return out


def hits_of(verdict: Verdict, indicators: IndicatorRules) -> list[Hit]:
    """The hits one engine verdict makes (none for a generated indicator rule whose
    alert matched no indicator of this trigger)."""
    flow = verdict.flow
    if flow is None:
        return []
    if verdict.analyzer == "suricata":
        return _suricata_hits(flow, verdict.ts, dict(verdict.evidence), verdict.signature,
                              verdict.category, indicators)
    ev = verdict.evidence
    key = rule_key("yara", str(ev.get("rule") or verdict.signature))
    ev = _bounded({"engine": "yara", "stream": verdict.subject_id, **ev},
                  ("engine", "stream", "rule", "namespace", "meta"))
    return [Hit(key, flow.proto, flow.src, flow.sport, flow.dst, flow.dport, verdict.ts, ev)]


def alert_hits(event: dict[str, Any], indicators: IndicatorRules) -> list[Hit]:
    """The hits of one EVE event as Suricata wrote it (file mode: no verdict is made):
    :func:`hits_of` of its verdict for an alert, none for any other event."""
    from pcapwire.plugins.suricata import eve  # preloaded by the hunt's forkserver

    if event.get("event_type") != "alert":
        return []
    alert = event.get("alert") or {}
    return _suricata_hits(eve.flow_key(event), eve.event_ts(event), eve.alert_evidence(event),
                          str(alert.get("signature", "")), str(alert.get("category", "")),
                          indicators)


def alert_rows(event: dict[str, Any], indicators: IndicatorRules) -> list[tuple[Any, ...]]:
    """:func:`alert_hits` as the result set's rows (:attr:`HitBatch.rows`: flow key and
    evidence JSON made at once, one JSON encoding per hit): a hunt unit in file mode keeps
    no object per alert."""
    from pcapwire.plugins.suricata import eve  # preloaded by the hunt's forkserver

    if event.get("event_type") != "alert":
        return []
    alert = event.get("alert") or {}
    flow = eve.flow_key(event)
    ev, keys = _suricata_evidence(flow, eve.alert_evidence(event),
                                  str(alert.get("signature", "")),
                                  str(alert.get("category", "")), indicators)
    if not keys:
        return []
    text = evidence_json(ev)
    if len(text) * 4 > MAX_EVIDENCE_BYTES:  # may not fit (UTF-8: up to 4 bytes a char)
        size = len(text.encode())
        if size > MAX_EVIDENCE_BYTES:
            text = evidence_json(_bounded(ev, SURICATA_KEPT, size))
    ts = eve.event_ts(event)
    key = db_flow_key(flow.proto, flow.src, flow.sport, flow.dst, flow.dport)
    return [(k, key, None, flow.proto, flow.src, flow.sport, flow.dst, flow.dport, ts, text, 1)
            for k in keys]


def _suricata_evidence(flow: FlowKey, ev: dict[str, Any], signature: str, category: str,
                       indicators: IndicatorRules) -> tuple[dict[str, Any], list[str]]:
    """One Suricata alert's evidence (``ev``, a dict of its own, completed here; not yet
    bounded) and its rule keys."""
    sid = ev.get("sid")
    ev.update(engine="suricata", signature=signature, category=category)
    if isinstance(sid, int) and sid in INDICATOR_SIDS:
        # none for a URL rule's request whose host and path belong to two different
        # URLs, or whose port is not the URL's: the datasets only pre-select
        keys = indicators.keys_for(sid, ev, flow.dport)
        if not keys:
            log.debug("trigger: alert of indicator rule %s matched no indicator: %s",
                      sid, {k: ev.get(k) for k in ("dns", "tls", "http", "quic")})
        return ev, keys
    return ev, [rule_key("suricata", str(sid))]


def _suricata_hits(flow: FlowKey, ts: float, ev: dict[str, Any], signature: str,
                   category: str, indicators: IndicatorRules) -> list[Hit]:
    """The hits of one Suricata alert (``ev``: its evidence, a dict of its own)."""
    ev, keys = _suricata_evidence(flow, ev, signature, category, indicators)
    ev = _bounded(ev, SURICATA_KEPT)
    return [Hit(k, flow.proto, flow.src, flow.sport, flow.dst, flow.dport, ts, ev)
            for k in keys]


class TriggerEngines:
    """The engines of one definition: build once, run :meth:`hits` over any number of
    chunk streams one after another (``keep_warm``: Suricata keeps a loaded spare between
    them, for a caller that runs many units in one event loop), then :meth:`aclose`."""

    def __init__(self, defn: TriggerDef, work_dir: Path,
                 settings: EngineSettings | None = None, *, keep_warm: bool = False) -> None:
        from pcapwire.hooks.host import build_host
        from pcapwire.plugins import suricata as suricata_plugin
        from pcapwire.plugins import yara as yara_plugin
        from pcapwire.workflow.engine import Engine

        self.defn = defn
        self.settings = settings or EngineSettings()
        self.files = engine_files(defn, work_dir)
        self.host = build_host(entry_points=False, extra=[suricata_plugin, yara_plugin])
        self.workflow = self._workflow(keep_warm)
        self.engine = Engine(self.host, keep=False, keep_warm=keep_warm)

    def _workflow(self, keep_warm: bool) -> Any:
        from pcapwire.plugins.suricata.analyzer import SuricataConfig
        from pcapwire.plugins.yara.analyzer import YaraConfig
        from pcapwire.workflow.confine import Confinement
        from pcapwire.workflow.document import Step, Workflow
        from pcapwire.workflow.policy import VerdictPolicy

        steps = []
        if self.files.suricata:
            with_ = self._suricata_with(keep_warm)
            steps.append(Step("suricata", "suricata", "pcap", "pcap", with_,
                              SuricataConfig.from_mapping(with_),
                              self.host.analyzer("suricata"),
                              timeout=self.settings.step_timeout))
        if self.files.yara is not None:
            with_ = {"rules": [str(self.files.yara)], "max_bytes": self.settings.yara_max_bytes,
                     "scan_timeout": self.settings.yara_scan_timeout}
            steps.append(Step("yara", "yara", "stream", "stream", with_,
                              YaraConfig.from_mapping(with_), self.host.analyzer("yara"),
                              timeout=self.settings.step_timeout))
        # No root: YARA's include reads nothing (the rules are the trigger's text alone).
        return Workflow(name=f"trigger:{self.defn.name}", steps=steps,
                        source=str(self.files.dir), policy=VerdictPolicy(dedupe=False),
                        confinement=Confinement(roots=(), base_dir=self.files.dir))

    def _suricata_with(self, keep_warm: bool) -> dict[str, Any]:
        """The Suricata step's settings (the ``with:`` block)."""
        ind = self.defn.indicators
        with_ = {**self.settings.suricata, "rules": [str(p) for p in self.files.suricata],
                 "eve_types": ALERT_EVE, "ja3": bool(ind.ja3), "ja4": bool(ind.ja4),
                 "on_rule_error": "fail"}
        if not keep_warm:
            with_["warm_spares"] = 0
        return with_

    @property
    def reads_files(self) -> bool:
        """Whether :meth:`file_hits` serves this definition: Suricata alone (YARA scans
        the streams the workflow engine reassembles from chunks)."""
        return self.files.yara is None and bool(self.files.suricata)

    async def file_hits(self, path: Path) -> list[Hit]:
        """Every hit of Suricata over a pcap file it reads itself (file mode: ``suricata -r
        FILE`` with the configuration :meth:`hits` runs, nothing copied through this
        process), in the order found; only when :attr:`reads_files`. Raises
        :class:`EngineError` when the engine failed or took longer than the step timeout."""
        found: list[Hit] = []
        indicators = self.files.indicators

        def on_events(events: list[dict[str, Any]]) -> None:
            for event in events:
                found.extend(alert_hits(event, indicators))

        await self._read_file(path, on_events)
        return found

    async def file_batch(self, path: Path) -> HitBatch:
        """:meth:`file_hits` as the result set takes them (:func:`alert_rows`, merged per
        (rule, flow) by :meth:`HitBatch.of_rows`): a hunt unit's."""
        rows: list[tuple[Any, ...]] = []
        indicators = self.files.indicators

        def on_events(events: list[dict[str, Any]]) -> None:
            for event in events:
                rows.extend(alert_rows(event, indicators))

        await self._read_file(path, on_events)
        return HitBatch.of_rows(rows)

    async def _read_file(self, path: Path,
                         on_events: Callable[[list[dict[str, Any]]], None]) -> None:
        """Suricata over ``path`` in file mode, its EVE events handed to ``on_events``."""
        from pcapwire.plugins.suricata.config import SuricataSettings
        from pcapwire.plugins.suricata.run import SuricataRun

        if not self.reads_files:
            raise ValueError("file mode: the definition has YARA rules or no Suricata rules")
        with_ = self._suricata_with(False)
        if not any(str(a).startswith("--runmode") for a in with_.get("args", ())):
            with_["args"] = [*with_.get("args", ()), *FILE_MODE_ARGS]
        # the whole file is read after the "end of input" (no feeding): the step's time
        with_.setdefault("finish_timeout", self.settings.step_timeout)
        run = SuricataRun(SuricataSettings.from_mapping(with_), on_events=on_events,
                          step="suricata", case="triggers")
        try:
            async with asyncio.timeout(self.settings.step_timeout):
                result = await run.run_file(path)
        except TimeoutError:
            raise EngineError(f"trigger {self.defn.name}: suricata took longer than "
                              f"{self.settings.step_timeout:g} s over {path}") from None
        except AnalyzerError as exc:
            raise EngineError(f"trigger {self.defn.name}: engines failed: {exc}") from exc
        finally:
            await run.abort()
        if result.errors:
            raise EngineError(f"trigger {self.defn.name}: engines failed: "
                              + "; ".join(result.errors))

    async def hits(self, chunks: AsyncIterator[PcapChunk]) -> AsyncGenerator[Hit, None]:
        """Hits as the engines find them; raises :class:`EngineError` after the last one
        when an engine failed (what was found before is still yielded). Closing the
        iterator early stops the engines."""
        if not self.workflow.steps:
            async for _chunk in chunks:  # nothing to look for: drain, as a run would
                pass
            return
        queue: asyncio.Queue[Hit] = asyncio.Queue(MAX_PENDING_HITS)
        indicators = self.files.indicators

        async def on_verdict(v: Verdict) -> None:
            for hit in hits_of(v, indicators):
                await queue.put(hit)

        run = asyncio.create_task(self.engine.run(self.workflow, chunks, case="triggers",
                                                  event=self.defn.name,
                                                  on_verdict=on_verdict))
        getter: asyncio.Future[Hit] | None = None
        try:
            while True:
                try:
                    hit = queue.get_nowait()
                except asyncio.QueueEmpty:
                    if run.done():
                        break
                    getter = asyncio.ensure_future(queue.get())
                    await asyncio.wait({getter, run}, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        continue
                    hit = getter.result()
                yield hit
            summary = run.result()
        finally:
            if getter is not None and not getter.done():
                getter.cancel()
            if not run.done():
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
        problems = [f"{s.step}: {e.message}" for s in summary.steps for e in s.errors]
        if summary.error:
            problems.insert(0, summary.error)
        if problems or summary.status not in ("ok",):
            raise EngineError(f"trigger {self.defn.name}: engines failed ({summary.status}): "
                              + "; ".join(problems or [s.reason for s in summary.steps]))

    async def aclose(self) -> None:
        """Stop spare engines (``keep_warm``)."""
        await self.host.aclose()


async def engine_hits(chunks: AsyncIterator[PcapChunk], defn: TriggerDef, work_dir: Path,
                      settings: EngineSettings | None = None) -> AsyncGenerator[Hit, None]:
    """Hits of ``defn``'s engines over ``chunks``, each as soon as an engine raises it (the
    watch). Raises :class:`EngineError` at the end when an engine failed, and
    :class:`ConfigError` at once for rules that may not run."""
    engines = TriggerEngines(defn, work_dir, settings)
    found = engines.hits(chunks)
    try:
        async for hit in found:
            yield hit
    finally:
        await found.aclose()  # a caller that stops early stops the engines now
        await engines.aclose()


async def collect_file_hits(path: Path, defn: TriggerDef, work_dir: Path,
                            settings: EngineSettings | None = None) -> list[Hit] | None:
    """The hits of ``defn``'s engines over the pcap file ``path`` read by Suricata itself
    (:meth:`TriggerEngines.file_hits`: a unit over a plain segment); None when the
    definition needs the chunk path (YARA rules): call :func:`collect_engine_hits`."""
    engines = TriggerEngines(defn, work_dir, settings)
    try:
        return await engines.file_hits(path) if engines.reads_files else None
    finally:
        await engines.aclose()


async def collect_file_batch(path: Path, defn: TriggerDef, work_dir: Path,
                             settings: EngineSettings | None = None) -> HitBatch | None:
    """:func:`collect_file_hits` as the result set's rows (:meth:`TriggerEngines.file_batch`:
    a hunt unit in a worker process)."""
    engines = TriggerEngines(defn, work_dir, settings)
    try:
        return await engines.file_batch(path) if engines.reads_files else None
    finally:
        await engines.aclose()


async def collect_engine_hits(chunks: AsyncIterator[PcapChunk], defn: TriggerDef,
                              work_dir: Path, settings: EngineSettings | None = None
                              ) -> list[Hit]:
    """Every hit of :func:`engine_hits`, in the order found (a hunt unit)."""
    return [hit async for hit in engine_hits(chunks, defn, work_dir, settings)]
