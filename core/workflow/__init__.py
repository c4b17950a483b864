"""Workflows of analyzers (design §3): the analyzer contract, workflow documents, the
engine and verdict aggregation.

For plugin authors the names below are the whole API: subclass :class:`Analyzer`
(per-record ``analyze``) or return a :class:`Session` from ``open_session`` (per-run
state); declare settings in a :class:`AnalyzerConfig` dataclass with :func:`option`;
build verdicts with :meth:`StepContext.verdict` / :meth:`StepContext.verdict_for`; query
the packet store with :meth:`StepContext.query` (what the host allows). Tests:
:mod:`pcapwire.testing`.
"""

from pcapwire.workflow.analyzer import Analyzer, RecordSession, Session
from pcapwire.workflow.config import AnalyzerConfig, ConfigProblem, NoConfig, option
from pcapwire.workflow.context import INPUT_KINDS, Output, Record, RunInfo, StepContext
from pcapwire.workflow.queries import NoPacketStore, PacketQueries, QueryResult
from pcapwire.workflow.results import RunSummary, StepError, StepResult
from pcapwire.workflow.severity import SCORE_BY_SEVERITY, grade, severity_for_score

__all__ = [
    "INPUT_KINDS",
    "SCORE_BY_SEVERITY",
    "Analyzer",
    "AnalyzerConfig",
    "ConfigProblem",
    "NoConfig",
    "NoPacketStore",
    "Output",
    "PacketQueries",
    "QueryResult",
    "Record",
    "RecordSession",
    "RunInfo",
    "RunSummary",
    "Session",
    "StepContext",
    "StepError",
    "StepResult",
    "grade",
    "option",
    "severity_for_score",
]
