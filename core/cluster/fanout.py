"""A central's query, fanned out: every sensor that holds the caller's tenant and whose
stored time range meets the query's window is asked the same query in one request that
answers with its PCAP (``POST /api/v1/queries/pcap``, no workflows: no round trip between
submitting and reading), each answer's stream goes into one stable timestamp-order merge
(:func:`pcapwire.cluster.merge.merge_streams`), whose pieces the central spools as its
result, the first as soon as the merge lets it go. After the first piece of records (at
most the query's ``chunk_bytes``, so that it leaves as early as before), a piece may hold
up to :data:`MERGE_PIECE_BYTES` (or ``chunk_bytes``, when larger): the relay's cost per
piece (merge call, count, spool, the readers' wake-ups) is paid up to a quarter as often
as with the default 256 KiB chunks, and a piece still leaves as soon as the merge would
wait for an input.

Every sensor is asked at once, and each answer is read ahead by a task of its own
(:class:`Prefetch`, at most :data:`PREFETCH_PIECES` pieces): the merge reads its inputs'
headers one after the other, but no sensor waits for another to start. Until every answer
has shown its first piece, though, each is read no further than :data:`FIRST_READ_BYTES`
(:class:`FirstPieces`): no packet can leave before the last sensor's first, so the answers
that come early do not take the cores from the one the merge waits for.

A sensor that refuses, cannot be reached, falls silent for ``timeout_s`` or breaks its
stream off is *missing*: the merge goes on with the others, and the job lists the sensor
with the reason (``missing``, ``partial: true``). What it delivered before it broke off
stays in the result. Only when every sensor asked is missing and nothing arrived does the
query fail (``sensors_unavailable``). The query's ``max_bytes`` holds for each sensor's
answer and for the merged result (``result_too_large``). While it runs, the job counts the
bytes each sensor's answer brought so far (``received``).

A query that ends before its merge does (cancelled at the central, or failed) cancels the
sensors' own queries (``POST …/cancel``, the id from the answer's ``X-Pcapwire-Query-Id``):
a query request still unanswered is awaited (at most ``timeout_s``) so that the query it
starts is cancelled too, never left running.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass
from typing import Any

import aiohttp
from pcapwire import _native
from pcapwire.api.jobs import QueryJob, SourceFailed, partial_message
from pcapwire.api.routes_results import KEPT_RANGE_HEADER, QUERY_ID_HEADER, QUERY_PCAP_PATH
from pcapwire.cluster.config import SensorConfig
from pcapwire.cluster.merge import merge_streams
from pcapwire.cluster.sensors import Caller, SensorError, Sensors, reason_of, status_reason
from pcapwire.errors import QueryError
from pcapwire.pcapformat import HEADER_LEN, RECORD_LEN, sniff_header
from pcapwire.query import QuerySpec, StreamFormatter
from pcapwire.query.engine import QueryStats

PREFETCH_PIECES = 16  # pieces of one sensor's answer read ahead of the merge
FIRST_READ_BYTES = 2**20  # of one answer read before every sensor has shown its first
#: the largest piece of the merged result (or the query's ``chunk_bytes``, when larger):
#: each piece costs the relay a turn of merge, spool and wake-ups, whatever its size
MERGE_PIECE_BYTES = 2**20
_END = object()
log = logging.getLogger(__name__)

def query_body(spec: QuerySpec) -> dict[str, Any]:
    """The ``QueryRequest`` body that asks a sensor ``spec`` (no workflows; times as exact
    decimal Unix seconds)."""
    body: dict[str, Any] = {"bpf": spec.bpf, "hosts": spec.hosts, "nets": spec.nets,
                            "ports": spec.ports, "protos": spec.protos, "case": spec.case,
                            "chunk_bytes": spec.chunk_bytes, "workflows": []}
    if spec.event:
        body["event"] = spec.event
    if spec.five_tuple is not None:
        body["five_tuple"] = spec.five_tuple.to_dict()
    for key, ns in (("start", spec.start_ns), ("end", spec.end_ns)):
        if ns is not None:
            body[key] = f"{ns // 10**9}.{ns % 10**9:09d}"
    if spec.max_bytes is not None:
        body["max_bytes"] = spec.max_bytes
    return body


def piece_bytes(spec: QuerySpec) -> int:
    """The largest piece of the merged result of ``spec``: its ``chunk_bytes``, but at
    least :data:`MERGE_PIECE_BYTES`."""
    return max(spec.chunk_bytes, MERGE_PIECE_BYTES)


class RecordCounter:
    """Counts the packets and bytes (record headers included, as
    :class:`~pcapwire.query.engine.QueryStats` does) of a classic pcap byte stream fed in
    arbitrary pieces; the walk over a piece's record headers is native
    (:func:`pcapwire._native.count_records`)."""

    def __init__(self, stats: QueryStats) -> None:
        self.stats = stats
        self._record: struct.Struct | None = None  # known once the file header is
        self._swapped = False  # big-endian records
        self._head = bytearray()
        self._skip = 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        if self._record is None:  # the file header, perhaps in pieces
            view = self._fill(view, HEADER_LEN)
            if len(self._head) < HEADER_LEN:
                return
            header = sniff_header(bytes(self._head))
            if header is None:
                raise QueryError("the merged answer is not a classic pcap")
            self._record = header.record
            self._swapped = header.order != "<"
            self._head.clear()
        if self._head:  # a record header split over pieces
            view = self._fill(view, RECORD_LEN)
            if len(self._head) < RECORD_LEN:
                return
            self._skip = self._record.unpack(self._head)[2]
            self.stats.packets += 1
            self.stats.bytes += RECORD_LEN + self._skip
            self._head.clear()
        # a record's bytes are the distance to the next record's header
        packets, pos = _native.count_records(view, self._skip, swapped=self._swapped)
        self.stats.packets += packets
        self.stats.bytes += pos - self._skip
        self._skip = max(0, pos - len(view))
        self._head += view[pos:]  # empty unless a record header starts here

    def _fill(self, view: memoryview, size: int) -> memoryview:
        """Add to the pending header up to ``size`` bytes; what is left of ``view``."""
        take = size - len(self._head)
        self._head += view[:take]
        return view[take:]


class FirstPieces:
    """Whether each of ``count`` sources has shown its first piece (or ended): until all
    have, a :class:`Prefetch` reads no more than :data:`FIRST_READ_BYTES` of its own."""

    def __init__(self, count: int) -> None:
        self._left = count
        self.all_in = asyncio.Event()
        if count == 0:
            self.all_in.set()

    def arrived(self) -> None:
        self._left -= 1
        if self._left == 0:
            self.all_in.set()


class Prefetch:
    """An async iterator of ``source``'s items, read ahead (at most ``depth``) by a task
    started when it is made (held at :data:`FIRST_READ_BYTES` until ``first`` says every
    source has shown its first piece); :meth:`aclose` stops the task and closes
    ``source``."""

    def __init__(self, source: AsyncGenerator[bytes, None], first: FirstPieces,
                 depth: int = PREFETCH_PIECES) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue(depth)
        self._task = asyncio.create_task(self._pump(source, first))

    async def _pump(self, source: AsyncGenerator[bytes, None], first: FirstPieces) -> None:
        read = 0
        try:
            async with aclosing(source):
                async for item in source:
                    await self._queue.put(item)
                    if not read:
                        first.arrived()
                    read += len(item)
                    if read >= FIRST_READ_BYTES:
                        await first.all_in.wait()
        except Exception as exc:
            await self._queue.put(exc)
        else:
            await self._queue.put(_END)
        finally:
            if not read:  # ended, failed or stopped before its first piece
                first.arrived()

    def __aiter__(self) -> Prefetch:
        return self

    async def __anext__(self) -> bytes:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)
            raise StopAsyncIteration
        if isinstance(item, Exception):
            raise item
        assert isinstance(item, bytes)
        return item

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


Opened = tuple[aiohttp.ClientResponse, AsyncExitStack]  # an answer's response, and its closing


@dataclass
class Asked:
    """One sensor's part in a query: its ``POST /api/v1/queries/pcap`` until the answer's
    headers arrive (a task of its own, so that closing the answer's stream does not abandon
    a query the sensor is starting) and whether its answer ended."""

    sensor: SensorConfig
    post: asyncio.Future[Opened] | None = None
    ended: bool = False  # its whole answer arrived


class FanOut:
    """The :class:`~pcapwire.api.jobs.RemoteSource` of a central's queries."""

    def __init__(self, sensors: Sensors) -> None:
        self.sensors = sensors

    async def plan(self, tenant: str, spec: QuerySpec, actor: str, role: str) -> list[str]:
        """The sensors to ask: those of the tenant whose range meets the window (one whose
        range cannot be read is asked anyway; it shows as missing if it stays silent)."""
        if spec.flow_ids:
            raise QueryError("flow ids are a sensor's own; at the central, query by hosts, "
                             "ports or a five-tuple")
        if spec.follow:
            raise QueryError("a follow runs on one sensor; ask that sensor's API directly")
        caller = Caller(tenant, actor, role)
        candidates = self.sensors.of_tenant(tenant)

        async def meets(sensor: SensorConfig) -> bool:
            try:
                found = await self.sensors.time_range(sensor, caller)
            except SensorError:
                return True
            return found.overlaps(spec.start_ns, spec.end_ns)

        keep = await asyncio.gather(*(meets(s) for s in candidates))
        return [s.name for s, k in zip(candidates, keep, strict=True) if k]

    async def run(self, job: QueryJob) -> AsyncGenerator[bytes, None]:
        names = job.sensors or []
        caller = Caller(job.tenant, job.actor, job.role)
        body = query_body(job.spec)
        counter = RecordCounter(job.stats)
        job.received.update(dict.fromkeys(names, 0))

        def failed(name: str, reason: str) -> None:
            job.missing.append({"sensor": name, "reason": reason})

        asked = [Asked(self.sensors.sensors[n]) for n in names]
        first = FirstPieces(len(asked))
        streams = [Prefetch(self._answer(a, caller, body, job), first) for a in asked]
        sent = merged = False
        try:
            async for piece in merge_streams(streams, names, on_failure=failed,
                                             chunk_bytes=piece_bytes(job.spec),
                                             first_chunk_bytes=job.spec.chunk_bytes):
                counter.feed(piece)
                if job.spec.max_bytes is not None and job.stats.bytes > job.spec.max_bytes:
                    raise QueryError(f"the merged result exceeds the limit of "
                                     f"{job.spec.max_bytes} bytes (each sensor keeps to it, "
                                     "their sum did not); narrow the query (time window, "
                                     "hosts, ports) or raise the limit")
                job.stats.chunks += 1
                sent = True
                yield piece
                # Let the loop run between pieces: with every input's next piece already
                # read ahead, neither the merge nor the spool waits, and the readers of the
                # result would not be served until the read-ahead ran dry.
                await asyncio.sleep(0)
            merged = True
        finally:
            if not merged:
                await self._cancel(asked, caller)
        if sent:
            return
        if names and len(job.missing) == len(names):
            raise SourceFailed("sensors_unavailable", partial_message(job.missing))
        yield StreamFormatter({}).header()  # no sensor holds the window: no packet

    async def _open(self, sensor: SensorConfig, caller: Caller, body: dict[str, Any]
                    ) -> Opened:
        """The sensor's response to ``body`` at ``POST /api/v1/queries/pcap``, its headers
        read (its first bytes are in, or its refusal), and what closes it."""
        stack = AsyncExitStack()
        try:
            resp = await stack.enter_async_context(self.sensors.request(
                sensor, caller, "POST", QUERY_PCAP_PATH, json=body))
        except BaseException:
            await stack.aclose()
            raise
        return resp, stack

    async def _answer(self, asked: Asked, caller: Caller, body: dict[str, Any], job: QueryJob
                      ) -> AsyncGenerator[bytes, None]:
        """The sensor's answer to ``body``: the bytes of its PCAP as they come."""
        sensor = asked.sensor
        asked.post = asyncio.ensure_future(self._open(sensor, caller, body))
        try:
            resp, stack = await asyncio.shield(asked.post)
            async with stack:
                if resp.status != 200:
                    raise SensorError(await status_reason(resp))
                self.sensors.note_range(sensor, caller, resp.headers.get(KEPT_RANGE_HEADER))
                async for data in resp.content.iter_any():
                    job.received[sensor.name] += len(data)
                    yield data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SensorError(reason_of(exc, self.sensors.timeout_s)) from exc
        asked.ended = True

    async def _cancel(self, asked: list[Asked], caller: Caller) -> None:
        """Cancel the sensors' queries whose answers did not end, after awaiting the query
        requests still unanswered (each ends within ``timeout_s``)."""
        log.info("cancelling the queries of sensors %s", ", ".join(
            a.sensor.name for a in asked if not a.ended))
        await asyncio.gather(*(a.post for a in asked if a.post is not None),
                             return_exceptions=True)

        async def cancel(a: Asked) -> None:
            if (a.post is None or not a.post.done() or a.post.cancelled()
                    or a.post.exception() is not None):
                return
            resp, stack = a.post.result()
            await stack.aclose()  # the answer's reader, if any, closed it already
            query_id = resp.headers.get(QUERY_ID_HEADER)
            if resp.status != 200 or query_id is None or a.ended:
                return
            path = f"/api/v1/queries/{query_id}/cancel"
            try:  # 409: it had ended by itself (or saw the answer's reader leave)
                await self.sensors.json(a.sensor, caller, "POST", path, ok=(200, 409))
            except SensorError as exc:
                log.warning("sensor %s: query %s not cancelled: %s", a.sensor.name,
                            query_id, exc)

        await asyncio.gather(*map(cancel, asked))
