"""What an analyzer sees of a run: :class:`RunInfo` (serialisable facts about the run) and
:class:`StepContext` (one step's config, scratch directory, logger and ``emit``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

from pcapwire.errors import AnalyzerError, ConfigError
from pcapwire.records import (
    EmailRecord,
    FileRecord,
    FlowKey,
    PcapChunk,
    StreamRecord,
    Verdict,
)
from pcapwire.workflow.config import AnalyzerConfig
from pcapwire.workflow.confine import Confinement
from pcapwire.workflow.queries import MAX_FLOW_IDS, NoPacketStore, PacketQueries, QueryResult
from pcapwire.workflow.severity import grade

if TYPE_CHECKING:
    from pcapwire.query import QuerySpec

#: Every record kind that can flow between steps.
INPUT_KINDS: tuple[str, ...] = ("pcap", "stream", "file", "email", "verdict")
#: A record that crosses a step boundary (all serialisable, see :mod:`pcapwire.records`).
Record: TypeAlias = PcapChunk | StreamRecord | FileRecord | EmailRecord | Verdict
#: What a step may emit: verdicts, and for producer steps streams, files and emails.
Output: TypeAlias = Verdict | StreamRecord | FileRecord | EmailRecord


#: The config type of a step context (``StepContext[MyConfig]``).
C = TypeVar("C", bound=AnalyzerConfig)

#: In a ``with:`` path, the run's data directory (``{data_dir}/rules/suricata.rules``).
DATA_DIR_PLACEHOLDER = "{data_dir}"


def resolve_path(path: str, base_dir: Path | None, data_dir: Path | None) -> Path:
    """A path from ``with:``: ``{data_dir}`` substituted, ``~`` expanded, then relative to
    ``base_dir`` (the workflow file's directory). Raises ConfigError for ``{data_dir}`` in
    a run without a data directory."""
    text = path
    if DATA_DIR_PLACEHOLDER in text:
        if data_dir is None:
            raise ConfigError(f"{path!r} uses {DATA_DIR_PLACEHOLDER} but this run has no "
                              "data directory (pcapwire --data-dir)")
        text = text.replace(DATA_DIR_PLACEHOLDER, str(data_dir))
    p = Path(text).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return p


@dataclass(frozen=True)
class RunInfo:
    """Facts about one workflow run (plain data: safe to log, persist, send to a sink)."""

    run_id: str
    workflow: str
    case: str = ""
    event: str = ""
    query_id: str = ""
    started: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StepContext(Generic[C]):
    """One step of one run, as handed to :meth:`Analyzer.open_session`/``analyze``.

    ``config`` is the analyzer's validated ``Config`` instance (typed: the context of an
    ``Analyzer[MyConfig]`` is a ``StepContext[MyConfig]``); ``workdir`` a private
    scratch directory removed when the *run* ends (so files a producer writes there stay
    readable by downstream steps until then); ``emit`` sends an output downstream and
    waits while downstream queues are full (that wait is the back-pressure).
    """

    run: RunInfo
    step: str
    analyzer: str
    config: C
    workdir: Path
    outputs: tuple[str, ...] = ("verdict",)
    emit_fn: Callable[[Output], Awaitable[None]] | None = None
    #: directory of the workflow file (resolve relative paths in ``with:`` against it);
    #: None for a workflow that did not come from a file
    base_dir: Path | None = None
    #: the pcapwire data directory (``--data-dir``; a tenant's directory under the API),
    #: when the run has one: hash lists, rules, the content-addressed artifact store
    data_dir: Path | None = None
    #: False when the run keeps nothing with the case (``pcapwire run --no-store``): steps
    #: leave their logs in ``workdir``, which is removed with the run
    keep: bool = True
    #: set when the workflow came from outside the server (:mod:`.confine`): files named
    #: inside files (includes) are read only where it allows
    confinement: Confinement | None = None
    #: False when the host runs this one workflow and exits (the CLI): start nothing for
    #: later runs (no warm spares); True under a server that runs many
    keep_warm: bool = True
    #: PCAP queries from this step, provided by the host (see :meth:`query`); None when
    #: the run has no packet store
    queries: PacketQueries | None = None
    #: what the step reports about its run besides outputs, copied into its
    #: :class:`~pcapwire.workflow.results.StepResult`: see :meth:`note`
    notes: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    #: directories where the step keeps files beyond the run (:meth:`kept_in`), copied
    #: into its StepResult and the case store, where the API and the index look for them
    kept: list[str] = field(default_factory=list)
    log: logging.LoggerAdapter[logging.Logger] = field(init=False)

    def __post_init__(self) -> None:
        self.log = logging.LoggerAdapter(logging.getLogger(f"pcapwire.analyzer.{self.analyzer}"),
                                         {"step": self.step, "run_id": self.run.run_id})

    async def emit(self, item: Output) -> None:
        """Hand one output to the engine. Verdicts get ``step``, ``case`` and
        ``query_id`` filled in; an output kind the analyzer did not declare in
        ``outputs`` raises :class:`AnalyzerError`."""
        kind = getattr(item, "kind", None)
        if kind not in self.outputs:
            raise AnalyzerError(f"analyzer {self.analyzer!r} emitted a {kind!r} record but "
                                f"declares outputs {self.outputs}")
        if isinstance(item, Verdict):
            item.step = item.step or self.step
            item.case = item.case or self.run.case
            item.query_id = item.query_id or self.run.query_id
        if self.emit_fn is None:
            raise AnalyzerError("this context is not attached to a run (no emit)")
        await self.emit_fn(item)

    def note(self, message: str = "", **stats: Any) -> None:
        """Say something about this run in the step's result, besides its outputs: a note
        for the responder (``StepResult.notes``; also logged as a warning), e.g. why
        alerts may be missing, and/or named counts (``StepResult.stats``)."""
        if message:
            self.notes.append(message)
            self.log.warning("%s", message)
        self.stats.update(stats)

    def kept_in(self, directory: Path) -> None:
        """Record that this step keeps files beyond the run in ``directory`` (Suricata's
        EVE metadata, Zeek's logs, carved records): the step's result and the case store
        say where, so readers (the session view, the metadata index) need not guess."""
        path = str(Path(directory).absolute())
        if path not in self.kept:
            self.kept.append(path)

    async def query(self, spec: QuerySpec) -> QueryResult:
        """Run a PCAP query of the packet store as the host allows it (its limits apply;
        it is kept in the query history with ``spec.case`` and ``spec.event``): see
        :mod:`pcapwire.workflow.queries`. A refused or failed query is a result with
        ``status="error"``; :class:`~pcapwire.workflow.queries.NoPacketStore` when the
        run has no store."""
        if self.queries is None:
            raise NoPacketStore("this run has no packet store to query (a run on a "
                                "capture file, or no data directory with a catalog)")
        return await self.queries.query(spec)

    async def flow_ids(self, spec: QuerySpec, limit: int = MAX_FLOW_IDS) -> list[int]:
        """Ids of the indexed flows that may hold packets matching ``spec`` (for a
        :meth:`query` by flow id); :class:`NoPacketStore` as for :meth:`query`."""
        if self.queries is None:
            raise NoPacketStore("this run has no packet store to query")
        return await self.queries.flow_ids(spec, limit)

    def resolve(self, path: str) -> Path:
        """``path`` from ``with:`` (see :func:`resolve_path`)."""
        return resolve_path(path, self.base_dir, self.data_dir)

    def verdict(self, *, subject_kind: str, subject_id: str, flow: FlowKey, ts: float,
                severity: str | None = None, score: Any = None, signature_id: str = "",
                signature: str = "", category: str = "", tags: list[str] | None = None,
                evidence: dict[str, Any] | None = None) -> Verdict:
        """Build a :class:`Verdict` from this step (severity/score completed by
        :func:`pcapwire.workflow.severity.grade`)."""
        sev, sc = grade(severity, score)
        return Verdict(analyzer=self.analyzer, subject_kind=subject_kind,
                       subject_id=subject_id, flow=flow, ts=ts, severity=sev, score=sc,
                       signature_id=str(signature_id), signature=signature,
                       category=category, tags=list(tags or []),
                       evidence=dict(evidence or {}), step=self.step, case=self.run.case,
                       query_id=self.run.query_id)

    def verdict_for(self, record: StreamRecord | FileRecord | EmailRecord | Verdict,
                    **kw: Any) -> Verdict:
        """A verdict about ``record``: subject, 5-tuple and time taken from it."""
        if isinstance(record, StreamRecord):
            return self.verdict(subject_kind="stream", subject_id=record.id, flow=record.flow,
                                ts=record.start_ts, **kw)
        if isinstance(record, Verdict):
            return self.verdict(subject_kind=record.subject_kind,
                                subject_id=record.subject_id, flow=record.flow,
                                ts=record.ts, **kw)
        return self.verdict(subject_kind=record.kind, subject_id=record.id, flow=record.flow,
                            ts=record.ts, **kw)
