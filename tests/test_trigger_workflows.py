"""The trigger's workflows on what it matches: a hunt's matches run the shipped
``yara-streams`` workflow on the query of each matched flow (real YARA, real case store),
one run per match, verdicts only from the matched flows; and the off-loop guard the runs
close their store with (:class:`pcapwire.triggers.offloop.SerialCalls`)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from captureutil import wait_for
from pcapwire.api.workflows import WorkflowService
from pcapwire.store import Store
from pcapwire.testing.craft import http_download, udp_exchange, write_capture
from pcapwire.triggers.db import TriggerDB
from pcapwire.triggers.model import from_dict
from pcapwire.triggers.offloop import SerialCalls
from pcapwire.triggers.service import TriggerService
from triggerutil import WAIT_S

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
BAD = "198.18.0.7"


def test_a_hunts_matches_run_the_triggers_workflow(tmp_path: Path) -> None:
    root = tmp_path / "store"
    cap = write_capture(tmp_path / "in.pcap", [
        http_download(f"10.0.0.2:40000 > {BAD}:80", "/eicar.com", EICAR),  # match, EICAR
        udp_exchange(f"10.0.0.3:5353 > {BAD}:53", b"query", b"answer"),  # match, clean
        http_download("10.0.0.4:40001 > 10.0.0.9:80", "/other.com", EICAR)])  # no match
    with Store(root) as store:
        store.ingest([cap])
    with TriggerDB(root) as db:
        trig, _hunt = db.create(from_dict({"name": "bad-host", "workflows": ["yara-streams"],
                                           "indicators": {"ips": [BAD]}}), "test")
    workflows = WorkflowService([WORKFLOWS])
    workflows.start()
    assert "yara-streams" in workflows.loaded
    svc = TriggerService(root, workflows)
    svc.start()
    try:
        with TriggerDB(root) as db:
            def handed() -> bool:
                ids = [m["id"] for m in db.matches(trig.id)]
                cursor = db.db.execute("SELECT workflows_id FROM watch WHERE trigger_id=?",
                                       (trig.id,)).fetchone()[0]
                return len(ids) == 2 and cursor == ids[-1]
            wait_for(handed, WAIT_S, "the workflows of both matches")
            matches = db.matches(trig.id)
    finally:
        svc.stop()
    with Store(root) as store:
        runs = store.cases.runs("trigger-bad-host")
        assert sorted((r.workflow, r.status, r.event) for r in runs) == sorted(
            ("yara-streams", "ok", f"match-{m['id']}") for m in matches)
        per_run = {r.event: [(v.analyzer, v.signature, v.severity, v.flow.src, v.flow.dst)
                             for v in store.cases.verdicts(run_id=r.run_id)] for r in runs}
    http = next(m for m in matches if m["proto"] == 6)
    dns = next(m for m in matches if m["proto"] == 17)
    assert per_run == {f"match-{http['id']}": [("yara", "EICAR_Test_File", "medium",
                                                "10.0.0.2", BAD)],
                       f"match-{dns['id']}": []}

def test_a_close_waits_for_the_call_a_cancelled_task_left_running() -> None:
    """The task is cancelled while its call runs in a worker thread: the close it awaits
    in ``finally`` runs only once that call has returned."""
    order: list[str] = []
    entered, release = threading.Event(), threading.Event()

    def slow_plan() -> None:
        entered.set()
        release.wait(WAIT_S)
        order.append("plan done")

    async def main() -> None:
        calls = SerialCalls()

        async def run_match() -> None:
            try:
                await calls.call(slow_plan)
            finally:
                await calls.close(lambda: order.append("closed"))

        task = asyncio.create_task(run_match())
        await asyncio.to_thread(entered.wait, WAIT_S)
        task.cancel()
        await asyncio.sleep(0)  # the task runs its finally: the close is queued
        assert order == []
        release.set()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await asyncio.to_thread(lambda: None)

    asyncio.run(main())
    assert order == ["plan done", "closed"]
