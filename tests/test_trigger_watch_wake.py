"""The API wakes the tenant's trigger service: under a real server (``create_app``, as
``pcapwire serve`` runs it) whose services look for new tenants and pending hunts only once
an hour, a trigger created through the API on a tenant that had none has its hunt
finished at once (its service started by the wake), and a hunt queued by an edit and a
resume runs at once too; the periodic looks cannot explain either."""

from __future__ import annotations

import json
import urllib.request

from apiutil import PCAP_TYPE, ServerThread, Tokens
from captureutil import wait_for
from conftest import corpus_file
from pcapwire.api import ApiConfig
from pcapwire.triggers import service

NEVER_S = 3600.0  # the periodic looks: far beyond every wait of this test (30 s)


def _call(url: str, headers: dict, method: str = "GET", body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", **headers})
    with urllib.request.urlopen(req, timeout=60) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else {}


def test_trigger_changes_wake_the_service(tmp_path, monkeypatch):
    monkeypatch.setattr(service, "RESCAN_S", NEVER_S)
    monkeypatch.setattr(service, "HUNT_POLL_S", NEVER_S)
    monkeypatch.setattr(service, "UNIT_POLL_S", NEVER_S)
    analyst = Tokens(tmp_path).headers("acme", "analyst")
    with ServerThread(ApiConfig(data_dir=tmp_path)) as srv:
        req = urllib.request.Request(f"{srv.url}/api/v1/ingest",
                                     data=corpus_file("zeek-http-get").read_bytes(),
                                     headers={"Content-Type": PCAP_TYPE, **analyst})
        urllib.request.urlopen(req, timeout=60).close()
        api = f"{srv.url}/api/v1/triggers"
        made = _call(api, analyst, "POST", {"name": "c2-web",
                                            "indicators": {"ips": ["192.150.187.0/24"]}})
        tid = made["trigger"]["id"]
        assert made["trigger"]["hunt"]["status"] == "queued"

        def hunt() -> dict:
            return _call(f"{api}/{tid}", analyst)["hunt"]

        first = wait_for(lambda: (h := hunt())["status"] == "finished" and h,
                         what="the first hunt finished")
        assert (first["version"], first["units_done"], first["units_total"]) == (1, 1, 1)
        assert _call(f"{api}/{tid}", analyst)["matches"] == 1

        # paused, edited (its new hunt waits paused), resumed: the hunt runs at once
        _call(f"{api}/{tid}/pause", analyst, "POST", {})
        _call(f"{api}/{tid}", analyst, "PUT", {"name": "c2-web",
                                                "indicators": {"ips": ["141.142.228.5"]}})
        assert hunt()["status"] == "paused"
        _call(f"{api}/{tid}/resume", analyst, "POST", {})
        second = wait_for(lambda: (h := hunt())["status"] == "finished" and h,
                          what="the edited trigger's hunt finished")
        assert (second["version"], second["units_done"]) == (2, 1)
