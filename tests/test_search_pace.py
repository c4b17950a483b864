"""What makes indexing keep pace with the analyzers (benchmarks/bench_search_pace.py), with
the values it must keep: the guided walk over indexed fields gives exactly the postings of
the full flatten, times are written as before, the flow locator reads a 5-tuple's flows
once and chooses as the SQL did, writers of one process queue for the index file
instead of failing on SQLite's busy timeout, a transaction holds BATCH documents, and the
verdicts' timestamps and 5-tuples' address blobs are made as before."""

from __future__ import annotations

import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import dpkt
import pytest
from pcapwire import _native
from pcapwire.records import FlowKey
from pcapwire.search import index as index_module
from pcapwire.search import sources
from pcapwire.search.ecs import Doc, pivot_query
from pcapwire.search.fields import FIELDS
from pcapwire.search.index import (
    NODE_MEMO_KEYS,
    NODE_MEMO_PLANS,
    SearchIndex,
    flatten,
    postings,
)
from pcapwire.search.indexer import BATCH, collector_paused, index_records
from pcapwire.search.values import _ISO_YEAR_MIN, parse_ip, us_iso
from pcapwire.store import Store

T0 = 1_700_000_000


def test_us_iso_exact_forms() -> None:
    assert us_iso(0) == "1970-01-01T00:00:00.000000Z"
    assert us_iso(1_700_000_000_000_003) == "2023-11-14T22:13:20.000003Z"
    assert us_iso(-1) == "1969-12-31T23:59:59.999999Z"
    assert us_iso(253_402_300_799_999_999) == "9999-12-31T23:59:59.999999Z"
    # isoformat from year 1000 on; below, strftime's form (no leading zeros) as before
    assert _ISO_YEAR_MIN == 1000
    assert us_iso(-30_610_224_000_000_000) == "1000-01-01T00:00:00.000000Z"
    assert us_iso(-30_610_224_000_000_001) == "999-12-31T23:59:59.999999Z"
    assert us_iso(-50_000_000_000_000_000) == "385-07-25T07:06:40.000000Z"


def test_pivot_query_five_tuple_exact() -> None:
    tcp = pivot_query(FlowKey(6, "10.0.0.1", 1234, "10.0.0.2", 80), 0, 1_000_001, "c1")
    assert tcp == {"start": "1970-01-01T00:00:00.000000Z",
                   "end": "1970-01-01T00:00:01.000001Z",
                   "five_tuple": {"proto": "tcp", "src_ip": "10.0.0.1", "src_port": 1234,
                                  "dest_ip": "10.0.0.2", "dest_port": 80},
                   "case": "c1"}
    assert list(tcp["five_tuple"]) == ["proto", "src_ip", "src_port", "dest_ip", "dest_port"]
    gre = pivot_query(FlowKey(47, "10.0.0.1", 0, "10.0.0.2", 0), 0, 1)
    assert gre["five_tuple"]["proto"] == 47 and "case" not in gre


#: A document with what the walk must treat like flatten: a dotted key at the top, lists
#: of scalars and of objects, None items, an opaque object, an opaque name over a list of
#: objects (flattened, as flatten does), a non-field object, bools, a bad IP and time.
AWKWARD = {
    "url.domain": "A.Example",
    "url": {"path": ["/x", None, {"junk": 1}], "original": "http://a.example/x"},
    "observer": {"product": "p", "vendor": {"name": "v"}},
    "pcapwire": {"pivot": {"case": "not-indexed"}, "evidence": [{"case": "flattened"}],
                 "case": "C1", "run_id": ["r1", "r2"]},
    "email": {"subject": ["Hi There", "Invoice 5"],
              "attachments": [{"file": {"name": "a.EXE"}}, {"file": {"name": "b"}}]},
    "source": {"ip": ["10.0.0.1", "nope", "::1"], "port": True},
    "destination": {"port": 53, "ip": "10.0.0.2"},
    "@timestamp": 1.5,
    "event": {"created": "bad time", "start": "2026-12-01T10:00:00Z"},
}


def test_postings_exact_and_in_flattens_order() -> None:
    terms, nums, text = postings(AWKWARD)
    assert terms == [
        ("url.domain", "a.example"),
        ("destination.ip", "00000000000000000000ffff0a000002"),
        ("source.ip", "00000000000000000000ffff0a000001"),
        ("source.ip", "00000000000000000000000000000001"),
        ("email.subject", "hi there"), ("email.subject", "invoice 5"),
        ("email.attachments.file.name", "b"), ("email.attachments.file.name", "a.exe"),
        ("pcapwire.case", "c1"), ("pcapwire.run_id", "r1"), ("pcapwire.run_id", "r2"),
        ("url.path", "/x"), ("url.original", "http://a.example/x")]
    assert nums == [("@timestamp", 1_500_000), ("event.start", 1_796_119_200_000_000),
                    ("destination.port", 53)]
    assert text == {"t1": "Hi There\nInvoice 5",
                    "anytext": "A.Example\n10.0.0.2\n10.0.0.1\n::1\nHi There\nInvoice 5\n"
                               "b\na.EXE\nC1\nr1\nr2\n/x\nhttp://a.example/x"}
    # the guided walk takes the indexed values exactly as the full flatten lists them
    flat = [(n, v) for n, v in flatten(AWKWARD) if n in FIELDS]
    assert [(n, w) for (n, _v), w in zip(terms, text["anytext"].split("\n"), strict=True)] \
        == [(n, str(v)) for n, v in flat if FIELDS[n] in ("keyword", "text")
            or (FIELDS[n] == "ip" and parse_ip(str(v)))]
    assert [n for n, _v in nums] == [n for n, v in flat if FIELDS[n] == "date"
                                     or (FIELDS[n] == "long" and type(v) is int)]


def test_node_memo_is_bounded_and_names_stay_right() -> None:
    doc: dict[str, Any] = {f"k{i}": i for i in range(NODE_MEMO_KEYS * 2)}
    doc["url.domain"] = "Late.Example"
    doc["url"] = {"domain": "Nested.Example"}
    terms, _nums, _text = postings(doc)
    assert terms == [("url.domain", "late.example"), ("url.domain", "nested.example")]
    assert len(index_module._ROOT.children) <= NODE_MEMO_KEYS


def test_plan_memo_is_bounded_and_plans_follow_each_objects_keys() -> None:
    docs: list[dict[str, Any]] = [{f"k{i}": 1, "url": {"domain": f"D{i}.Example"}}
                                  for i in range(NODE_MEMO_PLANS * 2)]
    for i, doc in enumerate(docs):
        assert postings(doc)[0] == [("url.domain", f"d{i}.example")]
    assert len(index_module._ROOT.plans) <= NODE_MEMO_PLANS
    # the same keys in another order: another plan, values in that order
    a = {"source": {"ip": "10.0.0.1"}, "url": {"domain": "a"}}
    b = {"url": {"domain": "a"}, "source": {"ip": "10.0.0.1"}}
    assert postings(a)[2]["anytext"] == "a\n10.0.0.1"
    assert postings(b)[2]["anytext"] == "10.0.0.1\na"


def _udp(src: str, sport: int, dst: str, dport: int) -> bytes:
    import socket

    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=b"q")
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=17, data=udp)
    ip.len = len(ip)
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, data=ip))


@pytest.fixture(scope="module")
def reused_port(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """One UDP 5-tuple in three flows (two hours apart, over the idle timeout), the second
    with a reply; returns the data directory and the flow ids by first packet."""
    root = tmp_path_factory.mktemp("pace") / "data"
    pcap = root.parent / "reuse.pcap"
    with open(pcap, "wb") as f:
        w = dpkt.pcap.Writer(f)
        w.writepkt(_udp("10.0.0.1", 5000, "10.0.0.2", 53), ts=T0)
        w.writepkt(_udp("10.0.0.1", 5000, "10.0.0.2", 53), ts=T0 + 7200)
        w.writepkt(_udp("10.0.0.2", 53, "10.0.0.1", 5000), ts=T0 + 7230)
        w.writepkt(_udp("10.0.0.1", 5000, "10.0.0.2", 53), ts=T0 + 14400)
    with Store(root) as store:
        store.ingest([pcap])
    with sqlite3.connect(root / "catalog.sqlite") as db:
        ids = [int(r[0]) for r in db.execute("SELECT id FROM flows ORDER BY first_ns")]
    assert len(ids) == 3
    return root, ids


@pytest.mark.parametrize("cached", [True, False])
def test_flow_locator_nearest_first_packet_either_direction(
        reused_port: tuple[Path, list[int]], cached: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    root, (first, second, third) = reused_port
    if not cached:  # a 5-tuple with more flows than kept is asked per record
        monkeypatch.setattr(sources, "FLOW_CACHE_FLOWS", 1)
    key = FlowKey(17, "10.0.0.1", 5000, "10.0.0.2", 53)
    locator = sources.FlowLocator(root)
    try:
        assert locator.find(key, T0 + 7210) == second
        assert locator.find(key.reversed(), T0 + 7231) == second
        assert locator.find(key, T0 + 30) == first
        assert locator.find(key, T0 + 14_400 + 59) == third
        assert locator.find(key, T0 + 3600) is None  # between flows, beyond the margin
        assert locator.find(FlowKey(17, "10.0.0.9", 1, "10.0.0.2", 53), T0) is None
        kept = locator._flows[(17, ("10.0.0.1", 5000), ("10.0.0.2", 53))]
        assert kept == (None if not cached else kept)
        assert cached is (kept is not None)
        assert len(locator._flows) == 2  # one entry per 5-tuple asked, either direction
    finally:
        locator.close()


def test_flow_cache_limits() -> None:
    assert sources.FLOW_CACHE_KEYS == 65_536
    assert sources.FLOW_CACHE_FLOWS == 64
    assert (sources.PREFETCH_KEYS, sources.PREFETCH_RECORDS) == (150, 1000)


@pytest.mark.parametrize("cached", [True, False])
@pytest.mark.parametrize("per_statement", [1, 150])
def test_prefetched_flows_answer_as_asked_one_at_a_time(
        reused_port: tuple[Path, list[int]], cached: bool, per_statement: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The flows of many 5-tuples read at once keep what one 5-tuple's read kept: all
    its flows (too many: None, asked per record), nothing for a 5-tuple without any or
    with an address that is none; the nearest flow is then chosen as before."""
    root, (first, second, third) = reused_port
    monkeypatch.setattr(sources, "PREFETCH_KEYS", per_statement)
    if not cached:
        monkeypatch.setattr(sources, "FLOW_CACHE_FLOWS", 2)
    key = FlowKey(17, "10.0.0.1", 5000, "10.0.0.2", 53)
    alone = FlowKey(17, "10.0.0.9", 1, "10.0.0.2", 53)
    bad = FlowKey(17, "10.0.0.999", 1, "10.0.0.2", 53)
    locator = sources.FlowLocator(root)
    try:
        locator.prefetch([key, key.reversed(), alone, bad, None, FlowKey(0, "", 0, "", 0)])
        kept = dict(locator._flows)
        flows = kept.pop((17, ("10.0.0.1", 5000), ("10.0.0.2", 53)))
        ns = 1_000_000_000
        assert (sorted(flows) if cached else flows) == (
            [(first, T0 * ns, T0 * ns), (second, (T0 + 7200) * ns, (T0 + 7230) * ns),
             (third, (T0 + 14_400) * ns, (T0 + 14_400) * ns)] if cached else None)
        assert kept == {(17, ("10.0.0.2", 53), ("10.0.0.9", 1)): (),  # no flow
                        (17, ("10.0.0.2", 53), ("10.0.0.999", 1)): ()}  # no address
        assert locator.find(key, T0 + 7210) == second
        assert locator.find(key.reversed(), T0 + 7231) == second
        assert locator.find(key, T0 + 30) == first
        assert locator.find(key, T0 + 14_400 + 59) == third
        assert locator.find(key, T0 + 3600) is None
        assert locator.find(alone, T0) is None and locator.find(bad, T0) is None
    finally:
        locator.close()


def _waiting_in_write(thread: threading.Thread) -> bool:
    """Whether ``thread`` is inside SearchIndex.write (queued for the file)."""
    code = SearchIndex.write.__wrapped__.__code__  # type: ignore[attr-defined]
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def test_writers_of_one_process_queue_instead_of_failing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no busy timeout at all, a second writer in another thread used to fail at
    once ('database is locked'); it now waits for the first one's transaction."""
    monkeypatch.setattr(index_module, "BUSY_TIMEOUT_SECONDS", 0.0)
    root = tmp_path / "data"
    root.mkdir()
    errors: list[BaseException] = []
    counts: list[int] = []

    def second() -> None:
        try:
            counts.append(index_records(root, [Doc("b", {"url": {"domain": "b.example"}})]))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    with SearchIndex.of(root) as first, first.write() as w:
        w.put_many([Doc("a", {"url": {"domain": "a.example"}})])
        other = threading.Thread(target=second)
        other.start()
        while other.is_alive() and not _waiting_in_write(other):
            other.join(0.001)
    other.join()
    assert errors == [] and counts == [1]
    with SearchIndex.of(root) as index:
        assert index.count() == 2


def test_a_reader_opens_the_index_while_a_write_is_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening an existing index writes nothing, so a search neither queues behind this
    process's writers nor meets the busy timeout (here none at all)."""
    monkeypatch.setattr(index_module, "BUSY_TIMEOUT_SECONDS", 0.0)
    with SearchIndex.of(tmp_path) as first:
        first.put([Doc("a", {"url": {"domain": "a.example"}})])
        with first.write() as w:
            w.put_many([Doc("b", {"url": {"domain": "b.example"}})])
            counts: list[int] = []

            def read() -> None:
                with SearchIndex.of(tmp_path) as index:
                    counts.append(index.count())

            reader = threading.Thread(target=read)
            reader.start()
            reader.join()
            assert counts == [1]  # the committed document; "b" is not yet
        assert first.count() == 2


# ---- what a record costs to index (round 2: orjson, postings by the statement) --------------
def test_postings_many_a_statement_are_exactly_the_documents(tmp_path: Path) -> None:
    """1,604 terms and 401 numbers: five full statements of ROWS_PER_INSERT postings and
    the rest one a statement, each row exactly once."""
    assert index_module.ROWS_PER_INSERT == 300
    docs = [Doc(f"d{i}", {"url": {"domain": f"H{i % 7}.Example"}, "destination": {"port": i},
                          "source": {"ip": f"10.0.{i // 256}.{i % 256}"}}) for i in range(401)]
    with SearchIndex.of(tmp_path) as index:
        assert index.put(docs) == 401
        fid = {name: index.field_id(name) for name in
               ("url.domain", "source.ip", "event.id", "destination.port")}
        terms = index.db.execute("SELECT f, v, doc FROM terms ORDER BY doc, f, v").fetchall()
        nums = index.db.execute("SELECT f, v, doc FROM nums ORDER BY doc").fetchall()
    expected = []
    for i in range(401):
        domain = f"h{i % 7}.example"
        expected += sorted([(fid["url.domain"], domain, i + 1),
                            (-fid["url.domain"], domain[::-1], i + 1),  # type: ignore[operator]
                            (fid["source.ip"], f"00000000000000000000ffff0a00{i // 256:02x}"
                                               f"{i % 256:02x}", i + 1),
                            (fid["event.id"], f"d{i}", i + 1)])
    assert len(terms) == 1604 and terms == expected
    assert nums == [(fid["destination.port"], i, i + 1) for i in range(401)]


def test_dumps_reads_back_as_json_wrote_it() -> None:
    import datetime
    import json

    body = {"a": "ünï", "n": 2**63 - 1, "f": 0.1, "t": datetime.datetime(2026, 12, 7, 1, 2, 3),
            "l": [1, None, True, 1e16]}
    assert index_module.dumps(body) == ('{"a":"ünï","n":9223372036854775807,"f":0.1,'
                                        '"t":"2026-12-07 01:02:03","l":[1,null,true,1e+16]}')
    assert json.loads(index_module.dumps(body)) == json.loads(index_module._DUMPS(body))
    # what orjson refuses is written by json's encoder, as before
    for odd in ({1: "int key"}, {"big": 2**64}, {"s": "\ud800"}):
        assert index_module.dumps(odd) == index_module._DUMPS(odd)
    assert index_module.dumps({"x": float("nan")}) == '{"x":null}'  # JSON has no NaN


def test_jsonl_reads_what_json_reads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "eve-metadata.json"
    path.write_bytes(b'{"a": 1}\n\n  \n{"nan": NaN}\r\n{"big": 18446744073709551616}\n[1]\n'
                     b'not json\n{"s": "\\ud800"}\n{"bad": "\xff"}\n')
    got = list(sources._jsonl(path))
    assert got[0] == {"a": 1}
    assert got[1]["nan"] != got[1]["nan"]  # NaN, as json reads it
    assert got[2:] == [{"big": 2**64}, {"s": "\ud800"}, {"bad": "\ufffd"}]
    assert "eve-metadata.json:7: not JSON, skipped" in caplog.text


def test_us_iso_seconds_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from pcapwire.search import values

    assert values.ISO_SECONDS_KEPT == 4096
    monkeypatch.setattr(values, "_ISO_SECONDS", {})
    for second in range(values.ISO_SECONDS_KEPT + 5):
        us_iso(second * 1_000_000 + 7)
    assert len(values._ISO_SECONDS) == 5  # cleared at 4,096, then four more
    assert us_iso(4_100_000_007) == "1970-01-01T01:08:20.000007Z"
    assert us_iso(-1) == "1969-12-31T23:59:59.999999Z"
    assert us_iso(-1_000_000) == "1969-12-31T23:59:59.000000Z"


def test_eve_doc_from_the_callers_metadata_is_the_same() -> None:
    from pcapwire.plugins.suricata.eve import metadata_record
    from pcapwire.search.ecs import Origin, eve_doc

    event = {"event_type": "http", "timestamp": "2026-12-01T10:00:00.000001+0000",
             "proto": "TCP", "src_ip": "10.0.0.1", "src_port": 1234, "dest_ip": "10.0.0.2",
             "dest_port": 80, "app_proto": "http",
             "http": {"hostname": "a.example", "url": "/x?y", "http_method": "POST"}}
    origin = Origin("c", "r", "q", "ids")
    doc = eve_doc(event, origin, 3, 9)
    assert doc is not None and doc == eve_doc(event, origin, 3, 9, metadata_record(event))
    assert doc.body["url"] == {"domain": "a.example", "original": "/x?y", "path": "/x",
                               "query": "y"}


def test_parse_ip_answers_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from pcapwire.search import values

    assert (values.IP_KEYS_KEPT, values.IP_KEY_MAX_CHARS) == (16_384, 64)
    monkeypatch.setattr(values, "_IP_KEYS", {})
    for i in range(values.IP_KEYS_KEPT + 3):
        values.parse_ip(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(values._IP_KEYS) == 3  # cleared at 16,384, then two more
    assert values.parse_ip("10.0.64.2") == "00000000000000000000ffff0a004002"
    assert values.parse_ip("[::1]") == "0" * 31 + "1"
    assert values.parse_ip("nope") is None and values._IP_KEYS["nope"] is None
    long = "1" * 65  # not an address, and not kept
    assert values.parse_ip(long) is None and long not in values._IP_KEYS


# ---- round 4: postings grouped by name, kept pairs, the child's collector -------------------
def test_pairs_kept_are_bounded_and_the_postings_stay_right(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert (index_module.NODE_MEMO_VALUES, index_module.NODE_MEMO_VALUE_CHARS) == (1024, 128)
    node = index_module._ROOT.child("url").child("domain")  # type: ignore[union-attr]
    assert node is not None
    monkeypatch.setattr(node, "pairs", {})
    for i in range(index_module.NODE_MEMO_VALUES + 3):
        assert postings({"url": {"domain": f"H{i}.Example"}})[0] == [
            ("url.domain", f"h{i}.example")]
    assert len(node.pairs) == 3  # cleared at 1,024, then two more
    long = "A" * 129 + "." + "B" * 600  # not kept, and cut at MAX_TERM_CHARS as before
    assert postings({"url": {"domain": long}})[0] == [
        ("url.domain", ("a" * 129 + "." + "b" * 600)[:index_module.MAX_TERM_CHARS])]
    assert long not in node.pairs
    # a kept pair is the same posting, whatever the value's type was before str()
    assert postings({"url": {"domain": 7}})[0] == postings({"url": {"domain": "7"}})[0] \
        == [("url.domain", "7")]


def test_groups_are_each_value_once_a_document_in_the_btrees_order(tmp_path: Path) -> None:
    """A batch's groups: a value twice in one document is one posting; the flat rows come
    sorted by (field id, value) with the documents in the order added, reversed values
    of the suffix fields under the negative id."""
    with SearchIndex.of(tmp_path) as index, index.write() as w:
        terms: index_module.Groups = {}
        nums: index_module.Groups = {}
        index_module._walk(5, {"url": {"domain": ["B.example", "b.EXAMPLE"]}, "tags": ["z", "a"]},
                           terms, nums)
        index_module._walk(7, {"url": {"domain": "a.example"}, "tags": "z",
                               "destination": {"port": [53, 53, 9]}}, terms, nums)
        dom, tags, port = (w._fid(n) for n in ("url.domain", "tags", "destination.port"))
        flat = _native.key_order(terms, w._term_ids)
        rows = [tuple(flat[i:i + 3]) for i in range(0, len(flat), 3)]
        assert rows == sorted(rows) and len(rows) == 7
        assert set(rows) == {(dom, "b.example", 5), (-dom, "elpmaxe.b", 5),
                             (dom, "a.example", 7), (-dom, "elpmaxe.a", 7),
                             (tags, "z", 5), (tags, "z", 7), (tags, "a", 5)}
        assert _native.key_order(nums, w._num_ids) == [port, 9, 7, port, 53, 7]


async def test_the_childrens_calls_turn_the_collector_back_on(tmp_path: Path) -> None:
    """Both indexer children index a run with the cyclic collector paused (a batch's
    documents were walked over and over: benchmarks/bench_search_pace.py), and turn it
    back on after, when the call fails too."""
    import gc

    from pcapwire.search import worker

    stages = (worker.BUILDER, worker.WRITER)
    try:
        assert await worker.index_run(tmp_path, "no-such-run") == 0
        assert [await worker.call(gc.isenabled, stage=s) for s in stages] == [True, True]
        (tmp_path / "file").write_text("not a directory")
        assert await worker.index_run(tmp_path / "file", "r1") is None  # logged
        assert [await worker.call(gc.isenabled, stage=s) for s in stages] == [True, True]
    finally:
        worker.shutdown()


def test_collector_paused_restores_the_state_it_found(tmp_path: Path) -> None:
    """Paused inside, as it was after (on, or off when the caller had it off), also when
    the block fails; ``search rebuild`` pauses it too and turns it back on."""
    import gc

    from pcapwire.search.indexer import rebuild

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(KeyError), collector_paused():
        raise KeyError("x")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert rebuild(tmp_path) == {"flows": 0, "runs": 0, "carved": 0, "documents": 0}
    assert gc.isenabled()


def test_a_transaction_holds_batch_documents(tmp_path: Path) -> None:
    """The indexer writes BATCH (20,000) documents a transaction: a reader sees none of
    them until the 20,000th is taken, then all 20,000, before the next one."""
    assert BATCH == 20_000
    seen: dict[int, int] = {}
    reader: list[sqlite3.Connection] = []

    def docs() -> Any:
        for i in range(BATCH + 1):
            if i in (1, BATCH - 1, BATCH):
                if not reader:
                    reader.append(sqlite3.connect(tmp_path / "search.sqlite"))
                seen[i] = reader[0].execute("SELECT count(*) FROM docs").fetchone()[0]
            yield Doc(f"d{i}", {"@timestamp": T0 + i, "tags": "t"})

    assert index_records(tmp_path, docs()) == BATCH + 1
    assert seen == {1: 0, BATCH - 1: 0, BATCH: BATCH}
    assert reader[0].execute("SELECT count(*) FROM docs").fetchone()[0] == BATCH + 1
    reader[0].close()


def test_verdict_timestamps_as_strftime_wrote_them() -> None:
    """The ECS export's @timestamp (made by isoformat now) is byte for byte strftime's
    ``%Y-%m-%dT%H:%M:%S.%fZ``: microseconds rounded as datetime rounds them, years before
    ISO_YEAR_MIN without leading zeros."""
    import random
    from datetime import UTC, datetime

    from pcapwire.cases.export import ISO_YEAR_MIN, _timestamp

    assert ISO_YEAR_MIN == 1000
    assert _timestamp(1_700_000_000.123456) == "2023-11-14T22:13:20.123456Z"
    assert _timestamp(0.9999995) == "1970-01-01T00:00:01.000000Z"
    assert _timestamp(-0.5) == "1969-12-31T23:59:59.500000Z"
    assert _timestamp(-30_610_224_000.0) == "1000-01-01T00:00:00.000000Z"
    assert _timestamp(-30_610_224_000.25) == "999-12-31T23:59:59.750000Z"
    assert _timestamp(-62_135_596_800.0) == "1-01-01T00:00:00.000000Z"
    r = random.Random(5)
    for ts in [r.uniform(-6.2e10, 2.5e11) for _ in range(2000)] + \
            [r.uniform(1.6e9, 1.8e9) for _ in range(2000)]:
        assert _timestamp(ts) == datetime.fromtimestamp(ts, UTC).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"), ts


def test_five_tuple_sql_keeps_address_blobs_and_refuses_as_before() -> None:
    """five_tuple_sql keeps the catalog blob of ADDR_BLOB_CACHE (4,096) text addresses;
    the answers and the errors are ipaddress's as before, and a bad address is not kept."""
    import ipaddress

    from pcapwire.query import flows
    from pcapwire.query.bpfplan import addr_blob

    assert flows.ADDR_BLOB_CACHE == 4096
    assert flows._text_blob.cache_info().maxsize == flows.ADDR_BLOB_CACHE
    sql = flows.five_tuple_sql(FlowKey(6, "2001:db8::1", 443, "10.1.2.3", 51234))
    v4 = bytes([10, 1, 2, 3]) + bytes(12)
    v6 = bytes.fromhex("20010db8000000000000000000000001")
    assert sql.args == (v4, 51234, v6, 443, 6)
    assert flows._text_blob("10.1.2.3") is flows._text_blob("10.1.2.3")
    assert flows._blob(167838211) == v4 == addr_blob(ipaddress.ip_address("10.1.2.3"))
    flows._text_blob("10.0.0.1")  # the good end of the keys below: kept before counting
    size = flows._text_blob.cache_info().currsize
    for bad in ("10.1.2", "", None):
        with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6"):
            flows.five_tuple_sql(FlowKey(6, "10.0.0.1", 1, bad, 2))  # type: ignore[arg-type]
    assert flows._text_blob.cache_info().currsize == size


def test_records_from_dict_as_before() -> None:
    """Verdicts are read back for every run indexed: from_dict keeps each class's field
    names once; what it takes, converts and refuses is unchanged."""
    from pcapwire.records import EmailRecord, FileRecord, PcapChunk, StreamRecord, Verdict

    flow = FlowKey(6, "10.0.0.1", 1234, "10.0.0.2", 80)
    records = [
        PcapChunk("q", 0, 1, 65535, b"\xd4\xc3", 1, 1.0, 2.0),
        StreamRecord("s", flow, "orig", b"abc", 1.0, 2.0, gaps=[(3, 4)]),
        FileRecord("f", "a" * 64, "b" * 32, "c" * 40, 3, "p", flow, 1.5, "http",
                   missing_ranges=[(0, 1)]),
        EmailRecord("e", "p", flow, 1.5, "smtp", to=["x@y"], missing_ranges=[(1, 2)]),
        Verdict("suricata", "flow", "1", flow, 1.5, "high", 80, tags=["t"]),
    ]
    for r in records:
        d = r.to_dict()
        assert type(r).from_dict({**d, "unknown": 1}) == r
    assert StreamRecord.from_dict(records[1].to_dict()).gaps == [(3, 4)]
    assert PcapChunk.from_dict(records[0].to_dict()).data == b"\xd4\xc3"
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'score'"):
        Verdict.from_dict({k: v for k, v in records[4].to_dict().items() if k != "score"})
    with pytest.raises(ValueError, match="severity 'bad'"):
        Verdict.from_dict({**records[4].to_dict(), "severity": "bad"})
    ends = {"src_ip": "a", "src_port": "1", "dest_ip": "b", "dest_port": 2}
    assert [FlowKey.from_dict({"proto": p, **ends}).proto
            for p in ("TCP", "udp", "icmp6", "6", 47, "132")] == [6, 17, 58, 6, 47, 132]
    with pytest.raises(ValueError, match="invalid literal for int"):
        FlowKey.from_dict({"proto": "gre", **ends})
