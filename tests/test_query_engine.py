"""Query engine: filters, time windows, merge order, chunking, streaming, cancellation."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import corpus_file
from pcaputil import read_records, record_ts_ns, sha256, tcpdump
from pcapwire.errors import QueryError
from pcapwire.query import QuerySpec, QueryStats
from pcapwire.records import FlowKey
from pcapwire.store import Store
from pcapwire.synth import generate


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Path]:
    d = tmp_path_factory.mktemp("synth")
    cap = d / "synth.pcap"
    generate(cap, 8 * 2**20, seed=11)
    store = Store(d / "store")
    store.ingest([cap], segment_max_bytes=1 * 2**20)
    yield store, cap
    store.close()


def _first_flow(store: Store, port: int) -> dict:
    from pcapwire.query.flows import flow_dict

    row = next(store.catalog.flows("port_a = ? OR port_b = ?", [port, port]))
    return flow_dict(row)


EXPRESSIONS = [
    "tcp[tcpflags] & tcp-syn != 0",
    "udp port 53",
    "tcp and not port 80",
    "port 8080 or port 25",
    "greater 1000 and tcp",
    "net 192.0.2.0/24 and (port 80 or port 443)",
    "ip and not net 10.0.0.0/8",
    "tcp[13] & 1 != 0 or udp",
]


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_bpf_over_many_segments_equals_tcpdump(synth, expr: str) -> None:
    store, cap = synth
    assert store.query_engine().to_bytes(QuerySpec(bpf=expr)) == tcpdump(cap, expr)


def test_five_tuple_either_direction_equals_tcpdump(synth) -> None:
    store, cap = synth
    f = _first_flow(store, 443)
    expected = tcpdump(cap, f"tcp and host {f['src_ip']} and host {f['dest_ip']} and port "
                            f"{f['src_port']} and port {f['dest_port']}")
    for key in (FlowKey(6, f["src_ip"], f["src_port"], f["dest_ip"], f["dest_port"]),
                FlowKey(6, f["dest_ip"], f["dest_port"], f["src_ip"], f["src_port"])):
        assert store.query_engine().to_bytes(QuerySpec(five_tuple=key)) == expected


def test_explicit_filters_equal_their_bpf_form(synth) -> None:
    store, cap = synth
    f = _first_flow(store, 25)
    engine = store.query_engine()
    assert engine.to_bytes(QuerySpec(hosts=[f["dest_ip"]], ports=[25], protos=[6])) == \
        tcpdump(cap, f"tcp and host {f['dest_ip']} and port 25")
    assert engine.to_bytes(QuerySpec(nets=["198.51.100.0/24"])) == \
        tcpdump(cap, "net 198.51.100.0/24")


def test_time_window_is_start_inclusive_end_exclusive(synth) -> None:
    store, cap = synth
    _, recs = read_records(tcpdump(cap))
    ts = [record_ts_ns(r) for r in recs]
    start, end = ts[len(ts) // 3], ts[2 * len(ts) // 3]
    expected = [r for r, t in zip(recs, ts, strict=True) if start <= t < end]
    out = store.query_engine().to_bytes(QuerySpec(start_ns=start, end_ns=end))
    assert read_records(out)[1] == expected
    out = store.query_engine().to_bytes(QuerySpec(start_ns=start, end_ns=end, bpf="udp"))
    udp = read_records(tcpdump(cap, "udp"))[1]
    assert read_records(out)[1] == [r for r in udp if start <= record_ts_ns(r) < end]


def test_two_overlapping_inputs_merge_by_time_stably(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    generate(a, 300_000, seed=1)
    generate(b, 300_000, seed=2, start_s=1_700_000_000)  # same time range, interleaved
    merged = tmp_path / "m.pcap"
    subprocess.run(["mergecap", "-F", "pcap", "-w", str(merged), str(a), str(b)], check=True)
    with Store(tmp_path / "s") as store:
        store.ingest([a, b])
        out = store.query_engine().to_bytes(QuerySpec())
    ours, theirs = read_records(out)[1], read_records(tcpdump(merged))[1]
    assert sorted(ours) == sorted(theirs)
    ts = [record_ts_ns(r) for r in ours]
    assert ts == sorted(ts)
    # stable: packets of one input keep their order
    a_recs = read_records(tcpdump(a))[1]
    assert [r for r in ours if r in set(a_recs)] == a_recs


def test_chunks_are_valid_pcaps_within_the_size_limit(synth) -> None:
    store, cap = synth
    chunks = list(store.query_engine().iter_chunks(QuerySpec(bpf="tcp", chunk_bytes=8192)))
    assert len(chunks) > 10
    body = b""
    for i, c in enumerate(chunks):
        assert c.seq == i
        hdr, recs = read_records(c.data)
        assert len(c.data) <= 8192 or len(recs) == 1
        assert c.packets == len(recs)
        body += c.data[24:]
    assert chunks[0].data[:24] + body == tcpdump(cap, "tcp")


async def test_first_chunk_arrives_before_the_scan_ends_and_stopping_cancels(synth) -> None:
    store, _ = synth
    stats = QueryStats()
    total = store.catalog.stats()["packets"]
    agen = store.query_engine().run(QuerySpec(chunk_bytes=4096), stats=stats)
    first = await agen.__anext__()
    assert first.packets > 0
    assert stats.records_examined < total
    await agen.aclose()
    assert stats.records_examined < total
    hist = store.cases.query_history()
    assert hist[-1]["status"] == "cancelled"


async def test_async_run_yields_the_same_bytes_as_tcpdump(synth) -> None:
    store, cap = synth
    data = b""
    async for chunk in store.query_engine().run(QuerySpec(bpf="udp", case="c1", event="e1")):
        data += chunk.data if not data else chunk.data[24:]
    assert data == tcpdump(cap, "udp")
    hist = store.cases.query_history("c1")
    assert hist[-1]["event"] == "e1" and hist[-1]["status"] == "done"
    assert hist[-1]["packets"] == len(read_records(data)[1])


def test_invalid_bpf_is_a_query_error_with_libpcap_text(synth) -> None:
    store, _ = synth
    with pytest.raises(QueryError, match="syntax error"):
        store.query_engine().to_bytes(QuerySpec(bpf="tcp and and"))


def test_result_size_cap_is_a_clear_error(synth) -> None:
    store, _ = synth
    with pytest.raises(QueryError, match="exceeds the limit of 100000 bytes"):
        store.query_engine().to_bytes(QuerySpec(max_bytes=100_000))


def test_random_host_port_expressions_equal_tcpdump(synth) -> None:
    store, cap = synth
    rng = random.Random(5)
    flows = [_first_flow(store, p) for p in (80, 443, 8080, 25, 53)]
    for _ in range(6):
        f = rng.choice(flows)
        terms = [f"host {f['src_ip']}", f"port {f['dest_port']}", "tcp", "udp",
                 f"src host {f['dest_ip']}", f"dst port {f['src_port']}", "ip"]
        expr = f" {rng.choice(['and', 'or'])} ".join(rng.sample(terms, 3))
        if rng.random() < 0.3:
            expr = f"not ({expr})"
        ref = subprocess.run(["tcpdump", "-r", str(cap), "-w", "-", expr],
                             capture_output=True, text=False)
        if ref.returncode != 0:  # e.g. "udp and tcp and …": libpcap rejects all packets
            with pytest.raises(QueryError) as err:
                store.query_engine().to_bytes(QuerySpec(bpf=expr))
            assert ref.stderr.decode().split("tcpdump: ", 1)[1].strip() in str(err.value)
            continue
        assert store.query_engine().to_bytes(QuerySpec(bpf=expr)) == ref.stdout, expr


def _cli(*args: str, data_dir: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pcapwire.cli", "--data-dir", str(data_dir),
                           *args], capture_output=True, **kw)


def test_cli_ingest_query_pipe_into_tshark(tmp_path: Path) -> None:
    d = tmp_path / "store"
    r = _cli("ingest", str(corpus_file("zeek-http-get")), data_dir=d, text=True)
    assert r.returncode == 0 and "ingested 14 packets" in r.stdout
    q = subprocess.Popen([sys.executable, "-m", "pcapwire.cli", "--data-dir", str(d), "query",
                          "--bpf", "tcp and greater 1000", "-w", "-"], stdout=subprocess.PIPE)
    t = subprocess.run(["tshark", "-r", "-", "-T", "fields", "-e", "frame.len"],
                       stdin=q.stdout, capture_output=True, text=True)
    assert q.wait() == 0
    assert t.stdout.split() == ["1514", "1514", "1514"]


def test_cli_exit_codes(tmp_path: Path) -> None:
    d = tmp_path / "store"
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(corpus_file("zeek-http-get").read_bytes()[:-30])
    assert _cli("ingest", str(bad), data_dir=d).returncode == 1
    r = _cli("query", "--bpf", "tcp and and", "-w", str(tmp_path / "o.pcap"), data_dir=d,
             text=True)
    assert r.returncode == 2 and "syntax error" in r.stderr
    assert not (tmp_path / "o.pcap").exists()
    r = _cli("query", "--start", "yesterday", "-w", "-", data_dir=d, text=True)
    assert r.returncode == 2 and "invalid time 'yesterday'" in r.stderr
    out = tmp_path / "all.pcap"
    assert _cli("query", "--start", "2013-03-07T21:42:06Z", "-w", str(out), data_dir=d
                ).returncode == 0
    assert sha256(out.read_bytes()) == sha256(tcpdump(bad))


def test_cli_flows_json(tmp_path: Path) -> None:
    d = tmp_path / "store"
    _cli("ingest", str(corpus_file("zeek-http-get")), data_dir=d)
    r = _cli("flows", "--json", data_dir=d, text=True)
    import json

    (flow,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert flow | {"flow_id": 0} == {
        "flow_id": 0, "proto": "tcp", "src_ip": "141.142.228.5", "src_port": 59856,
        "dest_ip": "192.150.187.43", "dest_port": 80, "start": "2013-03-07T21:42:06.869344Z",
        "end": "2013-03-07T21:42:07.080972Z", "pkts_toserver": 7, "bytes_toserver": 610,
        "pkts_toclient": 7, "bytes_toclient": 5477}


def test_repeated_ports_match_any_of_them_like_tcpdump(synth) -> None:
    store, cap = synth
    engine = store.query_engine()
    got = engine.to_bytes(QuerySpec(ports=[53, 80]))
    assert got == tcpdump(cap, "port 53 or port 80")
    assert got != engine.to_bytes(QuerySpec(ports=[53])) != tcpdump(cap, "port 53 and port 80")
