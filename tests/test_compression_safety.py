"""Compressed segments (issue 16): damage loses only the damaged frame's packets, kill -9
during compression never loses the original, policies, what is never compressed, disk
accounting, the custody entry, the command line."""

from __future__ import annotations

import hashlib
import io
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from captureutil import ManualSource, batches_of, packets_in, wait_for
from compressutil import compress_all, records_at
from pcaputil import read_records, tcpdump
from pcapwire import custody
from pcapwire.capture import Recorder, RecorderConfig
from pcapwire.capture.ledger import store_bytes
from pcapwire.custody.verify import verify
from pcapwire.query import QuerySpec, QueryStats
from pcapwire.query.flows import flow_dict
from pcapwire.records import FlowKey
from pcapwire.store import Store, compression
from pcapwire.store.compression import (
    PAUSE_ENV,
    compress_due,
    open_db,
    recover,
    refusal,
    storage_rows,
    store_lock,
    stored_sizes,
    stored_total,
)
from pcapwire.store.config import CompressionPolicy
from pcapwire.store.reader import compressed_path
from pcapwire.store.zstdseek import SeekableReader
from pcapwire.synth import generate

FRAME = 64 * 2**10
CLI = [sys.executable, "-m", "pcapwire.cli"]
ON_SEAL = CompressionPolicy(policy="on-seal", frame_bytes=FRAME)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cz") / "synth.pcap"
    generate(path, 3 * 2**20, seed=161)
    return path


def _store(root: Path, cap: Path) -> Store:
    store = Store(root)
    store.ingest([cap], segment_max_bytes=2**20)
    return store


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- damage --------------------------------------------------------------------------------
def test_a_damaged_frame_loses_only_its_packets(tmp_path: Path, synth: Path) -> None:
    plain, packed = _store(tmp_path / "plain", synth), _store(tmp_path / "packed", synth)
    with plain, packed:
        seg = packed.catalog.segments()[1]
        by_offset = records_at((packed.root / seg.path).read_bytes())
        compress_all(packed.root, FRAME)
        zst = compressed_path(packed.root, seg.path)
        with SeekableReader(zst) as reader:
            frame = reader.table.frames[3]
        data = bytearray(zst.read_bytes())
        data[frame.offset + frame.size // 2] ^= 0x40
        zst.write_bytes(bytes(data))
        lost = {rec for at, rec in by_offset.items()
                if frame.plain_offset <= at < frame.plain_end}
        assert len(lost) > 10

        def without_lost(out: bytes) -> list[bytes]:
            return [r for r in read_records(out)[1] if r not in lost]

        buf = io.BytesIO()
        got = packed.query_engine().write(QuerySpec(), buf, record=False)
        full = plain.query_engine().to_bytes(QuerySpec())
        assert buf.getvalue() == full[:24] + b"".join(without_lost(full))
        (damage,) = got.damage
        assert damage.startswith(f"{zst}: frame 3 at compressed byte {frame.offset}: does "
                                 "not decompress (")
        assert damage.endswith(f"; plain bytes {frame.plain_offset}-{frame.plain_end} are "
                               "lost")
        # an indexed query of a flow with packets in that frame
        row = next(r for r in plain.catalog.flows() if r.ipver and any(
            rec in lost for rec in read_records(plain.query_engine().to_bytes(
                QuerySpec(flow_ids=[r.id])))[1]))
        f = flow_dict(row)
        key = FlowKey(6 if f["proto"] == "tcp" else 17, f["src_ip"], f["src_port"],
                      f["dest_ip"], f["dest_port"])
        want = plain.query_engine().to_bytes(QuerySpec(five_tuple=key))
        stats = QueryStats()
        chunks = list(packed.query_engine().iter_chunks(QuerySpec(five_tuple=key),
                                                        stats=stats))
        assert b"".join(r for c in chunks for r in read_records(c.data)[1]) == \
            b"".join(without_lost(want))
        assert len(stats.damage) == 1 and "frame 3" in stats.damage[0]
        # the command line: warning, exit 1 (partial), the rest of the result written
        out = tmp_path / "q.pcap"
        cli = subprocess.run([*CLI, "--data-dir", str(packed.root), "query", "-w", str(out)],
                             capture_output=True, text=True)
        assert cli.returncode == 1 and "frame 3 at compressed byte" in cli.stderr
        assert out.read_bytes() == full[:24] + b"".join(without_lost(full))
        ex = subprocess.run([*CLI, "--data-dir", str(packed.root), "segments", "export",
                             str(seg.id), "-w", str(tmp_path / "seg.pcap")],
                            capture_output=True, text=True)
        assert ex.returncode == 1 and f"frame 3 at compressed byte {frame.offset}" in ex.stderr
        assert (tmp_path / "seg.pcap").read_bytes() == \
            (plain.root / plain.catalog.segments()[1].path).read_bytes()[:frame.plain_offset] \
            + (plain.root / plain.catalog.segments()[1].path).read_bytes()[frame.plain_end:]
        # the stock tool refuses the damaged file (its checksum), as it should
        assert subprocess.run(["zstd", "-t", "-q", str(zst)], capture_output=True).returncode


def test_a_damaged_seek_table_loses_that_segment_only(tmp_path: Path, synth: Path) -> None:
    plain, packed = _store(tmp_path / "plain", synth), _store(tmp_path / "packed", synth)
    with plain, packed:
        seg = packed.catalog.segments()[0]
        gone = set(records_at((packed.root / seg.path).read_bytes()).values())
        compress_all(packed.root, FRAME)
        zst = compressed_path(packed.root, seg.path)
        zst.write_bytes(zst.read_bytes()[:-1])
        stats = QueryStats()
        chunks = list(packed.query_engine().iter_chunks(QuerySpec(), stats=stats))
        full = read_records(plain.query_engine().to_bytes(QuerySpec()))[1]
        assert [r for c in chunks for r in read_records(c.data)[1]] == \
            [r for r in full if r not in gone]
        size = zst.stat().st_size
        last4 = int.from_bytes(zst.read_bytes()[-4:], "little")
        assert stats.damage == [f"{zst} at compressed byte {size - 4}: no seek table: the "
                                f"last 4 bytes are {last4:#010x}, not the seekable magic "
                                "0x8f92eab1"]


# -- kill -9 -------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", compression.STAGES)
def test_kill_9_during_compression_never_loses_the_original(tmp_path: Path, synth: Path,
                                                            stage: str) -> None:
    store = _store(tmp_path / "s", synth)
    with store:
        seg = store.catalog.segments()[0]
        plain = store.root / seg.path
        sha = _sha(plain)
        before = store.query_engine().to_bytes(QuerySpec())
    env = {**os.environ, PAUSE_ENV: stage}
    child = subprocess.Popen([*CLI, "--data-dir", str(tmp_path / "s"), "segments", "compress",
                              str(seg.id)], stdout=subprocess.PIPE, env=env)
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], 60)
    assert ready, "the child never reached the stage"
    assert child.stdout.readline() == f"compression paused at {stage}\n".encode()
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    zst = compressed_path(tmp_path / "s", seg.path)
    part = zst.with_name(zst.name + ".part")
    assert _sha(plain) == sha  # the original is whole, whatever the stage
    assert part.exists() == (stage == "written")
    assert zst.exists() == (stage != "written")
    with Store(tmp_path / "s") as store:
        assert (seg.id in storage_rows(store.catalog.db)) == (stage == "committed")
        assert store.query_engine().to_bytes(QuerySpec()) == before
        with store_lock(store.root):
            done = recover(store.root)
        assert len(done) == 1
        assert not part.exists()
        assert zst.exists() == (stage == "committed")
        assert plain.exists() == (stage != "committed")
        assert store.query_engine().to_bytes(QuerySpec()) == before
        compress_all(store.root, FRAME)
        assert store.query_engine().to_bytes(QuerySpec()) == before
        assert sorted(storage_rows(store.catalog.db)) == [s.id for s in
                                                          store.catalog.segments()]
    # one custody entry per compressed segment (the one cut short is logged by recovery)
    entries = [json.loads(line) for line in custody.read(tmp_path / "s", None)]
    logged = [e["details"] for e in entries if e["action"] == "segment.compress"]
    assert sorted(d["segment_id"] for d in logged) == sorted(storage_rows_of(tmp_path / "s"))
    assert [d["segment_id"] for d in logged if d.get("recovered")] == \
        ([seg.id] if stage == "committed" else [])


def storage_rows_of(root: Path) -> list[int]:
    with open_db(root) as db:
        return list(storage_rows(db))


def test_ingest_leaves_compression_files_to_recovery(tmp_path: Path, synth: Path) -> None:
    store = _store(tmp_path / "s", synth)
    with store:
        seg = store.catalog.segments()[0]
        zst = compressed_path(store.root, seg.path)
        part = zst.with_name(zst.name + ".part")  # a compression in progress
        part.write_bytes(b"being written")
        stray = compressed_path(store.root, "segments/000001/gone.pcap")
        stray.write_bytes(b"left by a deleted segment")
        store.ingest([synth])  # already ingested: only the orphan sweep runs
        assert part.exists() and stray.exists()
        with store_lock(store.root):
            assert len(recover(store.root)) == 2
        assert not part.exists() and not stray.exists()


# -- policies and what is never compressed -------------------------------------------------
def test_policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = tmp_path / "old.pcap", tmp_path / "new.pcap"
    generate(old, 300_000, seed=1, start_s=1_600_000_000)
    generate(new, 300_000, seed=2, start_s=int(time.time()) - 60)
    with Store(tmp_path / "s") as store:
        store.ingest([old, new])
        old_id, new_id = (s.id for s in store.catalog.segments())
        assert compress_due(store, CompressionPolicy(policy="never")) == 0
        day = CompressionPolicy(policy="after-age", after_age_s=86400, frame_bytes=FRAME)
        assert compress_due(store, day) == 1
        assert sorted(storage_rows(store.catalog.db)) == [old_id]
        assert compress_due(store, day) == 0
        assert compress_due(store, ON_SEAL) == 1
        assert sorted(storage_rows(store.catalog.db)) == [old_id, new_id]
    # the round budget: at least one segment per call, none started after it
    monkeypatch.setattr(compression, "ROUND_BUDGET_S", 0.0)
    with Store(tmp_path / "t") as store:
        store.ingest([old, new])
        assert [compress_due(store, ON_SEAL) for _ in range(3)] == [1, 1, 0]
    with Store(tmp_path / "u") as store:
        store.ingest([old])
        stop = threading.Event()
        stop.set()
        assert compress_due(store, ON_SEAL, stop) == 0  # stopped before it began
        with store_lock(store.root):
            assert compress_due(store, ON_SEAL) == 0  # another compressor holds the lock
        assert not list(store.root.rglob("*.zst*"))


def test_the_compressor_thread_runs_at_the_lowest_priority() -> None:
    seen: list[int] = []

    def probe() -> None:
        compression.lower_priority()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    assert seen == [compression.NICE]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) != compression.NICE


def test_open_and_in_place_segments_are_never_compressed(tmp_path: Path, synth: Path) -> None:
    batches = batches_of(synth)
    src = ManualSource()
    rec = Recorder(tmp_path / "rec", RecorderConfig(commit_interval=0.05, status_interval=0.1,
                                                    rotate_seconds=0, disk_reserve=0))
    rec.start([src])
    try:
        src.push(*batches)

        def committed() -> bool:
            with Store(tmp_path / "rec") as s:
                return bool(s.catalog.stats()["packets"] == packets_in(batches))

        wait_for(committed, what="the packets committed")
        with Store(tmp_path / "rec") as store:
            (live,) = store.root.rglob("*.pcap.live")
            assert compress_due(store, ON_SEAL) == 0
            with open_db(store.root) as db:
                (seg,) = store.catalog.segments()
                assert refusal(store.root, db, seg.id) == \
                    f"segment {seg.id} is still being recorded"
            assert live.exists() and not list(store.root.rglob("*.zst*"))
        src.end()
        wait_for(lambda: rec.inputs_ended, what="the input sealed")
    finally:
        rec.stop()
    with Store(tmp_path / "rec") as store:
        assert compress_due(store, ON_SEAL) == 1
        assert store.query_engine().to_bytes(QuerySpec()) == tcpdump(synth)
    with Store(tmp_path / "inplace") as store:
        store.ingest([synth], in_place=True)
        (seg,) = store.catalog.segments()
        assert compress_due(store, ON_SEAL) == 0
        with open_db(store.root) as db:
            assert "indexed in place" in (refusal(store.root, db, seg.id) or "")
        assert stored_sizes(store.catalog) == {seg.id: 0}


# -- accounting, custody, the command line -------------------------------------------------
def test_disk_accounting_custody_and_cli(tmp_path: Path, synth: Path) -> None:
    root = tmp_path / "s"
    with _store(root, synth) as store:
        segs = store.catalog.segments()
        shas = {s.id: _sha(root / s.path) for s in segs}
        cli = subprocess.run([*CLI, "--data-dir", str(root), "segments", "compress",
                              str(segs[0].id), str(segs[2].id), "--frame-bytes", "64 KiB"],
                             capture_output=True, text=True)
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.count(" frames)") == 2
        zsts = {s.id: compressed_path(root, s.path) for s in segs}
        want = {s.id: zsts[s.id].stat().st_size if s.id in (segs[0].id, segs[2].id)
                else s.size for s in segs}
        assert stored_sizes(store.catalog) == want
        assert stored_total(store.catalog) == store_bytes(store.catalog) == sum(want.values())
        listed = [json.loads(line) for line in subprocess.run(
            [*CLI, "--data-dir", str(root), "segments", "list", "--json"], capture_output=True,
            text=True, check=True).stdout.splitlines()]
        assert {s["id"]: s["stored_size"] for s in listed} == want
        assert [s["codec"] for s in listed] == ["zstd-seekable", "pcap", "zstd-seekable"]
        entries = [json.loads(line) for line in custody.read(root, None)]
        compressed = [e for e in entries if e["action"] == "segment.compress"]
        assert [e["objects"][0]["id"] for e in compressed] == [segs[0].id, segs[2].id]
        for e in compressed:
            plain_obj, zst_obj = e["objects"]
            assert plain_obj["sha256"] == shas[plain_obj["id"]]
            assert zst_obj["sha256"] == _sha(zsts[zst_obj["id"]])
            assert zst_obj["size"] == want[zst_obj["id"]]
            assert e["actor"] == custody.actor_cli()
        check = verify(root, None)  # `pcapwire custody verify`: chain and files agree
        assert check.ok and check.files_checked == 3, check.problems
        for s in segs:  # export gives the plain pcap, compressed or not
            out = tmp_path / f"{s.id}.pcap"
            subprocess.run([*CLI, "--data-dir", str(root), "segments", "export", str(s.id),
                            "-w", str(out)], check=True)
            assert _sha(out) == shas[s.id]
        again = subprocess.run([*CLI, "--data-dir", str(root), "segments", "compress",
                                str(segs[0].id), "999"], capture_output=True, text=True)
        assert again.returncode == 1
        assert f"segment {segs[0].id} is already compressed" in again.stderr
        assert "segment 999 does not exist" in again.stderr
        usage = subprocess.run([*CLI, "--data-dir", str(root), "segments", "compress",
                                "--frame-bytes", "1 KiB", "--all"], capture_output=True,
                               text=True)
        assert usage.returncode == 2 and "between 64 KiB and 64 MiB" in usage.stderr
