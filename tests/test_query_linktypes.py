"""Results over a store of several link types (issue 10.1).

The store holds Ethernet captures (plain, QinQ, nanosecond, pcapng, big-endian), Linux
SLL2 (276) and a raw-IP (101) copy of a TLS capture. A result whose packets share one link
type must be the classic pcap tcpdump writes for the ingested files (``tcpdump -r FILE -w -
EXPR`` per file, merged in time order under the header with the largest snaplen of the
files holding the packets, as mergecap merges); tcpdump and Suricata read it. A result
that really mixes link types is pcapng declaring exactly the interfaces its packets use;
tshark reads it. Checked through the CLI (``pcapwire query -w``) and the API (``GET
/api/v1/queries/{id}/pcap``), and the chunks of a mixed result through Suricata (one
engine per link type).
"""

from __future__ import annotations

import heapq
import json
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from apiutil import Tokens, bearer, upload, wait_done
from conftest import corpus_file
from pcaputil import as_raw_ip, pcapng_records, read_records, record_ts_ns, tcpdump
from pcapwire.api import ApiConfig, create_app
from pcapwire.plugins.suricata.config import SuricataSettings
from pcapwire.plugins.suricata.run import SuricataRun
from pcapwire.query import QuerySpec
from pcapwire.query.linktypes import settle
from pcapwire.records import FlowKey
from pcapwire.store import Store

ETHERNET = ["zeek-http-get", "zeek-http-qinq-vlan0", "suricata-dns-udp-cname-a",
            "zeek-ipv6-fragmented-dns", "zeek-pcap-nanosecond-http-to-ssh",
            "zeek-pcapng-two-interfaces", "arkime-pcap-big-endian", "zeek-smtp-two-messages"]
# (BPF, the link types of its result): one link type -> classic pcap; several -> pcapng
BPF_QUERIES = [
    ("tcp port 80", {1}),
    ("udp", {1}),
    ("tcp[13] & 18 = 18 and not ip6", {1, 101}),  # not indexable: every segment is read
    ("host 192.0.2.1", {276}),
    ("host 68.233.76.12", {101}),
    ("greater 1000 and tcp port 443", {1, 101}),
    ("icmp or icmp6", {1, 276}),
    ("tcp port 443 or host 192.0.2.1", {1, 101, 276}),
    ("len = 48", {276}),  # not indexable; only SLL2's ARP/RARP frames are 48 bytes
]
FIVE_TUPLES = [
    (FlowKey(17, "10.16.1.11", 41805, "10.16.1.1", 53), {1}),
    (FlowKey(6, "68.233.76.12", 443, "10.0.0.80", 56637), {101}),  # given reversed
    (FlowKey(1, "192.0.2.1", 0, "192.0.2.1", 0), {276}),
    (FlowKey(6, "10.10.1.4", 1470, "74.53.140.153", 25), {1}),
]
QUERIES = [(q, q, lts) for q, lts in BPF_QUERIES] + [(ft.bpf(), ft, lts) for ft, lts in
                                                     FIVE_TUPLES]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[Path]]:
    """The captures per link type, each list in the time order they are ingested in."""
    raw = tmp_path_factory.mktemp("raw") / "tls12-raw-ip.pcap"
    raw.write_bytes(as_raw_ip(corpus_file("zeek-tls12-cert-chain").read_bytes()))
    files = {1: [corpus_file(c) for c in ETHERNET], 276: [corpus_file("zeek-linux-sll2")],
             101: [raw]}
    return {lt: sorted(paths, key=_first_ts) for lt, paths in files.items()}


def _first_ts(path: Path) -> int:
    return record_ts_ns(read_records(tcpdump(path))[1][0])


def _in_time_order(inputs: dict[int, list[Path]]) -> list[Path]:
    return sorted((p for paths in inputs.values() for p in paths), key=_first_ts)


_REFERENCES: dict[str, dict[int, tuple[bytes, list[bytes]]]] = {}
_READ_BY_TOOLS: set[bytes] = set()  # results the tools were shown to read


def reference(inputs: dict[int, list[Path]], expr: str) -> dict[int, tuple[bytes, list[bytes]]]:
    """Per link type with packets: (header, records) of ``tcpdump -r FILE -w - EXPR`` over
    that link type's files, records merged by time (ties in ingest order), under the header
    with the largest snaplen among the files that hold them (what mergecap writes)."""
    if expr in _REFERENCES:
        return _REFERENCES[expr]
    out = _REFERENCES[expr] = {}
    for lt, paths in inputs.items():
        ran = [subprocess.run(["tcpdump", "-r", str(p), "-w", "-", expr], capture_output=True,
                              check=True).stdout for p in paths]
        parts = [read_records(r) for r in ran]
        records = list(heapq.merge(*(recs for _h, recs in parts), key=record_ts_ns))
        if records:
            header = max((h for h, r in parts if r),
                         key=lambda h: struct.unpack_from("<I", h, 16))
            out[lt] = (header, records)
    return out


def check_result(data: bytes, ref: dict[int, tuple[bytes, list[bytes]]], where: Path,
                 expect: set[int]) -> None:
    """``data`` is the result ``ref`` says, and the tools that should read it do."""
    assert set(ref) == expect, where
    if len(ref) == 1:
        (lt, (header, records)), = ref.items()
        assert data == header + b"".join(records), where
    if data in _READ_BY_TOOLS:
        return
    _READ_BY_TOOLS.add(data)
    where.write_bytes(data)
    if len(ref) == 1:
        dump = subprocess.run(["tcpdump", "-n", "-r", str(where)], capture_output=True,
                              text=True)
        assert dump.returncode == 0 and len(dump.stdout.splitlines()) == len(records)
        if lt != 276:  # Suricata 7 does not decode Linux SLL2 ("datalink type 276 not
            assert suricata_packets(where) == len(records)  # (yet) supported")
        return
    assert data[:4] == bytes.fromhex("0a0d0d0a")
    assert pcapng_records(data) == {lt: recs for lt, (_h, recs) in ref.items()}
    # exactly the interfaces used, declared in the order their first packets come
    first = sorted(ref, key=lambda lt: record_ts_ns(ref[lt][1][0]))
    assert _idb_linktypes(data) == first
    fields = subprocess.run(["tshark", "-r", str(where), "-T", "fields", "-e",
                             "frame.interface_id"], capture_output=True, text=True, check=True)
    assert Counter(int(i) for i in fields.stdout.split()) == {
        i: len(ref[lt][1]) for i, lt in enumerate(first)}


def _idb_linktypes(data: bytes) -> list[int]:
    pos, out = 0, []
    while pos < len(data):
        btype, blen = struct.unpack_from("<II", data, pos)
        if btype == 1:
            out.append(struct.unpack_from("<H", data, pos + 8)[0])
        pos += blen
    return out


def suricata_packets(pcap: Path) -> int:
    """Packets ``suricata -r PCAP -k none`` decoded (its final stats record in eve.json)."""
    log = pcap.with_suffix(".suricata")
    log.mkdir()
    subprocess.run(["suricata", "-c", "/etc/suricata/suricata.yaml", "-S", "/dev/null", "-r",
                    str(pcap), "-l", str(log), "-k", "none", "--set",
                    "unix-command.enabled=no"], capture_output=True, check=True, timeout=120)
    stats = [e["stats"] for line in (log / "eve.json").read_text().splitlines()
             if (e := json.loads(line)).get("event_type") == "stats"]
    return int(stats[-1]["decoder"]["pkts"])


def _cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pcapwire.cli", "--data-dir", str(data_dir),
                           *args], capture_output=True, text=True)


def _cli_filters(query: str | FlowKey) -> list[str]:
    if isinstance(query, FlowKey):
        return ["--five-tuple", f"{query.proto_name}:{query.src}:{query.sport}:{query.dst}:"
                                f"{query.dport}"]
    return ["--bpf", query]


def test_cli_results_are_tcpdumps_or_pcapng_of_the_used_interfaces(
        inputs: dict[int, list[Path]], tmp_path: Path) -> None:
    d = tmp_path / "store"
    ingest = _cli("ingest", *map(str, _in_time_order(inputs)), data_dir=d)
    assert ingest.returncode == 0, ingest.stderr
    for n, (expr, query, expect) in enumerate(QUERIES):
        out = tmp_path / f"q{n}.pcap"
        q = _cli("query", *_cli_filters(query), "-w", str(out), data_dir=d)
        assert q.returncode == 0, (expr, q.stderr)
        check_result(out.read_bytes(), reference(inputs, expr), tmp_path / f"c{n}.pcap",
                     expect)


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))


async def test_api_results_are_tcpdumps_or_pcapng_of_the_used_interfaces(
        client, inputs: dict[int, list[Path]], tmp_path: Path) -> None:
    tok = Tokens(tmp_path)["acme", "analyst"]
    for path in _in_time_order(inputs):
        await upload(client, path, tok)
    for n, (expr, query, expect) in enumerate(QUERIES):
        body = ({"five_tuple": query.to_dict()} if isinstance(query, FlowKey)
                else {"bpf": query})
        q = await (await client.post("/api/v1/queries", json=body, headers=bearer(tok))).json()
        got = await (await client.get(q["links"]["pcap"], headers=bearer(tok))).read()
        assert (await wait_done(client, q["id"], tok))["status"] == "done"
        check_result(got, reference(inputs, expr), tmp_path / f"api{n}.pcap", expect)
        stored = await (await client.get(q["links"]["pcap"], headers=bearer(tok))).read()
        assert stored == got


def test_empty_result_over_mixed_segments_is_an_empty_classic_pcap(
        inputs: dict[int, list[Path]], tmp_path: Path) -> None:
    with Store(tmp_path / "s") as store:
        store.ingest(_in_time_order(inputs))
        out = store.query_engine().to_bytes(QuerySpec(bpf="tcp[13] = 255"))
    assert len(out) == 24 and out[:4] == bytes.fromhex("d4c3b2a1")
    assert subprocess.run(["tcpdump", "-r", "-"], input=out, capture_output=True).returncode == 0


class _Seg:
    def __init__(self, lt: int, size: int) -> None:
        self.linktype, self.size, self.packets, self.snaplen = lt, size, 1, 65535


class _SegPlan:
    def __init__(self, lt: int, size: int) -> None:
        self.segment, self.offsets = _Seg(lt, size), None


class _Plan:
    def __init__(self, groups: dict[int, int]) -> None:
        self.segments = [_SegPlan(lt, size) for lt, size in groups.items()]
        self.snaplens = {lt: 65535 for lt in groups}
        self.settled = False


@pytest.mark.parametrize(("sizes", "matching", "probed", "left"), [
    ({1: 100}, {1}, [], {1}),  # one link type: nothing to probe
    ({1: 100, 276: 5}, {1}, [276], {1}),  # the small group is empty; the largest not read
    ({1: 100, 276: 5}, {276}, [276, 1], {276}),  # the largest read to its end: empty
    ({1: 100, 276: 5}, {1, 276}, [276, 1], {1, 276}),
    ({1: 100, 276: 5, 101: 50}, {276, 101}, [276, 101], {1, 276, 101}),  # 2 found: stop
    ({1: 100, 276: 5, 101: 50}, set(), [276, 101], {1}),  # empty result: largest's type
])
def test_settle_probes_smallest_first_and_only_as_far_as_needed(
        sizes: dict[int, int], matching: set[int], probed: list[int], left: set[int]) -> None:
    plan = _Plan(sizes)
    seen: list[int] = []

    def probe(group: list) -> bool:
        seen.append(group[0].segment.linktype)
        return group[0].segment.linktype in matching

    settle(plan, probe)  # type: ignore[arg-type]
    assert seen == probed and plan.settled
    assert set(plan.snaplens) == left == {p.segment.linktype for p in plan.segments}


async def test_suricata_gets_one_stream_per_link_type_of_a_mixed_result(
        inputs: dict[int, list[Path]], tmp_path: Path) -> None:
    """The chunks of a mixed result (Ethernet, raw IP and SLL2 interleaved in time) go to
    one Suricata engine per link type, each reading exactly its link type's packets; the
    link type Suricata 7 cannot decode (SLL2) is named in the step's errors."""
    expr = "tcp port 443 or host 192.0.2.1"
    with Store(tmp_path / "s") as store:
        store.ingest(_in_time_order(inputs))
        chunks = list(store.query_engine().iter_chunks(QuerySpec(bpf=expr, chunk_bytes=4096)))
    order = list(dict.fromkeys(c.linktype for c in chunks))
    assert sorted(order) == [1, 101, 276] and len(chunks) > len(order)  # interleaved
    ref = reference(inputs, expr)
    rules = tmp_path / "empty.rules"
    rules.write_text("")
    run = SuricataRun(SuricataSettings.from_mapping({"rules": [str(rules)],
                                                     "args": ["-k", "none"]}))
    try:
        await run.start()
        for chunk in chunks:
            await run.feed(chunk)
        result = await run.finish()
    finally:
        await run.abort()
    assert [e.packets for e in result.engines] == [len(ref[lt][1]) for lt in order
                                                   if lt != 276]
    (error,) = result.errors
    assert error.startswith("link type 276: ") and "datalink type 276" in error

