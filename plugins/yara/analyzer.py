"""The ``yara`` analyzer: YARA rules over ``stream`` and ``file`` records.

Each matching rule is one verdict per record:

* ``signature`` = rule name, ``signature_id`` = ``namespace:rule``, ``tags`` = the rule's
  tags, ``category`` = meta ``category`` (if any);
* ``evidence``: ``rule``, ``namespace``, ``meta``, and ``strings``: per string identifier
  its match count and the first :data:`MAX_OFFSETS_PER_STRING` matches (``offset``,
  ``length``, the first :data:`MAX_EVIDENCE_BYTES` matched bytes as ``data_hex``).
  Offsets are **stream offsets** for streams (gaps counted, so they point into the
  original TCP byte stream; a match whose bytes straddle a gap is marked
  ``across_gap: true``, since those bytes were not adjacent on the wire) and file
  offsets for files. Files add ``sha256``; a record longer than ``max_bytes`` adds
  ``bytes_not_scanned``.

Severity and score come from the rule's meta: ``severity`` (``info`` … ``critical``,
any case) and/or ``score`` (0-100). With only a severity, the score is that severity's
default (info 20, low 40, medium 60, high 80, critical 95); with only a score, the
severity is its band (0-24 info, 25-49 low, 50-69 medium, 70-89 high, 90-100 critical);
with neither, the step's ``default_severity`` (default **medium**, score **60**). An
invalid meta value is a rule error when the rules compile (file and line named).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yara
from pcapwire.errors import AnalyzerError
from pcapwire.plugins.yara.rules import RuleCache, RuleError, RuleSet
from pcapwire.records import FileRecord, StreamRecord, Verdict
from pcapwire.workflow import (
    Analyzer,
    AnalyzerConfig,
    RecordSession,
    StepContext,
    option,
)
from pcapwire.workflow.confine import Confinement

#: Matches listed per string identifier in a verdict's evidence (the count is exact).
MAX_OFFSETS_PER_STRING = 16
#: Bytes of matched data shown per match in evidence (hex).
MAX_EVIDENCE_BYTES = 64
#: Default of ``max_bytes``: bytes scanned per record.
DEFAULT_MAX_SCAN_BYTES = 64 * 2**20
#: Default of ``scan_timeout``: YARA's own limit per scan (seconds).
DEFAULT_SCAN_TIMEOUT = 60
#: Records up to this size are scanned on the event loop; larger ones in a worker thread
#: (libyara releases the GIL, so ``concurrency`` > 1 scans them in parallel). Handing a
#: small scan to a thread costs more than the scan (see benchmarks/bench_workflow.py).
INLINE_SCAN_BYTES = 256 * 1024

Severity = Literal["info", "low", "medium", "high", "critical"]


@dataclass(frozen=True)
class YaraConfig(AnalyzerConfig):
    rules: list[str] = option(kind="glob", description="rule files, directories (*.yar, *.yara, "
                              "recursive) and globs; relative to the workflow file",
                              examples=[["rules/"], ["/etc/yara/*.yar"]])
    default_severity: Severity = option("medium", description="severity of a match whose "
                                        "rule has neither meta severity nor meta score")
    max_bytes: int = option(DEFAULT_MAX_SCAN_BYTES, minimum=1,
                            description="bytes scanned per record (the rest is skipped and "
                            "the verdict says how many)")
    scan_timeout: int = option(DEFAULT_SCAN_TIMEOUT, minimum=1, maximum=3600,
                               description="YARA's own timeout per scan (seconds)")
    externals: dict[str, Any] = option({}, kind="text",
                                       description="external variables for the rules")


def stream_offset(data_offset: int, gaps: list[tuple[int, int]]) -> int:
    """Map an offset in ``StreamRecord.data`` (gaps omitted) to a stream offset."""
    shift = 0
    for gap_off, gap_len in gaps:
        if gap_off <= data_offset + shift:
            shift += gap_len
        else:
            break
    return data_offset + shift


class YaraSession(RecordSession[YaraConfig]):
    """Rules resolved once per run (from the analyzer's cache); each record scanned."""

    def __init__(self, analyzer: YaraAnalyzer, ctx: StepContext[YaraConfig]) -> None:
        super().__init__(analyzer, ctx)
        self.cache = analyzer.cache
        self.ruleset: RuleSet | None = None

    async def start(self) -> None:
        cfg = self.ctx.config
        ruleset = await asyncio.to_thread(self.cache.get, cfg.rules, self.ctx.base_dir,
                                          dict(cfg.externals), self.ctx.confinement)
        self.ruleset = ruleset
        self.ctx.log.info("yara: %d rules from %d files", ruleset.count, len(ruleset.files))

    async def feed(self, record: Any) -> None:
        cfg = self.ctx.config
        assert self.ruleset is not None
        rules, limit = self.ruleset.rules, cfg.max_bytes
        if isinstance(record, StreamRecord):
            data, size, path = record.data, len(record.data), None
        elif isinstance(record, FileRecord):
            try:
                size = os.stat(record.path).st_size
            except OSError as exc:
                raise AnalyzerError(f"cannot read {record.path}: {exc.strerror}") from None
            data, path = None, record.path
            if size > limit:
                data = await asyncio.to_thread(_read_head, record.path, limit)
        else:
            raise AnalyzerError(f"yara cannot scan a {record.kind!r} record")
        skipped = max(0, size - limit)
        try:
            if data is None:  # a whole file: libyara maps it
                matches = await asyncio.to_thread(rules.match, filepath=path,
                                                  timeout=cfg.scan_timeout)
            else:
                scanned = memoryview(data)[:limit] if skipped else data
                if len(scanned) <= INLINE_SCAN_BYTES:
                    matches = rules.match(data=scanned, timeout=cfg.scan_timeout)
                else:
                    matches = await asyncio.to_thread(rules.match, data=scanned,
                                                      timeout=cfg.scan_timeout)
        except yara.TimeoutError:
            raise AnalyzerError(f"YARA scan exceeded scan_timeout={cfg.scan_timeout} s") \
                from None
        except yara.Error as exc:
            raise AnalyzerError(f"YARA: {exc}") from None
        for m in matches:
            await self.ctx.emit(self._verdict(m, record, skipped, cfg))

    def _verdict(self, m: Any, record: StreamRecord | FileRecord, skipped: int,
                 cfg: YaraConfig) -> Verdict:
        gaps = record.gaps if isinstance(record, StreamRecord) else []
        strings = []
        for s in m.strings:
            instances = s.instances
            shown = []
            for i in instances[:MAX_OFFSETS_PER_STRING]:
                start = stream_offset(i.offset, gaps) if gaps else i.offset
                item: dict[str, Any] = {"offset": start, "length": i.matched_length,
                                        "data_hex": bytes(i.matched_data[:MAX_EVIDENCE_BYTES])
                                        .hex()}
                if gaps and i.matched_length and stream_offset(
                        i.offset + i.matched_length - 1, gaps) != start + i.matched_length - 1:
                    item["across_gap"] = True
                shown.append(item)
            strings.append({"identifier": s.identifier, "count": len(instances),
                            "matches": shown})
        meta = dict(m.meta)
        evidence: dict[str, Any] = {"rule": m.rule, "namespace": m.namespace, "meta": meta,
                                    "strings": strings}
        if isinstance(record, FileRecord):
            evidence["sha256"] = record.sha256
        if skipped:
            evidence["bytes_not_scanned"] = skipped
        severity = meta.get("severity")
        if severity is None and meta.get("score") is None:
            severity = cfg.default_severity
        return self.ctx.verdict_for(
            record, severity=severity, score=meta.get("score"),
            signature_id=f"{m.namespace}:{m.rule}", signature=m.rule,
            category=str(meta.get("category", "")), tags=list(m.tags), evidence=evidence)


def _read_head(path: str, n: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


class YaraAnalyzer(Analyzer[YaraConfig]):
    name = "yara"
    input_kind = ("stream", "file")
    version = f"1.0 (libyara {yara.__version__})"
    description = "YARA rules over reassembled streams and carved files"

    def __init__(self) -> None:
        self.cache = RuleCache()  # compiled rule sets, keyed by the files' contents

    def check_config(self, config: YaraConfig, base_dir: Path | None,
                     confinement: Confinement | None = None) -> list[str]:
        """Compile the rules (cached for the run that follows): errors name file:line.
        Confined: ``include`` reads only inside the confinement's roots."""
        try:
            self.cache.get(config.rules, base_dir, dict(config.externals), confinement)
        except RuleError as exc:
            return [str(exc)]
        return []

    def open_session(self, ctx: StepContext[YaraConfig]) -> YaraSession:
        return YaraSession(self, ctx)
