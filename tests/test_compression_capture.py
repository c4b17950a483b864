"""Compressed segments beside live capture (issue 16): the recorder's own maintenance loop
compresses each segment it seals (policy ``on-seal``) while generated traffic arrives at
100 kpps on a veth pair of the test's own namespace (sent twice: the second time once
three segments are compressed, so compression and recording overlap on any machine); not
a packet is lost, and the store answers with exactly what was sent. Root only (tests/netns.py)."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

from captureutil import wait_for
from netns import VethNS, netns_fixture, read_pcap, write_traffic  # noqa: F401
from pcapwire.query import QuerySpec
from pcapwire.store import Store
from pcapwire.store.compression import storage_rows
from pcapwire.store.config import save

PACKETS = 100_000
PPS = 100_000


def test_capture_while_segments_are_compressed_loses_nothing(netns: VethNS,
                                                             tmp_path: Path) -> None:
    traffic = tmp_path / "traffic.pcap"
    sent_n = write_traffic(traffic, netns, PACKETS, seed=16)
    data_dir = tmp_path / "store"
    data_dir.mkdir()
    save(data_dir, {"retention": {"interval": "0.1s"},
                    "compression": {"policy": "on-seal", "frame_bytes": "256 KiB"}})
    stderr = tmp_path / "capture.stderr"
    with open(stderr, "wb") as err:
        rec = netns.popen(sys.executable, "-m", "pcapwire.cli", "--data-dir", str(data_dir),
                          "capture", "-i", "v0", "--segment-size", "1", "--rotate", "0",
                          "--progress", "none", stdout=err, stderr=err)
    wait_for(lambda: (data_dir / "capture" / "status.json").exists() or rec.poll() is not None,
             what="the recorder started")
    assert rec.poll() is None, stderr.read_text()
    replay = netns.replay(traffic, pps=PPS)
    assert replay.sent == sent_n and replay.failed == 0

    def compressed() -> int:
        with Store(data_dir) as store:
            return len(storage_rows(store.catalog.db))

    # the recorder goes on while its loop compresses what it sealed: then the same traffic
    # again, so segments are compressed while it records, whatever the machine's speed
    wait_for(lambda: compressed() >= 3 or rec.poll() is not None, timeout=120,
             what="three segments compressed while the recorder runs")
    assert rec.poll() is None, stderr.read_text()
    replay = netns.replay(traffic, pps=PPS)
    assert replay.sent == sent_n and replay.failed == 0
    netns.stop(rec, signal.SIGINT, timeout=120)
    text = stderr.read_text()
    m = re.search(r"v0: (\d+) packets recorded, drops: kernel (\d+), interface (\d+), "
                  r"backlog (\d+)", text)
    assert m, text
    assert [int(x) for x in m.groups()] == [2 * sent_n, 0, 0, 0]
    with Store(data_dir) as store:
        segs = store.catalog.segments()
        rows = storage_rows(store.catalog.db)
        assert len(segs) >= 40
        assert len(rows) >= 3 and all(r["stored_size"] < r["plain_size"] for r in rows.values())
        out = store.query_engine().to_bytes(QuerySpec())
    sent = [(f, o) for _ts, f, o in read_pcap(traffic)[1]]
    assert [(f, o) for _ts, f, o in read_pcap(out)[1]] == sent + sent
