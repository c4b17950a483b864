"""``pcapwire trigger`` end to end on a real store (the corpus capture zeek-http-get: one
HTTP flow 141.142.228.5:59856 -> 192.150.187.43:80): create from indicator files of each
format (text, MISP, STIX 2.1 built with stix2) and options, the hunt run in the foreground
(--wait, the real hunt runner), list/show/matches --json exactly, edit (a new version only
when the results would change), pause/resume/abort/delete, bad files with FILE:LINE, and
the webhook secret never printed."""

from __future__ import annotations

import json

import pytest
import stix2
from conftest import REPO, corpus_file
from pcapwire.cli import main

MISP_EVENT = REPO / "tests" / "data" / "triggers" / "misp-event.json"
SECRET = "s3cr3t-hmac-key-never-shown"
FLOW = {"proto": 6, "src_ip": "141.142.228.5", "src_port": 59856, "dest_ip": "192.150.187.43",
        "dest_port": 80}
TS = 1362692526.869344  # the flow's first packet
VOLATILE = ("created", "updated", "started", "finished", "found", "rate_bytes_s")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("trigger-cli")
    assert main(["--data-dir", str(d), "ingest", "--progress", "none",
                 str(corpus_file("zeek-http-get"))]) == 0
    return d


def run(capsys, data, *args, code=0):
    capsys.readouterr()
    assert main(["--data-dir", str(data), "trigger", *args]) == code
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    return out, err


def strip(doc):
    """``doc`` without the fields that hold the time of the run."""
    if isinstance(doc, dict):
        return {k: strip(v) for k, v in doc.items() if k not in VOLATILE}
    if isinstance(doc, list):
        return [strip(v) for v in doc]
    return doc


def _hunt(hid, version, status, units=0, done=0, nbytes=0, progress=0.0, eta=None):
    return {"id": hid, "version": version, "status": status, "units_total": units,
            "units_done": done, "units_failed": 0, "bytes_total": nbytes,
            "bytes_done": nbytes if done else 0, "progress": progress, "eta_s": eta,
            "error": None, "failed_units": []}


def _empty(**given):
    out = {k: [] for k in ("ips", "domains", "urls", "ja3", "ja4", "sha256", "md5", "sha1")}
    return {**out, **given}


def test_create_from_each_format_list_show_and_secret(capsys, data, tmp_path, monkeypatch):
    text = tmp_path / "iocs.txt"
    text.write_text("# from the report\n192.150.187.43\nhxxp://evil[.]example/a\n")
    bundle = tmp_path / "bundle.json"
    bundle.write_text(stix2.Bundle(stix2.Indicator(
        pattern="[domain-name:value = 'c2.example'] OR [ipv4-addr:value = '198.51.100.0/24']",
        pattern_type="stix", valid_from="2026-01-01T00:00:00Z")).serialize())
    rules = tmp_path / "local.rules"
    rules.write_text('alert http any any -> any any (msg:"GET"; http.method; content:"GET"; '
                     'sid:1000001; rev:1;)\n')
    monkeypatch.setenv("HOOK_KEY", SECRET)
    out, _ = run(capsys, data, "create", "intel", "--indicators", str(text), "--indicators",
                 str(MISP_EVENT), "--indicators", str(bundle), "--domain", "extra.example",
                 "--suricata-rules", str(rules), "--start", "2013-03-07T00:00:00Z",
                 "--scope-bpf", "tcp", "--workflow", "ids", "--webhook",
                 "http://127.0.0.1:9/hook", "--webhook-secret-env", "HOOK_KEY", "--syslog",
                 "tcp://127.0.0.1:5514", "--json")
    made = json.loads(out)
    definition = {
        "name": "intel", "suricata_rules": rules.read_text(), "yara_rules": "", "bpf": "",
        "indicators": _empty(
            ips=["192.150.187.43", "198.51.100.9", "203.0.113.5", "2001:db8::10",
                 "198.51.100.0/24"],
            domains=["bro.icir.org", "update.example", "c2.example", "extra.example"],
            urls=["http://evil.example/a", "http://bro.icir.org/download/bro-2.1.tar.gz"],
            ja3=["e7eca2baf4458d095b7f45da28c16c34"],
            sha256=["6f1b8e5bb1f5f9d4a0ba4e2a13f1e8c08fda8f5b2c4fa3e0e1a38c6d6a8a7f11"],
            md5=["0123456789abcdef0123456789abcdef"],
            sha1=["da39a3ee5e6b4b0d3255bfef95601890afd80709"]),
        "scope": {"start_ns": 1362614400 * 10**9, "end_ns": None, "bpf": "tcp", "sensor": ""},
        "workflows": ["ids"],
        "notify": [{"type": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "(set)"},
                   {"type": "syslog", "address": "127.0.0.1:5514", "transport": "tcp"}]}
    view = {"id": 1, "name": "intel", "state": "active", "version": 1,
            "created_by": made["trigger"]["created_by"],
            "looks_for": ["suricata", "ips", "domains", "urls", "ja3", "sha256", "md5", "sha1"],
            "definition": definition, "hunt": _hunt(1, 1, "queued"), "matches": 0}
    assert strip(made["trigger"]) == view
    assert [(i["file"], i["format"], sum(i["indicators"].values()), len(i["ignored"]))
            for i in made["imports"]] == [(str(text), "text", 2, 0),
                                          (str(MISP_EVENT), "misp", 11, 5),
                                          (str(bundle), "stix", 2, 0)]
    out, _ = run(capsys, data, "list", "--json")
    assert [strip(json.loads(line)) for line in out.splitlines()] == [view]
    out, _ = run(capsys, data, "show", "intel", "--json")
    shown = json.loads(out)
    assert strip(shown) == {**view, "hunts": [_hunt(1, 1, "queued")], "versions": [
        {"version": 1, "digest": shown["versions"][0]["digest"],
         "created_by": view["created_by"], "reason": "created"}]}
    out, _ = run(capsys, data, "show", "intel")
    assert '"secret": "(set)"' in out and "hunt 1 (version 1): queued, 0.0%" in out
    # The stored definition keeps the secret (the notifier needs it).
    from pcapwire.triggers.db import TriggerDB

    with TriggerDB(data) as db:
        assert db.by_name("intel").definition.notify[0].secret == SECRET
    run(capsys, data, "delete", "intel")
    assert run(capsys, data, "list", "--json")[0] == ""


def test_wait_hunts_then_edit_versions_matches_and_controls(capsys, data):
    out, _ = run(capsys, data, "create", "web", "--ip", "192.150.187.0/24", "--wait", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    size = lines[1]["hunt"]["bytes_total"]
    assert strip(lines[1]["hunt"]) == _hunt(lines[1]["hunt"]["id"], 1, "finished", 1, 1, size,
                                            1.0, 0.0)
    tid = lines[0]["trigger"]["id"]
    out, _ = run(capsys, data, "matches", "web", "--json")
    match = {"id": 1, "rule": "ip:192.150.187.0/24",
             "flow_key": "6 141.142.228.5 59856 192.150.187.43 80", "flow_id": 1, **FLOW,
             "ts": TS, "segment_id": 1, "source": "hunt",
             "evidence": {"address": "192.150.187.43", "indicator": "192.150.187.0/24"},
             "versions": [1], "hits": 1, "pivots": {
                 "query": {"flow_ids": [1], "case": "trigger-web", "event": "match-1"},
                 "flow_id": 1, "bpf": "tcp and host 141.142.228.5 and host 192.150.187.43 "
                                      "and port 59856 and port 80",
                 "trigger_path": f"/api/v1/triggers/{tid}",
                 "case_path": "/api/v1/cases/trigger-web"}}
    assert [strip(json.loads(line)) for line in out.splitlines()] == [match]
    out, _ = run(capsys, data, "matches", "web")
    assert out == ("     1 2013-03-07T21:42:06Z ip:192.150.187.0/24              tcp "
                   "141.142.228.5:59856 -> 192.150.187.43:80 flow 1 hunt v1 hits 1\n")

    # workflows only: same version, no hunt; indicators: version 2 and its hunt
    out, _ = run(capsys, data, "edit", "web", "--workflow", "ids", "--json")
    assert (json.loads(out)["trigger"]["version"], json.loads(out)["trigger"]["hunt"]["id"]) \
        == (1, lines[1]["hunt"]["id"])
    out, _ = run(capsys, data, "edit", "web", "--ip", "10.0.0.0/8")
    assert out == f"trigger web: version 2; hunt {lines[1]['hunt']['id'] + 1} queued\n"
    out, _ = run(capsys, data, "matches", "web", "--diff", "2", "--json")
    assert strip(json.loads(out)) == {"version": 2, "new": [], "gone": [match]}
    out, _ = run(capsys, data, "matches", "web", "--version", "2", "--json")
    assert out == ""

    hid = lines[1]["hunt"]["id"] + 1
    states = []
    for action in ("pause", "resume", "abort"):
        out, _ = run(capsys, data, action, "web", "--json")
        states.append((json.loads(out)["state"], json.loads(out)["hunt"]["status"]))
    assert states == [("paused", "paused"), ("active", "queued"), ("active", "aborted")]
    _, err = run(capsys, data, "abort", "web", code=2)
    assert err == "pcapwire: error: trigger 'web': no hunt to abort (the current one is " \
                  "aborted)\n"
    out, _ = run(capsys, data, "show", "web", "--json")
    assert [(h["id"], h["version"], h["status"]) for h in json.loads(out)["hunts"]] == [
        (hid - 1, 1, "finished"), (hid, 2, "aborted")]
    assert [v["reason"] for v in json.loads(out)["versions"]] == ["created", "edited"]
    run(capsys, data, "delete", "web")


def test_bad_input_is_refused_with_file_and_line(capsys, data, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("192.0.2.1\n\nnot_a..domain\n")
    _, err = run(capsys, data, "create", "bad", "--indicators", str(bad), code=2)
    assert err.splitlines() == [
        f"pcapwire: error: {bad}:3: domain: 'not_a..domain' is no domain name (a leading "
        "'*.' matches subdomains)",
        f"{bad}: nothing imported (1 problem(s)); fix them, or skip the bad entries "
        "(--skip-bad)"]
    assert run(capsys, data, "list", "--json")[0] == ""
    out, err = run(capsys, data, "create", "bad", "--indicators", str(bad), "--skip-bad",
                   code=1)
    assert err == f"pcapwire: skipped: {bad}:3: domain: 'not_a..domain' is no domain name " \
                  "(a leading '*.' matches subdomains)\n"
    assert out.splitlines()[0] == f"{bad} (text): 1 ips"
    _, err = run(capsys, data, "create", "bad", "--ip", "192.0.2.9", code=2)
    assert err.startswith("pcapwire: error: a trigger named 'bad' exists (id ")
    assert err.endswith("); edit it or delete it first\n")
    _, err = run(capsys, data, "create", "x", "--ip", "300.0.0.1", code=2)
    assert err == "pcapwire: error: trigger: indicators.ips[0]: '300.0.0.1' is no IP " \
                  "address or CIDR network\n"
    _, err = run(capsys, data, "create", "x", "--webhook", "http://127.0.0.1:9/h",
                 "--webhook-secret-env", "PCAPWIRE_TEST_UNSET_VAR", code=2)
    assert err == "pcapwire: error: --webhook-secret-env: the environment variable " \
                  "PCAPWIRE_TEST_UNSET_VAR is not set or empty\n"
    _, err = run(capsys, data, "create", "x", "--suricata-rules", str(tmp_path / "nope"),
                 code=2)
    assert err == f"pcapwire: error: --suricata-rules {tmp_path / 'nope'}: cannot read: No " \
                  "such file or directory\n"
    _, err = run(capsys, data, "show", "nope", code=2)
    assert err == "pcapwire: error: no trigger named 'nope' (see `pcapwire trigger list`)\n"
    run(capsys, data, "delete", "bad")


def test_run_serves_the_store_until_terminated(capsys, data):
    """``trigger run``: the watch engineer's service in the foreground hunts a queued
    trigger; SIGTERM ends it with exit code 0."""
    import signal
    import subprocess
    import sys

    from captureutil import wait_for
    from pcapwire.triggers.db import TriggerDB

    run(capsys, data, "create", "svc", "--ip", "141.142.228.5")
    proc = subprocess.Popen([sys.executable, "-m", "pcapwire.cli", "--data-dir", str(data),
                             "trigger", "run"], stderr=subprocess.PIPE, text=True)
    try:
        with TriggerDB(data) as db:
            tid = db.by_name("svc").id
            wait_for(lambda: db.hunts(tid)[-1].status == "finished", what="the hunt")
            assert [m["rule"] for m in db.matches(tid)] == ["ip:141.142.228.5"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    run(capsys, data, "delete", "svc")
