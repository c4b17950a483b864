"""The hunt runner: checkpoints (a runner killed with SIGKILL at a unit boundary resumes with
the same results, no duplicates, finished units not rerun), pause/resume/abort/stop between
units, failed units retried then listed, progress and ETA."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pcapwire.store import Store
from pcapwire.synth import generate
from pcapwire.triggers import TriggerDB
from pcapwire.triggers.db import UNIT_ATTEMPTS, Hunt
from pcapwire.triggers.hunt import KILL_AFTER_ENV, progress, run_hunt, run_pending
from triggerutil import create_trigger, five_segment_store

DEFN = {"indicators": {"ips": ["10.0.0.53", "198.51.100.0/24"]},
        "bpf": "tcp port 25 and tcp[13] & 2 != 0"}


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cap = tmp_path_factory.mktemp("runner") / "synth.pcap"
    generate(cap, 3 * 2**20, seed=11)
    return cap


@pytest.fixture
def root(capture: Path, tmp_path: Path) -> Path:
    """A store of 5 segments; 10.0.0.53 (DNS) has flows in every one."""
    return five_segment_store(capture, tmp_path / "store")


def _create(root: Path, name: str) -> tuple[int, int]:
    return create_trigger(root, name, DEFN)


def _results(root: Path, trigger_id: int) -> list[tuple[str, str]]:
    with TriggerDB(root) as tdb:
        return sorted((m["rule"], m["flow_key"]) for m in tdb.matches(trigger_id, limit=10**6))


def _units(root: Path, hunt_id: int) -> list[dict]:
    with TriggerDB(root) as tdb:
        return tdb.units(hunt_id)


def test_killed_runner_resumes_without_rescanning_or_duplicates(root: Path) -> None:
    ref_trigger, ref_hunt = _create(root, "reference")
    run_hunt(root, ref_hunt, threading.Event(), workers=2)
    trigger, hunt = _create(root, "killed")
    script = ("import sys, threading\nfrom pcapwire.triggers.hunt import run_hunt\n"
              "run_hunt(sys.argv[1], int(sys.argv[2]), threading.Event(), workers=2)\n")
    child = subprocess.Popen([sys.executable, "-c", script, str(root), str(hunt)],
                             env={**os.environ, KILL_AFTER_ENV: "3"}, start_new_session=True)
    try:
        assert child.wait(timeout=120) == -signal.SIGKILL
    finally:
        try:  # its worker processes, in the session it led
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    before = {u["segment_id"]: u for u in _units(root, hunt)}
    done = {s for s, u in before.items() if u["state"] == "done"}
    assert len(done) == 3 and all(before[s]["attempts"] == 1 for s in done)
    assert {u["state"] for s, u in before.items() if s not in done} <= {"queued", "running"}
    run_hunt(root, hunt, threading.Event(), workers=2)
    after = {u["segment_id"]: u for u in _units(root, hunt)}
    assert all(u["state"] == "done" for u in after.values())
    for s in done:  # finished units are not run again
        assert after[s]["attempts"] == 1 and after[s]["finished"] == before[s]["finished"]
    results = _results(root, trigger)
    assert results == _results(root, ref_trigger) and len(set(results)) == len(results)


def test_pause_waits_between_units_and_resumes(root: Path) -> None:
    trigger, hunt = _create(root, "paused")
    paused = threading.Event()
    settled = threading.Event()
    states: list[list[str]] = []
    second = TriggerDB(root)  # the user's connection (the CLI, the API)

    def on_matches(trigger_id: int, match_ids: list[int]) -> None:
        states.append([u["state"] for u in second.units(hunt)])
        if not paused.is_set():
            second.set_hunt_status(hunt, "paused")
            paused.set()
        else:
            settled.set()

    runner = threading.Thread(target=run_hunt, args=(root, hunt, threading.Event(), 1,
                                                      on_matches))
    runner.start()
    try:
        assert settled.wait(timeout=120)
        # the next unit was handed out before the first was recorded (and paused); it
        # finished and was kept, and no new one was handed out
        assert states == [["done", "running"] + ["queued"] * 3,
                          ["done", "done"] + ["queued"] * 3]
        assert second.hunt(hunt).status == "paused"
        second.set_hunt_status(hunt, "queued")  # resume
        runner.join(timeout=120)
        assert not runner.is_alive()
        assert second.hunt(hunt).status == "finished"
        assert [(u["state"], u["attempts"]) for u in second.units(hunt)] == [("done", 1)] * 5
    finally:
        second.set_hunt_status(hunt, "aborted")
        runner.join(timeout=120)
        second.close()


def test_pause_without_waiting_returns_and_a_later_run_resumes(root: Path) -> None:
    trigger, hunt = _create(root, "later")
    with TriggerDB(root) as tdb:
        tdb.set_state(trigger, "paused")  # a paused trigger pauses its hunt
        assert run_pending(root, threading.Event()) == []  # only active triggers' hunts
        run_hunt(root, hunt, threading.Event(), workers=1, wait_paused=False)
        assert {u["attempts"] for u in tdb.units(hunt)} == {0}
        tdb.set_state(trigger, "active")
    new = run_pending(root, threading.Event(), workers=2)
    assert sorted(new) == [m[0] for m in _ids(root, trigger)]
    with TriggerDB(root) as tdb:
        assert tdb.hunt(hunt).status == "finished"


def _ids(root: Path, trigger_id: int) -> list[tuple[int]]:
    with TriggerDB(root) as tdb:
        return [(m["id"],) for m in tdb.matches(trigger_id, limit=10**6)]


def test_abort_stops_handing_out_units(root: Path) -> None:
    trigger, hunt = _create(root, "aborted")
    user = TriggerDB(root)
    try:
        def on_matches(trigger_id: int, match_ids: list[int]) -> None:
            user.set_hunt_status(hunt, "aborted")

        run_hunt(root, hunt, threading.Event(), workers=1, on_matches=on_matches)
        assert [u["state"] for u in user.units(hunt)] == ["done"] + ["queued"] * 4
        assert user.hunt(hunt).status == "aborted"
        run_hunt(root, hunt, threading.Event(), workers=1)  # an aborted hunt stays so
        assert user.hunt(hunt).units_done == 1
    finally:
        user.close()


def test_stop_leaves_the_hunt_to_resume(root: Path) -> None:
    trigger, hunt = _create(root, "stopped")
    stop = threading.Event()
    run_hunt(root, hunt, stop, workers=2, on_matches=lambda t, m: stop.set())
    units = _units(root, hunt)
    assert {u["state"] for u in units} == {"done", "queued"}
    assert all(u["attempts"] == (u["state"] == "done") for u in units)  # stops don't count
    with TriggerDB(root) as tdb:
        assert tdb.hunt(hunt).status == "running"
    run_pending(root, threading.Event(), workers=2)
    assert [(u["state"], u["attempts"]) for u in _units(root, hunt)] == [("done", 1)] * 5


def test_failed_unit_is_retried_then_listed_and_the_rest_finishes(root: Path) -> None:
    with Store(root) as store:
        gone = store.catalog.segments()[2]
    (root / gone.path).unlink()
    trigger, hunt = _create(root, "failing")
    run_hunt(root, hunt, threading.Event(), workers=2)
    with TriggerDB(root) as tdb:
        h = tdb.hunt(hunt)
        assert (h.status, h.units_done, h.units_failed) == ("finished", 4, 1)
        failed = tdb.units(hunt, ("failed",))
        assert [(u["segment_id"], u["attempts"]) for u in failed] == [(gone.id, UNIT_ATTEMPTS)]
        assert gone.path.split("/")[-1] in failed[0]["error"]
        assert progress(h)["percent"] == round(100 * h.bytes_done / h.bytes_total, 2)


def test_hunt_fails_when_every_unit_fails(root: Path) -> None:
    with Store(root) as store:
        for seg in store.catalog.segments():
            (root / seg.path).unlink()
    trigger, hunt = _create(root, "all-failing")
    run_hunt(root, hunt, threading.Event(), workers=2)
    with TriggerDB(root) as tdb:
        h = tdb.hunt(hunt)
        assert (h.status, h.units_failed, h.units_done) == ("failed", 5, 0)
        assert h.error is not None and h.error.startswith("every unit failed; segment 1:")


def test_hunt_of_an_empty_data_directory_finishes(tmp_path: Path) -> None:
    trigger, hunt = _create(tmp_path, "empty")
    run_hunt(tmp_path, hunt, threading.Event())
    with TriggerDB(tmp_path) as tdb:
        h = tdb.hunt(hunt)
        assert (h.status, h.units_total) == ("finished", 0)
        assert progress(h)["percent"] == 100.0
    assert not (tmp_path / "catalog.sqlite").exists()


def test_progress_rate_and_eta() -> None:
    hunt = Hunt(1, 1, 1, "running", 4, 1, 0, 400, 100, 0.0, 1000.0, None, None)
    assert progress(hunt, now=1010.0) == {
        "status": "running", "percent": 25.0, "bytes_done": 100, "bytes_total": 400,
        "units_done": 1, "units_failed": 0, "units_total": 4, "rate_bytes_s": 10.0,
        "eta_s": 30.0}
    queued = Hunt(1, 1, 1, "queued", 4, 0, 0, 400, 0, 0.0, None, None, None)
    assert (progress(queued)["rate_bytes_s"], progress(queued)["eta_s"]) == (None, None)
    empty = Hunt(1, 1, 1, "finished", 0, 0, 0, 0, 0, 0.0, 5.0, 6.0, None)
    assert (progress(empty)["percent"], progress(empty)["eta_s"]) == (100.0, 0.0)
