"""Trigger hits in the metadata index: the matches of a hunt (history) and of the watch
(an ingest after the trigger) are found by ``pcapwire search``, each once, as alerts of
the trigger with its pivots (the flow's PCAP query, flow id, the trigger's case)."""

from __future__ import annotations

import json
from pathlib import Path

from captureutil import wait_for
from pcapwire.cli import main
from pcapwire.search.index import SearchIndex
from pcapwire.store import Store
from pcapwire.testing.craft import write_capture
from pcapwire.triggers.db import TriggerDB
from pcapwire.triggers.model import from_dict
from pcapwire.triggers.searchdocs import CURSOR_PREFIX, index_matches, indexed_up_to
from pcapwire.triggers.service import TriggerService
from triggerutil import WAIT_S, ip_and_port_traffic

T0 = 1_767_225_600.0
DEFINITION = {"name": "watched", "bpf": "tcp port 4444",
              "indicators": {"ips": ["198.18.0.7"]}}


def search(capsys, root: Path, *query: str) -> list[dict]:
    capsys.readouterr()
    assert main(["--data-dir", str(root), "search", "--json", "--limit", "100", *query]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_hunt_and_watch_hits_are_searchable_with_pivots(tmp_path: Path, capsys) -> None:
    root = tmp_path / "store"
    with Store(root) as store:
        store.ingest([write_capture(tmp_path / "old.pcap", ip_and_port_traffic(1), start=T0)])
    with TriggerDB(root) as db:
        trig, _hunt = db.create(from_dict(DEFINITION), "test")
    svc = TriggerService(root)
    svc.start()
    try:
        with TriggerDB(root) as db:
            wait_for(lambda: db.match_count(trig.id) == 2, WAIT_S, "the hunt's matches")
            with Store(root) as store:  # after the trigger: the watch's
                store.ingest([write_capture(tmp_path / "new.pcap", ip_and_port_traffic(2),
                                            start=T0 + 100)])
            wait_for(lambda: db.match_count(trig.id) == 4, WAIT_S, "the watch's matches")
            matches = db.matches(trig.id)
        last = matches[-1]["id"]
        wait_for(lambda: indexed_up_to(root, trig.id) == last, WAIT_S, "the index")
    finally:
        svc.stop()
    assert sorted(m["source"] for m in matches) == ["hunt", "hunt", "watch", "watch"]

    hits = search(capsys, root, "event.kind:alert AND pcapwire.trigger:watched")
    assert sorted(h["key"] for h in hits) == sorted(f"trigger:watched:{m['id']}"
                                                    for m in matches)
    by_key = {h["key"]: h for h in hits}
    for m in matches:
        h = by_key[f"trigger:watched:{m['id']}"]
        doc = h["doc"]
        assert h["dataset"] == "pcapwire.trigger"
        assert (doc["rule"]["id"], doc["source"]["ip"], doc["source"]["port"],
                doc["destination"]["ip"], doc["destination"]["port"]) == (
            m["rule"], m["src_ip"], m["src_port"], m["dest_ip"], m["dest_port"])
        assert h["pivots"]["flow_id"] == m["flow_id"] is not None
        assert h["pivots"]["case"] == "trigger-watched"
        assert h["pivots"]["pcap"]["five_tuple"] == {
            "proto": {6: "tcp", 17: "udp"}[m["proto"]], "src_ip": m["src_ip"],
            "src_port": m["src_port"], "dest_ip": m["dest_ip"], "dest_port": m["dest_port"]}
        assert h["pivots"]["pcap"]["case"] == "trigger-watched"

    ip_hits = search(capsys, root, "rule.ruleset:ip AND rule.id:ip\\:198.18.0.7")
    assert sorted(h["doc"]["source"]["ip"] for h in ip_hits) == ["10.0.1.2", "10.0.2.2"]
    bpf = search(capsys, root, "pcapwire.trigger:watched AND destination.port:4444")
    assert sorted(h["doc"]["rule"]["ruleset"] for h in bpf) == ["bpf", "bpf"]
    assert len(search(capsys, root, "alert", "--case", "trigger-watched")) == 4

    # indexed once: another pass adds nothing; a rebuild clears the cursors, the next
    # pass indexes every match again, under the same keys
    assert index_matches(root) == 0
    assert main(["--data-dir", str(root), "search", "rebuild"]) == 0
    with SearchIndex.of(root) as index:
        assert index.get_meta(f"{CURSOR_PREFIX}{trig.id}") == ""
    assert index_matches(root) == 4
    assert len(search(capsys, root, "pcapwire.trigger:watched")) == 4
