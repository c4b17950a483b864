"""A warm Suricata: rules loaded before the first chunk, one flow table for the whole run.

Mode (see the plugin README for the measurements behind it): each engine is one
``suricata -r FIFO`` process. Suricata loads its rules, then opens the FIFO and blocks on
it, so an engine started ahead of time (a *spare*, :mod:`.pool`) waits fully loaded for a
run. The run's chunks are written into the FIFO as one continuous capture (first header,
then records only), so a TCP session split across chunks is one flow to Suricata. Alerts go
as EVE to a unix stream socket this process listens on (Suricata writes it blocking in
offline mode, so none is dropped, and they arrive while the input is still streaming); the
metadata types go to an EVE file Suricata writes itself (:func:`.config.eve_types`).
Closing the FIFO ends the input: Suricata flushes its flows, logs the last events and exits.

File mode (``input_file``): a whole capture already on disk (a store's plain segment) is
read by Suricata itself, ``suricata -r FILE`` exactly as by hand, with the same generated
configuration and EVE socket; nothing is fed, :meth:`SuricataEngine.finish` waits for the
end of the file. Same verdicts as feeding the file's bytes, without copying them through
this process (a hunt unit, :mod:`pcapwire.triggers.match_engines`).

Lifecycle::

    engine = SuricataEngine(settings)
    await engine.start()              # spawn, wait until rules are loaded
    consumer = asyncio.create_task(collect(engine.events()))   # always drain events
    await engine.feed(chunk.data)     # any number of times
    result = await engine.finish(metadata_to=path)   # end of input; waits for exit
    # or: await engine.kill()         # on timeout/cancel; always reaps the process
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson
from pcapwire.errors import AnalyzerError
from pcapwire.pcapformat import HEADER_LEN, RECORD_LEN, PcapJoiner
from pcapwire.plugins.enginekit.fifo import FifoOpener, FifoWriter
from pcapwire.plugins.enginekit.process import EngineProcess, describe_returncode
from pcapwire.plugins.suricata.config import (
    METADATA_EVE,
    STATS_EVE,
    SuricataSettings,
    build_config,
)
from pcapwire.plugins.suricata.ruleload import RuleError, RuleLoadLog

log = logging.getLogger(__name__)

#: Longest EVE line accepted (a record with a huge HTTP header block still fits).
MAX_EVE_LINE = 16 * 2**20
#: Bytes read from the EVE socket at a time (one batch of events per read).
EVE_READ_BYTES = 256 * 1024
#: Seconds the EVE socket is left unread after a read smaller than
#: EVE_GATHER_BELOW_BYTES, so events come in batches (see ``_on_eve_connection``).
EVE_GATHER_S = 0.005
EVE_GATHER_BELOW_BYTES = 32 * 1024
#: EVE batches buffered between Suricata and the consumer; beyond it Suricata waits.
EVE_QUEUE_BATCHES = 64
#: Longest unix socket path the kernel takes (sun_path is 108 bytes with the NUL).
SOCKET_PATH_MAX = 107
#: Seconds a killed (aborted) engine gets between SIGTERM and SIGKILL.
ABORT_GRACE_S = 0.5
#: Pipe buffer asked for the FIFO (fewer wake-ups than the 64 KiB default; best effort).
FIFO_PIPE_BYTES = 2**20
_END = object()
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
#: Suricata's last words in pcap-file mode: what it actually read from its input.
_READ_SUMMARY = re.compile(r"pcap: read \d+ files?, (?P<packets>\d+) packets, (?P<bytes>\d+) bytes")


class RuleLoadError(AnalyzerError):
    """Rules that Suricata refused, each with file and line."""

    def __init__(self, errors: list[RuleError], summary: str) -> None:
        self.errors = errors
        super().__init__(f"suricata refused {len(errors)} rule(s):\n{summary}")


@dataclass
class EngineResult:
    returncode: int
    events: int
    bytes_fed: int
    chunks: int
    rule_errors: list[RuleError] = field(default_factory=list)
    bad_eve_lines: int = 0
    seconds: float = 0.0
    #: where the metadata EVE file was moved (``finish(metadata_to=...)``) ...
    metadata_file: Path | None = None
    #: ... or its records, when no destination was given
    metadata_events: list[dict[str, Any]] = field(default_factory=list)
    #: packets Suricata counted with an invalid TCP checksum (``tcp.invalid_checksum``);
    #: None when checksums were not validated (``checksum_validation: no``)
    invalid_checksums: int | None = None
    #: packets Suricata read (its final ``read N packets`` line)
    packets: int | None = None


class SuricataEngine:
    def __init__(self, settings: SuricataSettings, input_file: Path | None = None) -> None:
        """``input_file``: file mode (a pcap Suricata reads itself), else the FIFO."""
        self.settings = settings
        self.input_file = input_file.absolute() if input_file is not None else None
        self._input_bytes = 0
        self.rule_log = RuleLoadLog()
        self.process: EngineProcess | None = None
        self.dir: Path | None = None
        self.ready_at: float | None = None
        self._rules_done = asyncio.Event()
        self._queue: asyncio.Queue[Any] = asyncio.Queue(EVE_QUEUE_BATCHES)
        self._server: asyncio.Server | None = None
        self._connections: list[asyncio.Task[None]] = []
        self._writer: FifoWriter | None = None
        self._joiner = PcapJoiner()
        self._events = 0
        self._bad_lines = 0
        self._ended = False
        self._started_at = 0.0
        self.read_packets: int | None = None
        self.read_bytes: int | None = None

    # -- start -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Spawn Suricata and return once its rules are loaded and it waits for input."""
        binary = self.settings.resolve_binary()
        rule_files = self.settings.rule_files()
        self._started_at = time.monotonic()
        self.dir = Path(tempfile.mkdtemp(prefix="pcapwire-suricata-"))
        if len(str(self.dir / "eve.sock")) > SOCKET_PATH_MAX:  # a long $TMPDIR
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = Path(tempfile.mkdtemp(prefix="pcapwire-suricata-", dir="/tmp"))
        # A spare still alive when the interpreter exits (no host shutdown hook): its
        # Suricata sees the end of its input and exits; its directory goes here.
        weakref.finalize(self, shutil.rmtree, str(self.dir), True)
        try:
            await self._spawn(binary, rule_files)
            await self._wait_ready()
        except BaseException:
            await self.kill()
            raise

    async def _spawn(self, binary: str, rule_files: list[Path]) -> None:
        assert self.dir is not None
        log_dir = self.dir / "log"
        log_dir.mkdir()
        fifo, sock = self.dir / "input.pcap", self.dir / "eve.sock"
        if self.input_file is None:
            os.mkfifo(fifo, 0o600)
        else:
            self._input_bytes = self.input_file.stat().st_size
        self._server = await asyncio.start_unix_server(self._on_eve_connection, path=str(sock),
                                                       limit=MAX_EVE_LINE)
        config = self.dir / "suricata.yaml"
        config.write_text(build_config(self.settings, log_dir, sock, rule_files))
        argv = [binary, "-c", str(config), "-r", str(self.input_file or fifo),
                "-l", str(log_dir),
                *self.settings.checksum_args(), *self.settings.args]
        self.process = EngineProcess("suricata", argv, cwd=self.dir,
                                     on_output_line=self._on_output)
        await self.process.start()

    def _on_output(self, line: str) -> None:
        m = _READ_SUMMARY.search(line)
        if m:
            self.read_packets, self.read_bytes = int(m["packets"]), int(m["bytes"])
            return
        self.rule_log.feed(line)
        if self.rule_log.done:
            self._rules_done.set()

    async def _wait_ready(self) -> None:
        """Suricata opens the FIFO only after loading its rules: the open is the sync point."""
        assert self.process is not None and self.process.proc is not None and self.dir
        if self.input_file is not None:
            await self._wait_rules()
            return
        opener = FifoOpener(self.dir / "input.pcap", asyncio.get_running_loop())
        exited = asyncio.ensure_future(self.process.proc.wait())
        fd: int | None = None
        try:
            async with asyncio.timeout(self.settings.start_timeout):
                await asyncio.wait({opener.future, exited},
                                   return_when=asyncio.FIRST_COMPLETED)
                if opener.future.done() and opener.future.exception() is None:
                    fd = opener.take()
                    # Every rule message was printed before the open; wait until it is read.
                    rules = asyncio.ensure_future(self._rules_done.wait())
                    await asyncio.wait({rules, exited}, return_when=asyncio.FIRST_COMPLETED)
                    rules.cancel()
        except TimeoutError:
            pass
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
        finally:
            exited.cancel()
            if fd is None:
                opener.abandon()
        if fd is None or not self.rule_log.done or self.process.returncode is not None:
            if fd is not None:
                os.close(fd)
            exited_by_itself = self.process.returncode is not None
            await self.process.stop(grace=ABORT_GRACE_S)
            raise AnalyzerError(self._describe_failure(
                f"did not load its rules within {self.settings.start_timeout:g} s",
                exited=exited_by_itself))
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, F_SETPIPE_SZ, FIFO_PIPE_BYTES)
        self._writer = FifoWriter(fd, asyncio.get_running_loop())
        self._rules_loaded()

    async def _wait_rules(self) -> None:
        """File mode: Suricata reads its file as soon as its rules are loaded; wait for its
        rule summary (or its exit, a small file may be done by then)."""
        assert self.process is not None
        rules = asyncio.ensure_future(self._rules_done.wait())
        exited = asyncio.ensure_future(self.process.wait())
        try:
            async with asyncio.timeout(self.settings.start_timeout):
                await asyncio.wait({rules, exited}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            pass
        finally:
            rules.cancel()
            exited.cancel()
        if not self.rule_log.done:
            exited_by_itself = self.process.returncode is not None
            await self.process.stop(grace=ABORT_GRACE_S)
            raise AnalyzerError(self._describe_failure(
                f"did not load its rules within {self.settings.start_timeout:g} s",
                exited=exited_by_itself))
        self._rules_loaded()

    def _rules_loaded(self) -> None:
        assert self.process is not None
        self.ready_at = time.monotonic()
        errors = self.rule_log.errors
        log.info("suricata pid %s ready in %.2f s: %s signatures, %d rule error(s)",
                 self.process.pid, self.ready_at - self._started_at, self.rule_log.signatures,
                 len(errors))
        if (errors or self.rule_log.missing_files) and self.settings.on_rule_error == "fail":
            err = RuleLoadError(errors, self.rule_log.summary() or
                                f"no rule file matched {self.rule_log.missing_files}")
            raise err

    def _describe_failure(self, what: str, exited: bool | None = None) -> str:
        """``suricata exited (exit status 1)`` or ``suricata <what>``, with its last output."""
        assert self.process is not None
        rc = self.process.returncode
        if exited is None:
            exited = rc is not None
        status = f"exited ({describe_returncode(rc)})" if exited else what
        return f"suricata {status}; its last output:\n{self.process.output_text()}"

    # -- EVE -------------------------------------------------------------------------------
    async def _on_eve_connection(self, reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
        """Read EVE in blocks and queue batches of decoded events (one queue operation per
        block, not per event: alert-heavy captures produce hundreds of thousands).

        Suricata writes each event to the socket by itself; read as they come, every alert
        would wake the event loop (and the reader and consumer tasks) on its own. After a
        small read the socket is left alone for :data:`EVE_GATHER_S` (reading paused, so
        the kernel buffers what comes meanwhile and the loop is not woken): events arrive
        in batches, a few milliseconds later. A large read means Suricata writes fast:
        the next read follows at once, so Suricata never waits on a full socket."""
        task = asyncio.current_task()
        if task is not None:
            self._connections.append(task)
        pending = b""
        transport = cast(asyncio.Transport, writer.transport)  # a unix socket: readable
        try:
            while True:
                block = await reader.read(EVE_READ_BYTES)
                if not block:
                    break
                if len(block) < EVE_GATHER_BELOW_BYTES:
                    transport.pause_reading()
                    try:
                        await asyncio.sleep(EVE_GATHER_S)
                    finally:
                        if not transport.is_closing():
                            transport.resume_reading()
                lines = (pending + block).split(b"\n")
                pending = lines.pop()
                if len(pending) > MAX_EVE_LINE:
                    self._bad_lines += 1
                    log.warning("suricata: EVE line longer than %d bytes dropped", MAX_EVE_LINE)
                    pending = b""
                batch = self._decode(lines)
                if batch:
                    await self._queue.put(batch)
            if pending.strip():
                batch = self._decode([pending])
                if batch:
                    await self._queue.put(batch)
        finally:
            writer.close()

    def _decode(self, lines: list[bytes]) -> list[dict[str, Any]]:
        batch = []
        loads = orjson.loads  # 3-4x the stdlib's speed per alert
        for line in lines:
            if not line:
                continue
            try:
                event = loads(line)
            except ValueError:
                try:  # what orjson refuses and the stdlib takes (lone surrogate escapes)
                    event = json.loads(line)
                except ValueError:
                    self._bad_lines += 1
                    log.warning("suricata: EVE line is not JSON: %r", line[:200])
                    continue
            if isinstance(event, dict):
                batch.append(event)
        self._events += len(batch)
        return batch

    async def batches(self) -> AsyncIterator[list[dict[str, Any]]]:
        """EVE events as Suricata writes them, in the batches read from the socket (one
        await per batch, not per event); ends after :meth:`finish` or :meth:`kill`."""
        while True:
            item = await self._queue.get()
            if item is _END:
                await self._queue.put(_END)  # later iterators end too
                return
            yield item

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """EVE events one by one (:meth:`batches`, flattened)."""
        async for batch in self.batches():
            for event in batch:
                yield event

    async def _end_events(self) -> None:
        if not self._ended:
            self._ended = True
            await self._queue.put(_END)

    # -- input -----------------------------------------------------------------------------
    async def feed(self, data: bytes, where: str = "") -> None:
        """Append one chunk (a complete pcap) to the engine's input stream."""
        if self._writer is None:
            raise AnalyzerError("suricata: engine is not running (start() it, or it ended)")
        out = self._joiner.join(data, where)
        try:
            await self._writer.write(out)
        except OSError as exc:
            # Suricata closed its input: it is ending; let it, so its output says why.
            assert self.process is not None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.finish_timeout):
                    await self.process.wait()
            raise AnalyzerError(self._describe_failure(
                f"stopped reading its input at {where or 'a chunk'} ({exc})", exited=False)
                + f"\n(exit: {describe_returncode(self.process.returncode)})") from exc

    @property
    def linktype(self) -> int | None:
        return self._joiner.linktype

    # -- end -------------------------------------------------------------------------------
    async def finish(self, metadata_to: Path | None = None) -> EngineResult:
        """End of input: close the stream, wait for Suricata to flush and exit.

        The metadata EVE file Suricata wrote is moved to ``metadata_to`` when given (kept
        as Suricata wrote it); without it, its records are read into the result."""
        assert self.process is not None
        try:
            if self.input_file is None and self._joiner.header is None:
                # Nothing was fed: nothing to analyse (Suricata refuses a capture without
                # packets), so the engine is simply stopped.
                await self.kill()
                await self._end_events()
                return EngineResult(0, 0, 0, 0, list(self.rule_log.errors), 0,
                                    time.monotonic() - self._started_at)
            try:
                async with asyncio.timeout(self.settings.finish_timeout):
                    if self._writer is not None:
                        with contextlib.suppress(OSError):  # a failed write: exit says why
                            await self._writer.close()
                        self._writer = None
                    rc = await self.process.wait()
                    await self._close_eve()
            except TimeoutError:
                raise AnalyzerError(self._describe_failure(
                    f"did not finish within {self.settings.finish_timeout:g} s after the end of "
                    "its input")) from None
            if rc != 0:
                raise AnalyzerError(self._describe_failure(""))
            self._check_consumed()
            result = EngineResult(rc, self._events, self._fed(), self._joiner.chunks,
                                  list(self.rule_log.errors),
                                  self._bad_lines, time.monotonic() - self._started_at,
                                  packets=self.read_packets)
            await asyncio.to_thread(self._take_metadata, result, metadata_to)
            return result
        finally:
            await self.kill()

    def _take_metadata(self, result: EngineResult, metadata_to: Path | None) -> None:
        assert self.dir is not None
        result.invalid_checksums = self._invalid_checksums()
        written = self.dir / "log" / METADATA_EVE
        if not written.exists():
            return
        if metadata_to is not None:
            metadata_to.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(written, metadata_to)
            result.metadata_file = metadata_to
            return
        with open(written, "rb") as f:
            result.metadata_events = [event for event in self._decode(f.read().split(b"\n"))]
        self._events -= len(result.metadata_events)  # _decode counts socket events

    def _invalid_checksums(self) -> int | None:
        """``tcp.invalid_checksum`` of Suricata's last stats record (written at exit when
        checksums are validated, :data:`~.config.STATS_EVE`); None without one."""
        assert self.dir is not None
        path = self.dir / "log" / STATS_EVE
        if not path.exists():
            return None
        for line in reversed(path.read_bytes().splitlines()):
            try:
                record = orjson.loads(line)
            except ValueError:
                continue
            node: Any = record
            for key in ("stats", "tcp", "invalid_checksum"):
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, int) and not isinstance(node, bool):
                return node
        log.warning("suricata: no tcp.invalid_checksum counter in %s", path)
        return None

    def _check_consumed(self) -> None:
        """Suricata exits 0 even when its reader thread failed (an unsupported link type)
        or stopped at a broken record; its read summary must account for every byte fed:
        24 (file header) + 16 per record + the captured bytes."""
        fed = self._fed()
        if self.read_packets is None or self.read_bytes is None:
            raise AnalyzerError(self._describe_failure(
                f"did not report reading its input ({fed} bytes fed)", exited=False))
        consumed = HEADER_LEN + RECORD_LEN * self.read_packets + self.read_bytes
        if consumed != fed:
            raise AnalyzerError(self._describe_failure(
                f"read {self.read_packets} packets ({consumed} of the {fed} bytes fed); the "
                "rest of its input was not analysed", exited=False))

    def _fed(self) -> int:
        """Bytes of input: those fed, or the input file's."""
        return self._input_bytes if self.input_file is not None else self._joiner.bytes_out

    async def _close_eve(self) -> None:
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self._end_events()

    async def kill(self) -> None:
        """Stop everything now (idempotent): process reaped, socket closed, files removed.

        Safe in a task being cancelled and in a loop that is closing (asyncio.run cancels
        every task, the engine's own helpers included): the cleanup in ``finally`` runs
        whatever the awaits in between raise."""
        try:
            if self._writer is not None:
                self._writer.abort()
                self._writer = None
            if self.process is not None:
                # Nothing a killed engine says is kept. A Suricata still loading rules or
                # waiting on its FIFO ignores SIGTERM until its threads are up, so one
                # that never got ready is SIGKILLed at once; a running one gets a short
                # grace first.
                grace = ABORT_GRACE_S if self.ready_at is not None else 0.0
                await self.process.stop(grace=grace)
            for task in self._connections:
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            self._connections.clear()
        finally:
            if self.process is not None:
                self.process.kill_now()  # no-op once reaped
            if self._server is not None:
                self._server.close()
                self._server = None
            if not self._ended:
                self._ended = True
                while self._queue.full():  # consumer gone: make room so iterators end
                    self._queue.get_nowait()
                self._queue.put_nowait(_END)
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None
