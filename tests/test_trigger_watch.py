"""The watch: data that arrives after a trigger was made — an ingested capture (one unit
of the hunt's unit function) and packets the real recorder records (read live, matched,
delivered to a webhook receiver on 127.0.0.1 with a valid signature) — gives exactly the
matches of its flows, each once."""

from __future__ import annotations

import json
import os
import time

from captureutil import wait_for
from pcapwire.capture.config import RecorderConfig
from pcapwire.capture.recorder import Recorder
from pcapwire.capture.sources import StreamSource
from pcapwire.store import Store
from pcapwire.testing.craft import capture, tcp_session, udp_exchange, write_capture
from pcapwire.triggers.db import TriggerDB, flow_key
from pcapwire.triggers.model import from_dict
from pcapwire.triggers.notify import deliveries, verify
from pcapwire.triggers.service import TriggerService
from pcapwire.triggers.watch import Watch
from triggerutil import WAIT_S, Receiver

T0 = 1_767_225_600.0
DEFINITION = {"name": "watched", "bpf": "tcp port 4444",
              "indicators": {"ips": ["198.18.0.7", "198.19.0.0/16"]}}


def traffic(offset: int) -> list:
    """Flows that match (198.18.0.7, 198.19.0.0/16, tcp port 4444) and one that does not."""
    return [udp_exchange(f"10.0.{offset}.2:1001 > 198.18.0.7:53", b"q", b"a"),
            tcp_session(f"10.0.{offset}.3:3000 > 198.19.5.5:80", b"GET /", b"200"),
            tcp_session(f"10.0.{offset}.4:5000 > 10.0.0.5:4444", b"x", b"y"),
            udp_exchange(f"10.0.{offset}.6:7 > 10.0.0.7:9", b"no", b"match")]


def expected(offset: int) -> set[tuple[str, str]]:
    return {("ip:198.18.0.7", flow_key(17, f"10.0.{offset}.2", 1001, "198.18.0.7", 53)),
            ("ip:198.19.0.0/16", flow_key(6, f"10.0.{offset}.3", 3000, "198.19.5.5", 80)),
            ("bpf", flow_key(6, f"10.0.{offset}.4", 5000, "10.0.0.5", 4444))}


def test_ingest_after_the_trigger_is_one_watch_unit(tmp_path):
    root = tmp_path / "store"
    with Store(root) as store:
        store.ingest([write_capture(tmp_path / "old.pcap", traffic(1), start=T0)])
    db = TriggerDB(root)
    trig, _hunt = db.create(from_dict(DEFINITION), "test")
    assert db.hunt_scope(trig.id) == (1, set())  # the old segment is the hunt's
    with Store(root) as store:
        store.ingest([write_capture(tmp_path / "new.pcap", traffic(2), start=T0 + 100)])
    found: list[tuple[int, list[int]]] = []
    watch = Watch(root, lambda tid, ids: found.append((tid, ids)))
    try:
        assert watch.live_step() == 0  # nothing recorded
        assert watch.unit_step() == 1
        assert watch.unit_step() == 0  # each segment once
    finally:
        watch.close()
    matches = db.matches(trig.id)
    assert {(m["rule"], m["flow_key"]) for m in matches} == expected(2)
    assert {(m["source"], m["segment_id"], m["hits"], tuple(m["versions"]))
            for m in matches} == {("watch", 2, 1, (1,))}
    assert found == [(trig.id, [m["id"] for m in matches])]
    assert db.watch_state(trig.id) == (2, {})
    db.close()


def test_recorded_packets_match_live_and_notify(tmp_path):
    """A real recorder (a pcap stream on a pipe) records into an open segment; the trigger
    is made while it records; what it records before and after is the watch's (the hunt
    takes sealed segments only), matched once each, and delivered, signed."""
    root = tmp_path / "store"
    rx = Receiver()
    secret = "watch-secret"
    read_end, write_end = os.pipe()
    recorder = Recorder(root, RecorderConfig(commit_interval=0.05, fsync=False))
    recorder.start([StreamSource("feed", read_end)])
    service = None
    try:
        now = time.time()
        first = capture(traffic(1)[3:], start=now - 5)  # no match
        os.write(write_end, first)
        with Store(root) as store:
            wait_for(lambda: store.catalog.db.execute(
                "SELECT count(*) FROM capture_segments WHERE state='open'").fetchone()[0],
                what="the recorder's open segment")
        db = TriggerDB(root)
        trig, _hunt = db.create(from_dict({**DEFINITION, "notify": [
            {"type": "webhook", "url": rx.url("/hook"), "secret": secret}]}), "test")
        assert db.watch_state(trig.id)[0] == 0  # below the segment being recorded
        service = TriggerService(root)
        service.start()
        assert service.started.wait(WAIT_S)
        later = capture(traffic(2), start=now)
        os.write(write_end, later[24:])  # the records: the stream goes on
        got = rx.wait(3, "/hook")
        for r in got:
            assert verify(secret, r["headers"], r["body"])
        bodies = [json.loads(r["body"]) for r in got]
        keys = {(b["match"]["rule"], flow_key(*[b["match"]["flow"][k] for k in (
            "proto", "src_ip", "src_port", "dest_ip", "dest_port")]).replace(
            "tcp", "6").replace("udp", "17")) for b in bodies}
        assert keys == expected(2)
        matches = db.matches(trig.id)
        assert {(m["rule"], m["flow_key"]) for m in matches} == expected(2)
        assert {(m["source"], m["hits"]) for m in matches} == {("watch", 1)}
        assert all(m["flow_id"] is not None for m in matches)  # pivots to the catalog flow
        wait_for(lambda: [d["status"] for d in deliveries(db, trig.id)] == ["delivered"] * 3,
                 what="three deliveries")
        db.close()
    finally:
        if service is not None:
            service.stop()
        os.close(write_end)
        recorder.stop()
        rx.close()
