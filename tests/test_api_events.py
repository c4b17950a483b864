"""Event-to-PCAP: a real Suricata EVE alert, a Zeek conn.log record, a plain 5-tuple."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from apiutil import Tokens, bearer, upload, wait_done
from conftest import corpus_file
from pcaputil import read_records, record_ts_ns, tcpdump
from pcapwire.api import ApiConfig, create_app
from pcapwire.api.events import parse_event
from pcapwire.errors import QueryError
from pcapwire.records import FlowKey

HTTP_CASE = "zeek-http-get"
HTTP_FLOW = FlowKey(6, "141.142.228.5", 59856, "192.150.187.43", 80)  # the capture's one flow


@pytest.fixture
def tokens(tmp_path):
    return Tokens(tmp_path)


@pytest.fixture
async def client(aiohttp_client, tmp_path, tokens):
    c = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    await upload(c, corpus_file(HTTP_CASE), tokens["acme", "analyst"])
    return c


def suricata_alert(tmp_path) -> dict:
    """Run Suricata on the capture with one rule and return its EVE alert."""
    rules = tmp_path / "t.rules"
    rules.write_text('alert http any any -> any any (msg:"pcapwire GET"; http.method; '
                     'content:"GET"; sid:1000001; rev:1;)\n')
    logs = tmp_path / "suricata"
    logs.mkdir()
    subprocess.run([shutil.which("suricata") or "suricata", "-r", str(corpus_file(HTTP_CASE)),
                    "-S", str(rules), "-l", str(logs), "-k", "none", "--runmode", "single"],
                   check=True, capture_output=True, timeout=120)
    alerts = [json.loads(line) for line in (logs / "eve.json").read_text().splitlines()
              if '"event_type":"alert"' in line]
    assert len(alerts) == 1
    return alerts[0]


async def test_suricata_eve_alert_to_pcap_in_one_call(client, tokens, tmp_path):
    alert = suricata_alert(tmp_path)
    resp = await client.post("/api/v1/events/pcap", json=alert,
                             params={"case": "siem-1", "margin": "60"},
                             headers=bearer(tokens["acme", "analyst"]))
    assert resp.status == 200
    assert await resp.read() == tcpdump(corpus_file(HTTP_CASE), HTTP_FLOW.bpf())
    qid = resp.headers["X-Pcapwire-Query-Id"]
    q = await (await client.get(f"/api/v1/queries/{qid}",
                                headers=bearer(tokens["acme", "viewer"]))).json()
    assert (q["case"], q["event"]) == ("siem-1", "suricata:1000001")
    assert q["spec"]["five_tuple"]["dest_port"] == 80


async def test_zeek_conn_record_to_query(client, tokens):
    """Zeek is not installed here: the record is written by hand in conn.log's JSON
    format (field names and types as Zeek's JSON writer emits them)."""
    path = corpus_file(HTTP_CASE)
    _, recs = read_records(tcpdump(path))
    first, last = record_ts_ns(recs[0]) / 1e9, record_ts_ns(recs[-1]) / 1e9
    conn = {"ts": first, "uid": "CHhAvVGS1DHFjwGM9", "id.orig_h": HTTP_FLOW.src,
            "id.orig_p": HTTP_FLOW.sport, "id.resp_h": HTTP_FLOW.dst,
            "id.resp_p": HTTP_FLOW.dport, "proto": "tcp", "service": "http",
            "duration": last - first, "conn_state": "SF"}
    tok = tokens["acme", "analyst"]
    resp = await client.post("/api/v1/events", json=conn, params={"margin": "1"},
                             headers=bearer(tok))
    q = await resp.json()
    assert resp.status == 202 and q["event_format"] == "zeek-conn"
    assert q["event"] == "zeek:CHhAvVGS1DHFjwGM9"
    got = await (await client.get(q["links"]["pcap"], headers=bearer(tok))).read()
    assert got == tcpdump(path, HTTP_FLOW.bpf())


async def test_plain_five_tuple_margin_bounds_the_window(client, tokens):
    path = corpus_file(HTTP_CASE)
    _, recs = read_records(tcpdump(path))
    t_ns = record_ts_ns(recs[5])
    tok = tokens["acme", "analyst"]
    ev = {"five_tuple": f"tcp:{HTTP_FLOW.dst}:80:{HTTP_FLOW.src}:{HTTP_FLOW.sport}",
          "timestamp": f"{t_ns // 10**9}.{t_ns % 10**9:09d}"}
    q = await (await client.post("/api/v1/events", json=ev, params={"margin": "0"},
                                 headers=bearer(tok))).json()
    done = await wait_done(client, q["id"], tok)
    same_ts = sum(record_ts_ns(r) == t_ns for r in recs)
    assert done["packets"] == same_ts == 1
    wide = await (await client.post("/api/v1/events", json=ev, params={"margin": "3600"},
                                    headers=bearer(tok))).json()
    assert (await wait_done(client, wide["id"], tok))["packets"] == len(recs)


@pytest.mark.parametrize(("event", "message"), [
    ({"foo": 1}, "unrecognised event"),
    ({"event_type": "alert", "src_ip": "1.2.3.4", "dest_ip": "5.6.7.8", "proto": "TCP",
      "src_port": 1, "dest_port": 2}, "no 'timestamp' field"),
    ({"five_tuple": "tcp:1.2.3.4:1:5.6.7.8:99999", "timestamp": 1}, "outside 0..65535"),
    ({"five_tuple": {"proto": "tcp", "src_ip": "1.2.3.4", "src_port": 1, "dest_ip": "x",
                     "dest_port": 2}, "timestamp": 1}, "invalid host 'x'"),
    ({"id.orig_h": "1.2.3.4", "id.resp_h": "5.6.7.8", "proto": "udp", "ts": "never"},
     "invalid time 'never'"),
])
async def test_bad_events_are_400_and_say_why(client, tokens, event, message):
    resp = await client.post("/api/v1/events", json=event,
                             headers=bearer(tokens["acme", "analyst"]))
    body = await resp.json()
    assert resp.status == 400 and body["code"] == "invalid_query"
    assert message in body["message"]


async def test_margin_limit(client, tokens):
    resp = await client.post("/api/v1/events", params={"margin": "86401"},
                             json={"five_tuple": "tcp:1.2.3.4:1:5.6.7.8:2", "timestamp": 1},
                             headers=bearer(tokens["acme", "analyst"]))
    body = await resp.json()
    assert (resp.status, body["code"], body["details"]) == (
        400, "invalid_parameter", {"parameter": "margin"})


def test_icmp_event_selects_hosts_and_protocol():
    ev = parse_event({"event_type": "alert", "src_ip": "10.0.0.1", "dest_ip": "10.0.0.2",
                      "proto": "ICMP", "icmp_type": 8, "timestamp": "2024-01-01T00:00:00Z"})
    assert ev.flow == FlowKey(1, "10.0.0.1", 0, "10.0.0.2", 0)
    assert (ev.start_ns, ev.end_ns) == (1704067200 * 10**9, 1704067200 * 10**9)
    with pytest.raises(QueryError, match="no 'src_ip' field"):
        parse_event({"event_type": "flow", "dest_ip": "1.1.1.1", "proto": "udp"})
