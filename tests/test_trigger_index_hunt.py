"""The hunt runner's index units (IP indicators alone): answered in batches of
``INDEX_BATCH_UNITS`` by one walk of the flow index (or, dense, dealt round the walkers'
threads a segment at a time), each unit still its own checkpoint.
The result set equals the unit function's, unit by unit (same matches, same ids, same
hits); a runner killed between two units of a batch resumes without rerunning or
duplicating; pause, abort and stop take effect between batches (a batch's units are all
kept); a segment deleted since planning fails its unit as the unit function does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from pcapwire.retention.delete import delete_segment
from pcapwire.retention.plan import Candidate
from pcapwire.store import Store
from pcapwire.synth import generate
from pcapwire.triggers import TriggerDB, hunt, ip_walk
from pcapwire.triggers.db import UNIT_ATTEMPTS
from pcapwire.triggers.hunt import KILL_AFTER_ENV, run_hunt
from pcapwire.triggers.units import run_batch
from triggerutil import create_trigger, five_segment_store

# the DNS server (every segment), a server net, an absent host
DEFN = {"indicators": {"ips": ["10.0.0.53", "198.51.100.0/24", "198.18.0.1"]}}
BATCH = 2  # INDEX_BATCH_UNITS in these tests: 5 units are batches of 2, 2 and 1
# what a match is, apart from its id, trigger and the time it was found
FIELDS = ("rule", "flow_key", "flow_id", "proto", "src_ip", "src_port", "dest_ip",
          "dest_port", "ts", "segment_id", "source", "evidence", "versions", "hits")


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cap = tmp_path_factory.mktemp("index-hunt") / "synth.pcap"
    generate(cap, 3 * 2**20, seed=11)
    return cap


@pytest.fixture
def root(capture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store of 5 segments; the runner hands out index units two at a time."""
    monkeypatch.setattr(hunt, "INDEX_BATCH_UNITS", BATCH)
    return five_segment_store(capture, tmp_path / "store")


def _create(root: Path, name: str) -> tuple[int, int]:
    return create_trigger(root, name, DEFN)


def _matches(root: Path, trigger_id: int) -> list[tuple[Any, ...]]:
    with TriggerDB(root) as tdb:
        return [(m["id"], *(m[f] for f in FIELDS)) for m in tdb.matches(trigger_id,
                                                                         limit=10**6)]


def _reference(root: Path) -> list[tuple[Any, ...]]:
    """A trigger's matches when each unit goes through the unit function, in order."""
    trigger, hunt_id = _create(root, "reference")
    with TriggerDB(root) as tdb, Store(root) as store:
        (stored,) = tdb.db.execute("SELECT definition FROM trigger_versions WHERE "
                                   "trigger_id=?", (trigger,)).fetchone()
        segments = [s.id for s in store.catalog.segments()]
        tdb.plan_units(hunt_id, [(s, 1) for s in segments])
        for seg in segments:
            tdb.start_units(hunt_id, [seg])
            batch, seconds = run_batch(str(root), seg, stored)
            tdb.finish_unit(hunt_id, seg, batch, 1, seconds)
    return _relative(_matches(root, trigger))


def _relative(matches: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    first = min(int(m[0]) for m in matches)
    return [(int(m[0]) - first, *m[1:]) for m in matches]


def _units(root: Path, hunt_id: int) -> list[tuple[str, int]]:
    with TriggerDB(root) as tdb:
        return [(u["state"], u["attempts"]) for u in tdb.units(hunt_id)]


@pytest.fixture(params=["one walk", "dealt round"])
def walks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How a batch is walked: these indicators hold 75 flows, too few to deal a batch
    round the walkers' threads (SPLIT_MIN_FLOWS), unless the threshold is 1."""
    if request.param == "dealt round":
        monkeypatch.setattr(ip_walk, "SPLIT_MIN_FLOWS", 1)
    return str(request.param)


def test_batched_units_equal_the_unit_function(root: Path, walks: str) -> None:
    trigger, hunt_id = _create(root, "batched")
    run_hunt(root, hunt_id, threading.Event())
    found = _relative(_matches(root, trigger))
    assert found == _reference(root)
    # several indicators, flows in every segment, flows across segments (hits > 1)
    assert len(found) == 75 and {m[1] for m in found} == {"ip:10.0.0.53",
                                                          "ip:198.51.100.0/24"}
    assert {m[10] for m in found} == {1, 2, 3, 4, 5}
    assert sorted(int(m[14]) for m in found)[-10:] == [4] + [5] * 9
    assert sum(int(m[14]) for m in found) == 157
    assert _units(root, hunt_id) == [("done", 1)] * 5


def test_killed_runner_resumes_within_a_batch(root: Path, walks: str) -> None:
    trigger, hunt_id = _create(root, "killed")
    script = ("import sys, threading\nfrom pcapwire.triggers import hunt, ip_walk\n"
              f"hunt.INDEX_BATCH_UNITS = {BATCH}\n"
              f"ip_walk.SPLIT_MIN_FLOWS = {ip_walk.SPLIT_MIN_FLOWS}\n"
              "hunt.run_hunt(sys.argv[1], int(sys.argv[2]), threading.Event())\n")
    child = subprocess.Popen([sys.executable, "-c", script, str(root), str(hunt_id)],
                             env={**os.environ, KILL_AFTER_ENV: "3"})
    assert child.wait(timeout=120) == -signal.SIGKILL
    # killed after the first unit of the second batch: its second unit was handed out
    assert _units(root, hunt_id) == [("done", 1)] * 3 + [("running", 1), ("queued", 0)]
    with TriggerDB(root) as tdb:
        finished = [u["finished"] for u in tdb.units(hunt_id)[:3]]
    run_hunt(root, hunt_id, threading.Event())
    assert _units(root, hunt_id) == [("done", 1)] * 3 + [("done", 2), ("done", 1)]
    with TriggerDB(root) as tdb:  # finished units were not run again
        assert [u["finished"] for u in tdb.units(hunt_id)[:3]] == finished
    assert _relative(_matches(root, trigger)) == _reference(root)


def test_pause_abort_and_stop_take_effect_between_batches(root: Path) -> None:
    paused, p_hunt = _create(root, "paused")
    user = TriggerDB(root)
    try:
        def pause(trigger_id: int, match_ids: list[int]) -> None:
            user.set_hunt_status(p_hunt, "paused")

        run_hunt(root, p_hunt, threading.Event(), on_matches=pause, wait_paused=False)
        assert _units(root, p_hunt) == [("done", 1)] * BATCH + [("queued", 0)] * 3
        assert user.hunt(p_hunt).status == "paused"
        user.set_hunt_status(p_hunt, "queued")  # resume
        run_hunt(root, p_hunt, threading.Event())
        assert _units(root, p_hunt) == [("done", 1)] * 5
        assert user.hunt(p_hunt).status == "finished"

        aborted, a_hunt = _create(root, "aborted")
        run_hunt(root, a_hunt, threading.Event(),
                 on_matches=lambda t, m: user.set_hunt_status(a_hunt, "aborted"))
        assert _units(root, a_hunt) == [("done", 1)] * BATCH + [("queued", 0)] * 3
        assert user.hunt(a_hunt).status == "aborted"

        stopped, s_hunt = _create(root, "stopped")
        stop = threading.Event()
        run_hunt(root, s_hunt, stop, on_matches=lambda t, m: stop.set())
        assert _units(root, s_hunt) == [("done", 1)] * BATCH + [("queued", 0)] * 3
        assert user.hunt(s_hunt).status == "running"  # to resume later
    finally:
        user.close()
    assert _relative(_matches(root, paused)) == _reference(root)


def test_a_segment_deleted_since_planning_fails_its_unit(root: Path) -> None:
    trigger, hunt_id = _create(root, "deleted")
    with TriggerDB(root) as tdb:  # planned, not run: the trigger is paused
        tdb.set_state(trigger, "paused")
        run_hunt(root, hunt_id, threading.Event(), wait_paused=False)
        assert len(tdb.units(hunt_id)) == 5
        tdb.set_state(trigger, "active")
    with Store(root) as store:
        gone = store.catalog.segments()[2]
        assert delete_segment(store, Candidate(gone.id, gone.path, gone.first_ns,
                                               gone.last_ns, gone.packets, gone.size),
                              "test", "test") is not None
    run_hunt(root, hunt_id, threading.Event())
    with TriggerDB(root) as tdb:
        h = tdb.hunt(hunt_id)
        assert (h.status, h.units_done, h.units_failed) == ("finished", 4, 1)
        (failed,) = tdb.units(hunt_id, ("failed",))
    assert (failed["segment_id"], failed["attempts"]) == (gone.id, UNIT_ATTEMPTS)
    assert failed["error"] == (f"UnitError: segment {gone.id} is no longer in the store "
                               "(deleted by retention since the hunt was planned)")
