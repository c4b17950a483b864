"""Legal holds: evidence equal to tcpdump's output, surviving the deletion of its base
segments; future windows fed as segments arrive (ingested or recorded); what retention
must keep; release; the custody log; the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from captureutil import ManualSource, batches_of, packets_in, wait_for
from pcaputil import read_records, record_ts_ns, sha256, tcpdump
from pcapwire import custody
from pcapwire.cli import main
from pcapwire.errors import ConfigError, QueryError
from pcapwire.holds import (
    HoldReleased,
    actions,
    copying,
    create_hold,
    evidence_files,
    feed,
    get_hold,
    protected_segment_ids,
    release_hold,
)
from pcapwire.holds.evidence import case_dir
from pcapwire.query import QuerySpec
from pcapwire.query.flows import flow_dict
from pcapwire.records import FlowKey
from pcapwire.retention.delete import delete_segment
from pcapwire.retention.plan import Candidate
from pcapwire.store import Store
from pcapwire.synth import generate

ACTOR = "cli:tester@test"
LATER_S = 1_700_100_000  # the second capture starts a day after the first
SEGMENT_BYTES = 512 * 1024


@pytest.fixture(scope="module")
def caps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("holdcaps")
    a, b = d / "a.pcap", d / "b.pcap"
    generate(a, 2 * 2**20, seed=21)
    generate(b, 1536 * 1024, seed=22, start_s=LATER_S)
    return a, b


@pytest.fixture
def store(tmp_path: Path, caps: tuple[Path, Path]):
    with Store(tmp_path / "store") as s:
        s.ingest([caps[0]], segment_max_bytes=SEGMENT_BYTES)
        yield s


def in_window(data: bytes, start_ns: int | None, end_ns: int | None) -> bytes:
    header, recs = read_records(data)
    return header + b"".join(r for r in recs if (start_ns is None or record_ts_ns(r) >= start_ns)
                             and (end_ns is None or record_ts_ns(r) < end_ns))


def evidence(store: Store, hold_id: int) -> list[bytes]:
    return [(store.root / p.path).read_bytes() for p in get_hold(store.root, hold_id).parts]


def actions_logged(root: Path, case: str) -> list[dict]:
    return [json.loads(line) for line in custody.read(root, case)]


def segment_ids(store: Store) -> set[int]:
    return {s.id for s in store.catalog.segments()}


def delete_all_segments(store: Store) -> None:
    """Delete every segment the way retention does."""
    for s in store.catalog.segments():
        cand = Candidate(s.id, s.path, s.first_ns, s.last_ns, s.packets, s.size)
        assert delete_segment(store, cand, "max_age", "test") is not None
    assert store.catalog.segments() == [] and not list((store.root / "segments").rglob("*.pcap"))


def test_bpf_hold_equals_tcpdump_and_survives_its_segments(store: Store, caps) -> None:
    cap = caps[0]
    times = [record_ts_ns(r) for r in read_records(tcpdump(cap))[1]]
    start, end = times[len(times) // 4], times[3 * len(times) // 4]
    expr = "tcp[tcpflags] & tcp-push != 0 or udp"
    expected = in_window(tcpdump(cap, expr), start, end)
    assert len(store.catalog.segments()) >= 4
    hold = create_hold(store, QuerySpec(bpf=expr, start_ns=start, end_ns=end, case="IR-1"),
                       "litigation notice 7", ACTOR)
    assert hold.state == "complete"  # its window passed long ago: all of it is copied
    assert [p.n for p in hold.parts] == [1] and evidence(store, hold.id) == [expected]
    part = hold.parts[0]
    assert part.packets == len(read_records(expected)[1]) and part.size == len(expected)
    assert part.segments == sorted(s.id for s in store.catalog.segments(start, end))
    assert protected_segment_ids(store) == set()

    delete_all_segments(store)
    path = store.root / part.path
    assert path.read_bytes() == expected and sha256(expected) == part.sha256
    log = actions_logged(store.root, "IR-1")
    assert [e["action"] for e in log] == ["hold.create", "hold.complete"]
    assert log[0]["objects"] == [{"kind": "evidence", "path": part.path, "sha256": part.sha256,
                                  "size": len(expected)}]
    assert log[0]["details"]["reason"] == "litigation notice 7"
    assert log[0]["details"]["segments"] == part.segments and log[0]["actor"] == ACTOR
    assert evidence_files(store.root, "IR-1") == [(f"evidence/hold-{hold.id}/part-0001.pcap",
                                                   path)]


def test_flow_and_five_tuple_holds_equal_the_query_and_tcpdump(store: Store, caps) -> None:
    row = next(store.catalog.flows("proto = 6 AND port_b = 443"))
    f = flow_dict(row)
    before = store.query_engine().to_bytes(QuerySpec(flow_ids=[row.id]))
    expr = (f"tcp and host {f['src_ip']} and host {f['dest_ip']} and port {f['src_port']} "
            f"and port {f['dest_port']}")
    assert before == tcpdump(caps[0], expr) and len(read_records(before)[1]) > 5
    by_flow = create_hold(store, QuerySpec(flow_ids=[row.id], case="IR-2"), "flow", ACTOR)
    key = FlowKey(6, f["dest_ip"], f["dest_port"], f["src_ip"], f["src_port"])  # reversed
    by_key = create_hold(store, QuerySpec(five_tuple=key, case="IR-2"), "tuple", ACTOR)
    assert evidence(store, by_flow.id) == evidence(store, by_key.id) == [before]
    assert by_flow.selection == {"flow_ids": [row.id]}
    assert by_key.selection == {"five_tuple": key.to_dict()}
    with pytest.raises(QueryError, match="no flow 999999 in this store"):
        create_hold(store, QuerySpec(flow_ids=[row.id, 999999], case="IR-2"), "x", ACTOR)


def test_a_future_window_keeps_adding_what_is_ingested(store: Store, caps) -> None:
    end = time.time_ns() + 86400 * 10**9
    hold = create_hold(store, QuerySpec(bpf="udp", end_ns=end, case="IR-3"), "ongoing", ACTOR)
    assert hold.state == "open" and evidence(store, hold.id) == [tcpdump(caps[0], "udp")]
    assert protected_segment_ids(store) == set()
    assert feed(store) == 0
    old = segment_ids(store)
    store.ingest([caps[1]], segment_max_bytes=SEGMENT_BYTES)
    new = segment_ids(store) - old
    assert len(new) >= 3 and protected_segment_ids(store) == new
    later = tcpdump(caps[1], "udp")
    assert feed(store) == len(read_records(later)[1]) > 0
    hold = get_hold(store.root, hold.id)
    assert evidence(store, hold.id)[1] == later and hold.parts[1].segments == sorted(new)
    assert protected_segment_ids(store) == set() and hold.state == "open"
    assert feed(store, now_ns=end) == 0 and get_hold(store.root, hold.id).state == "open"
    grace = int(copying.COMPLETION_GRACE_S * 1e9)
    feed(store, now_ns=end + grace)
    assert get_hold(store.root, hold.id).state == "complete"
    log = actions_logged(store.root, "IR-3")
    assert [e["action"] for e in log] == ["hold.create", "hold.extend", "hold.complete"]
    assert log[1]["objects"][0]["sha256"] == sha256(later) == hold.parts[1].sha256
    assert log[1]["actor"] == copying.FEED_ACTOR and log[1]["details"]["part"] == 2


def test_parts_hold_at_most_max_part_segments(store: Store, caps, monkeypatch) -> None:
    monkeypatch.setattr(copying, "MAX_PART_SEGMENTS", 2)
    n = len(store.catalog.segments())
    hold = create_hold(store, QuerySpec(bpf="tcp", case="IR-4"), "split", ACTOR)
    assert [len(p.segments) for p in hold.parts] == [2] * (n // 2) + [1] * (n % 2)
    header, recs = read_records(tcpdump(caps[0], "tcp"))
    got = [read_records(b) for b in evidence(store, hold.id)]
    assert {h for h, _ in got} == {header} and [r for _, rs in got for r in rs] == recs
    assert [e["action"] for e in actions_logged(store.root, "IR-4")] == [
        "hold.create"] + ["hold.extend"] * (len(hold.parts) - 1)


def test_release_needs_a_reason_stops_feeding_and_keeps_the_evidence(store: Store,
                                                                    caps) -> None:
    hold = create_hold(store, QuerySpec(ports=[53], case="IR-5"), "ongoing", ACTOR)
    for bad in ("", "   "):
        with pytest.raises(ConfigError, match="needs a reason"):
            release_hold(store.root, hold.id, bad, ACTOR)
    with pytest.raises(ConfigError, match="limit of 2000"):
        release_hold(store.root, hold.id, "x" * (actions.MAX_REASON_CHARS + 1), ACTOR)
    kept = evidence(store, hold.id)
    released = release_hold(store.root, hold.id, "matter closed", "cli:boss@test")
    assert (released.state, released.released_by, released.release_reason) == (
        "released", "cli:boss@test", "matter closed")
    with pytest.raises(HoldReleased, match="released already, by cli:boss@test"):
        release_hold(store.root, hold.id, "again", ACTOR)
    store.ingest([caps[1]], segment_max_bytes=SEGMENT_BYTES)
    assert protected_segment_ids(store) == set() and feed(store) == 0
    assert evidence(store, hold.id) == kept
    last = actions_logged(store.root, "IR-5")[-1]
    assert (last["action"], last["actor"], last["details"]["reason"]) == (
        "hold.release", "cli:boss@test", "matter closed")


def test_refusals_leave_nothing_behind(store: Store) -> None:
    with pytest.raises(QueryError, match="name what to hold"):
        create_hold(store, QuerySpec(case="IR-6"), "r", ACTOR)
    with pytest.raises(QueryError, match="nothing to hold: no packet in"):
        create_hold(store, QuerySpec(bpf="port 9", end_ns=10**18, case="IR-6"), "r", ACTOR)
    with pytest.raises(QueryError, match="invalid BPF expression .port nine."):
        create_hold(store, QuerySpec(bpf="port nine", case="IR-6"), "r", ACTOR)
    with pytest.raises(ConfigError, match="needs a reason"):
        create_hold(store, QuerySpec(bpf="udp", case="IR-6"), " ", ACTOR)
    with pytest.raises(ConfigError, match="case name of 1..200"):
        create_hold(store, QuerySpec(bpf="udp", case="c" * (actions.MAX_CASE_CHARS + 1)), "r",
                    ACTOR)
    assert custody.read(store.root, "IR-6") == [] and not case_dir(store.root, "IR-6").exists()
    assert protected_segment_ids(store) == set()
    hold = create_hold(store, QuerySpec(bpf="udp", case=".."), "dots", ACTOR)
    assert (store.root / hold.parts[0].path).parent.parent.parent == store.root / "evidence"


def test_a_recorded_segment_is_copied_once_sealed(tmp_path: Path, caps) -> None:
    from pcapwire.capture import Recorder, RecorderConfig

    batches = batches_of(caps[0])
    half = len(batches) // 2
    src = ManualSource()
    rec = Recorder(tmp_path, RecorderConfig(commit_interval=0.05, status_interval=0.1,
                                            rotate_seconds=3600, disk_reserve=0))
    rec.start([src])
    try:
        src.push(*batches[:half])
        with Store(tmp_path) as store:
            wait_for(lambda: store.catalog.stats()["packets"] == packets_in(batches[:half]),
                     what="the first half committed")
            hold = create_hold(store, QuerySpec(bpf="udp", case="IR-7"), "live", ACTOR)
            assert hold.parts == [] and hold.state == "open"
            assert protected_segment_ids(store) == segment_ids(store) == {1}
            assert feed(store) == 0
        src.push(*batches[half:])
        src.end()
        wait_for(lambda: rec.inputs_ended, what="the input sealed")
    finally:
        rec.stop()
    with Store(tmp_path) as store:
        assert feed(store) > 0 and evidence(store, hold.id) == [tcpdump(caps[0], "udp")]
        assert protected_segment_ids(store) == set()


def test_cli_create_list_show_release(store: Store, caps, capsys) -> None:
    d = ["--data-dir", str(store.root)]
    assert main([*d, "hold", "create", "--case", "IR-8", "--bpf", "udp", "--port", "53",
                 "--reason", "cli", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["selection"] == {"bpf": "udp", "ports": [53]} and made["state"] == "open"
    assert made["packets"] == len(read_records(tcpdump(caps[0], "udp and port 53"))[1])
    assert made["protects"] == {"segments": [], "bytes": 0}
    assert main([*d, "hold", "list", "--json"]) == 0
    assert [json.loads(x)["id"] for x in capsys.readouterr().out.splitlines()] == [made["id"]]
    assert main([*d, "hold", "show", str(made["id"])]) == 0
    assert made["parts"][0]["sha256"] in capsys.readouterr().out
    assert main([*d, "hold", "release", str(made["id"]), "--reason", " "]) == 2
    assert "needs a reason" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*d, "hold", "release", str(made["id"])])  # --reason is required
    assert main([*d, "hold", "release", str(made["id"]), "--reason", "done"]) == 0
    assert "evidence parts stay" in capsys.readouterr().out
    assert main([*d, "hold", "list", "--state", "released"]) == 0
    assert "released" in capsys.readouterr().out and main([*d, "hold", "show", "99"]) == 2
    assert "no hold 99" in capsys.readouterr().err
