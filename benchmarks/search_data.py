"""Synthetic metadata records for bench_search.py: realistic ECS documents made by the
index's own mapping functions (:mod:`pcapwire.search.ecs`) from EVE-, carve- and
catalog-shaped inputs, with a few needles whose counts are known.

Mix per 100 records: 40 flows, 20 HTTP, 15 DNS, 10 TLS, 5 files, 3 emails, 7 alerts.
Domains, clients and servers follow a skewed (Zipf-like) popularity; times spread over
30 days.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

from pcapwire.records import FlowKey, Verdict
from pcapwire.search.ecs import Doc, Origin, email_doc, eve_doc, file_doc, flow_doc, verdict_doc

T0 = 1_790_000_000.0  # 2026-09-21
SPAN_S = 30 * 86400
#: Needles: (query, how many records hold them) for every ``NEEDLE_EVERY`` records.
NEEDLE_EVERY = 50_000
NEEDLE_DOMAIN = "login.evil.example"
NEEDLE_HASH = hashlib.sha256(b"pcapwire needle").hexdigest()
NEEDLE_SUBJECT = "Quarterly report overdue"
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee "
         "zulu invoice payment shipment account meeting agenda").split()
TLDS = ("com", "net", "org", "example", "io", "de")


class Synth:
    def __init__(self, seed: int = 15) -> None:
        self.r = random.Random(seed)
        r = self.r
        self.domains = [f"{r.choice(['www', 'cdn', 'api', 'mail', 'img'])}{i}."
                        f"{''.join(r.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(7))}"
                        f".{r.choice(TLDS)}" for i in range(50_000)]
        self.clients = [f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256 or 1}"
                        for i in range(1, 5001)]
        self.servers = [f"{r.randint(11, 223)}.{r.randint(0, 255)}.{r.randint(0, 255)}."
                        f"{r.randint(1, 254)}" for _ in range(20_000)]

    def pick(self, seq: list[str]) -> str:
        return seq[min(int(self.r.paretovariate(1.2)) - 1, len(seq) - 1)]

    def flow(self, dport: int | None = None) -> FlowKey:
        r = self.r
        dport = dport or r.choice((80, 443, 443, 443, 53, 25, 8080, 22, 3389, 8443))
        return FlowKey(17 if dport == 53 else 6, self.pick(self.clients),
                       r.randint(1024, 65535), self.pick(self.servers), dport)

    def docs(self, n: int) -> Iterator[Doc]:
        r = self.r
        for i in range(n):
            ts = T0 + SPAN_S * i / n
            needle = i % NEEDLE_EVERY == NEEDLE_EVERY // 2
            kind = r.randrange(100)
            origin = Origin(case=f"case-{i // 20_000}", run_id=f"run{i // 5000}",
                            query_id=f"q{i // 5000}", step="ids")
            if kind < 40:
                f = self.flow()
                yield flow_doc({"flow_id": i, **f.to_dict(), "pkts_toserver": r.randint(1, 99),
                                "bytes_toserver": r.randint(60, 99999),
                                "pkts_toclient": r.randint(0, 99),
                                "bytes_toclient": r.randint(0, 999999)},
                               int(ts * 1e9), int((ts + r.random() * 60) * 1e9))
                continue
            f = self.flow(53 if 60 <= kind < 75 else 443 if 75 <= kind < 85 else None)
            eve = {"timestamp": f"{_iso(ts)}", "pcap_cnt": i, "src_ip": f.src,
                   "src_port": f.sport, "dest_ip": f.dst, "dest_port": f.dport,
                   "proto": "UDP" if f.proto == 17 else "TCP", "flow_id": i}
            domain = NEEDLE_DOMAIN if needle else self.pick(self.domains)
            if kind < 60:
                doc = eve_doc({**eve, "event_type": "http", "app_proto": "http", "http": {
                    "hostname": domain, "url": f"/{r.choice(WORDS)}/{r.randrange(9999)}.php"
                    f"?id={r.randrange(99999)}", "http_method": r.choice(
                        ("GET", "GET", "GET", "POST", "HEAD")),
                    "status": r.choice((200, 200, 304, 404, 500)), "protocol": "HTTP/1.1",
                    "http_user_agent": f"Mozilla/5.0 ({r.choice(WORDS)})",
                    "length": r.randrange(100000)}}, origin, i, None)
            elif kind < 75:
                doc = eve_doc({**eve, "event_type": "dns", "app_proto": "dns", "dns": {
                    "type": "answer", "id": r.randrange(65536), "rrname": domain,
                    "rrtype": "A", "rcode": "NOERROR", "answers": [
                        {"rrname": domain, "rrtype": "A", "rdata": self.pick(self.servers)}]}},
                    origin, i, None)
            elif kind < 85:
                doc = eve_doc({**eve, "event_type": "tls", "app_proto": "tls", "tls": {
                    "sni": domain, "version": "TLS 1.3", "subject": f"CN={domain}",
                    "issuerdn": "CN=R3, O=Let's Encrypt, C=US",
                    "ja3": {"hash": hashlib.md5(domain.encode()).hexdigest()},
                    "ja4": f"t13d1516h2_{r.randrange(16**12):012x}_{r.randrange(16**12):012x}"}},
                    origin, i, None)
            elif kind < 90:
                data = f"{i}".encode()
                sha = NEEDLE_HASH if needle else hashlib.sha256(data).hexdigest()
                doc = file_doc({"id": f"f-{i}", "sha256": sha, "md5": hashlib.md5(data).hexdigest(),
                                "sha1": hashlib.sha1(data).hexdigest(), "size": r.randrange(10**6),
                                "flow": f.to_dict(), "ts": ts, "protocol": "http",
                                "direction": "resp", "mime_type": r.choice(
                                    ("application/pdf", "text/html", "application/zip")),
                                "filename": f"{r.choice(WORDS)}-{r.randrange(999)}."
                                f"{r.choice(('pdf', 'exe', 'zip', 'docx'))}"},
                               origin, None)
            elif kind < 93:
                subject = NEEDLE_SUBJECT if needle else \
                    " ".join(r.choice(WORDS) for _ in range(5)).capitalize()
                doc = email_doc({"id": f"e-{i}", "flow": f.to_dict(), "ts": ts,
                                 "protocol": "smtp", "mail_from": f"{r.choice(WORDS)}@"
                                 f"{self.pick(self.domains)}", "subject": subject,
                                 "message_id": f"<{i}@mx>", "sha256": hashlib.sha256(
                                     str(i).encode()).hexdigest(),
                                 "text_body": " ".join(r.choice(WORDS) for _ in range(40)),
                                 "extra": {"from_address": f"{r.choice(WORDS)}@x.example",
                                           "to_addresses": [f"{r.choice(WORDS)}@y.example"],
                                           "attachment_details": [{"filename": "a.pdf",
                                                                   "sha256": NEEDLE_HASH,
                                                                   "mime_type": "application/pdf",
                                                                   "size": 1000}]}},
                                origin, None)
            else:
                sid = r.randrange(2_000_000, 2_000_400)
                doc = verdict_doc(Verdict(
                    analyzer="suricata", subject_kind="flow", subject_id=f"s:{i}", flow=f,
                    ts=ts, severity=r.choice(("low", "medium", "high")), score=60,
                    signature_id=str(sid), signature=f"ET {r.choice(WORDS).upper()} "
                    f"{' '.join(r.choice(WORDS) for _ in range(4))}", category="trojan",
                    case=origin.case, step="ids"), origin, i, None)
            if doc is not None:
                yield Doc(f"{doc.key}:{i}", doc.body)


def cycled(n: int, pool: int) -> Iterator[Doc]:
    """``n`` records made from ``pool`` generated ones (for sizes where generating every
    record would take longer than indexing it: ~7,000 records/s here): record ``i`` is pool
    record ``i % pool`` with a key of its own and the time record ``i`` of ``n`` has. The
    pool is a multiple of :data:`NEEDLE_EVERY`, so every needle count stays
    ``n / NEEDLE_EVERY``; values repeat with period ``pool`` (a selective term matches
    ``n / pool`` times as often as in the pool)."""
    if pool % NEEDLE_EVERY:
        raise ValueError(f"pool {pool} is not a multiple of NEEDLE_EVERY ({NEEDLE_EVERY})")
    base = list(Synth().docs(pool))
    for i in range(n):
        d = base[i % pool]
        body = {**d.body, "@timestamp": _iso_z(T0 + SPAN_S * i / n),
                "event": dict(d.body.get("event") or {})}  # the indexer sets event.id
        yield Doc(f"{d.key}:c{i // pool}", body)


def _iso_z(ts: float) -> str:
    from pcapwire.search.values import ts_iso

    return ts_iso(ts)


def _iso(ts: float) -> str:
    from pcapwire.search.values import ts_iso

    return ts_iso(ts).replace("Z", "+0000")
