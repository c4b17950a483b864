"""The writer that feeds Suricata's FIFO (enginekit.fifo.FifoWriter): every byte arrives
in order, back-pressure with a byte budget, a waiting write never blocks the event loop,
paced writes on a full pipe (few system calls, the reader is not starved), abort with a
stalled reader, a reader that goes away, plain writes to a file."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from pathlib import Path

import pytest
from pcapwire.plugins.enginekit import fifo
from pcapwire.plugins.enginekit.fifo import F_GETPIPE_SZ, FifoWriter

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_BYTES = 2**20
#: Seconds after which a wait is a hang, not slowness: no assertion here depends on how
#: fast the machine is (timings are benchmarks/bench_fifo.py's figures).
HANG_GUARD_S = 120


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # a smaller pipe: the writer paces proportionally
    return r, w


def _data(size: int) -> bytes:
    return os.urandom(4096) * (size // 4096)


class Reader(threading.Thread):
    """Reads like libpcap (4 KiB per read) until end of input; ``burst`` bytes, then
    ``pause`` seconds, to stand for a reader slower than the writer. Counts the reads that
    found the pipe empty before the end (``starved``)."""

    def __init__(self, fd: int, burst: int = 0, pause: float = 0.0,
                 start: threading.Event | None = None) -> None:
        super().__init__(daemon=True)
        self.fd, self.burst, self.pause, self.start_event = fd, burst, pause, start
        self.got = bytearray()
        self.reads = self.starved = 0

    def run(self) -> None:
        if self.start_event is not None:
            # (bounded: a write that blocked the event loop would otherwise never let the
            # test release the reader, and the test would hang instead of failing)
            self.start_event.wait(HANG_GUARD_S)
        os.set_blocking(self.fd, False)
        since_pause = 0
        while True:
            try:
                block = os.read(self.fd, 4096)
            except BlockingIOError:
                self.starved += 1
                os.set_blocking(self.fd, True)
                block = os.read(self.fd, 4096)
                os.set_blocking(self.fd, False)
            if not block:
                break
            self.reads += 1
            self.got += block
            since_pause += len(block)
            if self.burst and since_pause >= self.burst:
                since_pause = 0
                time.sleep(self.pause)
        os.close(self.fd)


async def test_every_byte_arrives_in_order_with_back_pressure() -> None:
    r, w = _pipe()
    reader = Reader(r, burst=256 * 1024, pause=0.001)
    reader.start()
    writer = FifoWriter(w, asyncio.get_running_loop(), high=2 * 2**20, low=2**20)
    assert writer.pace > 0  # a pipe: paced
    data = _data(24 * 2**20)
    view = memoryview(data)
    pos, sizes = 0, [256 * 1024, 4096 * 3 + 24, 1, 2**20 + 7]
    i = 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        await writer.write(view[pos:pos + n])  # views of bytes, as the engine hands them
        pos += n
        i += 1
    await writer.close()
    await asyncio.to_thread(reader.join, HANG_GUARD_S)
    assert bytes(reader.got) == data
    assert writer.bytes_written == len(data)
    assert writer.waits > 0  # the budget was reached: write() waited for the reader
    assert writer.waits < i / 4  # ... but not once per write
    with pytest.raises(BrokenPipeError):
        await writer.write(b"late")


async def test_a_waiting_write_leaves_the_event_loop_free() -> None:
    """Functional, not timed: the writes cannot finish before the reader reads (8 MiB
    through a 1 MiB pipe and a 1 MiB budget), and while they wait the event loop goes on
    running other tasks. (How long the loop stalls meanwhile is a figure of
    benchmarks/bench_fifo.py, not a threshold here.)"""
    r, w = _pipe()
    release = threading.Event()
    reader = Reader(r, start=release)  # reads nothing until released
    reader.start()
    writer = FifoWriter(w, asyncio.get_running_loop(), high=2**20, low=2**19)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    data = _data(8 * 2**20)

    async def write_all() -> None:
        for pos in range(0, len(data), 256 * 1024):
            await writer.write(data[pos:pos + 256 * 1024])
        await writer.close()

    tick = asyncio.create_task(ticker())
    writes = asyncio.create_task(write_all())
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            while writer.waits == 0:  # until a write waits for the reader ...
                assert not writes.done(), "the writes finished without a reader"
                await asyncio.sleep(0.001)
            waiting_since = ticks
            while ticks < waiting_since + 1000:  # ... and the loop runs other tasks
                await asyncio.sleep(0.001)
        assert not writes.done() and writer.bytes_written < len(data)  # still waiting
        release.set()
        await asyncio.wait_for(writes, HANG_GUARD_S)
    finally:
        release.set()
        tick.cancel()
    await asyncio.to_thread(reader.join, HANG_GUARD_S)
    assert bytes(reader.got) == data


async def test_paced_writes_need_few_system_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader slower than the writer: a writer blocked on the full pipe would be woken
    for every 4 KiB read; the paced writer makes a few calls per pipe-full and the reader
    still finds data on nearly every read."""
    calls = 0
    real_writev = os.writev

    def counting_writev(fd: int, buffers: list[memoryview]) -> int:
        nonlocal calls
        calls += 1
        return real_writev(fd, buffers)

    monkeypatch.setattr(fifo.os, "writev", counting_writev)
    r, w = _pipe()
    reader = Reader(r, burst=128 * 1024, pause=0.002)  # about 60 MB/s
    reader.start()
    writer = FifoWriter(w, asyncio.get_running_loop())
    data = _data(16 * 2**20)
    for pos in range(0, len(data), 256 * 1024):
        await writer.write(data[pos:pos + 256 * 1024])
    await writer.close()
    await asyncio.to_thread(reader.join, HANG_GUARD_S)
    assert bytes(reader.got) == data
    assert calls < reader.reads / 8, (calls, reader.reads)
    assert reader.starved < reader.reads / 20, (reader.starved, reader.reads)


async def test_abort_with_a_reader_that_never_reads() -> None:
    r, w = _pipe()
    writer = FifoWriter(w, asyncio.get_running_loop())
    await writer.write(_data(4 * 2**20))  # more than the pipe holds
    await asyncio.sleep(0.05)
    writer.abort()
    # the writer notices within STALL_POLL_S (benchmarks/bench_fifo.py measures it); the
    # test asks only that close() ends -- with the abort's error -- and does not hang
    with pytest.raises(BrokenPipeError):
        await asyncio.wait_for(writer.close(), HANG_GUARD_S)
    assert writer.fd is None  # closed: the reader would see the end of input
    with pytest.raises(BrokenPipeError):
        await writer.write(b"x")
    os.close(r)


async def test_a_reader_that_goes_away_fails_the_next_write() -> None:
    r, w = _pipe()
    writer = FifoWriter(w, asyncio.get_running_loop())
    os.close(r)
    await writer.write(b"x" * 4096)
    async with asyncio.timeout(HANG_GUARD_S):  # the thread's write fails (EPIPE) ...
        while writer.fd is not None:
            await asyncio.sleep(0.01)
    with pytest.raises(BrokenPipeError):  # ... and the next write says so
        await writer.write(b"y")
    with pytest.raises(BrokenPipeError):
        await writer.close()


async def test_not_a_pipe_gets_plain_blocking_writes(tmp_path: Path) -> None:
    path = tmp_path / "out.pcap"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with pytest.raises(OSError):
        fcntl.fcntl(fd, F_GETPIPE_SZ)
    writer = FifoWriter(fd, asyncio.get_running_loop())
    assert writer.pace == 0
    data = _data(3 * 2**20)
    await writer.write(data[:12345])
    await writer.write(memoryview(data)[12345:])
    await writer.drain()
    assert writer.bytes_written == len(data)
    await writer.close()
    assert path.read_bytes() == data
