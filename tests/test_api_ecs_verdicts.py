"""pcapwire's own ECS verdict goes back into pcapwire: a line of ``pcapwire run --json``
posted to ``POST /api/v1/events`` queries that flow again, and the API returns verdicts in
that same ECS form (the native form with ``?format=native``). Real YARA, no Suricata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from apiutil import Tokens, bearer, upload, wait_done
from conftest import CASES, corpus_file
from pcaputil import read_records, tcpdump
from pcapwire.api import ApiConfig, create_app
from pcapwire.api.events import parse_event
from pcapwire.api.schemas import SCHEMAS
from pcapwire.cases import verdict_to_ecs
from pcapwire.cli import main
from pcapwire.errors import QueryError
from pcapwire.records import FlowKey, Verdict

FTP_CASE = "zeek-ftp-retr-passive"  # an FTP control connection and its data connection
CONTROL = FlowKey(6, "141.142.228.5", 50736, "141.142.192.162", 21)
RULE = 'rule ftp_retr { strings: $retr = "RETR " condition: $retr }\n'


def _workflow_dir(tmp: Path) -> Path:
    rules = tmp / "ftp.yar"
    rules.write_text(RULE)
    d = tmp / "workflows"
    d.mkdir()
    (d / "retr.yaml").write_text(f"""\
name: retr
steps:
  - id: yara
    uses: yara
    input: stream
    with: {{rules: ["{rules}"]}}
""")
    return d


@pytest.fixture
def workflows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PCAPWIRE_LOAD_PLUGINS", "yara")
    return _workflow_dir(tmp_path)


@pytest.fixture
def run_json(tmp_path: Path, workflows: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """What ``pcapwire run WORKFLOW --pcap CAPTURE --json`` prints on stdout."""
    rc = main(["--data-dir", str(tmp_path / "cli"), "run", str(workflows / "retr.yaml"),
               "--pcap", str(corpus_file(FTP_CASE)), "--json", "--no-store"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out.splitlines()


def _conversation_packets(flow: FlowKey) -> int:
    """The packet count of that conversation, as the corpus records tshark's count."""
    (conv,) = [c for c in CASES[FTP_CASE]["computed"]["conversations"]["conversations"]
               if (c["src"], c["sport"], c["dst"], c["dport"]) == (flow.src, flow.sport,
                                                                   flow.dst, flow.dport)]
    return int(conv["packets"])


async def test_a_run_json_line_posted_to_events_gets_that_flows_pcap(
        aiohttp_client: Any, tmp_path: Path, run_json: list[str]) -> None:
    (line,) = run_json  # one stream holds "RETR "
    doc = json.loads(line)
    assert (doc["source"], doc["destination"], doc["network"]["transport"]) == (
        {"ip": CONTROL.src, "port": CONTROL.sport}, {"ip": CONTROL.dst, "port": CONTROL.dport},
        "tcp")

    data = tmp_path / "srv"
    tokens = Tokens(data)
    tok = tokens["acme", "analyst"]
    client = await aiohttp_client(create_app(ApiConfig(data_dir=data)))
    await upload(client, corpus_file(FTP_CASE), tok)
    expected = tcpdump(corpus_file(FTP_CASE), CONTROL.bpf())
    _, records = read_records(expected)
    assert len(records) == _conversation_packets(CONTROL) == 43  # not the data connection's

    # the line exactly as printed, in one call ...
    resp = await client.post("/api/v1/events/pcap", data=line.encode(),
                             headers={**bearer(tok), "Content-Type": "application/json"})
    assert resp.status == 200
    got = await resp.read()
    assert len(read_records(got)[1]) == 43 and got == expected
    # ... and as a query
    resp = await client.post("/api/v1/events", data=line.encode(), params={"case": "siem"},
                             headers={**bearer(tok), "Content-Type": "application/json"})
    q = await resp.json()
    assert resp.status == 202, q
    assert (q["event_format"], q["event"], q["case"]) == ("ecs", f"ecs:{doc['rule']['id']}",
                                                          "siem")
    assert q["spec"]["five_tuple"] == CONTROL.to_dict()
    assert (await wait_done(client, q["id"], tok))["packets"] == 43


async def test_verdicts_are_ecs_by_default_and_native_on_request(
        aiohttp_client: Any, tmp_path: Path, workflows: Path, run_json: list[str]) -> None:
    (cli_line,) = run_json
    data = tmp_path / "srv"
    tokens = Tokens(data)
    tok = tokens["acme", "analyst"]
    client = await aiohttp_client(create_app(ApiConfig(data_dir=data,
                                                       workflow_dirs=[workflows])))
    await upload(client, corpus_file(FTP_CASE), tok)
    q = await (await client.post("/api/v1/queries", json={
        "case": "ir-ecs", "workflows": ["retr"]}, headers=bearer(tok))).json()
    end = await wait_done(client, q["id"], tok)
    assert (end["status"], end["verdicts"]) == ("done", 1)
    (run,) = end["runs"]

    async def get(url: str, **params: str) -> Any:
        resp = await client.get(url, params=params, headers=bearer(tok))
        assert resp.status == 200, await resp.text()
        return await resp.json()

    (ecs,) = (await get(q["links"]["verdicts"]))["verdicts"]
    assert (await get(q["links"]["verdicts"], format="ecs"))["verdicts"] == [ecs]
    (native,) = (await get(q["links"]["verdicts"], format="native"))["verdicts"]
    jsonschema.validate(ecs, SCHEMAS["EcsVerdict"])
    jsonschema.validate(native, SCHEMAS["Verdict"])
    assert (native["analyzer"], native["case"], native["query_id"], native["run_id"]) == (
        "yara", "ir-ecs", q["id"], run["run_id"])
    # one conversion serves both: the ECS document is verdict_to_ecs of the native record
    assert ecs == verdict_to_ecs(Verdict.from_dict(native), run_id=run["run_id"])
    assert (ecs["pcapwire"]["run_id"], ecs["pcapwire"]["query_id"]) == (run["run_id"], q["id"])
    # ... and is what `pcapwire run --json` printed, but for the run's own names
    def strip(d: dict[str, Any]) -> dict[str, Any]:
        return {**d, "pcapwire": {k: v for k, v in d["pcapwire"].items()
                                  if k not in ("run_id", "case", "query_id")}}

    assert strip(json.loads(cli_line)) == strip(ecs) and ecs["pcapwire"]["case"] == "ir-ecs"

    # the live stream and the case, in both forms
    for params, want in (({}, ecs), ({"format": "native"}, native)):
        text = await (await client.get(q["links"]["verdict_stream"], params=params,
                                       headers=bearer(tok))).text()
        (payload,) = [json.loads(line.removeprefix("data: "))
                      for block in text.split("\n\n") if "event: verdict" in block.split("\n")
                      for line in block.split("\n") if line.startswith("data: ")]
        assert payload == want
        case = await get("/api/v1/cases/ir-ecs", **params)
        assert case["verdicts"] == [want]
    for url in (q["links"]["verdicts"], q["links"]["verdict_stream"], "/api/v1/cases/ir-ecs"):
        bad = await client.get(url, params={"format": "eve"}, headers=bearer(tok))
        body = await bad.json()
        assert (bad.status, body["code"], body["details"]) == (
            400, "invalid_parameter", {"parameter": "format"})

    # the API's ECS verdict goes back in, too
    resp = await client.post("/api/v1/events/pcap", json=ecs, headers=bearer(tok))
    assert await resp.read() == tcpdump(corpus_file(FTP_CASE), CONTROL.bpf())


# ---- ECS events from elsewhere ------------------------------------------------------------
@pytest.mark.parametrize(("event", "flow", "window"), [
    ({"@timestamp": "2024-01-01T00:00:00Z", "source.ip": "10.0.0.1", "source.port": 5353,
      "destination.ip": "10.0.0.2", "destination.port": 53, "network.transport": "udp"},
     FlowKey(17, "10.0.0.1", 5353, "10.0.0.2", 53), (0, 0)),
    ({"@timestamp": "2024-01-01T00:00:00Z", "client": {"ip": "fe80::1"},
      "server": {"ip": "fe80::2"}, "network": {"transport": "ipv6-icmp"},
      "event": {"duration": 2_500_000_000}},
     FlowKey(58, "fe80::1", 0, "fe80::2", 0), (0, 2_500_000_000)),
    ({"@timestamp": "2024-01-01T00:00:10Z", "source": {"ip": "10.0.0.1", "port": 1},
      "destination": {"ip": "10.0.0.2", "port": 2},
      "network": {"transport": "TCP", "iana_number": "6"},
      "event": {"start": "2024-01-01T00:00:05Z", "end": "2024-01-01T00:00:20Z"}},
     FlowKey(6, "10.0.0.1", 1, "10.0.0.2", 2), (5 * 10**9, 20 * 10**9)),
])
def test_ecs_events_from_other_tools(event: dict[str, Any], flow: FlowKey,
                                     window: tuple[int, int]) -> None:
    ev = parse_event(event)
    t0 = 1704067200 * 10**9
    assert (ev.format, ev.flow, ev.start_ns - t0, ev.end_ns - t0) == ("ecs", flow, *window)


@pytest.mark.parametrize(("event", "message"), [
    ({"source": {"ip": "10.0.0.1"}, "destination": {"ip": "10.0.0.2"},
      "@timestamp": "2024-01-01T00:00:00Z"}, "no 'network.iana_number' or "
                                             "'network.transport' field"),
    ({"source": {"ip": "10.0.0.1"}, "network": {"transport": "tcp"},
      "@timestamp": "2024-01-01T00:00:00Z"}, "ecs event has no 'destination.ip' field"),
    ({"source": {"ip": "10.0.0.1"}, "destination": {"ip": "10.0.0.2"},
      "network": {"transport": "tcp"}}, "ecs event has no '@timestamp' field"),
    ({"source": {"ip": "10.0.0.1", "port": 70000}, "destination": {"ip": "10.0.0.2"},
      "network": {"transport": "tcp"}, "@timestamp": 1}, "outside 0..65535"),
])
def test_bad_ecs_events_say_what_is_missing(event: dict[str, Any], message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_event(event)
