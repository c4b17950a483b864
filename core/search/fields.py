"""The searchable fields: every ECS field name the index fills, with its type.

The type decides how ``field:value`` matches (:mod:`.sqlplan`) and how Elasticsearch/
OpenSearch map the field (:mod:`.template`):

- ``keyword``: the whole value, case-insensitive; wildcards ``*``/``?`` over it;
- ``text``: words and phrases inside the value (full-text); also kept whole, so a
  wildcard such as ``email.subject:Re*`` still works on the value as a whole;
- ``ip``: an address, or a CIDR network (``source.ip:198.18.0.0/15``);
- ``long``: an integer, with ranges (``destination.port:[1000 TO 2000]``, ``>=1024``);
- ``date``: a time (ISO 8601, Unix seconds, ``now``, ``now-15m``), with ranges.

Multi-valued fields (``email.to.address``, ``dns.answers.data``) match when any value does.
"""

from __future__ import annotations

import difflib
from typing import Literal

FieldType = Literal["keyword", "text", "ip", "long", "date"]

#: ECS field -> type. Everything the mapping functions of :mod:`.ecs` emit is here (a test
#: checks it), and nothing else is searchable.
FIELDS: dict[str, FieldType] = {
    "@timestamp": "date",
    "event.kind": "keyword", "event.dataset": "keyword", "event.module": "keyword",
    "event.category": "keyword", "event.type": "keyword", "event.id": "keyword",
    "event.start": "date", "event.end": "date", "event.severity": "long",
    "event.risk_score": "long", "event.reason": "keyword",
    "source.ip": "ip", "source.port": "long", "destination.ip": "ip",
    "destination.port": "long", "related.ip": "ip", "related.hash": "keyword",
    "network.transport": "keyword", "network.iana_number": "keyword",
    "network.protocol": "keyword", "network.packets": "long", "network.bytes": "long",
    "source.packets": "long", "source.bytes": "long", "destination.packets": "long",
    "destination.bytes": "long",
    "url.domain": "keyword", "url.path": "keyword", "url.original": "keyword",
    "url.query": "keyword",
    "http.request.method": "keyword", "http.response.status_code": "long",
    "http.request.referrer": "keyword", "http.response.mime_type": "keyword",
    "http.response.body.bytes": "long", "http.request.body.bytes": "long",
    "http.version": "keyword", "user_agent.original": "text",
    "dns.question.name": "keyword", "dns.question.type": "keyword",
    "dns.response_code": "keyword", "dns.answers.data": "keyword", "dns.type": "keyword",
    "dns.id": "keyword",
    "tls.client.server_name": "keyword", "tls.client.ja3": "keyword",
    "tls.client.ja4": "keyword", "tls.server.ja3s": "keyword", "tls.version": "keyword",
    "tls.cipher": "keyword", "tls.server.subject": "keyword", "tls.server.issuer": "keyword",
    "tls.server.hash.sha1": "keyword", "tls.server.not_before": "date",
    "tls.server.not_after": "date", "tls.server.x509.serial_number": "keyword",
    "file.name": "keyword", "file.mime_type": "keyword", "file.size": "long",
    "file.hash.md5": "keyword", "file.hash.sha1": "keyword", "file.hash.sha256": "keyword",
    "file.direction": "keyword",
    "email.from.address": "keyword", "email.to.address": "keyword",
    "email.cc.address": "keyword", "email.sender.address": "keyword",
    "email.subject": "text", "email.message_id": "keyword", "email.x_mailer": "keyword",
    "email.attachments.file.name": "keyword", "email.attachments.file.mime_type": "keyword",
    "email.attachments.file.size": "long", "email.attachments.file.hash.sha256": "keyword",
    "email.attachments.file.hash.md5": "keyword",
    "rule.id": "keyword", "rule.name": "text", "rule.category": "keyword",
    "rule.ruleset": "keyword", "tags": "keyword",
    "pcapwire.case": "keyword", "pcapwire.run_id": "keyword", "pcapwire.query_id": "keyword",
    "pcapwire.analyzer": "keyword", "pcapwire.step": "keyword", "pcapwire.severity": "keyword",
    "pcapwire.score": "long", "pcapwire.flow.id": "long",
    "pcapwire.flow.packets_expired": "long", "pcapwire.email.body": "text",
    "pcapwire.sandbox.severity": "keyword", "pcapwire.sandbox.score": "long",
    "pcapwire.sandbox.signature": "text", "pcapwire.trigger": "keyword",
    "pcapwire.subject.kind": "keyword", "pcapwire.subject.id": "keyword",
    "zeek.uid": "keyword", "zeek.conn.state": "keyword",
}
#: Fields the documents carry that are the same in (nearly) every one: mapped by the index
#: template, not searchable.
STORED_FIELDS: dict[str, FieldType] = {
    "ecs.version": "keyword", "observer.product": "keyword", "observer.type": "keyword",
    "event.url": "keyword"}
#: Objects kept in the documents but not searchable field by field (an analyzer's own
#: evidence, the pivots): the index template maps them as stored, unindexed objects.
OPAQUE_OBJECTS: tuple[str, ...] = ("pcapwire.evidence", "pcapwire.pivot")
#: The fields free text (a word or phrase without ``field:``) searches: every string field.
TEXT_SEARCHED: tuple[str, ...] = tuple(f for f, t in FIELDS.items()
                                       if t in ("keyword", "text", "ip"))
#: Fields whose values also go to the full-text index column of their own (``text``).
TEXT_FIELDS: tuple[str, ...] = tuple(f for f, t in FIELDS.items() if t == "text")
#: How many near matches an unknown-field error lists.
NEAR_MATCHES = 3


def near_matches(name: str) -> list[str]:
    """Known field names close to ``name`` (for 'unknown field' errors): similar spellings
    first, then fields that end with the same last part (``domain`` -> ``url.domain``)."""
    close = difflib.get_close_matches(name, FIELDS, n=NEAR_MATCHES, cutoff=0.6)
    last = name.rsplit(".", 1)[-1].lower()
    tails = [f for f in FIELDS if f.lower().endswith("." + last) and f not in close]
    return (close + tails)[:NEAR_MATCHES]
