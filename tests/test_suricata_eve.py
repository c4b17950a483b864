"""EVE -> verdicts and metadata: the documented severity table, flow orientation,
timestamps, and the tls metadata (JA3/JA4 from the real Suricata equal Arkime's values in
the corpus)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import CASES, corpus_file
from pcapwire.plugins.suricata.config import SuricataSettings
from pcapwire.plugins.suricata.engine import SuricataEngine
from pcapwire.plugins.suricata.eve import (
    SEVERITY_BY_PRIORITY,
    EveSummary,
    alert_verdict,
    event_ts,
    flow_key,
    metadata_record,
    parse_ts,
    severity_for,
)
from pcapwire.plugins.suricata.run import SuricataRun
from pcapwire.records import FlowKey
from suricatautil import eicar_at_the_end

DEMO_RULES = Path(__file__).resolve().parents[1] / "workflows" / "rules" / "pcapwire-demo.rules"


def _alert(**kw: Any) -> dict[str, Any]:
    event = {"timestamp": "2013-03-07T21:42:07.009855+0000", "flow_id": 42, "event_type":
             "alert", "src_ip": "192.150.187.43", "src_port": 80, "dest_ip": "141.142.228.5",
             "dest_port": 59856, "proto": "TCP", "direction": "to_client",
             "alert": {"action": "allowed", "gid": 1, "signature_id": 1002, "rev": 3,
                       "signature": "response 200", "category": "Potentially Bad Traffic",
                       "severity": 2},
             "flow": {"src_ip": "141.142.228.5", "src_port": 59856,
                      "dest_ip": "192.150.187.43", "dest_port": 80}}
    event.update(kw)
    return event


@pytest.mark.parametrize(("priority", "metadata", "expected"), [
    (1, None, ("high", 80)), (2, None, ("medium", 60)), (3, None, ("low", 40)),
    (4, None, ("info", 20)), (255, None, ("info", 20)), (None, None, ("info", 20)),
    (3, {"signature_severity": ["Critical"]}, ("critical", 95)),
    (1, {"signature_severity": ["Informational"]}, ("high", 80)),  # never lowered
    (True, None, ("info", 20)),
])
def test_severity_table(priority: Any, metadata: Any, expected: tuple[str, int]) -> None:
    assert severity_for(priority, metadata) == expected
    assert SEVERITY_BY_PRIORITY == {1: ("high", 80), 2: ("medium", 60), 3: ("low", 40)}


def test_alert_verdict_fields_and_orientation() -> None:
    v = alert_verdict(_alert(), step="ids", case="c", query_id="q")
    assert (v.analyzer, v.subject_kind, v.subject_id) == ("suricata", "flow",
                                                          "suricata-flow:42")
    assert v.flow == FlowKey(6, "141.142.228.5", 59856, "192.150.187.43", 80)
    assert (v.severity, v.score, v.signature_id, v.signature, v.category) == (
        "medium", 60, "1002", "response 200", "Potentially Bad Traffic")
    assert v.ts == 1362692527.009855
    assert (v.evidence["gid"], v.evidence["rev"], v.evidence["priority"]) == (1, 3, 2)
    assert v.evidence["packet"]["src_ip"] == "192.150.187.43"
    assert (v.step, v.case, v.query_id) == ("ids", "c", "q")
    assert v.flow.bpf() == ("tcp and host 141.142.228.5 and host 192.150.187.43 and "
                            "port 59856 and port 80")


def test_flow_orientation_without_a_flow_object() -> None:
    event = _alert(event_type="http")
    del event["flow"]
    assert flow_key(event) == FlowKey(6, "141.142.228.5", 59856, "192.150.187.43", 80)
    event["direction"] = "to_server"
    assert flow_key(event).src == "192.150.187.43"
    icmp = {"proto": "IPv6-ICMP", "src_ip": "::1", "dest_ip": "::2"}
    assert flow_key(icmp) == FlowKey(58, "::1", 0, "::2", 0)
    assert flow_key({"proto": "47", "src_ip": "a", "dest_ip": "b"}).proto == 47


def test_timestamps_and_bad_values() -> None:
    assert parse_ts("2013-03-07T21:42:07.009855+0000") == 1362692527.009855
    assert parse_ts("2013-03-07T22:42:07.009855+0100") == 1362692527.009855
    assert parse_ts("yesterday") == 0.0 and parse_ts(None) == 0.0


def test_alert_time_is_its_packets_or_for_a_pseudo_packet_its_flows_start() -> None:
    """A packet of the capture: EVE's timestamp. A pseudo packet (flow timeout, the flush
    at the end of the input: no pcap_cnt): Suricata's engine clock, which can be the run's
    first packet -- the flow's start instead."""
    start = "2020-01-01T00:00:00.001000+0000"
    wire = _alert(pkt_src="wire/pcap", pcap_cnt=7)
    wire["flow"]["start"] = start
    assert alert_verdict(wire).ts == event_ts(wire) == 1362692527.009855
    assert alert_verdict(wire).evidence["pkt_src"] == "wire/pcap"
    for src in ("stream (flow timeout)", "shutdown flush", "capture timeout flush", None):
        pseudo = _alert(timestamp="2010-01-01T00:00:00.001000+0000")
        pseudo["flow"]["start"] = start
        if src is not None:
            pseudo["pkt_src"] = src
        assert alert_verdict(pseudo).ts == 1577836800.001, src
    tunnel = _alert(pkt_src="ipv4 tunnel")  # decoded from a packet of the capture
    tunnel["flow"]["start"] = start
    assert event_ts(tunnel) == 1362692527.009855
    assert event_ts(_alert(pkt_src="stream (flow timeout)")) == 1362692527.009855  # no start
    bad = _alert(pkt_src="stream (flow timeout)")
    bad["flow"]["start"] = "garbage"
    assert event_ts(bad) == 1362692527.009855


async def test_an_alert_raised_when_the_input_ends_has_its_flows_time(tmp_path: Path) -> None:
    """The real Suricata: the alert on the flow flushed at the end of the input comes from
    a pseudo packet stamped with the run's first packet time (2010); the verdict carries
    the flow's start (2020)."""
    pcap = tmp_path / "end.pcap"
    eicar_at_the_end(pcap)
    run = SuricataRun(SuricataSettings.from_mapping({"rules": [str(DEMO_RULES)]}))
    await run.start()
    await run.feed_bytes(pcap.read_bytes())
    result = await run.finish()
    v, = result.verdicts
    assert (v.signature_id, v.flow.sport) == ("9100001", 40002)
    assert v.evidence["pkt_src"] == "stream (flow timeout)"
    assert v.ts == 1577836800.001


def test_eve_lines_decode_as_the_stdlib_would() -> None:
    """orjson where it parses, the stdlib for what it refuses (a lone surrogate escape);
    a line that is not JSON is counted and skipped, a non-object ignored."""
    engine = SuricataEngine(SuricataSettings())
    lines = [b'{"event_type":"alert","x":"\\ud800"}', b"garbage", b"", b"[1]",
             b'{"flow_id":18446744073709551615,"s":"caf\xc3\xa9"}']
    events = engine._decode(lines)
    assert events == [json.loads(lines[0]), json.loads(lines[4])]
    assert engine._bad_lines == 1


def test_metadata_records_and_summary_counts() -> None:
    summary = EveSummary()
    summary.add(_alert())
    summary.add({"event_type": "http", "proto": "TCP", "src_ip": "a", "dest_ip": "b",
                 "http": {"url": "/x", "status": 200}})
    summary.add({"event_type": "stats", "stats": {}})
    summary.add({"event_type": "fileinfo", "proto": "TCP", "src_ip": "a", "dest_ip": "b",
                 "fileinfo": {"filename": "f", "size": 3}, "http": {"url": "/f"}})
    assert summary.counts == {"alert": 1, "http": 1, "stats": 1, "fileinfo": 1}
    assert summary.sid_counts() == {1002: 1}
    assert [m.event_type for m in summary.metadata] == ["http", "fileinfo"]
    assert summary.metadata[1].data == {"filename": "f", "size": 3, "http": {"url": "/f"}}
    assert metadata_record({"event_type": "flow"}) is None


async def test_tls_ja3_ja4_from_suricata_equal_arkimes() -> None:
    """The real Suricata with ja3/ja4 on: the tls metadata of arkime-tls13-ja3-ja4 carries
    the SNI, JA3, JA3S and JA4 Arkime's own test expects."""
    expected, = CASES["arkime-tls13-ja3-ja4"]["expect"]["tls"]
    run = SuricataRun(SuricataSettings.from_mapping({"ja3": True, "ja4": True,
                                                     "args": ["-k", "none"]}))
    await run.start()
    await run.feed_bytes(corpus_file("arkime-tls13-ja3-ja4").read_bytes())
    result = await run.finish()
    tls, = [m for m in result.metadata if m.event_type == "tls"]
    assert tls.data["sni"] == expected["server_name"]
    assert tls.data["ja3"] == {"hash": expected["ja3"], "string": expected["ja3_string"]}
    assert tls.data["ja3s"] == {"hash": expected["ja3s"], "string": expected["ja3s_string"]}
    assert tls.data["ja4"] == expected["ja4"]
    f = expected["flow"]
    assert (tls.flow.src, tls.flow.sport, tls.flow.dst, tls.flow.dport) == (
        f["orig_h"], f["orig_p"], f["resp_h"], f["resp_p"])
