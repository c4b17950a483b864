"""The hunt's matchers against the tools a user would otherwise use: an IP-indicator hunt
finds exactly the flows of ``tcpdump host X`` / ``net N`` (and of the flow index's host
filter), a BPF hunt exactly the flows of ``tcpdump EXPR``, a file-hash hunt exactly the
files the corpus names; the scope narrows each; units are the sealed segments in scope."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import dpkt
import pytest
from conftest import CASES, corpus_file
from pcaputil import read_records, tcpdump
from pcapwire.query.flows import find_flows
from pcapwire.query.spec import QuerySpec
from pcapwire.store import Store
from pcapwire.synth import generate
from pcapwire.triggers import TriggerDB, from_dict
from pcapwire.triggers.db import flow_key
from pcapwire.triggers.hunt import run_hunt
from pcapwire.triggers.units import plan

SEGMENT_BYTES = 2**20
IPS = ["10.0.0.53", "198.51.100.0/24"]  # synth: the DNS server (every segment), a server net


def _tcpdump_keys(path: Path, expr: str) -> set[str]:
    """5-tuple keys of the packets tcpdump selects (decoded with dpkt, not pcapwire)."""
    keys = set()
    for rec in read_records(tcpdump(path, expr))[1]:
        ip = dpkt.ethernet.Ethernet(rec[16:]).data
        l4 = ip.data
        keys.add(flow_key(ip.p, _ip(ip.src), getattr(l4, "sport", 0), _ip(ip.dst),
                          getattr(l4, "dport", 0)))
    return keys


def _ip(raw: bytes) -> str:
    import ipaddress

    return str(ipaddress.ip_address(raw))


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 4 MiB generated capture and a store of it in 1 MiB segments."""
    base = tmp_path_factory.mktemp("hunt")
    cap = base / "synth.pcap"
    generate(cap, 4 * 2**20, seed=7)
    with Store(base / "store") as store:
        store.ingest([cap], segment_max_bytes=SEGMENT_BYTES)
    return cap, base / "store"


def _hunt(root: Path, raw: dict, workers: int = 2) -> tuple[list[dict], int]:
    """Create the trigger, run its hunt to the end; its matches and the hunt id."""
    with TriggerDB(root) as tdb:
        trigger, hunt = tdb.create(from_dict(raw), "test")
    run_hunt(root, hunt.id, threading.Event(), workers=workers)
    with TriggerDB(root) as tdb:
        assert tdb.hunt(hunt.id).status == "finished"
        return tdb.matches(trigger.id, limit=10**6), hunt.id


def _by_rule(matches: list[dict]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for m in matches:
        out.setdefault(m["rule"], set()).add(m["flow_key"])
    return out


def test_ip_hunt_finds_the_flows_of_tcpdump_host_and_the_index(synth: tuple[Path, Path]
                                                                ) -> None:
    cap, root = synth
    matches, hunt_id = _hunt(root, {"name": "ips", "indicators": {"ips": IPS}})
    found = _by_rule(matches)
    assert set(found) == {"ip:10.0.0.53", "ip:198.51.100.0/24"}
    assert found["ip:10.0.0.53"] == _tcpdump_keys(cap, "host 10.0.0.53")
    assert found["ip:198.51.100.0/24"] == _tcpdump_keys(cap, "net 198.51.100.0/24")
    # one match per (rule, flow), with the flow's id; the same flows the index's filters give
    assert len(matches) == sum(len(v) for v in found.values())
    with Store(root) as store:
        host = {f["flow_id"] for f in find_flows(store.catalog, QuerySpec(hosts=[IPS[0]]))}
        net = {f["flow_id"] for f in find_flows(store.catalog, QuerySpec(nets=[IPS[1]]))}
        flows = {f["flow_id"]: f for f in find_flows(store.catalog, QuerySpec())}
    assert {m["flow_id"] for m in matches if m["rule"] == "ip:10.0.0.53"} == host
    assert {m["flow_id"] for m in matches if m["rule"] == "ip:198.51.100.0/24"} == net
    for m in matches:  # oriented initiator -> responder, as the flow index shows it
        f = flows[m["flow_id"]]
        assert (m["src_ip"], m["src_port"], m["dest_ip"], m["dest_port"]) == (
            f["src_ip"], f["src_port"], f["dest_ip"], f["dest_port"])
        assert m["evidence"]["indicator"] == m["rule"].removeprefix("ip:")
    with TriggerDB(root) as tdb:
        units = tdb.units(hunt_id)
        assert len(units) >= 4 and all(u["state"] == "done" and u["attempts"] == 1
                                       for u in units)
        assert tdb.hunt(hunt_id).bytes_done == sum(u["bytes"] for u in units)


def test_bpf_hunt_finds_the_flows_of_tcpdump(synth: tuple[Path, Path]) -> None:
    cap, root = synth
    expr = "tcp port 25 and tcp[13] & 2 != 0"
    matches, _ = _hunt(root, {"name": "bpf", "bpf": expr})
    assert {m["rule"] for m in matches} == {"bpf"}
    assert {m["flow_key"] for m in matches} == _tcpdump_keys(cap, expr)
    for m in matches:  # SYN and SYN/ACK, in one segment (one hit) or two
        assert m["evidence"] == {"bpf": expr, "packets": 2 if m["hits"] == 1 else 1}


def test_scope_window_and_bpf_narrow_the_ip_hunt(synth: tuple[Path, Path]) -> None:
    cap, root = synth
    with Store(root) as store:
        segs = store.catalog.segments()
        # a window from the middle of the second segment to the middle of the third
        start = (segs[1].first_ns + segs[1].last_ns) // 2
        end = (segs[2].first_ns + segs[2].last_ns) // 2
        window = QuerySpec(bpf="host 10.0.0.53 and udp", start_ns=start, end_ns=end)
        data = store.query_engine().to_bytes(window)
        planned = plan(store.catalog, from_dict({"name": "p", "bpf": "ip", "scope": {
            "start_ns": start, "end_ns": end}}))
    assert [s for s, _ in planned] == [segs[1].id, segs[2].id]
    (root.parent / "window.pcap").write_bytes(data)
    matches, _ = _hunt(root, {"name": "scoped", "indicators": {"ips": [IPS[0]]},
                              "scope": {"start_ns": start, "end_ns": end, "bpf": "udp"}})
    assert {m["flow_key"] for m in matches} == _tcpdump_keys(root.parent / "window.pcap", "")
    assert {m["flow_key"] for m in matches} < _tcpdump_keys(cap, "host 10.0.0.53")


def test_file_hash_hunt_finds_the_corpus_files(tmp_path: Path) -> None:
    case = "zeek-http-pipelined-5-files"
    files = CASES[case]["expect"]["files"]
    with Store(tmp_path / "store") as store:
        store.ingest([corpus_file(case)])
    wanted = {"sha256": [files[0]["sha256"]], "md5": [files[1]["md5"]],
              "sha1": [files[3]["sha1"]]}
    matches, _ = _hunt(tmp_path / "store", {"name": "files", "indicators": wanted})
    assert sorted(m["rule"] for m in matches) == sorted(
        [f"sha256:{files[0]['sha256']}", f"md5:{files[1]['md5']}", f"sha1:{files[3]['sha1']}"])
    flow = files[0]["flow"]
    for m in matches:
        assert (m["src_ip"], m["src_port"], m["dest_ip"], m["dest_port"]) == (
            flow["orig_h"], flow["orig_p"], flow["resp_h"], flow["resp_p"])
        assert m["flow_id"] is not None and m["evidence"]["protocol"] == "http"
    by_rule = {m["rule"]: m["evidence"] for m in matches}
    assert by_rule[f"sha256:{files[0]['sha256']}"]["size"] == files[0]["size"]
    assert by_rule[f"md5:{files[1]['md5']}"]["sha256"] == files[1]["sha256"]


def test_units_are_the_sealed_segments_the_hunt_was_given(synth: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    cap, _ = synth
    root = tmp_path / "store"
    with Store(root) as store:
        store.ingest([cap], segment_max_bytes=SEGMENT_BYTES)
        ids = [s.id for s in store.catalog.segments()]
        # the recorder is still writing the last one
        store.catalog.db.execute("INSERT INTO capture_segments VALUES (?, 1, 'eth0', 'open', "
                                 "?, NULL)", (ids[-1], time.time()))
    with TriggerDB(root) as tdb:
        trigger, hunt = tdb.create(from_dict({"name": "u", "indicators": {"ips": IPS}}), "t")
    with Store(root) as store:  # what arrives after the trigger is the watch's, not the hunt's
        store.ingest([corpus_file("zeek-http-get")])
    run_hunt(root, hunt.id, threading.Event(), workers=1)
    with TriggerDB(root) as tdb:
        assert [u["segment_id"] for u in tdb.units(hunt.id)] == ids[:-1]
        assert tdb.hunt(hunt.id).units_done == len(ids) - 1
