"""Flows into the index: per sealed segment (a segment the recorder still writes holds back
itself and those after it), again when retention marks packets of a flow expired (the
mark is in the flow's document), through the recorder's FlowIndexer thread (pokes while
it works are coalesced, stop runs the last pass)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import CASES, corpus_file
from pcapwire.search.index import SearchIndex
from pcapwire.search.indexer import FLOWS_CURSOR, FlowIndexer, index_flows, rebuild
from pcapwire.search.query import search
from pcapwire.store import Store

CAPTURES = ("zeek-http-get", "suricata-dns-udp-cname-a", "arkime-tls13-ja3-ja4")


def _flows(root: Path) -> list[tuple[int, int | None]]:
    """(flow id, packets expired) of the flow documents, by flow id."""
    with SearchIndex.of(root) as index:
        hits = search(index, "event.dataset:pcapwire.flow", limit=100).hits
    return sorted((h["doc"]["pcapwire"]["flow"]["id"],
                   h["doc"]["pcapwire"]["flow"].get("packets_expired")) for h in hits)


def test_flows_of_sealed_segments_and_the_expired_mark(tmp_path: Path) -> None:
    root = tmp_path / "data"
    with Store(root) as store:
        store.ingest([corpus_file(c) for c in CAPTURES])  # one segment per capture
    flows_per_capture = [len(CASES[c]["computed"]["conversations"]["conversations"])
                         for c in CAPTURES]
    db = sqlite3.connect(root / "catalog.sqlite", isolation_level=None)
    db.execute("INSERT INTO capture_segments VALUES (2, 1, 'eth0', 'open', 0, NULL)")
    assert index_flows(root) == flows_per_capture[0]  # segment 2 is still being recorded
    with SearchIndex.of(root) as index:
        assert index.get_meta(FLOWS_CURSOR) == "1"
    assert index_flows(root) == 0
    db.execute("UPDATE capture_segments SET state='sealed' WHERE segment_id=2")
    assert index_flows(root) == sum(flows_per_capture[1:])
    assert len(_flows(root)) == sum(flows_per_capture)
    # retention expired one packet of flow 1: the mark is in its document after a rebuild
    db.execute("INSERT INTO expired_flows VALUES (1, 1, 0, 0, 0)")
    db.close()
    assert rebuild(root)["flows"] == sum(flows_per_capture)
    assert _flows(root)[0] == (1, 1)
    assert all(expired is None for _fid, expired in _flows(root)[1:])


def test_the_recorders_flow_indexer(tmp_path: Path) -> None:
    root = tmp_path / "data"
    with Store(root) as store:
        store.ingest([corpus_file(CAPTURES[0])])
    indexer = FlowIndexer(root)
    indexer.start()
    indexer.poke()
    indexer.poke()
    indexer.stop()  # the pass a poke asked for runs before it stops
    assert len(_flows(root)) == 1
    assert not indexer.is_alive()
