"""Regenerate input.pcap of the golden case suricata-alert-counts (deterministic: running
it again writes the same bytes; tests/test_golden.py checks that).

    .venv/bin/python tests/golden/suricata-alert-counts/make_input.py [OUT]

Traffic (client 10.1.0.5 unless said otherwise), and what golden.rules makes of it:

- HTTP keep-alive to 192.0.2.10:80, two requests by curl (sid 9200001 x2), the second
  answered with the EICAR test string (sid 9200004 x1);
- HTTP from 10.1.0.6 to 192.0.2.11:8080, one request by curl (9200001) and one by a
  browser (nothing);
- three HTTP requests for /beacon from 10.1.0.7 to 192.0.2.12:80 on three connections
  (sid 9200005 x1: threshold type limit, one per source an hour);
- DNS to 10.1.0.53: www.evil.example and EVIL.example (sid 9200002 x2), example.org
  (nothing), each answered;
- four ICMP echo requests to 192.0.2.13 carrying PCAPWIRE-PING (sid 9200003 x4), their
  replies and one request without the marker (nothing).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from goldencraft import Capture, dns_query, write  # noqa: E402

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def get(uri: str, host: str, agent: str) -> bytes:
    return (f"GET {uri} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {agent}\r\n"
            f"Accept: */*\r\n\r\n").encode()


def ok(body: bytes, ctype: str = "text/plain") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"\r\n").encode() + body


def main() -> None:
    cap = Capture()
    cap.tcp("10.1.0.5", 41001, "192.0.2.10", 80, [
        ("c", get("/index.html", "a.example", "curl/8.5.0")),
        ("s", ok(b"<html>hello</html>\n", "text/html")),
        ("c", get("/eicar.com", "a.example", "curl/8.5.0")),
        ("s", ok(EICAR, "application/octet-stream"))])
    cap.wait(100_000)
    cap.tcp("10.1.0.6", 41002, "192.0.2.11", 8080, [
        ("c", get("/api/v1/status", "b.example:8080", "curl/7.88.1")),
        ("s", ok(b'{"status": "ok"}\n', "application/json")),
        ("c", get("/", "b.example:8080", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0")),
        ("s", ok(b"<html>home</html>\n", "text/html"))], isn=(70000, 90000))
    for i in range(3):
        cap.wait(100_000)
        cap.tcp("10.1.0.7", 42000 + i, "192.0.2.12", 80, [
            ("c", get(f"/beacon?n={i}", "c.example", "Go-http-client/1.1")),
            ("s", ok(b"sleep 60\n"))], isn=(3000 + i, 8000 + i))
    for i, name in enumerate(("www.evil.example", "EVIL.example", "example.org")):
        cap.wait(50_000)
        cap.udp("10.1.0.5", 53000 + i, "10.1.0.53", 53, dns_query(0x100 + i, name))
        cap.udp("10.1.0.53", 53, "10.1.0.5", 53000 + i,
                dns_query(0x100 + i, name, answer=f"198.51.100.{i + 1}"))
    for i in range(4):
        cap.wait(200_000)
        cap.icmp_echo("10.1.0.5", "192.0.2.13", 77, i + 1, b"PCAPWIRE-PING " + bytes(range(32)))
    cap.icmp_echo("10.1.0.5", "192.0.2.13", 77, 5, bytes(48))
    write(cap.pcap(), __file__)


if __name__ == "__main__":
    main()
