"""``pcapwire serve --hunts-by-workers``: the trigger services of a cluster sensor run no
hunt. A created trigger's hunt stays ``queued`` while its store's service watches new
traffic (a segment ingested after the trigger is matched), until a ``hunt`` job (the
runner, in-process) runs it; without the flag the service runs it. Both end with the same
matches: the hunt's (the old segment) and the watch's (the new one)."""

from __future__ import annotations

from pathlib import Path

import pytest
from captureutil import wait_for
from pcapwire.api.config import ApiConfig
from pcapwire.cli import build_parser
from pcapwire.cli.serve import config_from
from pcapwire.jobs import Job
from pcapwire.jobs.runner import run_job
from pcapwire.store import Store
from pcapwire.testing.craft import write_capture
from pcapwire.triggers.db import TriggerDB, flow_key
from pcapwire.triggers.model import from_dict
from pcapwire.triggers.service import TriggerService, TriggerServices
from triggerutil import WAIT_S, ip_and_port_traffic

T0 = 1_767_225_600.0
DEFINITION = {"name": "site-hunt", "bpf": "tcp port 4444",
              "indicators": {"ips": ["198.18.0.7"]}}


def expected(offset: int) -> set[tuple[str, str]]:
    return {("ip:198.18.0.7", flow_key(17, f"10.0.{offset}.2", 1001, "198.18.0.7", 53)),
            ("bpf", flow_key(6, f"10.0.{offset}.4", 5000, "10.0.0.5", 4444))}


def ingest(root: Path, tmp_path: Path, offset: int) -> None:
    with Store(root) as store:
        store.ingest([write_capture(tmp_path / f"t{offset}.pcap", ip_and_port_traffic(offset),
                                    start=T0 + 100 * offset)])


def service_of(services: TriggerServices, root: Path) -> TriggerService:
    svc: TriggerService = wait_for(lambda: services.services.get(root.resolve()),
                                   WAIT_S, "the store's trigger service")
    assert svc.started.wait(WAIT_S)
    return svc


@pytest.mark.parametrize("by_workers", [True, False])
def test_hunts_by_workers_stay_queued_for_a_hunt_job(tmp_path: Path, by_workers: bool
                                                     ) -> None:
    root = tmp_path / "tenants" / "acme"
    ingest(root, tmp_path, 1)  # the hunt's segment
    with TriggerDB(root) as db:
        trigger, hunt = db.create(from_dict(DEFINITION), "test")
    services = TriggerServices.of_tenants(tmp_path, hunts=not by_workers)
    services.start()
    try:
        svc = service_of(services, root)
        assert ("pcapwire-triggers-hunts" in {t.name for t in svc.threads}) != by_workers
        ingest(root, tmp_path, 2)  # after the trigger: the watch's
        with TriggerDB(root) as db:
            wait_for(lambda: db.watch_state(trigger.id)[0] == 2, WAIT_S, "the watch")
            if by_workers:
                assert (db.hunt(hunt.id).status, db.hunt(hunt.id).units_done) == ("queued", 0)
                job = run_job(Job("hunt", "h1", "acme", {"trigger": "site-hunt",
                                                         "version": 1}), root)
                assert (job.ok, job.data["status"], job.data["units_done"]) == (
                    True, "finished", 1), job
            else:
                wait_for(lambda: db.hunt(hunt.id).status == "finished", WAIT_S, "the hunt")
    finally:
        services.stop()
    with TriggerDB(root) as db:
        assert (db.hunt(hunt.id).status, db.hunt(hunt.id).units_done) == ("finished", 1)
        matches = db.matches(trigger.id)
    assert {(m["rule"], m["flow_key"]) for m in matches} == expected(1) | expected(2)
    assert sorted((m["source"], m["segment_id"]) for m in matches) == [
        ("hunt", 1), ("hunt", 1), ("watch", 2), ("watch", 2)]


def test_serve_flag_sets_the_config() -> None:
    def config(*flags: str) -> ApiConfig:
        return config_from(build_parser().parse_args(["serve", *flags]))

    assert (config().hunts_by_workers, config("--hunts-by-workers").hunts_by_workers) == (
        False, True)
