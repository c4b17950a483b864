"""Retention (issue 12): a small tmpfs under continuous ingest stays under its high mark and
never fails for space, oldest segments go first, flows keep their metadata, a query says
exactly which part of its window expired; byte budgets, max_age, flow_max_age, a crash
between the catalog and the disk, protected segments, the alarm."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pcaputil import read_records
from pcapwire.query import QuerySpec
from pcapwire.query.flows import find_flows
from pcapwire.query.loss import loss_in_window
from pcapwire.retention import enforce, status
from pcapwire.retention.delete import _forget
from pcapwire.retention.plan import survey
from pcapwire.retention.state import read_state
from pcapwire.retention.usage import filesystem
from pcapwire.store import Store
from pcapwire.store.config import from_dict, load, save
from pcapwire.store.maintenance import IngestRetention
from pcapwire.synth import generate

DAY = 86400


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)]).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def captures(directory: Path, count: int, size: int, first_s: int, step_s: int) -> list[Path]:
    """``count`` generated captures of about ``size`` bytes, the i-th starting at
    ``first_s + i * step_s`` (so they are in time order)."""
    out = []
    for i in range(count):
        path = directory / f"cap{i:02d}.pcap"
        generate(path, size, seed=i + 1, start_s=first_s + i * step_s)
        out.append(path)
    return out


def policy(**retention: object):
    return from_dict({"retention": retention}, "test").retention


def segment_ids(store: Store) -> list[int]:
    return [s.id for s in store.catalog.segments()]


def expired_rows(store: Store) -> list[tuple]:
    return store.catalog.db.execute("SELECT id, reason, removed FROM expired_segments "
                                    "ORDER BY id").fetchall()


def test_continuous_ingest_into_a_small_tmpfs(tmp_path: Path) -> None:
    """24 MiB of captures into a 16 MiB tmpfs with watermarks 60 % / 45 %: after every
    checkpoint the file system is at most at its high mark, no ingest fails, the oldest
    segments went (exact ids), their flows keep their rows, and a query over everything
    names the expired span with its packets exactly."""
    inputs = captures(tmp_path, 8, 3 * 2**20, 1_700_000_000, 100)
    with tmpfs(tmp_path / "fs", "16m") as mnt, Store(mnt / "store") as store:
        save(store.root, {"retention": {"high_watermark": "60%", "low_watermark": "45%"}})
        guard = IngestRetention(store)
        samples: list[tuple[int, int]] = []

        def checkpoint(_n: int) -> None:
            guard.checkpoint()
            samples.append(filesystem(store.root))

        for path in inputs:  # continuous: one file after the other, as a feed would
            report = store.ingest([path], segment_max_bytes=512 * 2**10,
                                  on_checkpoint=checkpoint)
            assert report.errors == [] and report.packets > 0
        guard.finish()
        high = load(store.root).retention.high_watermark
        assert high is not None and high.percent == 60
        assert len(samples) >= 48
        assert all(used <= cap * 0.60 for used, cap in samples), max(
            u / c for u, c in samples)
        kept = segment_ids(store)
        gone = [r[0] for r in expired_rows(store)]
        assert gone and kept and gone == list(range(1, len(gone) + 1))
        assert kept == list(range(len(gone) + 1, len(gone) + len(kept) + 1))
        assert {r[1:] for r in expired_rows(store)} == {("high_watermark", 1)}
        assert not any((store.root / p).exists() for (p,) in store.catalog.db.execute(
            "SELECT path FROM expired_segments"))
        # expired flows keep their metadata, marked
        first = store.catalog.db.execute(
            "SELECT first_ns, last_ns, packets FROM expired_segments WHERE id = 1").fetchone()
        flows = find_flows(store.catalog, QuerySpec(start_ns=first[0], end_ns=first[0] + 1))
        assert flows and all(f["packets_expired"] == f["pkts_toserver"] + f["pkts_toclient"]
                             for f in flows)
        # the query's window: exactly the expired segments, one span
        exp = store.catalog.db.execute(
            "SELECT min(first_ns), max(last_ns), sum(packets), count(*) FROM "
            "expired_segments").fetchone()
        loss = loss_in_window(store.catalog, None, None)
        assert loss.expired.to_dict() == {
            "packets": exp[2], "segments": exp[3], "more_spans": 0, "spans": [
                {"first_ns": exp[0], "last_ns": exp[1], "packets": exp[2],
                 "segments": exp[3], "reasons": ["high_watermark"]}]}
        total = sum(s.packets for s in store.catalog.segments())
        got = read_records(store.query_engine().to_bytes(QuerySpec()))[1]
        assert len(got) == total
        # a window after the expired part lost nothing
        assert loss_in_window(store.catalog, exp[1] + 1, None).expired.packets == 0


def test_byte_budget_stops_at_the_low_mark(tmp_path: Path) -> None:
    """A byte budget counts the segments as stored: deletion starts above the high mark
    and stops as soon as the store is at or below the low one (one segment past it at
    most: no over-deletion)."""
    (path,) = captures(tmp_path, 1, 4 * 2**20, 1_700_000_000, 0)
    with Store(tmp_path / "store") as store:
        store.ingest([path], segment_max_bytes=256 * 2**10)
        sizes = {s.id: os.stat(store.root / s.path).st_size for s in store.catalog.segments()}
        total = sum(sizes.values())
        pol = policy(high_watermark=f"{total - 1} B", low_watermark=f"{total // 2} B")
        report = enforce(store, pol)
        gone = [d.segment.id for d in report.deleted]
        left = total - sum(sizes[i] for i in gone)
        assert gone == sorted(sizes)[:len(gone)]
        assert left <= total // 2 < left + sizes[gone[-1]]
        assert report.usage_after is not None and report.usage_after.used == left
        assert enforce(store, pol).deleted == []  # below the high mark now: nothing


def test_max_age_and_flow_max_age(tmp_path: Path) -> None:
    """max_age removes every segment older regardless of space; flow rows of expired
    packets stay until flow_max_age, then go (the others stay)."""
    now = int(time.time())
    inputs = captures(tmp_path, 3, 2**20, now - 3 * DAY, DAY)  # 3 days, 2 days, 1 day old
    with Store(tmp_path / "store") as store:
        store.ingest(inputs)
        by_file = {s.id: s for s in store.catalog.segments()}
        assert len(by_file) == 3
        flows_before = store.catalog.stats()["flows"]
        report = enforce(store, policy(max_age="36h", flow_max_age="60h"))
        assert [(d.segment.id, d.reason) for d in report.deleted] == [(1, "max_age"),
                                                                      (2, "max_age")]
        first_flows = store.catalog.db.execute(
            "SELECT count(*) FROM flows WHERE last_ns < ?", (by_file[2].first_ns,)
        ).fetchone()[0]
        assert first_flows == 0  # the oldest file's flows: past flow_max_age, gone
        assert report.flows_deleted > 0
        assert store.catalog.stats()["flows"] == flows_before - report.flows_deleted
        second = find_flows(store.catalog, QuerySpec(start_ns=by_file[2].first_ns,
                                                     end_ns=by_file[2].last_ns + 1))
        assert second and all("packets_expired" in f for f in second)
        third = find_flows(store.catalog, QuerySpec(start_ns=by_file[3].first_ns))
        assert third and not any("packets_expired" in f for f in third)
        assert segment_ids(store) == [3]


def test_crash_between_commit_and_unlink_is_completed_by_the_next_run(tmp_path: Path
                                                                      ) -> None:
    """The catalog transaction commits, the process dies before the unlink: the file stays,
    unknown to the catalog, and the next run deletes it."""
    (path,) = captures(tmp_path, 1, 2**20, 1_700_000_000, 0)
    with Store(tmp_path / "store") as store:
        store.ingest([path], segment_max_bytes=256 * 2**10)
        cand = survey(store).deletable[0]
        assert _forget(store.catalog, cand, "max_age", 123)  # ... and then the crash
        assert (store.root / cand.path).exists()
        assert expired_rows(store) == [(cand.id, "max_age", 0)]
        report = enforce(store, policy(max_age="3650d"))
        assert report.swept == 1 and report.deleted == []
        assert not (store.root / cand.path).exists()
        assert expired_rows(store) == [(cand.id, "max_age", 1)]


def test_protected_segments_are_never_deleted_and_raise_the_alarm(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A file indexed in place and a segment a recorder has open are never deleted, even
    past max_age and above the budget; what is left is protected, so the alarm is raised
    (state file, status), logged once however many runs see it, and cleared."""
    inputs = captures(tmp_path, 3, 2**20, 1_700_000_000, 100)
    with Store(tmp_path / "store") as store:
        store.ingest([inputs[0]], in_place=True)
        store.ingest(inputs[1:])
        ids = segment_ids(store)
        assert len(ids) == 3
        in_place, opened, plain = store.catalog.segments()
        assert Path(in_place.path).is_absolute()
        store.catalog.db.execute("INSERT INTO capture_segments VALUES (?, 1, 'eth0', 'open', "
                                 "0, NULL)", (opened.id,))
        pol = policy(high_watermark="1 B", low_watermark="1 B", max_age="1d")
        caplog.set_level(logging.ERROR, logger="pcapwire.retention.state")
        report = enforce(store, pol)
        assert [d.segment.id for d in report.deleted] == [plain.id]
        assert segment_ids(store) == [in_place.id, opened.id]
        assert inputs[0].exists() and (store.root / opened.path).exists()
        assert report.alarm
        for _ in range(3):
            assert enforce(store, pol).alarm
        assert len([r for r in caplog.records if "retention alarm" in r.message]) == 1
        doc = status(store, from_dict({"retention": {"high_watermark": "1 B"}}, "t"))
        assert doc["alarm"] and read_state(store.root)["alarm"]
        assert doc["protected"]["in_place"] == {"segments": 1, "bytes": in_place.size}
        assert doc["protected"]["open"]["segments"] == 1
        assert doc["deletable"] == {"segments": 0, "bytes": 0}
        assert not enforce(store, policy(high_watermark="1 GiB")).alarm
        assert read_state(store.root)["alarm"] is False


def test_a_query_planned_before_a_deletion_skips_the_segment(tmp_path: Path) -> None:
    """Retention deletes a segment between a query's plan and its read: the query returns
    the rest and its window names the expired part."""
    (path,) = captures(tmp_path, 1, 2**20, 1_700_000_000, 0)
    with Store(tmp_path / "store") as store:
        store.ingest([path], segment_max_bytes=256 * 2**10)
        engine = store.query_engine()
        plan = engine.plan(QuerySpec())
        first = survey(store).deletable[0]
        enforce(store, policy(max_age="0s"), now_ns=first.last_ns + 1)
        kept = sum(s.packets for s in store.catalog.segments())
        got = b"".join(c.data[24:] for c in engine.iter_chunks(QuerySpec(), plan=plan))
        assert len(read_records(b"\0" * 24 + got)[1]) == kept
        assert loss_in_window(store.catalog, None, None).expired.packets == first.packets


def test_a_hold_made_after_the_survey_keeps_its_segment(tmp_path: Path) -> None:
    """The survey's answer may be a moment old: a deletion waits for the holds' copy lock
    and asks the holds again under it, so a hold another process made meanwhile (open,
    its window over the segment, nothing copied yet) keeps the segment."""
    import threading

    from pcapwire.cases import CASES_FILE
    from pcapwire.holds.copying import copy_lock
    from pcapwire.holds.table import HoldsDB
    from pcapwire.retention.delete import delete_segment

    now = int(time.time())
    with Store(tmp_path / "store") as store:
        store.ingest(captures(tmp_path, 2, 2**20, now - 2 * DAY, DAY))
        oldest = survey(store).deletable[0]
        result: list[object] = []
        with copy_lock(store.root):  # a hold is being made in another process
            deleting = threading.Thread(target=lambda: result.append(
                delete_segment(store, oldest, "max_age", "test")))
            deleting.start()
            with HoldsDB(store.root / CASES_FILE) as db:
                db.add("IR-1", {"bpf": "ip"}, oldest.first_ns, None, "litigation", "test")
        deleting.join()
        assert result == [None]
        assert segment_ids(store) == [1, 2]
        assert expired_rows(store) == []
