"""The trigger's engines (core/triggers/match_engines.py) with the real Suricata and YARA:
a Suricata trigger over a segment finds exactly what ``suricata -r`` finds on the segment
file, fed the segment's chunks or reading the file itself (file mode); a YARA trigger
equals yara-python over tshark's reassembly of the same streams; hits stream out before
the input ends; rules that may not run are refused."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yara
from conftest import CASES, corpus_file
from pcapwire.errors import ConfigError
from pcapwire.records import PcapChunk
from pcapwire.testing import capture, http_download, tcp_session, udp_exchange
from pcapwire.testing.craft import dns_query, http_request
from pcapwire.triggers.db import HitBatch
from pcapwire.triggers.indicator_rules import INDICATOR_SIDS
from pcapwire.triggers.match_engines import (
    MAX_EVIDENCE_BYTES,
    EngineError,
    EngineSettings,
    check_engines,
    collect_engine_hits,
    collect_file_batch,
    collect_file_hits,
    engine_files,
    engine_hits,
    needs_engines,
    suricata_keywords,
)
from pcapwire.triggers.model import from_dict
from pcapwire.workflow.sources import file_chunks
from suricatautil import rechunk
from trigger_engineutil import (
    client_hello,
    hand_alerts,
    hit_alerts,
    segment_chunks,
    segment_file,
    store_of,
)
from tshark_streams import follow, stream_count

OWN_RULES = """\
alert http any any -> any any (msg:"evil path"; http.uri; content:"/evil"; sid:1000001;)
alert dns any any -> any any (msg:"bad name"; dns.query; content:"bad"; sid:1000002; rev:1;)
alert tcp any any -> any 4444 (msg:"raw shell"; flow:to_server; content:"PWNED"; sid:1000003;)
alert tls any any -> any any (msg:"sni"; tls.sni; content:"evil"; sid:1000004; rev:1;)
alert tcp any any -> any 4445 (msg:"never acked"; content:"LATE"; sid:1000005; rev:1;)
"""


def generated(path: Path) -> Path:
    """Sessions the rules above fire on (some twice, one never), the last one left open
    with data never acknowledged (its alert comes from the flush at the end of input)."""
    from pcapwire.testing.craft import Capture, TcpConn

    cap = Capture().add([
        http_download("10.1.0.1:40000 > 10.1.0.9:80", "/evil/a", b"x" * 3000),
        http_download("10.1.0.1:40001 > 10.1.0.9:80", "/good", b"y" * 100),
        tcp_session("10.1.0.2:40002 > 10.1.0.9:80",
                    turns=[("c", b"GET /evil/1 HTTP/1.1\r\nHost: a\r\n\r\n"),
                           ("s", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
                           ("c", b"GET /evil/2 HTTP/1.1\r\nHost: a\r\n\r\n"),
                           ("s", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]),
        udp_exchange("10.1.0.3:5300 > 10.1.0.53:53", dns_query(1, "bad.example"),
                     dns_query(1, "bad.example", "192.0.2.1")),
        udp_exchange("10.1.0.3:5301 > 10.1.0.53:53", dns_query(2, "good.example")),
        tcp_session("10.1.0.4:40003 > 10.1.0.9:4444", b"id\nPWNED\n", b"uid=0\n"),
        tcp_session("10.1.0.5:40004 > 10.1.0.9:443", client_hello("www.evil.example"),
                    b"\x15\x03\x03\x00\x02\x02\x28"),
    ])
    conn = TcpConn(cap, "10.1.0.6", 40005, "10.1.0.9", 4445)
    conn.seg("c", 0x18, b"LATE data")  # PSH|ACK, never acknowledged, never closed
    path.write_bytes(cap.pcap())
    return path


@pytest.fixture
def store(tmp_path: Path):
    odd = corpus_file("suricata-http-odd-transfer-encoding-alerts")
    s = store_of(tmp_path / "store", [generated(tmp_path / "gen.pcap"), odd])
    yield s
    s.close()


async def test_suricata_trigger_finds_what_suricata_r_finds_on_each_segment(
        store, tmp_path: Path) -> None:
    odd = CASES["suricata-http-odd-transfer-encoding-alerts"]["expect"]["alerts"]["rules"]
    rules = OWN_RULES + odd
    defn = from_dict({"name": "ids", "suricata_rules": rules})
    (tmp_path / "all.rules").write_text(rules)
    found: dict[int, Counter] = {}
    for seg in store.catalog.segments():
        hits = await collect_engine_hits(segment_chunks(store, seg.id), defn, tmp_path / "w")
        assert all(h.rule.startswith("suricata:") for h in hits)
        got = hit_alerts(hits)
        assert got == hand_alerts(segment_file(store, seg.id), tmp_path / "all.rules",
                                  tmp_path / f"hand{seg.id}")
        in_file_mode = await collect_file_hits(segment_file(store, seg.id), defn,
                                               tmp_path / "w")
        assert in_file_mode is not None and hit_alerts(in_file_mode) == got
        # a hunt unit's rows (alerts made rows as they come): what the result set would
        # make of the hits, evidence included (Suricata's flow ids differ run to run)
        batch = await collect_file_batch(segment_file(store, seg.id), defn, tmp_path / "w")
        assert batch is not None and batch.hits == len(hits)
        assert _without_flow_ids(batch) == _without_flow_ids(HitBatch.of(hits))
        found[seg.id] = got
    own = Counter(key[0] for key in found[1].elements() if key[0] >= 1000000)
    assert own == {1000001: 3, 1000002: 1, 1000003: 1, 1000004: 1, 1000005: 1}
    assert Counter(key[0] for key in found[1].elements() if key[0] < 1000000) == {
        11: 4, 21: 4, 31: 4, 41: 4}  # the corpus case's Host rules, on the generated HTTP
    late = [k for k in found[1] if k[0] == 1000005]
    assert late == [(1000005, 6, frozenset({("10.1.0.6", 40005), ("10.1.0.9", 4445)}),
                     None)]  # raised on the end-of-input flush: compared without time
    # the corpus case: the distribution's config and -k none on both sides (its own
    # suricata-verify settings give more; tests/test_suricata_fidelity.py checks those)
    assert sum(found[2].values()) == 15


def _without_flow_ids(batch: HitBatch) -> list[tuple[Any, ...]]:
    """The batch's rows, Suricata's flow id left out of the evidence."""
    out = []
    for row in batch.rows:
        evidence = json.loads(row[9])
        evidence.pop("flow_id", None)
        out.append((*row[:9], evidence, row[10]))
    return sorted(out, key=repr)


async def test_an_alert_row_bounds_its_evidence_as_a_hit_does(tmp_path: Path) -> None:
    """A request whose alert record is above MAX_EVIDENCE_BYTES (a 17,000-byte URI, its
    UTF-8 bytes counted): the row keeps the same few keys as the hit, marked truncated."""
    uri = "/evil/" + "\u00e9" * 8500
    request = f"GET {uri} HTTP/1.1\r\nHost: big.example\r\n\r\n".encode()
    pcap = tmp_path / "big.pcap"
    pcap.write_bytes(capture([tcp_session("10.3.0.1:1000 > 10.3.0.2:80", request,
                                          b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]))
    defn = from_dict({"name": "big", "suricata_rules": OWN_RULES})
    hits = await collect_file_hits(pcap, defn, tmp_path / "w")
    batch = await collect_file_batch(pcap, defn, tmp_path / "w")
    assert hits is not None and batch is not None
    (hit,) = hits
    assert hit.rule == "suricata:1000001" and "truncated" in hit.evidence
    size = int(hit.evidence["truncated"].split()[0])
    assert MAX_EVIDENCE_BYTES < size < MAX_EVIDENCE_BYTES + 2000
    assert _without_flow_ids(batch) == _without_flow_ids(HitBatch.of(hits))


async def test_indicator_alerts_become_the_same_rows_in_file_mode(tmp_path: Path) -> None:
    """Generated indicator rules (a domain seen in DNS, SNI and Host; a URL; a request two
    indicators match): file mode's rows are what the result set makes of the chunk path's
    hits, one row per indicator an alert matched."""
    sessions = [
        udp_exchange("10.6.0.1:5000 > 10.6.0.53:53", dns_query(1, "a.evil.example")),
        tcp_session("10.6.0.1:6000 > 10.6.0.9:443", client_hello("evil.example"),
                    b"\x15\x03\x03\x00\x02\x02\x28"),
        tcp_session("10.6.0.1:7000 > 10.6.0.9:80", http_request("/x?a=1", host="evil.example"),
                    b"HTTP/1.1 204 No Content\r\n\r\n"),
        tcp_session("10.6.0.1:7001 > 10.6.0.9:80", http_request("/y", host="other.example"),
                    b"HTTP/1.1 204 No Content\r\n\r\n"),
    ]
    pcap = tmp_path / "ioc.pcap"
    pcap.write_bytes(capture(sessions))
    defn = from_dict({"name": "ioc", "indicators": {
        "domains": ["evil.example", "*.evil.example"], "urls": ["http://evil.example/x?a=1"]}})
    hits = await collect_engine_hits(file_chunks(pcap), defn, tmp_path / "w")
    batch = await collect_file_batch(pcap, defn, tmp_path / "w")
    assert batch is not None
    assert sorted((r[0], r[5]) for r in batch.rows) == [
        ("domain:*.evil.example", 5000), ("domain:evil.example", 6000),
        ("domain:evil.example", 7000), ("url:http://evil.example/x?a=1", 7000)]
    assert _without_flow_ids(batch) == _without_flow_ids(HitBatch.of(hits))


async def test_a_suricata_hit_carries_the_flow_time_and_alert(store, tmp_path: Path) -> None:
    defn = from_dict({"name": "shell", "suricata_rules": OWN_RULES})
    hits = await collect_engine_hits(segment_chunks(store, 1), defn, tmp_path / "w")
    (shell,) = [h for h in hits if h.rule == "suricata:1000003"]
    assert (shell.proto, shell.src_ip, shell.src_port, shell.dest_ip, shell.dest_port) == \
        (6, "10.1.0.4", 40003, "10.1.0.9", 4444)
    assert (shell.evidence["engine"], shell.evidence["signature"], shell.evidence["sid"],
            shell.evidence["pkt_src"]) == ("suricata", "raw shell", 1000003, "wire/pcap")
    assert shell.flow_id is None  # the catalog's flow id is not the engine's to give


# ---- YARA -------------------------------------------------------------------------------
YARA_RULES = """\
rule Png { strings: $magic = { 89 50 4E 47 0D 0A 1A 0A } condition: $magic }
rule Mozilla { meta: severity = "low"
  strings: $host = "www.mozilla.org" nocase $get = "GET /" condition: any of them }
rule Never { strings: $a = "no such bytes anywhere" condition: $a }
"""


async def test_yara_trigger_equals_yara_python_over_tsharks_streams(tmp_path: Path) -> None:
    pcap = corpus_file("zeek-http-pipelined-5-files")
    defn = from_dict({"name": "y", "yara_rules": YARA_RULES})
    hits = await collect_engine_hits(file_chunks(pcap, chunk_bytes=4096), defn, tmp_path)
    got = Counter((h.rule, h.proto, h.src_ip, h.src_port, h.dest_ip, h.dest_port,
                   h.evidence["stream"].rsplit("-", 1)[1],
                   tuple((s["identifier"], s["count"]) for s in h.evidence["strings"]))
                  for h in hits)
    rules = yara.compile(source=YARA_RULES)
    expected: Counter = Counter()
    for n in range(stream_count(pcap)):
        f = follow(pcap, n)
        for direction in ("orig", "resp"):
            for m in rules.match(data=f.data(direction)):
                expected[(f"yara:{m.rule}", 6, *f.client, *f.server, direction,
                          tuple((s.identifier, len(s.instances)) for s in m.strings))] += 1
    assert got == expected
    assert sorted((k[0], k[6], k[7]) for k in got.elements()) == [
        ("yara:Mozilla", "orig", (("$host", 10), ("$get", 5))),
        ("yara:Png", "resp", (("$magic", 2),))]


async def test_yara_evidence_is_bounded(tmp_path: Path) -> None:
    strings = " ".join(f'$s{i} = "{i:04d}"' for i in range(400))
    rule = f"rule Many {{ strings: {strings} condition: any of them }}"
    body = "".join(f"{i:04d}" for i in range(400)).encode() * 3
    pcap = tmp_path / "many.pcap"
    pcap.write_bytes(capture([tcp_session("10.2.0.1:1000 > 10.2.0.2:80", body, b"ok")]))
    hits = await collect_engine_hits(file_chunks(pcap), from_dict(
        {"name": "many", "yara_rules": rule}), tmp_path / "w")
    (hit,) = hits
    assert set(hit.evidence) == {"engine", "stream", "rule", "namespace", "meta", "truncated"}
    assert hit.evidence["rule"] == "Many"
    assert hit.evidence["truncated"].endswith(f"more than {MAX_EVIDENCE_BYTES}")


# ---- streaming --------------------------------------------------------------------------
async def _from_queue(queue: asyncio.Queue[PcapChunk | None]) -> AsyncIterator[PcapChunk]:
    while (chunk := await queue.get()) is not None:
        yield chunk


async def test_hits_come_out_before_the_input_ends(tmp_path: Path) -> None:
    pcap = capture([udp_exchange("10.3.0.1:5000 > 10.3.0.53:53", dns_query(7, "evil.example")),
                    udp_exchange("10.3.0.1:5001 > 10.3.0.53:53", dns_query(8, "evil.example"))])
    chunks = rechunk([PcapChunk("q", 0, 1, 65535, pcap, 2, 0.0, 0.0)])
    assert len(chunks) == 2
    queue: asyncio.Queue[PcapChunk | None] = asyncio.Queue()
    defn = from_dict({"name": "live", "indicators": {"domains": ["evil.example"]}})
    hits = engine_hits(_from_queue(queue), defn, tmp_path)
    queue.put_nowait(chunks[0])
    # a guard against a hang, not a timing assertion: the last chunk is not sent yet
    first = await asyncio.wait_for(anext(hits), 120)
    assert (first.rule, first.src_port) == ("domain:evil.example", 5000)
    queue.put_nowait(chunks[1])
    queue.put_nowait(None)
    rest = [h async for h in hits]
    assert [(h.rule, h.src_port) for h in rest] == [("domain:evil.example", 5001)]


async def test_closing_the_iterator_early_stops_the_engines(tmp_path: Path) -> None:
    queue: asyncio.Queue[PcapChunk | None] = asyncio.Queue()
    pcap = capture([udp_exchange("10.3.0.1:5000 > 10.3.0.53:53", dns_query(7, "evil.example"))])
    queue.put_nowait(PcapChunk("q", 0, 1, 65535, pcap, 1, 0.0, 0.0))
    defn = from_dict({"name": "live", "indicators": {"domains": ["evil.example"]}})
    hits = engine_hits(_from_queue(queue), defn, tmp_path)
    assert (await asyncio.wait_for(anext(hits), 120)).rule == "domain:evil.example"
    await hits.aclose()  # the input never ended: the engines are stopped, nothing hangs
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()
            and not t.done()] == []


# ---- what may run -----------------------------------------------------------------------
def test_needs_engines() -> None:
    def defn(**kw: object) -> bool:
        return needs_engines(from_dict({"name": "n", **kw}))

    assert [defn(suricata_rules="alert ip any any -> any any (sid:1;)"),
            defn(yara_rules="rule A { condition: true }"),
            defn(indicators={"domains": ["a.example"]}), defn(indicators={"urls": ["http://a/"]}),
            defn(indicators={"ja3": ["0" * 32]}),
            defn(indicators={"ja4": ["t13d0413h2_16476d049b0b_ffceb19bae65"]})] == [True] * 6
    assert [defn(bpf="tcp"), defn(indicators={"ips": ["10.0.0.1"]}),
            defn(indicators={"sha256": ["0" * 64]}), defn(bpf="tcp", suricata_rules=" \n")] \
        == [False] * 4


@pytest.mark.parametrize(("rule", "message"), [
    ('alert dns any any -> any any (msg:"x"; dns.query; dataset:isset,s,type string,'
     'load /etc/passwd; sid:7;)',
     "suricata_rules:2: dataset with load/save/state is not allowed (it names a file on the "
     "server); give the values as indicators instead"),
    ('alert dns any any -> any any (msg:"x"; datarep:s, >, 1, state ../x.lst, '
     'type string; sid:7;)',
     "suricata_rules:2: datarep with load/save/state is not allowed (it names a file on the "
     "server); give the values as indicators instead"),
    ('alert http any any -> any any (msg:"x"; lua:evil.lua; sid:7;)',
     "suricata_rules:2: Lua rules are not allowed (they run scripts on the server)"),
    (f'alert ip any any -> any any (msg:"x"; sid:{INDICATOR_SIDS.start + 3};)',
     f"suricata_rules:2: sid {INDICATOR_SIDS.start + 3} is reserved for generated indicator "
     f"rules ({INDICATOR_SIDS.start}-{INDICATOR_SIDS.stop - 1})"),
])
async def test_rules_that_name_files_or_run_scripts_are_refused(rule: str, message: str,
                                                                tmp_path: Path) -> None:
    text = '# first line: a comment\n' + rule + '\nalert ip any any -> any any (content:"a\\;' \
        ' dataset:x, load y"; sid:8;)\n'  # quoted and escaped: not an option
    defn = from_dict({"name": "bad", "suricata_rules": text})
    expected = f"trigger rules refused:\n{message}"
    with pytest.raises(ConfigError) as err:
        check_engines(defn)
    assert str(err.value) == expected
    with pytest.raises(ConfigError) as err:
        [h async for h in engine_hits(file_chunks(corpus_file("zeek-http-get")), defn,
                                      tmp_path)]
    assert str(err.value) == expected
    assert not list(tmp_path.iterdir())  # nothing was written


def test_check_reports_what_the_engines_refuse_by_line() -> None:
    defn = from_dict({"name": "bad", "suricata_rules":
                      "alert ip any any -> any any (msg:\"ok\"; sid:1;)\n"
                      "alert ip any any -> any any (msg:\"bad\"; nosuchkeyword; sid:2;)\n",
                      "yara_rules": 'include "/etc/passwd"\nrule A { condition: true }\n'})
    with pytest.raises(ConfigError) as err:
        check_engines(defn)
    lines = str(err.value).splitlines()
    assert lines[0] == "trigger rules refused:"
    assert lines[1] == "suricata_rules:2: unknown rule keyword 'nosuchkeyword'."
    assert lines[2].startswith("yara_rules:1: YARA syntax error: ")
    assert "root:" not in str(err.value)  # the refused include quotes nothing of the file


def test_check_accepts_every_indicator_kind() -> None:
    check_engines(from_dict({"name": "ok", "indicators": {
        "domains": ["evil.example", "*.evil.example", "*.a.b.example"],
        "urls": ["http://evil.example/x?a=1"], "ja3": ["0" * 32],
        "ja4": ["t13d0413h2_16476d049b0b_ffceb19bae65"]}}))


async def test_a_rule_suricata_refuses_fails_the_run(tmp_path: Path) -> None:
    defn = from_dict({"name": "bad", "suricata_rules":
                      "alert ip any any -> any any (msg:\"bad\"; nosuchkeyword; sid:2;)\n"})
    with pytest.raises(EngineError) as err:
        await collect_engine_hits(file_chunks(corpus_file("zeek-http-get")), defn, tmp_path)
    assert "suricata refused 1 rule(s)" in str(err.value)
    assert "unknown rule keyword 'nosuchkeyword'" in str(err.value)
    with pytest.raises(EngineError) as err:  # file mode: the same
        await collect_file_hits(corpus_file("zeek-http-get"), defn, tmp_path)
    assert "unknown rule keyword 'nosuchkeyword'" in str(err.value)


async def test_an_event_sink_that_fails_fails_the_run_after_draining(tmp_path: Path) -> None:
    """``SuricataRun(on_events=...)``: a sink that raises is reported at the end (the
    engine is still drained to its exit), and file mode fails the unit with it."""
    from pcapwire.plugins.suricata.config import SuricataSettings
    from pcapwire.plugins.suricata.run import SuricataRun

    rules = tmp_path / "r.rules"
    rules.write_text('alert http any any -> any any (msg:"get"; http.method; content:"GET"; '
                     'sid:1;)\n')
    batches: list[int] = []

    def sink(events: list[dict[str, Any]]) -> None:
        batches.append(len(events))
        raise ValueError("no room")

    run = SuricataRun(SuricataSettings.from_mapping({"rules": [str(rules)]}), on_events=sink)
    result = await run.run_file(corpus_file("zeek-http-get"))
    assert result.errors == ["event sink failed: no room"]
    # the capture's one GET: one alert, one batch; no verdict made
    assert batches == [1] and result.engines[0].events == 1 and result.verdicts == []


async def test_file_mode_is_for_suricata_alone(tmp_path: Path) -> None:
    """YARA scans reassembled streams: a definition with YARA rules takes the chunk path."""
    defn = from_dict({"name": "y", "yara_rules": "rule A { condition: true }",
                      "suricata_rules": OWN_RULES})
    assert await collect_file_hits(corpus_file("zeek-http-get"), defn, tmp_path) is None


def test_engine_files_are_written_once_per_rule_content(tmp_path: Path) -> None:
    a = from_dict({"name": "a", "yara_rules": "rule A { condition: true }",
                   "indicators": {"domains": ["x.example"]}})
    b = from_dict({"name": "b", "yara_rules": "rule A { condition: true }",
                   "indicators": {"domains": ["x.example"]}, "bpf": "tcp"})
    fa, fb = engine_files(a, tmp_path), engine_files(b, tmp_path)
    assert fa.dir == fb.dir and fa.dir.parent == tmp_path
    assert sorted(p.name for p in fa.dir.iterdir()) == ["domains.lst", "indicators.rules",
                                                        "trigger.yar"]
    c = from_dict({"name": "a", "yara_rules": "rule B { condition: true }"})
    assert engine_files(c, tmp_path).dir != fa.dir
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_settings_take_only_server_keys() -> None:
    with pytest.raises(ConfigError) as err:
        EngineSettings(suricata={"rules": ["/etc/x.rules"], "binary": "suricata"})
    assert str(err.value).startswith("trigger engines: suricata setting(s) rules are not "
                                     "server settings; allowed: args, base_config, binary")


def test_ja4_is_supported_here_and_a_suricata_without_it_is_named() -> None:
    assert {"ja3.hash", "ja4.hash"} <= suricata_keywords("suricata")  # Suricata 7.0.10
    defn = from_dict({"name": "fp", "indicators": {
        "ja4": ["t13d0413h2_16476d049b0b_ffceb19bae65"]}})
    # `true` stands for a Suricata that lists no keyword at all (built without JA4)
    with pytest.raises(ConfigError) as err:
        check_engines(defn, EngineSettings(suricata={"binary": "true"}))
    assert str(err.value) == (
        "trigger rules refused:\nindicators.ja4: unsupported: this Suricata (true) has no "
        "'ja4.hash' keyword (built without JA4 support); remove these indicators or install "
        "a Suricata that has it")


async def test_a_slow_consumer_holds_the_engines_back_and_loses_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pcapwire.triggers import match_engines

    monkeypatch.setattr(match_engines, "MAX_PENDING_HITS", 1)
    pcap = tmp_path / "dns.pcap"
    pcap.write_bytes(capture([udp_exchange(f"10.6.0.1:{5000 + i} > 10.6.0.53:53",
                                           dns_query(i, "evil.example")) for i in range(40)]))
    defn = from_dict({"name": "many", "indicators": {"domains": ["evil.example"]}})
    ports = []
    async for hit in engine_hits(file_chunks(pcap, chunk_bytes=256), defn, tmp_path / "w"):
        ports.append(hit.src_port)
    assert sorted(ports) == list(range(5000, 5040))


def test_rule_problems_are_listed_up_to_a_limit() -> None:
    from pcapwire.plugins.suricata.rulesafety import MAX_PROBLEMS, suricata_rule_problems

    text = "".join(f'alert ip any any -> any any (lua:x.lua; sid:{i};)\n' for i in range(60))
    problems = suricata_rule_problems(text)
    assert MAX_PROBLEMS == 50
    assert len(problems) == 51 and problems[-1] == "... and 10 more"
    assert problems[49] == ("suricata_rules:50: Lua rules are not allowed (they run scripts "
                            "on the server)")
