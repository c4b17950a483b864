"""The ``yara`` analyzer: YARA rules over ``stream`` and ``file`` records.

Each match is one verdict: ``signature`` = rule name, ``signature_id`` =
``namespace:rule``, ``tags`` = the rule's tags, ``category`` = meta ``category`` if any,
``evidence`` = namespace, meta, and per string identifier the match count and the first
:data:`MAX_OFFSETS_PER_STRING` offsets with lengths. Offsets are **stream offsets** for
streams (gaps counted, so they point into the original TCP byte stream) and file
offsets for files.

Severity and score come from the rule's meta: ``severity`` (``info`` … ``critical``)
and/or ``score`` (0-100); with only one, the other follows
(:func:`pcapwire.workflow.severity.grade`); with neither, the step's
``default_severity`` (default ``medium``, score 60). Invalid meta values are rejected
when the rules compile.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yara
from pcapwire.errors import AnalyzerError
from pcapwire.plugins.yara.rules import RuleCache, RuleError, RuleSet
from pcapwire.records import FileRecord, StreamRecord
from pcapwire.workflow import (
    Analyzer,
    AnalyzerConfig,
    RecordSession,
    StepContext,
    option,
)

#: Offsets listed per string identifier in a verdict's evidence (the count is exact).
MAX_OFFSETS_PER_STRING = 16
#: Bytes of matched data shown per offset in evidence (hex).
MAX_EVIDENCE_BYTES = 64
DEFAULT_MAX_SCAN_BYTES = 64 * 2**20
DEFAULT_SCAN_TIMEOUT = 60

Severity = Literal["info", "low", "medium", "high", "critical"]


@dataclass(frozen=True)
class YaraConfig(AnalyzerConfig):
    rules: list[str] = option(description="rule files, directories (*.yar, *.yara, "
                              "recursive) and globs; relative to the workflow file")
    default_severity: Severity = option("medium", description="severity of a match whose "
                                        "rule has neither meta severity nor meta score")
    max_bytes: int = option(DEFAULT_MAX_SCAN_BYTES, minimum=1,
                            description="bytes scanned per record (the rest is skipped and "
                            "the verdict says so)")
    scan_timeout: int = option(DEFAULT_SCAN_TIMEOUT, minimum=1, maximum=3600,
                               description="YARA's own timeout per scan (seconds)")
    externals: dict[str, Any] = option({}, description="external variables for the rules")


def stream_offset(data_offset: int, gaps: list[tuple[int, int]]) -> int:
    """Map an offset in ``StreamRecord.data`` (gaps omitted) to a stream offset."""
    shift = 0
    for gap_off, gap_len in gaps:
        if gap_off <= data_offset + shift:
            shift += gap_len
        else:
            break
    return data_offset + shift


class YaraSession(RecordSession):
    """Rules resolved at run start (from the cache); each record scanned in a thread
    (yara-python releases the GIL, so ``concurrency`` > 1 scans in parallel)."""

    def __init__(self, analyzer: YaraAnalyzer, ctx: StepContext) -> None:
        super().__init__(analyzer, ctx)
        self.ruleset: RuleSet | None = None

    async def start(self) -> None:
        cfg = self.ctx.config
        assert isinstance(cfg, YaraConfig)
        analyzer = self.analyzer
        assert isinstance(analyzer, YaraAnalyzer)
        self.ruleset = await asyncio.to_thread(analyzer.cache.get, cfg.rules,
                                               self.ctx.base_dir, dict(cfg.externals))
        self.ctx.log.info("yara: %d rules from %d files", self.ruleset.count,
                          len(self.ruleset.files))

    async def feed(self, record: Any) -> None:
        cfg = self.ctx.config
        assert isinstance(cfg, YaraConfig) and self.ruleset is not None
        if isinstance(record, StreamRecord):
            data = record.data
        elif isinstance(record, FileRecord):
            data = await asyncio.to_thread(_read_head, record.path, cfg.max_bytes + 1)
        else:
            raise AnalyzerError(f"yara cannot scan a {record.kind!r} record")
        skipped = max(0, len(data) - cfg.max_bytes)
        scanned = data[:cfg.max_bytes] if skipped else data
        try:
            matches = await asyncio.to_thread(self.ruleset.rules.match, data=scanned,
                                              timeout=cfg.scan_timeout)
        except yara.TimeoutError:
            raise AnalyzerError(f"YARA scan exceeded scan_timeout={cfg.scan_timeout} s") \
                from None
        except yara.Error as exc:
            raise AnalyzerError(f"YARA: {exc}") from None
        for m in matches:
            await self.ctx.emit(self._verdict(m, record, skipped, cfg))

    def _verdict(self, m: Any, record: StreamRecord | FileRecord, skipped: int,
                 cfg: YaraConfig) -> Any:
        gaps = record.gaps if isinstance(record, StreamRecord) else []
        strings = []
        for s in m.strings:
            instances = s.instances
            strings.append({
                "identifier": s.identifier, "count": len(instances),
                "matches": [{"offset": stream_offset(i.offset, gaps),
                             "length": i.matched_length,
                             "data_hex": bytes(i.matched_data[:MAX_EVIDENCE_BYTES]).hex()}
                            for i in instances[:MAX_OFFSETS_PER_STRING]]})
        meta = dict(m.meta)
        evidence: dict[str, Any] = {"rule": m.rule, "namespace": m.namespace, "meta": meta,
                                    "strings": strings}
        if isinstance(record, FileRecord):
            evidence["sha256"] = record.sha256
        if skipped:
            evidence["bytes_not_scanned"] = skipped
        return self.ctx.verdict_for(
            record, severity=meta.get("severity", None if "score" in meta
                                      else cfg.default_severity),
            score=meta.get("score"), signature_id=f"{m.namespace}:{m.rule}",
            signature=m.rule, category=str(meta.get("category", "")),
            tags=list(m.tags), evidence=evidence)


def _read_head(path: str, n: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


class YaraAnalyzer(Analyzer):
    name = "yara"
    input_kind = ("stream", "file")
    version = f"1.0 (libyara {yara.__version__})"
    description = "YARA rules over reassembled streams and carved files"
    Config = YaraConfig

    def __init__(self) -> None:
        self.cache = RuleCache()  # compiled rules, keyed by files and their mtimes

    def check_config(self, config: Any, base_dir: Path | None) -> list[str]:
        assert isinstance(config, YaraConfig)
        try:
            self.cache.get(config.rules, base_dir, dict(config.externals))
        except RuleError as exc:
            return [str(exc)]
        return []

    def open_session(self, ctx: StepContext) -> YaraSession:
        return YaraSession(self, ctx)
