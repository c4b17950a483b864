"""The recorder core (issue 11): live segments queryable after each commit, rotation by size
and by the clock, loss accounting, a full disk, kill -9 and recovery.

Inputs here are sources the test feeds (the native reader's batches of real captures);
tests/test_capture_inputs.py covers stdin and PCAP-over-IP, the netns tests the kernel."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from captureutil import ManualSource, batches_of, ns_records, packets_in, wait_for, with_times
from pcaputil import read_records, tcpdump
from pcapwire import _native
from pcapwire.capture import Recorder, RecorderConfig
from pcapwire.capture.backlog import Backlog, Queued
from pcapwire.capture.committer import Committer
from pcapwire.capture.config import ROTATE_GRACE
from pcapwire.capture.ledger import add_source, start_run
from pcapwire.capture.recovery import recover
from pcapwire.capture.segment import LiveSegment, meta_ts
from pcapwire.capture.status import LatencyHistogram, SourceCounters, read_status
from pcapwire.capture.writer import SourceInfo, SourceWriter
from pcapwire.errors import ConfigError
from pcapwire.query import QuerySpec
from pcapwire.store import Store
from pcapwire.store.catalog import Catalog
from pcapwire.synth import generate

META = _native.META_SIZE


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cap") / "synth.pcap"
    generate(path, 3 * 2**20, seed=5)
    return path


def config(**kw) -> RecorderConfig:
    base = {"commit_interval": 0.05, "status_interval": 0.1, "rotate_seconds": 0,
            "disk_reserve": 0}
    return RecorderConfig(**{**base, **kw})


def stored(data_dir: Path, spec: QuerySpec | None = None) -> list[bytes]:
    with Store(data_dir) as store:
        return read_records(store.query_engine().to_bytes(spec or QuerySpec()))[1]


def committed(data_dir: Path) -> int:
    with Store(data_dir) as store:
        return store.catalog.stats()["packets"]


def states(data_dir: Path) -> list[str]:
    with Store(data_dir) as store:
        return [r[0] for r in store.catalog.db.execute(
            "SELECT state FROM capture_segments ORDER BY segment_id")]


def finish(rec: Recorder, *sources: ManualSource) -> None:
    """End the sources, wait (bounded) until they are sealed, stop the recorder."""
    for src in sources:
        src.end()
    try:
        wait_for(lambda: rec.inputs_ended, what="the inputs sealed")
    finally:
        rec.stop()


@contextlib.contextmanager
def manual_writer(root: Path, cfg: RecorderConfig) -> Iterator[SourceWriter]:
    """A writer the test drives step by step (no writer thread), with a real committer."""
    Store(root).close()
    committer = Committer(root, LatencyHistogram())
    committer.start()
    run = committer.call(lambda cat: start_run(cat, ["manual"]))
    source = committer.call(lambda cat: add_source(cat, run, "manual"))
    writer = SourceWriter(root, SourceInfo(run, source, "manual", "manual"), Backlog(1 << 30),
                          SourceCounters("manual"), committer, cfg)
    try:
        yield writer
    finally:
        writer.finish()
        committer.stop()


def queued(batch: tuple) -> Queued:
    n = len(batch[4]) // META
    return Queued(batch, n, meta_ts(batch[4], 0), meta_ts(batch[4], n - 1))


def test_open_segment_is_queryable_after_each_commit(tmp_path: Path, synth: Path) -> None:
    expected = read_records(tcpdump(synth))[1]
    batches = batches_of(synth)
    half = len(batches) // 2
    n1 = packets_in(batches[:half])
    src = ManualSource()
    rec = Recorder(tmp_path, config(rotate_seconds=3600))
    rec.start([src])
    try:
        src.push(*batches[:half])
        wait_for(lambda: committed(tmp_path) == n1, what="the first half committed")
        live = list(tmp_path.rglob("*.pcap.live"))
        assert len(live) == 1 and not list(tmp_path.rglob("*.pcap"))
        assert states(tmp_path) == ["open"]
        assert stored(tmp_path) == expected[:n1]  # the open segment, read through .live
        p80 = set(read_records(tcpdump(synth, "port 80"))[1])  # an indexed query too
        assert stored(tmp_path, QuerySpec(ports=[80])) == [r for r in expected[:n1] if r in p80]
        src.push(*batches[half:])
    finally:
        finish(rec, src)
    assert stored(tmp_path) == expected
    assert not list(tmp_path.rglob("*.live")) and states(tmp_path) == ["sealed"]
    doc = read_status(tmp_path / "capture" / "status.json")
    assert doc is not None and doc["state"] == "stopped" and doc["pid"] == os.getpid()
    assert doc["interfaces"]["test0"]["packets"] == len(expected)
    assert doc["latency_hist"]["count"] == len(expected)  # (old packet times: > 5 s)


def test_a_reader_never_reads_past_the_committed_size(tmp_path: Path, synth: Path) -> None:
    batches = batches_of(synth)
    expected = read_records(tcpdump(synth))[1]
    with manual_writer(tmp_path, config()) as writer:
        writer.handle(queued(batches[0]))
        writer.commit()
        n1 = packets_in(batches[:1])
        wait_for(lambda: committed(tmp_path) == n1, what="the first commit")
        writer.handle(queued(batches[1]))  # written, not committed
        (live,) = tmp_path.rglob("*.pcap.live")
        with Store(tmp_path) as store:
            (seg,) = store.catalog.segments()
        assert live.stat().st_size > seg.size
        assert stored(tmp_path) == expected[:n1]
        p80 = set(read_records(tcpdump(synth, "port 80"))[1])
        assert stored(tmp_path, QuerySpec(ports=[80])) == [r for r in expected[:n1] if r in p80]
    assert stored(tmp_path) == expected[:packets_in(batches[:2])]


def test_rotation_by_size(tmp_path: Path, synth: Path) -> None:
    limit = 256 * 1024
    src = ManualSource()
    rec = Recorder(tmp_path, config(segment_bytes=limit))
    rec.start([src])
    src.push(*batches_of(synth))
    finish(rec, src)
    with Store(tmp_path) as store:
        segs = store.catalog.segments()
    assert len(segs) >= synth.stat().st_size // (limit + 128 * 1024) > 1
    assert all(s.size < limit + 64 * 1024 + 65535 for s in segs)
    assert all(s.size == (tmp_path / s.path).stat().st_size for s in segs)
    assert set(states(tmp_path)) == {"sealed"}
    assert stored(tmp_path) == read_records(tcpdump(synth))[1]


def test_rotation_is_aligned_to_the_clock(tmp_path: Path, synth: Path) -> None:
    """--rotate 60 seals at every full minute of the clock (not 60 s after the first
    packet): packets 45 s past a minute to 2.5 minutes later land in 4 segments whose
    windows are the clock's minutes, including batches that straddle a minute and batches
    that arrive late (0.3 s after their last packet, within the grace period)."""
    start_s = 1_700_000_000 + 25  # 45 s past a minute
    timed = tmp_path / "timed.pcap"
    times = with_times(synth, timed, start_s * 10**9, 50_000_000, count=3000)  # 150 s
    now = [float(start_s)]
    cfg = config(rotate_seconds=60, clock=lambda: now[0])
    root = tmp_path / "store"
    with manual_writer(root, cfg) as writer:
        for batch in batches_of(timed, 8 * 1024):
            now[0] = meta_ts(batch[4], len(batch[4]) // META - 1) / 1e9 + 0.3
            writer.handle(queued(batch))
        assert len(writer.segments) == 1
        now[0] = writer.window_end + ROTATE_GRACE  # no traffic: sealed by the clock alone
        writer.tick()
        assert not writer.segments
    with Store(root) as store:
        segs = sorted(store.catalog.segments(), key=lambda s: s.first_ns)
    minute = 60 * 10**9
    windows = [s.first_ns // minute for s in segs]
    assert windows == list(range(windows[0], windows[0] + 4))
    assert all(s.last_ns // minute == s.first_ns // minute for s in segs)
    assert sum(s.packets for s in segs) == len(times)
    for seg in segs:
        stamp = seg.path.rsplit("/", 1)[1].split("-", 1)[0]
        assert stamp == time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seg.first_ns // minute * 60))
    assert stored(root) == read_records(tcpdump(timed))[1]


def test_backlog_overflow_is_counted_exactly(tmp_path: Path, synth: Path) -> None:
    """A one-byte backlog and a writer that is held: the first batch waits in the backlog,
    every other one is dropped and counted; sent == recorded + backlog drops, in the
    counters, the status file and the catalog's loss table."""
    batches = batches_of(synth)
    sent = packets_in(batches)
    gate = threading.Event()
    src = ManualSource()
    src.kernel_drops = 7
    rec = Recorder(tmp_path, config(queue_bytes=1, writer_gate=gate))
    rec.start([src])
    src.push(*batches)
    wait_for(lambda: rec.totals()["test0"]["backlog_drops"] == sent - packets_in(batches[:1]),
             what="the overflow counted")
    gate.set()
    finish(rec, src)
    totals = rec.totals()["test0"]
    recorded = totals["packets"]
    assert recorded == packets_in(batches[:1])
    assert totals["backlog_drops"] == sent - recorded and totals["disk_drops"] == 0
    assert totals["kernel_drops"] == 7
    doc = read_status(tmp_path / "capture" / "status.json")
    assert doc is not None and doc["interfaces"]["test0"]["backlog_drops"] == sent - recorded
    with Store(tmp_path) as store:
        loss = store.catalog.db.execute(
            "SELECT sum(backlog_drops), sum(kernel_drops), sum(disk_drops) FROM capture_loss "
            "WHERE interface='test0'").fetchone()
    assert loss == (sent - recorded, 7, 0)
    assert stored(tmp_path) == read_records(tcpdump(synth))[1][:recorded]
    out = subprocess.run([sys.executable, "-m", "pcapwire.cli", "--data-dir", str(tmp_path),
                          "capture", "status", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["loss"]["interfaces"]["test0"]["backlog_drops"] == sent - recorded
    assert info["loss"]["interfaces"]["test0"]["packets"] == recorded
    assert info["running"] is False


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "2m") -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)]).returncode != 0:  # busy: a failed test
            subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.parametrize("reserve", [0, 256 * 1024], ids=["enospc", "reserve"])
def test_full_disk_keeps_capturing_counts_and_keeps_the_store(tmp_path: Path, synth: Path,
                                                              reserve: int) -> None:
    """On a 2 MiB tmpfs, 3 MiB of packets: capture goes on to the end of the input, what
    could not be written is counted (disk drops, write errors) and shown in the status
    file; the store opens and queries; with the disk reserve the catalog stays writable,
    without it a restart recovers every packet that was written once space is free."""
    batches = batches_of(synth)
    sent = packets_in(batches)
    input_records = read_records(tcpdump(synth))[1]
    with small_tmpfs(tmp_path / "small") as mnt:
        data_dir = mnt / "store"
        Store(data_dir).close()
        ballast = mnt / "ballast"
        ballast.write_bytes(b"\0" * 384 * 1024)
        src = ManualSource()
        rec = Recorder(data_dir, config(disk_reserve=reserve))
        rec.start([src])
        try:
            src.push(*batches)
            status = data_dir / "capture" / "status.json"
            doc = wait_for(lambda: (d := read_status(status)) and d["write_errors"] > 0 and d,
                           what="write errors in the status file")
            assert doc["interfaces"]["test0"]["disk_drops"] > 0
        finally:
            finish(rec, src)
        totals = rec.totals()["test0"]
        recorded, dropped = totals["packets"], totals["disk_drops"]
        assert recorded > 0 and dropped > 0 and rec.write_errors > 0
        assert recorded + totals["backlog_drops"] == sent and totals["backlog_drops"] == dropped
        with Store(data_dir) as store:  # opens and answers on the full disk
            n = store.catalog.stats()["packets"]
        got = stored(data_dir)
        assert len(got) == n <= recorded and len(set(got)) == n
        positions = {rec_: i for i, rec_ in enumerate(input_records)}
        assert all(r in positions for r in got)
        assert [positions[r] for r in got] == sorted(positions[r] for r in got)
        if reserve:
            assert n == recorded
            with Store(data_dir) as store:
                assert store.catalog.db.execute(
                    "SELECT sum(disk_drops) FROM capture_loss").fetchone()[0] == dropped
        ballast.unlink()
        again = Recorder(data_dir, config())
        again.start([])
        again.stop()
        got = stored(data_dir)
        assert len(got) == recorded == committed(data_dir)
        assert [positions[r] for r in got] == sorted(positions[r] for r in got)
        assert not list(data_dir.rglob("*.live"))


def test_kill_9_loses_nothing_written_and_a_restart_continues(tmp_path: Path,
                                                              synth: Path) -> None:
    """A recorder fed on stdin is killed (SIGKILL) once its status file shows the first
    part written; a cut record is appended to its open segment as if the kill had hit a
    write. The store opens; the restart recovers the segment up to its last whole record,
    then records the second part: every packet once, byte for byte."""
    data = synth.read_bytes()
    records = ns_records(data)
    first = len(records) // 2
    part1 = data[:24] + b"".join(records[:first])
    part2 = data[:24] + b"".join(records[first:])
    data_dir = tmp_path / "store"
    cmd = [sys.executable, "-m", "pcapwire.cli", "--data-dir", str(data_dir), "capture",
           "--from", "-", "--commit-interval", "0.2", "--rotate", "0", "--progress", "none"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(part1)
    proc.stdin.flush()
    status = data_dir / "capture" / "status.json"
    wait_for(lambda: (d := read_status(status)) and d["pid"] == proc.pid
             and d["interfaces"].get("stdin", {}).get("packets") == first,
             what="the first part written")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    (live,) = data_dir.rglob("*.pcap.live")
    with live.open("ab") as f:
        f.write(records[first][:30])  # a record cut mid-write
    with Store(data_dir) as store:
        assert store.catalog.stats()["packets"] <= first
    assert set(stored(data_dir)) <= set(read_records(tcpdump(synth))[1][:first])
    rerun = subprocess.run(cmd, input=part2, capture_output=True)
    assert rerun.returncode == 0, rerun.stderr
    assert b"recovered 1 segment" in rerun.stderr
    assert stored(data_dir) == read_records(tcpdump(synth))[1]
    assert not list(data_dir.rglob("*.live"))
    assert states(data_dir) == ["recovered", "sealed"]


def test_a_live_file_without_a_row_is_adopted(tmp_path: Path, synth: Path) -> None:
    """Died before its first commit: the .live file is indexed whole and kept."""
    Store(tmp_path).close()
    batches = batches_of(synth)[:3]
    seg = LiveSegment(tmp_path, "segments/capture/000009-eth9/x.pcap", 1, 65535, 6)
    seg.open()
    for b in batches:
        seg.append(b[3], b[4])
    with seg.live_path.open("ab") as f:
        f.write(b"\x01\x02\x03")  # the start of a record header
    cat = Catalog(tmp_path / "catalog.sqlite")
    try:
        report = recover(cat, tmp_path)
    finally:
        cat.close()
    assert report.segments == ["segments/capture/000009-eth9/x.pcap"]
    assert report.packets == packets_in(batches) and report.truncated_bytes == 3
    assert stored(tmp_path) == read_records(tcpdump(synth))[1][:packets_in(batches)]


def test_one_recorder_per_data_directory(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, config())
    rec.start([])
    try:
        with pytest.raises(ConfigError, match="one recorder per data directory"):
            Recorder(tmp_path, config()).start([])
    finally:
        rec.stop()


def test_ingest_beside_a_recorder_leaves_its_open_segment_alone(tmp_path: Path,
                                                                synth: Path) -> None:
    other = tmp_path / "other.pcap"
    generate(other, 200_000, seed=9, start_s=1_600_000_000)
    data_dir = tmp_path / "store"
    src = ManualSource()
    rec = Recorder(data_dir, config())
    rec.start([src])
    try:
        batches = batches_of(synth)
        src.push(*batches[:4])
        wait_for(lambda: committed(data_dir) == packets_in(batches[:4]), what="a commit")
        with Store(data_dir) as store:
            store.ingest([other])  # its orphan clean-up runs first
        assert len(list(data_dir.rglob("*.pcap.live"))) == 1
    finally:
        finish(rec, src)
    assert stored(data_dir) == (read_records(tcpdump(other))[1]
                                + read_records(tcpdump(synth))[1][:packets_in(batches[:4])])
