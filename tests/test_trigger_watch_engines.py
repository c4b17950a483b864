"""Content rules on what the real recorder records, live: one streaming engine per
(trigger version, segment). A TCP/HTTP request split across two commit rounds is one
stream to Suricata (its rule and a domain indicator match once, with the flow's 5-tuple,
and are delivered to a webhook receiver on 127.0.0.1, signed); Suricata starts once for
the segment. A watch stopped in the middle of a segment starts a fresh engine from the
segment's first byte: its repeated alerts are not counted twice (the hits per (rule, flow)
equal the hunt's unit over the sealed segment). An engine that keeps failing is given up
after ENGINE_ATTEMPTS starts and the segment goes on.

The test decides what each commit holds: it writes a round's packets into the recorder's
pipe and waits (bounded) until the catalog shows them committed and the watch's checkpoint
shows them handed to the engine, before it writes the next round."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from captureutil import ns_records, wait_for
from pcapwire.capture.config import RecorderConfig
from pcapwire.capture.recorder import Recorder
from pcapwire.capture.sources import StreamSource
from pcapwire.store import Store
from pcapwire.testing.craft import capture, http_request, http_response, tcp_session, udp_exchange
from pcapwire.triggers import live_engines
from pcapwire.triggers.db import TriggerDB, flow_key
from pcapwire.triggers.model import from_dict
from pcapwire.triggers.notify import deliveries, verify
from pcapwire.triggers.service import TriggerService
from pcapwire.triggers.units import run_unit
from pcapwire.triggers.watch import Watch
from triggerutil import WAIT_S, Receiver

RULE = ('alert http any any -> any any (msg:"pcapwire evil path"; http.uri; '
        'content:"/evil/payload"; sid:9200001; rev:1;)\n')
CLIENT, SERVER = ("10.1.0.2", 40000), ("203.0.113.9", 80)
FLOW = flow_key(6, *CLIENT, *SERVER)
REQUEST = http_request("/evil/payload", host="evil.example")
RESPONSE = http_response(b"ok")


@contextlib.contextmanager
def recording(root: Path) -> Iterator[tuple[Recorder, int]]:
    """The real recorder on a pipe (commit every 0.05 s): yields it and the pipe's write
    end. A packet that matches nothing opens the segment first."""
    read_end, write_end = os.pipe()
    recorder = Recorder(root, RecorderConfig(commit_interval=0.05, fsync=False,
                                             rotate_seconds=0))
    recorder.start([StreamSource("feed", read_end)])
    try:
        os.write(write_end, capture([udp_exchange("10.9.9.9:7 > 10.9.9.8:9", b"none")],
                                    start=time.time() - 5))
        wait_for(lambda: segment(root), what="the recorder's open segment")
        yield recorder, write_end
    finally:
        os.close(write_end)
        recorder.stop()


def segment(root: Path) -> tuple[int, int, int, str] | None:
    """The recorded segment: (id, committed size, packets, state)."""
    with Store(root) as store:
        return store.catalog.db.execute(
            "SELECT s.id, s.size, s.packets, c.state FROM segments s JOIN capture_segments c "
            "ON c.segment_id = s.id").fetchone()


def records(turns: list[tuple[str, bytes]]) -> list[bytes]:
    """The session's packets (pcap records), timestamped now."""
    session = tcp_session(f"{CLIENT[0]}:{CLIENT[1]} > {SERVER[0]}:{SERVER[1]}", turns=turns)
    return ns_records(capture([session], start=time.time()))


def commit_round(root: Path, write_end: int, recs: list[bytes], packets: int) -> int:
    """Write ``recs`` and wait until the segment holds ``packets`` committed; its size."""
    os.write(write_end, b"".join(recs))
    return wait_for(lambda: (s := segment(root)) and s[2] == packets and s[1],
                    what=f"{packets} packets committed")


def handed(db: TriggerDB, trigger_id: int, segment_id: int) -> int:
    """The segment's offset the watch checkpointed (handed to its engine)."""
    return db.watch_state(trigger_id)[1].get(segment_id, (0, ""))[0]


def test_a_request_split_across_commits_matches_once_with_one_engine(tmp_path):
    root = tmp_path / "store"
    rx = Receiver()
    service = None
    db = None
    try:
        with recording(root) as (recorder, write_end):
            sid, _size, opened, _state = segment(root)
            db = TriggerDB(root)
            trig, _hunt = db.create(from_dict({
                "name": "evil-web", "suricata_rules": RULE,
                "indicators": {"domains": ["evil.example"]},
                "notify": [{"type": "webhook", "url": rx.url("/hook"), "secret": "s3"}]}),
                "test")
            service = TriggerService(root)
            service.start()
            assert service.started.wait(WAIT_S)
            # SYN, SYN/ACK, ACK, "GET /evil/" (+ ack) | "payload HTTP/1.1 ... Host" ...
            recs = records([("c", REQUEST[:10]), ("c", REQUEST[10:]), ("s", RESPONSE)])
            first = commit_round(root, write_end, recs[:5], opened + 5)
            wait_for(lambda: handed(db, trig.id, sid) == first,
                     what="the first round handed to the engine")
            assert not db.matches(trig.id)  # half a URI matches nothing
            commit_round(root, write_end, recs[5:], opened + len(recs))
            got = rx.wait(2, "/hook")
            assert service.watch is not None  # one engine across both rounds:
            assert service.watch.engines.starts() == Counter({(trig.id, sid): 1})
            recorder.stop()  # seals the segment: the engine gets its end and drains
            wait_for(lambda: db.watch_state(trig.id) == (sid, {}),
                     what="the segment finished")
        for r in got:
            assert verify("s3", r["headers"], r["body"])
        bodies = [json.loads(r["body"])["match"] for r in got]
        flows = {(b["rule"], *(b["flow"][k] for k in ("proto", "src_ip", "src_port",
                                                       "dest_ip", "dest_port")))
                 for b in bodies}
        assert flows == {(rule, "tcp", *CLIENT, *SERVER)
                         for rule in ("suricata:9200001", "domain:evil.example")}
        matches = db.matches(trig.id)
        assert sorted((m["rule"], m["flow_key"], m["hits"], m["source"], m["segment_id"])
                      for m in matches) == [("domain:evil.example", FLOW, 1, "watch", sid),
                                            ("suricata:9200001", FLOW, 1, "watch", sid)]
        assert all(m["flow_id"] is not None for m in matches)
        assert service.watch.engines.starts() == Counter({(trig.id, sid): 1})
        wait_for(lambda: [d["status"] for d in deliveries(db, trig.id)] == ["delivered"] * 2,
                 what="two deliveries")
    finally:
        if service is not None:
            service.stop()
        if db is not None:
            db.close()
        rx.close()


def test_a_restart_mid_segment_does_not_count_twice(tmp_path):
    root = tmp_path / "store"
    found: list[int] = []
    with recording(root) as (recorder, write_end):
        sid, _size, opened, _state = segment(root)
        db = TriggerDB(root)
        trig, _hunt = db.create(from_dict({"name": "evil-web", "suricata_rules": RULE}),
                                "test")
        # two requests that match on one keep-alive connection: two alerts, one flow
        recs = records([("c", REQUEST), ("s", RESPONSE), ("c", REQUEST), ("s", RESPONSE)])
        half = 9  # handshake, the first request and its response, each acknowledged
        first = Watch(root, lambda _tid, ids: found.extend(ids))
        try:
            commit_round(root, write_end, recs[:half], opened + half)
            first.live_step()
            wait_for(lambda: [m["hits"] for m in db.matches(trig.id)] == [1],
                     what="the first alert counted")
        finally:
            first.close()  # stopped mid-segment: its engine is gone
        commit_round(root, write_end, recs[half:], opened + len(recs))
        second = Watch(root, lambda _tid, ids: found.extend(ids))
        try:
            second.live_step()  # a fresh engine, fed from the segment's first byte
            recorder.stop()
            wait_for(lambda: second.live_step() == 0 and db.watch_state(trig.id) == (sid, {}),
                     what="the segment finished")
            assert second.engines.starts() == Counter({(trig.id, sid): 1})
        finally:
            second.close()
    unit = Counter((h.rule, flow_key(h.proto, h.src_ip, h.src_port, h.dest_ip, h.dest_port))
                   for h in run_unit(str(root), sid, json.dumps(trig.definition.to_dict()),
                                     str(tmp_path / "unit"))[0])
    assert unit == Counter({("suricata:9200001", FLOW): 2})  # a hunt's count of the segment
    matches = db.matches(trig.id)
    assert [(m["rule"], m["flow_key"], m["hits"]) for m in matches] == [
        ("suricata:9200001", FLOW, 2)]
    assert found == [matches[0]["id"]]  # announced once
    assert db.db.execute("SELECT count(*) FROM watch_engine_hits").fetchone()[0] == 0
    db.close()


def test_an_engine_that_keeps_failing_is_given_up(tmp_path):
    root = tmp_path / "store"
    bad = 'alert http any any -> any any (msg:"x"; pcapwire_no_such_keyword; sid:9200002;)\n'
    with recording(root) as (recorder, write_end):
        sid, _size, opened, _state = segment(root)
        db = TriggerDB(root)
        trig, _hunt = db.create(from_dict({"name": "broken", "suricata_rules": bad}), "test")
        watch = Watch(root, lambda _tid, _ids: None)
        try:
            recs = records([("c", REQUEST), ("s", RESPONSE)])
            commit_round(root, write_end, recs, opened + len(recs))
            recorder.stop()
            wait_for(lambda: watch.live_step() == 0 and db.watch_state(trig.id) == (sid, {}),
                     what="the segment finished without its content rules")
            assert watch.engines.starts() == Counter(
                {(trig.id, sid): live_engines.ENGINE_ATTEMPTS})
        finally:
            watch.close()
    assert db.matches(trig.id) == []
    db.close()
