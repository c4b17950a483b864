"""Indicators that need content (core/triggers/indicator_rules.py), run by the real
Suricata: domains against DNS queries, TLS SNI and HTTP Host (exact names, ``*.`` for
subdomains), URLs against HTTP requests, JA3 and JA4 against TLS client hellos."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from conftest import CASES, corpus_file
from pcapwire.plugins.suricata.eve import parse_ts
from pcapwire.testing import capture, tcp_session, udp_exchange
from pcapwire.testing.craft import dns_query, http_request
from pcapwire.triggers.indicator_rules import (
    INDICATOR_SIDS,
    MAX_HASHSIZE,
    MIN_HASHSIZE,
    build,
)
from pcapwire.triggers.match_engines import collect_engine_hits
from pcapwire.triggers.model import from_dict
from pcapwire.workflow.sources import file_chunks
from suricatautil import by_hand
from trigger_engineutil import client_hello

NAMES = ["evil.example", "EVIL.Example", "evil.example.", "notevil.example",
         "evil.example.com", "a.wild.example", "x.y.wild.example", "wild.example",
         "notwild.example"]
HIT = {"evil.example": "domain:evil.example", "EVIL.Example": "domain:evil.example",
       "evil.example.": "domain:evil.example", "a.wild.example": "domain:*.wild.example",
       "x.y.wild.example": "domain:*.wild.example"}


def _hits(pcap: bytes, indicators: dict[str, list[str]], tmp_path: Path) -> list[tuple]:
    path = tmp_path / "in.pcap"
    path.write_bytes(pcap)
    defn = from_dict({"name": "ioc", "indicators": indicators})
    hits = asyncio.run(collect_engine_hits(file_chunks(path), defn, tmp_path / "w"))
    return sorted((h.rule, h.proto, h.src_port, h.dest_port) for h in hits)


def test_domains_hit_dns_sni_and_host_exactly(tmp_path: Path) -> None:
    sessions = []
    for i, name in enumerate(NAMES):
        if not name.endswith("."):  # a DNS name on the wire has no trailing dot
            sessions.append(udp_exchange(f"10.4.0.1:{5000 + i} > 10.4.0.53:53",
                                         dns_query(i, name)))
        sessions += [
            tcp_session(f"10.4.0.1:{6000 + i} > 10.4.0.9:443", client_hello(name),
                        b"\x15\x03\x03\x00\x02\x02\x28"),
            tcp_session(f"10.4.0.1:{7000 + i} > 10.4.0.9:80", http_request("/", host=name),
                        b"HTTP/1.1 204 No Content\r\n\r\n"),
        ]
    sessions.append(tcp_session("10.4.0.1:7999 > 10.4.0.9:8080",
                                http_request("/", host="evil.example:8080"),
                                b"HTTP/1.1 204 No Content\r\n\r\n"))
    got = _hits(capture(sessions), {"domains": ["evil.example", "*.wild.example"]}, tmp_path)
    expected = [(HIT[name], proto, base + i, dport) for i, name in enumerate(NAMES)
                if name in HIT
                for proto, base, dport in ((17, 5000, 53), (6, 6000, 443), (6, 7000, 80))
                if proto == 6 or not name.endswith(".")]
    expected.append(("domain:evil.example", 6, 7999, 8080))  # the Host's port is no part
    assert got == sorted(expected)
    assert len(got) == 15


def test_urls_hit_the_request_to_that_host_and_path(tmp_path: Path) -> None:
    def req(port: int, dport: int, line: str, host: str) -> object:
        return tcp_session(f"10.5.0.1:{port} > 10.5.0.9:{dport}",
                           f"GET {line} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(),
                           b"HTTP/1.1 204 No Content\r\n\r\n")

    sessions = [
        req(1000, 80, "/x?a=1", "evil.example"),                     # hit
        req(1001, 80, "/x", "evil.example"),                         # other query
        req(1002, 80, "/x?a=1", "other.example"),                    # other host
        req(1003, 80, "http://evil.example/x?a=1", "evil.example"),  # absolute form: hit
        req(1004, 80, "/x?a=1", "EVIL.example"),                     # host case: hit
        req(1005, 8080, "/p", "evil.example:8080"),                  # explicit port: hit
        req(1006, 80, "/p", "evil.example"),                         # port 80, not 8080
        req(1007, 80, "/X?a=1", "evil.example"),                     # paths keep case
    ]
    got = _hits(capture(sessions), {"urls": ["http://evil.example/x?a=1#frag",
                                             "http://evil.example:8080/p"]}, tmp_path)
    assert got == [("url:http://evil.example/x?a=1#frag", 6, 1000, 80),
                   ("url:http://evil.example/x?a=1#frag", 6, 1003, 80),
                   ("url:http://evil.example/x?a=1#frag", 6, 1004, 80),
                   ("url:http://evil.example:8080/p", 6, 1005, 8080)]


def test_ja3_and_ja4_hit_the_client_hello(tmp_path: Path) -> None:
    """JA3 as tshark computes it, JA4 as Arkime does (the corpus manifest; tshark 4.0 has
    none); the time is the alert's, as ``suricata -r`` gives it for hand-written rules."""
    pcap = corpus_file("arkime-tls13-ja3-ja4")
    out = subprocess.run(["tshark", "-r", str(pcap), "-Y", "tls.handshake.type == 1", "-T",
                          "fields", "-e", "tls.handshake.ja3", "-e", "ip.src", "-e",
                          "tcp.srcport", "-e", "ip.dst", "-e", "tcp.dstport"],
                         capture_output=True, text=True, check=True).stdout
    ((ja3, src, sport, dst, dport),) = [line.split("\t") for line in out.splitlines()]
    (tls,) = CASES["arkime-tls13-ja3-ja4"]["expect"]["tls"]
    assert ja3 == tls["ja3"] == "eeadfd2f446a45ded96f804720a0c75b"
    defn = from_dict({"name": "fp", "indicators": {
        "ja3": [ja3, "0" * 32], "ja4": [tls["ja4"], "t13d1516h2_8daaf6152771_02713d6af862"]}})
    hits = asyncio.run(collect_engine_hits(file_chunks(pcap), defn, tmp_path / "w"))
    rules = tmp_path / "hand.rules"
    rules.write_text(f'alert tls any any -> any any (msg:"a"; ja3.hash; content:"{ja3}"; '
                     f'sid:1;)\nalert tls any any -> any any (msg:"b"; ja4.hash; '
                     f'content:"{tls["ja4"]}"; sid:2;)\n')
    hand = {e["alert"]["signature_id"]: parse_ts(e["timestamp"])
            for e in by_hand(pcap, rules, ["-k", "none"], tmp_path / "hand")
            if e["event_type"] == "alert"}
    assert sorted((h.rule, h.proto, h.src_ip, h.src_port, h.dest_ip, h.dest_port, h.ts)
                  for h in hits) == [
        (f"ja3:{ja3}", 6, src, int(sport), dst, int(dport), hand[1]),
        (f"ja4:{tls['ja4']}", 6, src, int(sport), dst, int(dport), hand[2])]


def test_generated_rules_use_the_reserved_sids_and_bounded_datasets() -> None:
    ind = from_dict({"name": "g", "indicators": {
        "domains": [f"h{i}.example" for i in range(3000)] + ["*.a.example", "*.b.c.example"],
        "ja3": ["0" * 32]}}).indicators
    rules = build(ind)
    sids = [int(r.split("sid:")[1].split(";")[0]) for r in rules.text.splitlines()]
    assert all(s in INDICATOR_SIDS for s in sids) and len(set(sids)) == len(sids) == 10
    assert rules.count == 10  # 3 exact, 3 + 3 wildcard (2 and 3 labels), 1 ja3
    assert "hashsize 8192" in rules.text  # 6,000 entries: the name with and without dot
    assert rules.datasets["domains"].count("\n") == 6000
    assert (MIN_HASHSIZE, MAX_HASHSIZE) == (1024, 262_144)
    huge = build(from_dict({"name": "g", "indicators": {
        "domains": [f"h{i}.example" for i in range(200_000)]}}).indicators)
    assert f"hashsize {MAX_HASHSIZE}" in huge.text
