"""Retention beside a running recorder: sealed segments deleted while it records (nothing
dropped, nothing open touched), and a full disk of protected data only: the alarm in the
status (when_full drop: capture goes on, counting disk drops) or a clean stop."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from captureutil import ManualSource, batches_of, packets_in, wait_for
from pcapwire.capture import Recorder, RecorderConfig
from pcapwire.capture.status import read_status, status_line
from pcapwire.retention.state import read_state
from pcapwire.store import Store
from pcapwire.store.config import save
from pcapwire.synth import generate
from test_retention import tmpfs


def config(**kw: object) -> RecorderConfig:
    base: dict[str, object] = {"commit_interval": 0.05, "status_interval": 0.1,
                               "rotate_seconds": 0, "disk_reserve": 0}
    return RecorderConfig(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cap") / "synth.pcap"
    generate(path, 3 * 2**20, seed=7)
    return path


def expired(data_dir: Path) -> list[tuple[int, int]]:
    with Store(data_dir) as store:
        return store.catalog.db.execute(
            "SELECT id, packets FROM expired_segments ORDER BY id").fetchall()


def test_sealed_segments_go_while_recording(tmp_path: Path, synth: Path) -> None:
    """A 1 MiB budget while 3 MiB are recorded in 128 KiB segments: the maintenance thread
    deletes sealed segments oldest first, never drops a packet, and every packet is either
    stored or counted as expired."""
    data = tmp_path / "store"
    Store(data).close()
    save(data, {"retention": {"high_watermark": "1 MiB", "low_watermark": "512 KiB",
                              "interval": "50ms"}})
    batches = batches_of(synth)
    sent = packets_in(batches)
    src = ManualSource()
    rec = Recorder(data, config(segment_bytes=128 * 2**10))
    rec.start([src])
    try:
        src.push(*batches)
        wait_for(lambda: rec.totals()["test0"]["packets"] == sent, what="all recorded")
        wait_for(lambda: (rec.retention or {}).get("deleted_segments", 0) >= 10,
                 what="retention deleting beside the recorder")
    finally:
        src.end()
        wait_for(lambda: rec.inputs_ended, what="the inputs sealed")
        rec.stop()
    totals = rec.totals()["test0"]
    assert totals["backlog_drops"] == totals["disk_drops"] == 0 and rec.write_errors == 0
    gone = expired(data)
    with Store(data) as store:
        kept = store.catalog.segments()
        assert sum(s.packets for s in kept) + sum(p for _i, p in gone) == sent
        assert max(i for i, _p in gone) < min(s.id for s in kept)  # oldest first
    assert rec.last_status["retention"]["alarm"] is False


@pytest.mark.parametrize("when_full", ["drop", "stop"])
def test_full_disk_of_protected_data(tmp_path: Path, synth: Path, when_full: str) -> None:
    """A 4 MiB tmpfs already above the 50 % high mark with other files, nothing of the
    store deletable: the alarm is raised (retention state, the recorder's status line);
    with drop the recorder records on and counts what the disk refused, with stop it stops
    cleanly by itself."""
    with tmpfs(tmp_path / "fs", "4m") as mnt:
        data = mnt / "store"
        Store(data).close()
        save(data, {"retention": {"high_watermark": "50%", "low_watermark": "40%",
                                  "interval": "50ms", "when_full": when_full}})
        (mnt / "ballast").write_bytes(b"\0" * (2 * 2**20 + 2**19))
        src = ManualSource()
        rec = Recorder(data, config(disk_reserve=256 * 2**10))  # the catalog still commits
        rec.start([src])
        try:
            src.push(*batches_of(synth))
            if when_full == "stop":
                rec.wait(threading.Event())  # returns by itself
                assert rec.stop_reason is not None and "store is full" in rec.stop_reason
            else:
                doc = wait_for(lambda: (d := read_status(data / "capture" / "status.json"))
                               and (d.get("retention") or {}).get("alarm")
                               and d["interfaces"]["test0"]["disk_drops"] > 0 and d,
                               what="the alarm and disk drops in the status")
                assert "RETENTION ALARM" in status_line(doc)
                assert rec.stop_reason is None
        finally:
            src.end()
            rec.stop()
        state = read_state(data)
        assert state is not None and state["alarm"] and state["when_full"] == when_full
        assert expired(data) == []
