"""What a trigger is: what to look for, where, what to run and whom to tell.

A trigger's definition is plain JSON (the API's body, the CLI's file, a version row of
:mod:`.db`)::

    {"name": "cve-2026-1234",
     "suricata_rules": "alert http any any -> any any (msg:\\"x\\"; ... sid:1000001;)",
     "yara_rules": "rule X { strings: $a = \\"evil\\" condition: $a }",
     "bpf": "tcp port 4444",
     "indicators": {"ips": ["198.18.0.7", "198.19.0.0/16"], "domains": ["evil.example"],
                    "urls": ["http://evil.example/x"], "ja3": ["…32 hex…"], "ja4": ["…"],
                    "sha256": ["…"], "md5": [], "sha1": []},
     "scope": {"start": "2026-12-01T00:00:00Z", "end": null, "bpf": "", "sensor": ""},
     "workflows": ["ids"],
     "notify": [{"type": "webhook", "url": "http://127.0.0.1:9000/hook", "secret": "…"},
                {"type": "syslog", "address": "127.0.0.1:514", "transport": "udp"}]}

``scope.sensor`` is "" (every sensor), a sensor's name (``"site-a"``) or a list of names
(``["site-a", "site-b"]``): a sensor that knows its name (``pcapwire serve
--sensor-name``) neither hunts nor watches for a trigger whose scope names only others.

What to look for must name at least one thing. Every rule of a match carries a *rule key*
(:func:`rule_key`): ``suricata:<sid>``, ``yara:<rule name>``, ``bpf``, ``ip:<ip or cidr>``,
``domain:<name>``, ``url:<url>``, ``ja3:<hash>``, ``ja4:<fp>``, ``sha256:<hex>`` (and
``md5:``/``sha1:``): results are deduplicated per (rule key, flow).

:func:`rules_digest` hashes what decides what a hunt finds (rules, BPF, indicators and
scope); editing a trigger changes its version, and a new hunt runs, only when it changes.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field, fields
from typing import Any

from pcapwire.errors import ConfigError

#: Bounds of one definition (a trigger is stored and shown whole).
MAX_NAME_CHARS = 100
MAX_RULES_BYTES = 16 * 2**20
MAX_INDICATORS = 1_000_000
MAX_TARGETS = 20
#: Sensors one trigger's ``scope.sensor`` may name (a cluster file's MAX_SENSORS).
MAX_SCOPE_SENSORS = 256
INDICATOR_KINDS = ("ips", "domains", "urls", "ja3", "ja4", "sha256", "md5", "sha1")
TARGET_TYPES = ("webhook", "syslog")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HEX = {"ja3": 32, "sha256": 64, "md5": 32, "sha1": 40}
#: An IPv4 address as ipaddress writes it (ASCII digits, no leading zeros: its own
#: canonical form, ipaddress not needed), and lines of them: a list joined by newlines is
#: checked at once (1,000 addresses: ~0.1 ms; one at a time ~1 ms).
_IPV4 = r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}" \
        r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_ONE = re.compile(_IPV4)
_IPV4_LINES = re.compile(f"{_IPV4}(?:\n{_IPV4})*")
_JA4 = re.compile(r"[tqd][0-9a-z]{9}_[0-9a-f]{12}_[0-9a-f]{12}")
_DOMAIN = re.compile(r"(?=.{1,253}$)(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
                     r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.?")


@dataclass
class Indicators:
    ips: list[str] = field(default_factory=list)  # addresses and CIDR networks
    domains: list[str] = field(default_factory=list)  # "*.example" matches subdomains
    urls: list[str] = field(default_factory=list)
    ja3: list[str] = field(default_factory=list)
    ja4: list[str] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)
    md5: list[str] = field(default_factory=list)
    sha1: list[str] = field(default_factory=list)

    def count(self) -> int:
        return sum(len(getattr(self, k)) for k in INDICATOR_KINDS)


@dataclass
class Scope:
    start_ns: int | None = None
    end_ns: int | None = None
    bpf: str = ""  # narrows every part of the trigger (hunt and watch)
    # "" = every sensor; a sensor's name; a list of two or more names (sorted)
    sensor: str | list[str] = ""

    def sensors(self) -> tuple[str, ...]:
        """The sensors named (empty: every sensor)."""
        return (self.sensor,) if isinstance(self.sensor, str) and self.sensor \
            else tuple(self.sensor)

    def covers(self, sensor: str) -> bool:
        """Whether the trigger works on ``sensor`` ("": a server that does not know its
        name, which every scope covers)."""
        named = self.sensors()
        return not named or not sensor or sensor in named


@dataclass
class Target:
    type: str  # webhook | syslog
    url: str = ""  # webhook
    secret: str = ""  # webhook HMAC-SHA256 key: stored, never shown or logged
    address: str = ""  # syslog host:port
    transport: str = "udp"  # syslog: udp | tcp

    def to_dict(self, public: bool = False) -> dict[str, Any]:
        """The keys of its type (as :func:`from_dict` takes them); ``public``: the secret
        replaced by ``(set)``."""
        keys = ("url", "secret") if self.type == "webhook" else ("address", "transport")
        out: dict[str, Any] = {"type": self.type}
        out.update({k: getattr(self, k) for k in keys if getattr(self, k) != ""})
        if public and self.secret:
            out["secret"] = "(set)"
        return out


@dataclass
class TriggerDef:
    name: str
    suricata_rules: str = ""
    yara_rules: str = ""
    bpf: str = ""
    indicators: Indicators = field(default_factory=Indicators)
    scope: Scope = field(default_factory=Scope)
    workflows: list[str] = field(default_factory=list)
    notify: list[Target] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Everything, secrets included (what :mod:`.db` stores; :func:`from_dict` reads
        it back)."""
        return self._dict(public=False)

    def public(self) -> dict[str, Any]:
        """What the CLI and the API show: secrets replaced by ``(set)``."""
        return self._dict(public=True)

    def _dict(self, public: bool) -> dict[str, Any]:
        """:func:`dataclasses.asdict` of it, its targets as they show themselves."""
        return {**_flat(self), "indicators": _flat(self.indicators),
                "scope": _flat(self.scope),
                "notify": [t.to_dict(public=public) for t in self.notify]}

    def looks_for(self) -> list[str]:
        """The kinds of things it looks for, e.g. ``["suricata", "ips"]``."""
        kinds = [k for k in ("suricata_rules", "yara_rules", "bpf") if getattr(self, k).strip()]
        kinds = [k.removesuffix("_rules") for k in kinds]
        return kinds + [k for k in INDICATOR_KINDS if getattr(self.indicators, k)]


def rules_digest(defn: TriggerDef) -> str:
    """SHA-256 of what decides a hunt's results (not name, workflows or targets)."""
    what = {"suricata": defn.suricata_rules, "yara": defn.yara_rules, "bpf": defn.bpf,
            "indicators": _flat(defn.indicators), "scope": _flat(defn.scope)}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def _flat(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as :func:`dataclasses.asdict` gives those that are no
    dataclasses (lists copied), without its copy of every item (1,000s of indicators)."""
    return {f.name: list(v) if isinstance(v, list) else v
            for f in fields(obj) for v in [getattr(obj, f.name)]}


def rule_key(kind: str, value: str | int) -> str:
    """``suricata:2019401``, ``ip:198.18.0.0/15``, ``bpf`` (value ignored) …"""
    return "bpf" if kind == "bpf" else f"{kind}:{value}"


def from_dict(raw: Any, where: str = "trigger") -> TriggerDef:
    """Check a definition (``where`` names its origin in errors) and normalise it:
    indicators lower-cased (hashes, domains), IPs/CIDRs in canonical form, duplicates
    dropped in order. Times in ``scope`` are ISO 8601 strings or ns integers."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a JSON object")
    known = {"name", "suricata_rules", "yara_rules", "bpf", "indicators", "scope", "workflows",
             "notify"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: "
                          f"{', '.join(sorted(known))}")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > MAX_NAME_CHARS:
        raise ConfigError(f"{where}: name: letters, digits, '.', '_', '-' (starting with a "
                          f"letter or digit), at most {MAX_NAME_CHARS} characters")
    texts = {}
    for key in ("suricata_rules", "yara_rules", "bpf"):
        value = raw.get(key, "")
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key}: a string")
        if len(value.encode()) > MAX_RULES_BYTES:
            raise ConfigError(f"{where}: {key}: at most {MAX_RULES_BYTES // 2**20} MiB")
        texts[key] = value
    indicators = _indicators(raw.get("indicators", {}), where)
    defn = TriggerDef(name, texts["suricata_rules"], texts["yara_rules"], texts["bpf"],
                      indicators, _scope(raw.get("scope", {}), where),
                      _strings(raw.get("workflows", []), f"{where}: workflows"),
                      _targets(raw.get("notify", []), where))
    if not defn.looks_for():
        raise ConfigError(f"{where}: looks for nothing: give suricata_rules, yara_rules, bpf "
                          "or indicators")
    return defn


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{what}: a list of strings")
    return list(dict.fromkeys(value))


def _indicators(raw: Any, where: str) -> Indicators:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: indicators: an object with lists {', '.join(INDICATOR_KINDS)}")
    unknown = set(raw) - set(INDICATOR_KINDS)
    if unknown:
        raise ConfigError(f"{where}: indicators: unknown kind(s) {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(INDICATOR_KINDS)}")
    out = Indicators()
    total = 0
    for kind in INDICATOR_KINDS:
        values = _strings(raw.get(kind, []), f"{where}: indicators.{kind}")
        total += len(values)
        if total > MAX_INDICATORS:
            raise ConfigError(f"{where}: indicators: at most {MAX_INDICATORS} in all")
        if kind == "ips" and _canonical_ipv4_list(values):
            setattr(out, kind, list(dict.fromkeys(values)))
            continue
        setattr(out, kind, list(dict.fromkeys(
            normalise_indicator(kind, v, f"{where}: indicators.{kind}[{i}]")
            for i, v in enumerate(values))))
    return out


def normalise_indicator(kind: str, value: str, what: str) -> str:
    """One indicator in canonical form, or a ConfigError saying what is wrong with it."""
    v = value.strip()
    if kind == "ips":
        if _IPV4_ONE.fullmatch(v):  # most lists: ipaddress costs ten times as much
            return v
        try:
            net = ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ConfigError(f"{what}: {value!r} is no IP address or CIDR network") from None
        return str(net.network_address) if net.num_addresses == 1 else str(net)
    if kind == "domains":
        d = v.lower().rstrip(".")
        if not _DOMAIN.fullmatch(d):
            raise ConfigError(f"{what}: {value!r} is no domain name (a leading '*.' matches "
                              "subdomains)")
        return d
    if kind == "urls":
        if not re.match(r"(?i)^https?://[^\s/]+", v) or any(c.isspace() for c in v):
            raise ConfigError(f"{what}: {value!r} is no http(s) URL")
        return v
    if kind == "ja4":
        if not _JA4.fullmatch(v.lower()):
            raise ConfigError(f"{what}: {value!r} is no JA4 fingerprint (e.g. "
                              "t13d1516h2_8daaf6152771_02713d6af862)")
        return v.lower()
    size = _HEX[kind]
    if not re.fullmatch(f"[0-9a-fA-F]{{{size}}}", v):
        raise ConfigError(f"{what}: {value!r} is no {kind} ({size} hex digits)")
    return v.lower()


def _canonical_ipv4_list(values: list[str]) -> bool:
    """Whether every one of ``values`` is an IPv4 address in its canonical form (one line
    each: a value holding a newline makes one line too many)."""
    joined = "\n".join(values)
    return bool(values) and joined.count("\n") == len(values) - 1 and bool(
        _IPV4_LINES.fullmatch(joined))


def _scope(raw: Any, where: str) -> Scope:
    from pcapwire.errors import QueryError
    from pcapwire.query.spec import parse_time_ns

    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: scope: an object with start, end, bpf, sensor")
    unknown = set(raw) - {"start", "end", "start_ns", "end_ns", "bpf", "sensor"}
    if unknown:
        raise ConfigError(f"{where}: scope: unknown key(s) {', '.join(sorted(unknown))}")
    bounds: dict[str, int | None] = {}
    for key in ("start", "end"):  # ISO 8601 or Unix seconds; or {key}_ns: integer ns
        value, exact = raw.get(key), raw.get(f"{key}_ns")
        if exact is not None and (isinstance(exact, bool) or not isinstance(exact, int)):
            raise ConfigError(f"{where}: scope.{key}_ns: an integer (ns since 1970)")
        try:
            bounds[key] = exact if value is None else parse_time_ns(value)
        except (QueryError, TypeError, OverflowError) as exc:
            raise ConfigError(f"{where}: scope.{key}: {exc}") from None
    if bounds["start"] is not None and bounds["end"] is not None \
            and bounds["end"] <= bounds["start"]:
        raise ConfigError(f"{where}: scope: end is not after start")
    if not isinstance(raw.get("bpf", ""), str):
        raise ConfigError(f"{where}: scope.bpf: a string")
    return Scope(bounds["start"], bounds["end"], raw.get("bpf", ""),
                 scope_sensor(raw.get("sensor", ""), f"{where}: scope.sensor"))


def scope_sensor(raw: Any, what: str) -> str | list[str]:
    """``scope.sensor`` normalised: "" (every sensor), one name, or a sorted list of two or
    more distinct names (so that the same sensors give the same :func:`rules_digest`);
    each a cluster file's sensor name."""
    from pcapwire.names import NAME_RE

    if raw is None or raw == "":
        return ""
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names:
        raise ConfigError(f"{what}: a sensor's name or a non-empty list of names (leave it "
                          "out for every sensor)")
    if len(names) > MAX_SCOPE_SENSORS:
        raise ConfigError(f"{what}: at most {MAX_SCOPE_SENSORS} sensors")
    for i, name in enumerate(names):
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            at = "" if isinstance(raw, str) else f"[{i}]"
            raise ConfigError(f"{what}{at}: {name!r} is no sensor name (1-63 characters "
                              "a-z 0-9 _ -, starting with a letter or digit, as in the "
                              "cluster file)")
    unique = sorted(set(names))
    return unique[0] if len(unique) == 1 else unique


def _targets(raw: Any, where: str) -> list[Target]:
    if not isinstance(raw, list) or len(raw) > MAX_TARGETS:
        raise ConfigError(f"{where}: notify: a list of at most {MAX_TARGETS} targets")
    out = []
    for i, t in enumerate(raw):
        what = f"{where}: notify[{i}]"
        if not isinstance(t, dict) or t.get("type") not in TARGET_TYPES:
            raise ConfigError(f"{what}: an object with type {' or '.join(TARGET_TYPES)}")
        allowed = {"type", "url", "secret"} if t["type"] == "webhook" else \
            {"type", "address", "transport"}
        unknown = set(t) - allowed
        if unknown:
            raise ConfigError(f"{what}: unknown key(s) {', '.join(sorted(unknown))}")
        if not all(isinstance(v, str) for v in t.values()):
            raise ConfigError(f"{what}: values are strings")
        if t["type"] == "webhook" and not re.match(r"^https?://[^\s/]+", t.get("url", "")):
            raise ConfigError(f"{what}: url: an http(s) URL")
        if t["type"] == "syslog":
            if not re.fullmatch(r"[^\s:]+:[0-9]{1,5}|\[[0-9a-fA-F:]+\]:[0-9]{1,5}",
                                t.get("address", "")):
                raise ConfigError(f"{what}: address: host:port")
            if t.get("transport", "udp") not in ("udp", "tcp"):
                raise ConfigError(f"{what}: transport: udp or tcp")
        out.append(Target(**t))
    return out
