"""Notifications of trigger matches against real receivers on 127.0.0.1: a webhook server
that checks the signature and answers 500, 500, 200 (retried until delivered) or 400
(not retried), and syslog over UDP and TCP (RFC 5424 bytes, RFC 6587 octet counting),
every attempt in the delivery log."""

from __future__ import annotations

import json
import logging
import re
import socket

import pytest
from captureutil import wait_for
from pcapwire.triggers import notify
from pcapwire.triggers.db import Hit, TriggerDB
from pcapwire.triggers.model import from_dict, rule_key
from pcapwire.triggers.notify import (
    BOM,
    DELIVERY_HEADER,
    PENDING_MAX,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Notifier,
    deliveries,
    sd_escape,
    verify,
)
from triggerutil import Receiver

SECRET = "s3cret-do-not-log"
HIT = Hit("ip:198.18.0.7", 6, "10.0.0.1", 40000, "198.18.0.7", 443, 1767225600.25,
          {"indicator": "198.18.0.7", "address": "198.18.0.7"}, 17)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(notify, "BASE_DELAY_S", 0.05)


def trigger(db: TriggerDB, name: str, notify_targets: list[dict]) -> int:
    trig, _hunt = db.create(from_dict({"name": name, "indicators": {"ips": ["198.18.0.7"]},
                                       "notify": notify_targets}), "test")
    return trig.id


def test_webhook_signed_retried_and_logged(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    rx = Receiver({"/flaky": [500, 500, 200], "/bad": [400]})
    db = TriggerDB(tmp_path)
    ok = trigger(db, "flaky", [{"type": "webhook", "url": rx.url("/flaky"), "secret": SECRET}])
    bad = trigger(db, "bad", [{"type": "webhook", "url": rx.url("/bad"), "secret": SECRET}])
    (m1,) = db.add_watch_hits(ok, [HIT], 1, 4)
    (m2,) = db.add_watch_hits(bad, [HIT], 1, 4)
    notifier = Notifier(tmp_path)
    notifier.start()
    try:
        got = rx.wait(3, "/flaky")
        wait_for(lambda: deliveries(db, ok)[0]["status"] == "delivered", what="delivered")
        wait_for(lambda: deliveries(db, bad)[0]["status"] == "failed", what="failed")
    finally:
        notifier.stop()
        rx.close()
    assert [r["status"] for r in got] == [500, 500, 200]
    for r in got:  # each attempt signed anew over its own timestamp, one delivery id
        assert verify(SECRET, r["headers"], r["body"])
        assert r["headers"][SIGNATURE_HEADER].startswith("sha256=")
        assert r["headers"][DELIVERY_HEADER] == str(deliveries(db, ok)[0]["id"])
        assert not verify("another secret", r["headers"], r["body"])
        assert not verify(SECRET, r["headers"], r["body"] + b" ")
    replayed = {TIMESTAMP_HEADER: got[0]["headers"][TIMESTAMP_HEADER],
                SIGNATURE_HEADER: got[0]["headers"][SIGNATURE_HEADER]}
    assert not verify(SECRET, replayed, got[0]["body"],
                      now=int(replayed[TIMESTAMP_HEADER]) + notify.MAX_SKEW_S + 1)
    body = json.loads(got[2]["body"])
    assert body["trigger"] == {"id": ok, "name": "flaky", "version": 1}
    assert body["match"]["id"] == m1
    assert body["match"]["rule"] == "ip:198.18.0.7"
    assert body["match"]["flow"] == {"proto": "tcp", "src_ip": "10.0.0.1", "src_port": 40000,
                                     "dest_ip": "198.18.0.7", "dest_port": 443}
    assert body["match"]["time"] == "2026-01-01T00:00:00.250000Z"
    assert body["match"]["evidence"] == HIT.evidence
    assert body["pivots"]["flow_id"] == 17
    assert body["pivots"]["query"] == {"flow_ids": [17], "case": "trigger-flaky",
                                       "event": f"match-{m1}"}
    assert body["pivots"]["trigger_path"] == f"/api/v1/triggers/{ok}"
    assert body["pivots"]["case_path"] == "/api/v1/cases/trigger-flaky"
    (d_ok,) = deliveries(db, ok)
    assert (d_ok["status"], d_ok["attempts"], d_ok["http_status"], d_ok["last_error"]) == \
        ("delivered", 3, 200, None)
    assert d_ok["target"] == rx.url("/flaky") and d_ok["match_id"] == m1
    (d_bad,) = deliveries(db, bad)
    assert (d_bad["status"], d_bad["attempts"], d_bad["http_status"], d_bad["last_error"]) \
        == ("failed", 1, 400, "HTTP 400")
    assert d_bad["match_id"] == m2
    assert len([r for r in rx.requests if r["path"] == "/bad"]) == 1
    assert SECRET not in caplog.text
    db.close()


def test_pending_limit(tmp_path, monkeypatch):
    """A target with PENDING_MAX deliveries pending gets no more: new ones are logged
    failed, saying why (a target that never answers: port 9 of 127.0.0.1 refuses)."""
    monkeypatch.setattr(notify, "PENDING_MAX", 2)
    monkeypatch.setattr(notify, "BASE_DELAY_S", 30.0)
    db = TriggerDB(tmp_path)
    tid = trigger(db, "limited", [{"type": "webhook", "url": "http://127.0.0.1:9/x"}])
    hits = [Hit("ip:198.18.0.7", 6, "10.0.0.1", 40000 + i, "198.18.0.7", 443, 1.0 + i, {})
            for i in range(3)]
    db.add_watch_hits(tid, hits, 1, 1)
    assert Notifier(tmp_path).plan(db) == 3
    rows = deliveries(db, tid)
    assert [r["status"] for r in rows] == ["pending", "pending", "failed"]
    assert rows[2]["last_error"] == ("not sent: 2 deliveries to this target are pending "
                                     "(PENDING_MAX)")
    assert PENDING_MAX == 10_000
    db.close()


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(30)
    return s


def _read_framed(conn: socket.socket) -> bytes:
    data = b""
    while b" " not in data:
        data += conn.recv(1)
    length = int(data[:-1])
    msg = b""
    while len(msg) < length:
        msg += conn.recv(length - len(msg))
    assert conn.recv(1) == b""  # one message per connection, then closed
    return msg


def test_syslog_udp_and_tcp(tmp_path):
    udp = _udp()
    tcp = socket.create_server(("127.0.0.1", 0))
    tcp.settimeout(30)
    ports = udp.getsockname()[1], tcp.getsockname()[1]
    db = TriggerDB(tmp_path)
    tid = trigger(db, "sys", [
        {"type": "syslog", "address": f"127.0.0.1:{udp.getsockname()[1]}",
         "transport": "udp"},
        {"type": "syslog", "address": f"127.0.0.1:{tcp.getsockname()[1]}",
         "transport": "tcp"}])
    url = 'http://evil.example/a]b"c\\d'
    hit = Hit(rule_key("url", url), 17, "10.0.0.2", 5353, "10.0.0.3", 53, 1767225600.5, {})
    (mid,) = db.add_watch_hits(tid, [hit], 1, 2)
    notifier = Notifier(tmp_path)
    notifier.start()
    try:
        datagram = udp.recv(65535)
        conn, _ = tcp.accept()
        with conn:
            conn.settimeout(30)
            framed = _read_framed(conn)
        wait_for(lambda: [d["status"] for d in deliveries(db, tid)] ==
                 ["delivered", "delivered"], what="both delivered")
    finally:
        notifier.stop()
        udp.close()
        tcp.close()
    sd = (f'[pcapwire@32473 trigger="sys" trigger_id="{tid}" version="1" '
          f'match_id="{mid}" rule="url:http://evil.example/a\\]b\\"c\\\\d" source="watch" '
          'proto="udp" src_ip="10.0.0.2" src_port="5353" dest_ip="10.0.0.3" dest_port="53" '
          'time="2026-01-01T00:00:00.500000Z"]')
    msg = (f"trigger sys matched url:{url}: udp 10.0.0.2:5353 -> 10.0.0.3:53")
    pattern = re.compile(
        rb"<132>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (\S+) pcapwire (\d+) match "
        + re.escape(sd.encode()) + b" " + re.escape((BOM + msg).encode()))
    for raw in (datagram, framed):
        m = pattern.fullmatch(raw)
        assert m is not None, raw
        assert m[2].decode() == socket.gethostname()
        assert int(m[3]) > 0
    rows = deliveries(db, tid)
    assert [r["target"] for r in rows] == [f"syslog+udp://127.0.0.1:{ports[0]}",
                                           f"syslog+tcp://127.0.0.1:{ports[1]}"]
    assert [r["attempts"] for r in rows] == [1, 1]
    db.close()


def test_sd_escape():
    assert sd_escape('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    assert sd_escape("x" * 600) == "x" * (notify.SD_VALUE_MAX - 3) + "..."
