"""Indicators that need packet content (domains, URLs, JA3, JA4) as Suricata rules, and
the way back from an alert of those rules to the indicators it matched.

Suricata looks the values up in *datasets* (Suricata 7 ``dataset:isset``) that a trigger
writes into its own engine directory, next to the rules that load them (relative names:
Suricata resolves them against the rule file's directory; nothing is written by Suricata,
nothing outside is named). A handful of rules serve any number of indicators: loading
10,000 domains as three ``content; startswith; endswith;`` rules each took Suricata 7.0.10
43 s, as datasets 0.12 s (``suricata -T``; figures in /work/notes/triggers-engines.md).

What is matched where (every comparison exact and case-insensitive for names):

- ``domains``: DNS query names (``dns.query``), TLS SNI (``tls.sni``) and the HTTP Host
  (``http.host``: lower-cased, without port), each lower-cased (``to_lowercase``) and
  looked up whole, so ``evil.example`` hits neither ``notevil.example`` nor
  ``evil.example.com``; a trailing dot is the same name. ``*.example`` hits every
  subdomain of ``example`` (not ``example`` itself): one rule per buffer and label count
  of the wildcard bases keeps the last N labels (``pcrexform``, a label must precede them)
  and looks them up among the bases.
- ``urls``: HTTP requests whose Host is a URL's host and whose raw request URI is its path
  and query (``http.uri.raw``; a proxy's absolute-form URI also counts); the pair, and the
  port when the URL names one, is checked from the alert's own ``http`` record. Only
  cleartext HTTP shows a URL: for HTTPS give the domain.
- ``ja3``: ``ja3.hash`` of TLS client hellos (JA3 fingerprints switched on);
  ``ja4``: ``ja4.hash`` of TLS and QUIC client hellos (Suricata 7.0.10 computes JA4).

Signature ids: every generated rule has a fixed sid in :data:`INDICATOR_SIDS` (reserved:
a trigger's own Suricata rules may not use them). The sid says which kind and buffer
alerted; which indicator it was is read from the alert's app-layer record (``dns.query``
names, ``tls.sni`` / ``tls.ja3.hash`` / ``tls.ja4``, ``http.hostname`` / ``http.url``)
by :meth:`IndicatorRules.keys_for`, which gives ``domain:<d>``, ``url:<u>``, ``ja3:<h>``
or ``ja4:<fp>`` rule keys.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pcapwire.triggers.model import Indicators, rule_key

#: Signature ids reserved for generated indicator rules.
INDICATOR_SIDS = range(3_999_000_000, 3_999_001_000)
_BASE = INDICATOR_SIDS.start
#: Offsets in INDICATOR_SIDS (wildcards: WILDCARD_OFFSET + 3 * (labels - 1) + buffer index).
DOMAIN_OFFSET, URL_OFFSET, JA3_OFFSET, JA4_TLS_OFFSET, JA4_QUIC_OFFSET = 0, 3, 4, 5, 6
WILDCARD_OFFSET = 10
#: Most labels a domain name has (253 characters, one-character labels).
MAX_LABELS = 127
#: Where a domain is looked for: (Suricata app-layer protocol, sticky buffer, the alert
#: record and field its value is read back from).
DOMAIN_BUFFERS = (("dns", "dns.query"), ("tls", "tls.sni"), ("http", "http.host"))
DATASET_PREFIX = "pcapwire_trigger_"
#: Dataset hash table bounds (``hashsize``; Suricata's own limit per set is 262,144).
MIN_HASHSIZE, MAX_HASHSIZE = 1024, 262_144
RULES_FILE = "indicators.rules"


@dataclass(frozen=True)
class _Url:
    text: str
    host: str
    port: int | None
    target: str  # path and query, as sent in the request line


def parse_url(url: str) -> _Url:
    """Host (lower-case), explicit port and request target (path and query; ``/`` when
    empty; the fragment is never sent) of a URL indicator."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Url(url, (parts.hostname or "").rstrip("."), parts.port, target)


def _labels(name: str) -> int:
    return name.count(".") + 1


@dataclass
class IndicatorRules:
    """The generated rules (:attr:`text`), their dataset files (name -> lines), and the
    lookups that turn an alert back into indicator rule keys."""

    text: str = ""
    datasets: dict[str, str] = field(default_factory=dict)
    exact: set[str] = field(default_factory=set)
    wildcards: set[str] = field(default_factory=set)  # bases, "example" for "*.example"
    urls: dict[tuple[str, str], list[_Url]] = field(default_factory=dict)
    ja3: set[str] = field(default_factory=set)
    ja4: set[str] = field(default_factory=set)

    @property
    def count(self) -> int:
        return self.text.count("\n")

    def keys_for(self, sid: int, alert: dict[str, Any], dest_port: int) -> list[str]:
        """Rule keys of the indicators an alert of generated rule ``sid`` matched
        (``alert``: the EVE alert's app-layer records, as a verdict's evidence holds them;
        ``dest_port``: the flow's responder port). Empty for a sid not generated here."""
        off = sid - _BASE
        if DOMAIN_OFFSET <= off < DOMAIN_OFFSET + 3:  # exact names
            names = (n.lower().rstrip(".") for n in _names(DOMAIN_BUFFERS[off][0], alert))
            return [rule_key("domain", n) for n in names if n in self.exact]
        if WILDCARD_OFFSET <= off < WILDCARD_OFFSET + 3 * MAX_LABELS:  # bases of N labels
            less, buffer = divmod(off - WILDCARD_OFFSET, 3)
            n = less + 1
            keys = []
            for name in _names(DOMAIN_BUFFERS[buffer][0], alert):
                parts = name.lower().rstrip(".").split(".")
                base = ".".join(parts[-n:])
                if len(parts) > n and base in self.wildcards:
                    keys.append(rule_key("domain", f"*.{base}"))
            return keys
        if off == URL_OFFSET:
            http = alert.get("http") or {}
            host = str(http.get("hostname") or "").lower().rstrip(".")
            target = _request_target(str(http.get("url") or ""))
            return [rule_key("url", u.text) for u in self.urls.get((host, target), [])
                    if u.port is None or u.port == dest_port]
        if off == JA3_OFFSET:
            ja3 = (alert.get("tls") or {}).get("ja3") or {}
            value = str(ja3.get("hash", "") if isinstance(ja3, dict) else "").lower()
            return [rule_key("ja3", value)] if value in self.ja3 else []
        if off in (JA4_TLS_OFFSET, JA4_QUIC_OFFSET):
            record = alert.get("tls" if off == JA4_TLS_OFFSET else "quic") or {}
            value = str(record.get("ja4", "")).lower()
            return [rule_key("ja4", value)] if value in self.ja4 else []
        return []


def _names(proto: str, alert: dict[str, Any]) -> list[str]:
    """The names an alert's app-layer record holds for a domain buffer."""
    record = alert.get(proto) or {}
    if not isinstance(record, dict):
        return []
    if proto == "dns":
        queries = record.get("query") or []
        return [str(q.get("rrname", "")) for q in queries if isinstance(q, dict)]
    value = record.get("sni" if proto == "tls" else "hostname")
    return [str(value)] if value else []


def _request_target(uri: str) -> str:
    """The path and query of an HTTP request line's URI (absolute-form reduced)."""
    if uri.lower().startswith(("http://", "https://")):
        parts = urlsplit(uri)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return uri


def _dataset_lines(values: Iterable[str]) -> str:
    return "".join(base64.b64encode(v.encode()).decode() + "\n" for v in sorted(set(values)))


def _dataset(name: str, entries: int) -> str:
    size = MIN_HASHSIZE
    while size < entries and size < MAX_HASHSIZE:
        size *= 2
    return (f"dataset:isset,{DATASET_PREFIX}{name},type string,load {name}.lst,"
            f"hashsize {size}")


def _rule(proto: str, sid: int, msg: str, body: str) -> str:
    return (f'alert {proto} any any -> any any (msg:"pcapwire trigger indicator: {msg}"; '
            f"{body}; sid:{sid}; rev:1;)\n")


def build(ind: Indicators) -> IndicatorRules:
    """The rules and datasets for a trigger's domain, URL, JA3 and JA4 indicators."""
    out = IndicatorRules()
    rules: list[str] = []
    exact = [d for d in ind.domains if not d.startswith("*.")]
    wild = [d[2:] for d in ind.domains if d.startswith("*.")]
    out.exact, out.wildcards = set(exact), set(wild)
    if exact:
        out.datasets["domains"] = _dataset_lines([*exact, *(f"{d}." for d in exact)])
        ds = _dataset("domains", 2 * len(out.exact))
        for i, (proto, buf) in enumerate(DOMAIN_BUFFERS):
            rules.append(_rule(proto, _BASE + DOMAIN_OFFSET + i, f"domain ({buf})",
                               f"{buf}; to_lowercase; {ds}"))
    if wild:
        out.datasets["wildcards"] = _dataset_lines(f".{b}" for b in wild)
        ds = _dataset("wildcards", len(out.wildcards))
        for n in sorted({_labels(b) for b in wild}):
            tail = r"\.[^.]+" * n
            for i, (proto, buf) in enumerate(DOMAIN_BUFFERS):
                rules.append(_rule(proto, _BASE + WILDCARD_OFFSET + 3 * (n - 1) + i,
                                   f"subdomain of a {n}-label base ({buf})",
                                   f'{buf}; to_lowercase; pcrexform:"[^.]({tail})\\.?$"; '
                                   f"{ds}"))
    if ind.urls:
        for u in map(parse_url, ind.urls):
            out.urls.setdefault((u.host, u.target), []).append(u)
        parsed = [u for us in out.urls.values() for u in us]
        out.datasets["url_hosts"] = _dataset_lines(u.host for u in parsed)
        targets = [u.target for u in parsed]
        targets += [f"{s}://{urlsplit(u.text).netloc}{u.target}" for u in parsed
                    for s in ("http", "https")]
        out.datasets["url_targets"] = _dataset_lines(targets)
        rules.append(_rule("http", _BASE + URL_OFFSET, "url",
                           f"http.host; to_lowercase; "
                           f"{_dataset('url_hosts', len(parsed))}; http.uri.raw; "
                           f"{_dataset('url_targets', len(targets))}"))
    if ind.ja3:
        out.ja3 = set(ind.ja3)
        out.datasets["ja3"] = _dataset_lines(out.ja3)
        rules.append(_rule("tls", _BASE + JA3_OFFSET, "ja3",
                           f"ja3.hash; {_dataset('ja3', len(out.ja3))}"))
    if ind.ja4:
        out.ja4 = set(ind.ja4)
        out.datasets["ja4"] = _dataset_lines(out.ja4)
        for proto, off in (("tls", JA4_TLS_OFFSET), ("quic", JA4_QUIC_OFFSET)):
            rules.append(_rule(proto, _BASE + off, f"ja4 ({proto})",
                               f"ja4.hash; {_dataset('ja4', len(out.ja4))}"))
    out.text = "".join(rules)
    return out


def needs_content(ind: Indicators) -> bool:
    """Whether any indicator is matched by the generated Suricata rules."""
    return bool(ind.domains or ind.urls or ind.ja3 or ind.ja4)
