"""The carving driver: reassembled TCP events in, FileRecords and EmailRecords out.

:class:`Carver` is fed per-connection events (open, data per direction in order, gaps,
direction ends, close) by :mod:`pcapwire.extract.source`, which drives pcapwire's TCP
reassembler over a pcap file or a stream of PcapChunks. It picks the protocol of each
connection (:mod:`.detect`: content first, then port; FTP data channels by what their
control connection announced), runs the protocol's session, and turns what it carves
into records through the artifact store.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pcapwire.extract import PROTOCOLS, detect, mime
from pcapwire.extract.artifacts import ArtifactStore
from pcapwire.extract.buffer import CarvedEmail, CarvedFile, Session
from pcapwire.extract.emit import RecordMaker
from pcapwire.extract.ftp import FtpControlSession, FtpDataSession, FtpRegistry
from pcapwire.extract.httpfiles import HttpSession
from pcapwire.extract.imap import ImapSession
from pcapwire.extract.pop3 import Pop3Session
from pcapwire.extract.ranges import RangeAssembler
from pcapwire.extract.smtp import SmtpSession
from pcapwire.records import EmailRecord, FileRecord, FlowKey

log = logging.getLogger(__name__)

#: Most files (and emails) carved from one connection; further ones are counted, not kept.
MAX_FILES_PER_CONNECTION = 10_000
#: Most carved bytes waiting for (or in) the storing workers; beyond it carving waits.
MAX_PENDING_STORE_BYTES = 256 * 1024 * 1024


@dataclass
class CarveResult:
    files: list[FileRecord] = field(default_factory=list)
    emails: list[EmailRecord] = field(default_factory=list)
    #: what was skipped or odd, each naming the connection
    notes: list[str] = field(default_factory=list)
    http: list[dict[str, Any]] = field(default_factory=list)  # one entry per transaction
    ftp: list[dict[str, Any]] = field(default_factory=list)  # one entry per transfer command
    connections: dict[str, int] = field(default_factory=dict)  # per detected protocol


@dataclass
class _Conn:
    key: FlowKey
    ts: float
    heads: dict[str, bytearray] = field(default_factory=lambda: {"orig": bytearray(),
                                                                "resp": bytearray()})
    pending: list[tuple[Any, ...]] = field(default_factory=list)
    session: Session | None = None
    decided: bool = False
    swapped: bool = False
    ended: set[str] = field(default_factory=set)
    carved: int = 0
    dropped: int = 0
    closed: bool = False

    @property
    def flow(self) -> FlowKey:
        return self.key.reversed() if self.swapped else self.key

    def direction(self, d: str) -> str:
        if not self.swapped:
            return d
        return "resp" if d == "orig" else "orig"


class Carver:
    """Feed it connection events; collect records (or get them through callbacks)."""

    def __init__(self, store: ArtifactStore, protocols: tuple[str, ...] = PROTOCOLS,
                 on_file: Callable[[FileRecord], None] | None = None,
                 on_email: Callable[[EmailRecord], None] | None = None,
                 workers: int = 0) -> None:
        """``workers`` > 0: hash, identify (libmagic) and write carved bytes in that many
        threads while carving goes on (all three release the GIL). Records are then made
        a little later -- when their bytes are stored, still in carving order, and at the
        latest by :meth:`finish`; the callbacks are called at that point. 0: at once."""
        self._pool: ThreadPoolExecutor | None = None
        self._appender: ThreadPoolExecutor | None = None
        self._appended: deque[Future[None]] = deque()
        self._sightings: list[tuple[str, dict[str, Any]]] = []
        if workers > 0:
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="pcapwire-store")
            # Sightings are appended by one more thread, in carving order: appending is
            # a few system calls per record, each a chance for a worker to take the GIL.
            self._appender = ThreadPoolExecutor(1, thread_name_prefix="pcapwire-sightings")
            self.maker = RecordMaker(store, sightings=lambda path, s: self._sightings.append(
                (path, s)))
        else:
            self.maker = RecordMaker(store)
        self._pending: deque[_Job] = deque()
        self._pending_bytes = 0
        self.protocols = set(protocols)
        self.on_file = on_file
        self.on_email = on_email
        self.conns: dict[FlowKey, _Conn] = {}
        self.ftp = FtpRegistry()
        self.ranges = RangeAssembler()
        self.result = CarveResult()

    # ---- events --------------------------------------------------------------------
    def open(self, key: FlowKey, ts: float) -> None:
        """A connection starts; ``key`` is oriented initiator -> responder."""
        if key in self.conns:
            self.close(key, ts)
        conn = self.conns[key] = _Conn(key, ts)
        self._try_ftp_data(conn)

    def data(self, key: FlowKey, direction: str, data: bytes, ts: float) -> None:
        conn = self._conn(key, ts)
        if not conn.decided:
            head = conn.heads[direction]
            if len(head) < detect.SNIFF_BYTES:
                head += data[:detect.SNIFF_BYTES - len(head)]
            conn.pending.append(("data", direction, data, ts))
            self._decide(conn, final=False)
            return
        if conn.session is not None:
            conn.session.feed(conn.direction(direction), data, ts)
            self._collect(conn)

    def gap(self, key: FlowKey, direction: str, length: int, ts: float) -> None:
        conn = self._conn(key, ts)
        if not conn.decided:
            conn.pending.append(("gap", direction, length, ts))
            return
        if conn.session is not None:
            conn.session.gap(conn.direction(direction), length, ts)
            self._collect(conn)

    def end(self, key: FlowKey, direction: str, ts: float) -> None:
        conn = self.conns.get(key)
        if conn is None:
            return
        conn.ended.add(direction)
        if not conn.decided:
            conn.pending.append(("end", direction, ts))
            return
        if conn.session is not None:
            conn.session.end(conn.direction(direction), ts)
            self._collect(conn)

    def close(self, key: FlowKey, ts: float) -> None:
        conn = self.conns.pop(key, None)
        if conn is None:
            return
        conn.closed = True
        if not conn.decided:
            self._decide(conn, final=True)
        if conn.session is not None:
            conn.session.close(ts)
            self._collect(conn)
            for note in conn.session.notes:
                self.result.notes.append(f"{_name(conn.flow)} {conn.session.protocol}: {note}")
            if isinstance(conn.session, HttpSession):
                for t in conn.session.transactions:
                    self.result.http.append(dict(t, flow=conn.flow.to_dict()))
            elif isinstance(conn.session, FtpControlSession):
                for t in conn.session.log:
                    self.result.ftp.append(dict(t, flow=conn.flow.to_dict()))
        if conn.dropped:
            self.result.notes.append(
                f"{_name(conn.flow)}: MAX_FILES_PER_CONNECTION={MAX_FILES_PER_CONNECTION} "
                f"reached; {conn.dropped} more files not kept")

    def finish(self) -> CarveResult:
        """End of input: close what is still open, join 206 ranges, return everything
        (once every file is stored)."""
        try:
            for key in list(self.conns):
                conn = self.conns[key]
                self.close(key, conn.ts)
            self._drain(block=True)
            for carved in self.ranges.finish():
                self._file(carved, carved.flow or FlowKey(6, "", 0, "", 0))
            self.result.notes += self.ranges.notes
            self._drain(block=True)
            while self._appended:
                self._appended.popleft().result()  # raises what appending raised
        finally:
            self.shutdown()
        return self.result

    def shutdown(self) -> None:
        """Stop the storing workers, waiting for the files they are writing and for the
        sightings of the records already made; the records of files not yet made are
        dropped. :meth:`finish` calls it."""
        if self._pool is None or self._appender is None:
            return
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None
        self._pending.clear()
        self._pending_bytes = 0
        self._append_sightings()
        self._appender.shutdown(wait=True)
        self._appender = None
        for done in self._appended:
            if done.exception() is not None:
                log.error("appending sightings failed: %s", done.exception())
        self._appended.clear()

    def conn_of(self, key: FlowKey) -> _Conn | None:
        """The live state of connection ``key`` (for :meth:`data_to`), if any."""
        return self.conns.get(key)

    def data_to(self, conn: _Conn, direction: str, data: bytes, ts: float) -> None:
        """:meth:`data` for a connection already looked up with :meth:`conn_of` (and not
        closed since): skips the look-up by key, which costs more than the rest when the
        connection's protocol is decided and each segment goes straight to its session."""
        conn.ts = ts
        session = conn.session
        if not conn.decided:
            self.data(conn.key, direction, data, ts)
        elif session is not None:
            session.feed(conn.direction(direction) if conn.swapped else direction, data, ts)
            if session.out:
                self._collect(conn)

    # ---- internals -----------------------------------------------------------------
    def _conn(self, key: FlowKey, ts: float) -> _Conn:
        conn = self.conns.get(key)
        if conn is None:  # no SYN seen (capture started mid-connection)
            self.open(key, ts)
            conn = self.conns[key]
        conn.ts = ts
        return conn

    def _try_ftp_data(self, conn: _Conn) -> None:
        if "ftp" not in self.protocols:
            return
        channel = self.ftp.match(conn.key)
        if channel is not None:
            conn.session = FtpDataSession(channel, conn.key)
            conn.decided = True
            self._count("ftp-data")

    def _decide(self, conn: _Conn, final: bool) -> None:
        self._try_ftp_data(conn)  # announced after this connection was opened?
        if conn.decided:
            self._replay(conn)
            return
        guess = detect.sniff(bytes(conn.heads["orig"]), bytes(conn.heads["resp"]),
                             conn.key.sport, conn.key.dport, final=final)
        if guess.protocol is None:
            return
        conn.decided = True
        conn.swapped = guess.swapped
        proto = guess.protocol if guess.protocol in self.protocols else ""
        self._count(proto or "other")
        if proto == "http":
            conn.session = HttpSession()
        elif proto == "smtp":
            conn.session = SmtpSession()
        elif proto == "pop3":
            conn.session = Pop3Session()
        elif proto == "imap":
            conn.session = ImapSession()
        elif proto == "ftp":
            conn.session = FtpControlSession(conn.flow, self.ftp)
        self._replay(conn)

    def _replay(self, conn: _Conn) -> None:
        """Hand the events kept while sniffing to the chosen session."""
        pending, conn.pending = conn.pending, []
        conn.heads = {"orig": bytearray(), "resp": bytearray()}
        if conn.session is None:
            return
        for ev in pending:
            kind, direction = ev[0], conn.direction(ev[1])
            if kind == "data":
                conn.session.feed(direction, ev[2], ev[3])
            elif kind == "gap":
                conn.session.gap(direction, ev[2], ev[3])
            else:
                conn.session.end(direction, ev[2])
        self._collect(conn)

    def _count(self, proto: str) -> None:
        self.result.connections[proto] = self.result.connections.get(proto, 0) + 1

    def _collect(self, conn: _Conn) -> None:
        assert conn.session is not None
        for item in conn.session.take():
            if conn.carved >= MAX_FILES_PER_CONNECTION:
                conn.dropped += 1
                continue
            conn.carved += 1
            if isinstance(item, CarvedEmail):
                self._email(item, conn.flow)
            else:
                self._file(item, conn.flow)
        if self._pending:
            self._drain(block=False)

    def _email(self, carved: CarvedEmail, flow: FlowKey) -> None:
        if self._pool is None:
            self._emit_email(*self.maker.email(carved, flow))
            return
        parsed = mime.parse_message(carved.data)
        job = self._pool.submit(self.maker.store_email, carved, parsed)
        self._queue(_Job("email", carved, flow, job, parsed),
                    len(carved.data) + sum(len(leaf.data) for leaf in parsed.leaves))

    def _file(self, carved: CarvedFile, flow: FlowKey) -> None:
        if self._pool is None:
            self._file_done(carved, flow, self.maker.file(carved, flow))
            return
        job = self._pool.submit(self.maker.store_file, carved)
        self._queue(_Job("file", carved, flow, job), len(carved.data))

    def _file_done(self, carved: CarvedFile, flow: FlowKey, rec: FileRecord) -> None:
        if "content_range" in carved.extra:
            carved.flow = carved.flow or flow
            self.ranges.add(carved, rec.id)
        self._emit_file(rec)

    def _emit_email(self, email: EmailRecord, files: list[FileRecord]) -> None:
        self.result.emails.append(email)
        if self.on_email:
            self.on_email(email)
        for f in files:
            self._emit_file(f)

    def _emit_file(self, rec: FileRecord) -> None:
        self.result.files.append(rec)
        if self.on_file:
            self.on_file(rec)

    # ---- background storing (workers > 0) --------------------------------------------
    def _queue(self, job: _Job, size: int) -> None:
        job.size = size
        self._pending.append(job)
        self._pending_bytes += size

    def _drain(self, block: bool) -> None:
        """Make the records of stored jobs, oldest first (so records, ids and callbacks
        come in carving order); ``block`` waits for every job. Waits anyway while more
        than :data:`MAX_PENDING_STORE_BYTES` are queued or being stored."""
        pending = self._pending
        while pending:
            job = pending[0]
            if not (block or job.future.done()
                    or self._pending_bytes > MAX_PENDING_STORE_BYTES):
                break
            pending.popleft()
            self._pending_bytes -= job.size
            stored = job.future.result()
            if job.kind == "file":
                assert isinstance(job.carved, CarvedFile)
                self._file_done(job.carved, job.flow,
                                self.maker.file_record(job.carved, job.flow, stored))
            else:
                assert isinstance(job.carved, CarvedEmail) and job.parsed is not None
                self._emit_email(*self.maker.email_records(job.carved, job.flow,
                                                           job.parsed, stored))
        self._append_sightings()

    def _append_sightings(self) -> None:
        """Hand the sightings of the records just made to the appending thread."""
        if self._appender is None:
            return
        appended = self._appended
        while appended and appended[0].done():
            appended.popleft().result()  # raises what appending raised
        if self._sightings:
            batch, self._sightings = self._sightings, []
            appended.append(self._appender.submit(self.maker.store.add_sightings, batch))


@dataclass
class _Job:
    """Carved bytes being stored by a worker; the records are made once it is done."""

    kind: str  # file | email
    carved: CarvedFile | CarvedEmail
    flow: FlowKey
    future: Future[Any]
    parsed: mime.ParsedMessage | None = None
    size: int = 0


def _name(flow: FlowKey) -> str:
    return f"{flow.src}:{flow.sport}->{flow.dst}:{flow.dport}"
