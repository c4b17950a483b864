"""A Suricata trigger's hunt over a generated multi-segment store finds exactly what
``suricata -r`` finds on each segment file, one after the other, with the same rules and
``-k none``: per (sid, flow) the same number of alerts. Plain segments are read by
Suricata itself (file mode); a compressed one is fed to it as the query engine's chunks
(its file for the run by hand: ``zstd -d``)."""

from __future__ import annotations

import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest
from pcapwire.store import Store
from pcapwire.store.compression import compress_segment, store_lock
from pcapwire.synth import generate
from pcapwire.triggers import TriggerDB, from_dict
from pcapwire.triggers.db import flow_key
from pcapwire.triggers.hunt import run_hunt
from pcapwire.triggers.units import plain_file
from suricatautil import by_hand

SEGMENT_BYTES = 2**20
PROTO = {"TCP": 6, "UDP": 17}
#: What the generated traffic has: an EICAR marker in 1 of 97 sessions (a raw content rule,
#: raised per packet), DNS lookups, HTTP downloads (two rules on every one).
RULES = """\
alert tcp any any -> any any (msg:"EICAR marker"; flow:established; \
content:"EICAR-STANDARD-ANTIVIRUS-TEST-FILE"; sid:7000003; rev:1;)
alert dns any any -> any any (msg:"DNS example.com"; dns.query; content:"example.com"; \
endswith; sid:7000004; rev:1;)
alert http any any -> any any (msg:"GET of /files/"; flow:established,to_server; \
http.method; content:"GET"; http.uri; content:"/files/"; startswith; sid:7000001; rev:1;)
alert http any any -> any any (msg:"host demo.example"; flow:established,to_server; \
http.host; content:"demo.example"; sid:7000002; rev:1;)
"""


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4 MiB generated capture in 1 MiB segments, the second one compressed."""
    base = tmp_path_factory.mktemp("fidelity")
    cap = base / "synth.pcap"
    generate(cap, 4 * 2**20, seed=11)
    with Store(base / "store") as store:
        store.ingest([cap], segment_max_bytes=SEGMENT_BYTES)
        second = store.catalog.segments()[1].id
    with store_lock(base / "store"):
        assert compress_segment(base / "store", second) is not None
    return base / "store"


def _segment_files(root: Path, tmp: Path) -> list[Path]:
    """Each segment as a pcap file a user would give ``suricata -r``."""
    out = []
    with Store(root) as store:
        for seg in store.catalog.segments():
            path = plain_file(store, seg)
            if path is None:  # compressed: what the user would decompress
                path = tmp / f"segment-{seg.id}.pcap"
                with open(path, "wb") as f:
                    subprocess.run(["zstd", "-d", "-c", str(root / f"{seg.path}.zst")],
                                   stdout=f, check=True)
            out.append(path)
    return out


def test_suricata_hunt_equals_suricata_r_on_each_segment_file(store_root: Path,
                                                             tmp_path: Path) -> None:
    files = _segment_files(store_root, tmp_path)
    assert len(files) >= 4 and sum(f.parent == tmp_path for f in files) == 1
    (tmp_path / "hunt.rules").write_text(RULES)
    expected: Counter[tuple[int, str]] = Counter()
    for i, path in enumerate(files):
        for e in by_hand(path, tmp_path / "hunt.rules", ["-k", "none"], tmp_path / f"l{i}"):
            if e.get("event_type") == "alert":
                expected[(e["alert"]["signature_id"], flow_key(
                    PROTO[e["proto"]], e["src_ip"], e.get("src_port", 0), e["dest_ip"],
                    e.get("dest_port", 0)))] += 1
    with TriggerDB(store_root) as tdb:
        trigger, hunt = tdb.create(from_dict({"name": "ids", "suricata_rules": RULES}), "t")
    run_hunt(store_root, hunt.id, threading.Event(), workers=2)
    with TriggerDB(store_root) as tdb:
        assert tdb.hunt(hunt.id).status == "finished"
        matches = tdb.matches(trigger.id, limit=10**6)
    found = Counter({(int(m["rule"].removeprefix("suricata:")), m["flow_key"]): m["hits"]
                     for m in matches})
    assert found == expected
    assert set(Counter(sid for sid, _ in found.elements())) == {7000001, 7000002, 7000003,
                                                                7000004}
    for m in matches:  # each match is one of the flow's alerts, as EVE showed it
        assert m["evidence"]["sid"] == int(m["rule"].removeprefix("suricata:"))
        assert m["flow_key"] == flow_key(m["proto"], m["src_ip"], m["src_port"],
                                         m["dest_ip"], m["dest_port"])
