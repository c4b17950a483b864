"""What a run leaves behind: one :class:`StepResult` per step and a :class:`RunSummary`
(plain data; persisted by :mod:`pcapwire.cases`, handed to ``pcapwire_case_completed``)."""

from __future__ import annotations

import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

#: ``ok``: ran over all its input; ``error``: raised (or its process died); ``timeout``: a
#: call exceeded the step's timeout; ``skipped``: never ran (condition false for every
#: record, no input, analyzer unavailable, or cancelled before starting).
StepStatus = Literal["ok", "error", "timeout", "skipped", "cancelled"]
STEP_STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "skipped", "cancelled")
#: ``ok``: every step ok/skipped; ``partial``: some step error/timeout; ``cancelled``;
#: ``failed``: the run itself could not proceed (its input failed); ``interrupted``: the
#: process stopped during the run (found ``running`` when the case store was reopened).
RunStatus = Literal["running", "ok", "partial", "cancelled", "failed", "interrupted"]


@dataclass
class StepError:
    """One failure inside a step; ``subject`` names the record concerned, if any."""

    kind: Literal["error", "timeout"]
    message: str
    subject: str = ""
    #: where the analyzer raised: the innermost frames (``File "...", line N, in f``), at
    #: most :data:`MAX_TRACEBACK_CHARS`; empty for a timeout
    traceback: str = ""


#: Longest traceback kept in a step error record (the innermost frames are kept).
MAX_TRACEBACK_CHARS = 4000


def format_traceback(exc: BaseException) -> str:
    """``exc``'s traceback as text, its innermost part when longer than the limit."""
    text = "".join(traceback.format_exception(exc)).rstrip()
    return text if len(text) <= MAX_TRACEBACK_CHARS else "…" + text[-MAX_TRACEBACK_CHARS:]


@dataclass
class StepResult:
    step: str
    analyzer: str
    analyzer_version: str = ""
    status: StepStatus = "skipped"
    reason: str = ""  # why skipped, or the first error
    records_in: int = 0
    records_skipped: int = 0  # input records for which ``if`` was false
    outputs: dict[str, int] = field(default_factory=dict)  # kind -> count
    errors: list[StepError] = field(default_factory=list)
    errors_dropped: int = 0
    queue_peak: int = 0  # most records ever waiting in this step's input queue
    started: float = 0.0
    finished: float = 0.0
    #: what the analyzer said about its run besides outputs (:meth:`StepContext.note`):
    #: notes for the responder (e.g. why alerts may be missing) ...
    notes: list[str] = field(default_factory=list)
    #: ... and named counts (e.g. Suricata's ``invalid_checksums``)
    stats: dict[str, Any] = field(default_factory=dict)
    #: directories where the step kept files beyond the run (:meth:`StepContext.kept_in`);
    #: None in a step record written before pcapwire recorded them
    kept: list[str] | None = None

    @property
    def seconds(self) -> float:
        return max(0.0, self.finished - self.started) if self.started else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 6)
        return out


@dataclass
class RunSummary:
    run_id: str
    workflow: str
    case: str
    event: str
    query_id: str
    status: RunStatus
    started: float
    finished: float
    steps: list[StepResult] = field(default_factory=list)
    verdicts: int = 0  # kept after aggregation
    verdicts_by_severity: dict[str, int] = field(default_factory=dict)
    max_severity: str = ""
    chunks: int = 0
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["steps"] = [s.to_dict() for s in self.steps]
        return out
