"""Verdict aggregation per workflow (``verdicts:`` in the document). Every rule works on a
stream: a verdict is kept or dropped when it arrives, so kept verdicts reach the case and
the sinks at once."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from pcapwire.records import SEVERITIES, Verdict
from pcapwire.workflow.severity import severity_rank

_RANK = {s: i for i, s in enumerate(SEVERITIES)}  # Verdict checks its severity already


@dataclass(frozen=True)
class VerdictPolicy:
    min_severity: str = "info"
    min_score: int = 0
    dedupe: bool = True
    max_per_subject: int | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> VerdictPolicy:
        d = d or {}
        return cls(min_severity=d.get("min_severity", "info"),
                   min_score=int(d.get("min_score", 0)), dedupe=bool(d.get("dedupe", True)),
                   max_per_subject=d.get("max_per_subject"))


class Aggregator:
    """Decides, verdict by verdict, what a run keeps; counts what it dropped and why."""

    def __init__(self, policy: VerdictPolicy) -> None:
        self.policy = policy
        self._floor = severity_rank(policy.min_severity)
        self._seen: set[tuple[Any, ...]] = set()
        self._per_subject: Counter[tuple[str, str]] = Counter()
        self.kept = 0
        self.by_severity: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.max_rank = -1

    def keep(self, v: Verdict) -> bool:
        p = self.policy
        rank = _RANK[v.severity]
        if rank < self._floor:
            self.dropped["min_severity"] += 1
            return False
        if v.score < p.min_score:
            self.dropped["min_score"] += 1
            return False
        subject = (v.subject_kind, v.subject_id)
        if p.dedupe:
            key = (v.analyzer, v.signature_id or v.signature, *subject, v.flow,
                   v.ts if v.subject_kind == "pcap" else 0.0)
            if key in self._seen:
                self.dropped["dedupe"] += 1
                return False
            self._seen.add(key)
        if p.max_per_subject is not None:
            if self._per_subject[subject] >= p.max_per_subject:
                self.dropped["max_per_subject"] += 1
                return False
            self._per_subject[subject] += 1
        self.kept += 1
        self.by_severity[v.severity] += 1
        if rank > self.max_rank:
            self.max_rank = rank
        return True
