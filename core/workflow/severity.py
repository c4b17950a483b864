"""Severity and score: one scale for every analyzer, so a YARA ``high`` and a Suricata
``high`` weigh the same in a case.

* :data:`SCORE_BY_SEVERITY` is the score an analyzer gives when it only knows a severity.
* :data:`SEVERITY_FLOORS` maps a score back to a severity (a score in ``[floor, next floor)``).
* Unknown severities raise (no silent coercion to ``info``, unlike Cortex).
"""

from __future__ import annotations

from typing import Any, cast

from pcapwire.errors import AnalyzerError
from pcapwire.records import SEVERITIES, Severity

#: Default score for each severity (the same values the engine plugins use).
SCORE_BY_SEVERITY: dict[Severity, int] = {"info": 20, "low": 40, "medium": 60, "high": 80,
                                          "critical": 95}
#: Lowest score of each severity band: 0-24 info, 25-49 low, 50-69 medium, 70-89 high,
#: 90-100 critical.
SEVERITY_FLOORS: tuple[tuple[int, Severity], ...] = (
    (90, "critical"), (70, "high"), (50, "medium"), (25, "low"), (0, "info"))


def severity_rank(severity: str) -> int:
    """0 for ``info`` … 4 for ``critical``; :class:`AnalyzerError` for anything else."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        raise AnalyzerError(f"severity {severity!r} is not one of "
                            f"{', '.join(SEVERITIES)}") from None


def severity_for_score(score: int) -> Severity:
    """The severity band a 0–100 score falls in."""
    check_score(score)
    for floor, severity in SEVERITY_FLOORS:
        if score >= floor:
            return severity
    raise AssertionError("unreachable")


def check_score(score: Any) -> int:
    """``score`` as an int in 0..100, else :class:`AnalyzerError`."""
    if isinstance(score, bool) or not isinstance(score, (int, float, str)):
        raise AnalyzerError(f"score {score!r} is not a number")
    try:
        value = int(score)
    except ValueError:
        raise AnalyzerError(f"score {score!r} is not a number") from None
    if not 0 <= value <= 100:
        raise AnalyzerError(f"score {value} is outside 0..100")
    return value


def grade(severity: str | None = None, score: Any = None,
          default: Severity = "medium") -> tuple[Severity, int]:
    """Complete a (severity, score) pair.

    Both given: both are checked and kept. Only a severity: its :data:`SCORE_BY_SEVERITY`.
    Only a score: its band (:func:`severity_for_score`). Neither: ``default`` and its score.
    """
    if severity is not None:
        severity = str(severity).lower()
        severity_rank(severity)
    if severity is None and score is None:
        severity = default
    if score is None:
        sev = cast(Severity, severity)
        return sev, SCORE_BY_SEVERITY[sev]
    value = check_score(score)
    if severity is None:
        return severity_for_score(value), value
    return cast(Severity, severity), value
