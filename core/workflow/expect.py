"""Expected verdicts for workflow tests (``pcapwire workflow test``, the golden tests).

An expectation file (YAML)::

    exhaustive: true        # default: no verdict beyond those listed may appear
    verdicts:
      - analyzer: yara      # every key given must match; keys not given match anything
        signature: EICAR_Test_File
        severity: medium
        subject_kind: stream
        dest_port: 80       # flow fields: proto, src_ip, src_port, dest_ip, dest_port
        tags: [test]        # these tags at least
        count: 1            # how many verdicts match (default 1)
    steps:                  # optional: expected step statuses
      yara: ok

Comparison is order-insensitive. :func:`compare` returns the list of differences (empty:
the run matches).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pcapwire.errors import WorkflowError
from pcapwire.records import Verdict
from pcapwire.workflow.results import RunSummary

VERDICT_KEYS = {"analyzer", "signature", "signature_id", "severity", "score", "subject_kind",
                "subject_id", "category", "step", "tags"}
FLOW_KEYS = {"proto", "src_ip", "src_port", "dest_ip", "dest_port"}


@dataclass
class Expectation:
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    exhaustive: bool = True
    steps: dict[str, str] = field(default_factory=dict)


def load_expectation(path: str | Path) -> Expectation:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise WorkflowError(f"{path}: cannot read expectations: {exc}") from None
    return expectation(data, str(path))


def expectation(data: Any, where: str = "expectation") -> Expectation:
    """An :class:`Expectation` from plain data: the file's mapping, or just the list of
    verdict entries; :class:`WorkflowError` (prefixed with ``where``) for unknown keys."""
    if isinstance(data, list):
        data = {"verdicts": data}
    if not isinstance(data, dict):
        raise WorkflowError(f"{where}: expected a mapping with 'verdicts'")
    unknown = set(data) - {"verdicts", "exhaustive", "steps"}
    if unknown:
        raise WorkflowError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: "
                            "verdicts, exhaustive, steps")
    entries = data.get("verdicts") or []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise WorkflowError(f"{where}: verdicts[{i}]: expected a mapping of fields")
        bad = set(e) - VERDICT_KEYS - FLOW_KEYS - {"count"}
        if bad:
            raise WorkflowError(f"{where}: verdicts[{i}]: unknown key(s) "
                                f"{', '.join(sorted(bad))}; allowed: "
                                f"{', '.join(sorted(VERDICT_KEYS | FLOW_KEYS | {'count'}))}")
    return Expectation(verdicts=list(entries), exhaustive=bool(data.get("exhaustive", True)),
                       steps=dict(data.get("steps") or {}))


def _value(v: Verdict, key: str) -> Any:
    return v.flow.to_dict()[key] if key in FLOW_KEYS else getattr(v, key)


def _field_matches(v: Verdict, key: str, want: Any) -> bool:
    got = _value(v, key)
    if key == "tags":
        return set(want) <= set(got)
    if key == "signature_id":  # 2100498 in YAML and "2100498" from an engine are one id
        return str(got) == str(want)
    return bool(got == want)


def _matches(v: Verdict, e: dict[str, Any]) -> bool:
    return all(_field_matches(v, k, want) for k, want in e.items() if k != "count")


def _fields_report(e: dict[str, Any], verdicts: list[Verdict]) -> list[str]:
    """Every compared field: the expected value, and what the run's verdicts had (the
    verdicts of the same analyzer when it names one, else all)."""
    pool = [v for v in verdicts if v.analyzer == e.get("analyzer", v.analyzer)] or verdicts
    out = []
    for key, want in e.items():
        if key == "count":
            continue
        seen = Counter(repr(sorted(_value(v, key)) if key == "tags" else _value(v, key))
                       for v in pool)
        matching = sum(_field_matches(v, key, want) for v in pool)
        shown = ", ".join(f"{val} ×{n}" for val, n in seen.most_common(5)) or "no verdict"
        out.append(f"    {key}: expected {want!r}; {matching} of {len(pool)} match; the run "
                   f"had {shown}")
    return out


def describe(v: Verdict) -> str:
    f = v.flow
    return (f"{v.analyzer} {v.severity}/{v.score} {v.signature or v.signature_id!s} on "
            f"{v.subject_kind} {v.subject_id} ({f.proto_name} {f.src}:{f.sport} -> "
            f"{f.dst}:{f.dport})")


def compare(exp: Expectation, verdicts: list[Verdict],
            summary: RunSummary | None = None) -> list[str]:
    """Differences between expectation and run (empty list: they match)."""
    out = []
    claimed: set[int] = set()
    for i, e in enumerate(exp.verdicts):
        want = int(e.get("count", 1))
        hits = [j for j, v in enumerate(verdicts) if _matches(v, e)]
        claimed.update(hits)
        if len(hits) != want:
            shown = {k: v for k, v in e.items() if k != "count"}
            out.append(f"verdicts[{i}] {shown}: expected {want}, got {len(hits)}")
            out.extend(_fields_report(e, verdicts))
    if exp.exhaustive:
        for j, v in enumerate(verdicts):
            if j not in claimed:
                out.append(f"unexpected verdict: {describe(v)}")
    if exp.steps:
        got = {s.step: s.status for s in summary.steps} if summary else {}
        for step, status in exp.steps.items():
            if got.get(step) != status:
                out.append(f"step {step}: expected status {status}, got "
                           f"{got.get(step, 'no such step')}")
    return out
