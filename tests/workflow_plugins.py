"""Test plugins for the engine tests: real analyzers written for the tests (no mocks of
pcapwire), each exercising one behaviour: raising, hanging, a subprocess that gets killed,
blocking on an event (back-pressure), producing files, consuming verdicts.

``STATE`` is reset by the ``plugin_state`` fixture; tests use its events to synchronise.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

from pcapwire.errors import AnalyzerError
from pcapwire.hooks import impl
from pcapwire.records import EmailRecord, FileRecord, FlowKey, StreamRecord
from pcapwire.workflow import Analyzer, AnalyzerConfig, Session, StepContext, option
from pcapwire.workflow.timeouts import current_call


@dataclass
class State:
    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    spawned: asyncio.Event = field(default_factory=asyncio.Event)
    pid: int = 0
    proc: Any = None
    closed: list[str] = field(default_factory=list)
    inflight: int = 0
    max_inflight: int = 0
    seen: list[str] = field(default_factory=list)
    hook_calls: list[tuple[str, Any]] = field(default_factory=list)
    timer: Any = None


STATE = State()

NOWHERE = FlowKey(0, "0.0.0.0", 0, "0.0.0.0", 0)


class Needle(Analyzer):
    name = "t.needle"
    input_kind = ("stream", "file")
    version = "1"

    @dataclass(frozen=True)
    class Config(AnalyzerConfig):
        needle: str = option(description="bytes to find")
        severity: str = option("low")

    async def analyze(self, record: Any, ctx: StepContext) -> Any:
        data = record.data if record.kind == "stream" else open(record.path, "rb").read()
        if ctx.config.needle.encode() in data:
            yield ctx.verdict_for(record, severity=ctx.config.severity,
                                  signature="needle", signature_id="t.needle:1")


class Raiser(Analyzer):
    name = "t.raise"
    input_kind = "stream"
    version = "1"

    async def analyze(self, record: Any, ctx: StepContext) -> Any:
        raise ValueError(f"cannot handle {record.id}")
        yield


class Hanger(Analyzer):
    name = "t.hang"
    input_kind = ("stream", "pcap")
    version = "1"

    async def analyze(self, record: Any, ctx: StepContext) -> Any:
        STATE.started.set()
        await asyncio.Event().wait()  # never set: only the step timeout ends this
        yield


class SubprocessSession(Session):
    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec("sleep", "60")
        STATE.pid, STATE.proc = self.proc.pid, self.proc
        STATE.spawned.set()

    async def feed(self, record: Any) -> None:
        rc = await self.proc.wait()  # an engine that answers when it exits
        if rc < 0:
            raise AnalyzerError(f"engine process killed by signal {-rc}")
        raise AnalyzerError(f"engine process exited with {rc}")

    async def aclose(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        STATE.closed.append(self.ctx.step)


class Subprocess(Analyzer):
    name = "t.subprocess"
    input_kind = "pcap"
    version = "1"

    def open_session(self, ctx: StepContext) -> Session:
        return SubprocessSession(ctx)


class Blocker(Analyzer):
    """Blocks every record until ``STATE.release`` is set; counts records in flight."""

    name = "t.block"
    input_kind = ("pcap", "stream")
    version = "1"

    async def analyze(self, record: Any, ctx: StepContext) -> Any:
        STATE.inflight += 1
        STATE.max_inflight = max(STATE.max_inflight, STATE.inflight)
        STATE.started.set()
        try:
            await STATE.release.wait()
        finally:
            STATE.inflight -= 1
        STATE.seen.append(getattr(record, "id", "") or str(record.seq))
        yield ctx.verdict(subject_kind=record.kind, subject_id=str(record.seq)
                          if record.kind == "pcap" else record.id, flow=NOWHERE, ts=0.0,
                          severity="info")


class Producer(Analyzer):
    """stream -> file: writes each stream's bytes as a file in the run's scratch dir."""

    name = "t.producer"
    input_kind = "stream"
    outputs = ("file",)
    version = "1"

    async def analyze(self, record: Any, ctx: StepContext) -> Any:
        path = ctx.workdir / f"{record.id}.bin"
        path.write_bytes(record.data)
        yield FileRecord(id=f"F{record.id}", sha256=hashlib.sha256(record.data).hexdigest(),
                         md5="", sha1="", size=len(record.data), path=str(path),
                         flow=record.flow, ts=record.start_ts, protocol="tcp")


class Escalate(Analyzer):
    """verdict -> verdict: one 'critical' verdict per input verdict of severity >= low."""

    name = "t.escalate"
    input_kind = "verdict"
    version = "1"

    async def analyze(self, record: Any, ctx: StepContext) -> Any:
        yield ctx.verdict_for(record, severity="critical", signature="escalated",
                              evidence={"from": record.analyzer})


class Session3(Session):
    """A session counting its calls (start, feed, finish, aclose order)."""

    async def start(self) -> None:
        STATE.seen.append("start")

    async def feed(self, record: Any) -> None:
        STATE.seen.append("feed")

    async def finish(self) -> None:
        STATE.seen.append("finish")
        await self.ctx.emit(self.ctx.verdict(subject_kind="pcap", subject_id="all",
                                             flow=NOWHERE, ts=1.0, score=55))

    async def aclose(self) -> None:
        STATE.seen.append("aclose")


class Counter(Analyzer):
    name = "t.session"
    input_kind = "pcap"
    version = "1"

    def open_session(self, ctx: StepContext) -> Session:
        return Session3(ctx)


class Mailer(Analyzer):
    """stream -> email: every SMTP client stream with a Subject line becomes an email."""

    name = "t.mailer"
    input_kind = "stream"
    outputs = ("email",)
    version = "1"

    async def analyze(self, record: Any, ctx: StepContext) -> Any:
        for line in record.data.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                yield EmailRecord(id=f"E{record.id}", path="", flow=record.flow,
                                  ts=record.start_ts, protocol="smtp",
                                  subject=line[9:].decode())


class Subject(Analyzer):
    """email -> verdict: flags messages whose subject contains ``word``."""

    name = "t.subject"
    input_kind = "email"
    version = "1"

    @dataclass(frozen=True)
    class Config(AnalyzerConfig):
        word: str = option(description="word to look for")

    async def analyze(self, record: Any, ctx: StepContext) -> Any:
        if ctx.config.word in record.subject:
            yield ctx.verdict_for(record, severity="high", signature="subject",
                                  evidence={"subject": record.subject})


class BadStartSession(Session):
    async def start(self) -> None:
        raise OSError("rules directory unreadable")

    async def aclose(self) -> None:
        STATE.closed.append(self.ctx.step)


class BadStart(Analyzer):
    name = "t.badstart"
    input_kind = "pcap"
    version = "1"

    def open_session(self, ctx: StepContext) -> Session:
        return BadStartSession(ctx)


class Flood(Analyzer):
    """pcap -> stream: five small StreamRecords per chunk (to fill a queue downstream);
    remembers the timer of its call so a test can look at it while it waits."""

    name = "t.flood"
    input_kind = "pcap"
    outputs = ("stream",)
    version = "1"

    async def analyze(self, record: Any, ctx: StepContext) -> Any:
        STATE.timer = current_call.get()
        for i in range(5):
            yield StreamRecord(id=f"S{record.seq}-{i}", flow=NOWHERE, direction="orig",
                               data=b"x", start_ts=0.0, end_ts=0.0)


ANALYZERS = (Flood, Needle, Raiser, Hanger, Subprocess, Blocker, Producer, Escalate, Counter,
             Mailer, Subject, BadStart)


@impl
def pcapwire_register_analyzers(register: Any) -> None:
    for cls in ANALYZERS:
        register(cls)


@impl
def pcapwire_run_started(run: Any, workflow: Any) -> None:
    STATE.hook_calls.append(("run_started", run.run_id))


@impl
async def pcapwire_verdict(verdict: Any, run: Any) -> None:
    STATE.hook_calls.append(("verdict", verdict.signature))


@impl
def pcapwire_case_completed(run: Any, summary: Any) -> None:
    STATE.hook_calls.append(("case_completed", summary.status))
