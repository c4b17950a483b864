"""Indicators of a trigger from the files threat intelligence comes in: STIX 2.1 bundles,
MISP event JSON and plain text lists (:func:`load_indicators`).

- **STIX 2.1** (read with the ``stix2`` package): every ``indicator`` object with
  ``pattern_type`` ``stix``. A pattern is taken when it is an OR (of observations or of
  comparisons) of ``=``, ``IN (…)`` or, for addresses, ``ISSUBSET`` comparisons on
  ``ipv4-addr:value``, ``ipv6-addr:value`` (addresses or CIDRs), ``domain-name:value``,
  ``hostname:value`` (OpenCTI's), ``url:value``, ``file:hashes.'SHA-256'|'SHA-1'|MD5``. In
  one file observation, ``AND`` with ``file:name``/``file:size`` is accepted and the hash
  kept (the hash alone names the content). Anything else (other ``AND``\\s, ``NOT``,
  ``!=``, ``LIKE``/``MATCHES``, ``FOLLOWEDBY``, ``WITHIN``/``REPEATS``/``START`` qualifiers,
  other objects such as ``x509-certificate`` or ``network-traffic``, pattern types other
  than ``stix``) is an *unsupported pattern*, reported with the object's id. Revoked
  indicators are ignored (listed). There is no common STIX convention for JA3/JA4: they
  come from MISP or text.
- **MISP** (``{"Event": …}``, a ``{"response": [{"Event": …}, …]}`` search result, or a
  list of events): ``Event.Attribute[]`` and ``Event.Object[].Attribute[]``. Only
  attributes with ``to_ids`` set are for detection; the others are ignored (listed), as
  are deleted ones and types that are nothing to match in packets (``comment``,
  ``regkey`` …: listed with their type). Types: ``ip-src``, ``ip-dst`` (and ``|port``: the
  port is dropped, the address matched on any port), ``domain``, ``hostname`` (and
  ``|port``), ``domain|ip`` (both), ``url``, ``md5``, ``sha1``, ``sha256``,
  ``filename|md5|sha1|sha256``, ``malware-sample``, ``ja3-fingerprint-md5``.
- **Plain text**: one indicator per line, ``#`` starts a comment (at the start of a line or
  after a blank), blank lines are skipped. The kind is detected: an IP address or CIDR, an
  http(s) URL, a JA4 fingerprint, 64/40/32 hex digits (SHA-256/SHA-1/MD5), else a domain
  name. ``KIND:value`` says it outright (``ja3:<32 hex>``, ``md5:…``, ``domain:…``, ``ip:…``,
  ``url:…``, ``ja4:…``, ``sha1:…``, ``sha256:…``). Defanged forms (``hxxp://``, ``[.]``,
  ``(.)``, ``[:]``) are refanged.

Every problem is collected with its position (``FILE:LINE``, ``FILE: objects[3]
indicator--…``, ``FILE: Event.Object[1].Attribute[0] (uuid)``). With problems, nothing
imports (:class:`IndicatorImportError`) unless the caller asks to skip bad entries
(``skip_bad``); values come out normalised by :func:`~.model.normalise_indicator`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcapwire.errors import ConfigError
from pcapwire.triggers.model import INDICATOR_KINDS, Indicators, normalise_indicator

FORMATS = ("auto", "stix", "misp", "text")
#: An indicator file is read whole: at most this big.
MAX_INDICATOR_FILE_BYTES = 64 * 2**20
#: A text line longer than this is an error (no indicator is that long).
MAX_LINE_CHARS = 8192
#: Indicator files in one API request.
MAX_INDICATOR_FILES = 32
#: Problems kept (and shown) per import; past it, only their number.
MAX_PROBLEMS = 100

# Text prefixes (the rule-key prefixes of :func:`~.model.rule_key`) -> indicator kinds.
PREFIXES = {"ip": "ips", "domain": "domains", "url": "urls", "ja3": "ja3", "ja4": "ja4",
            "sha256": "sha256", "sha1": "sha1", "md5": "md5"}
_SINGULAR = {kind: prefix for prefix, kind in PREFIXES.items()}
_HEX_KINDS = {64: "sha256", 40: "sha1", 32: "md5"}
_JA4 = re.compile(r"[tqd][0-9a-z]{9}_[0-9a-f]{12}_[0-9a-f]{12}", re.I)
_COMMENT = re.compile(r"(^|\s)#.*$")
_PREFIX = re.compile(r"([a-z0-9]+):(?!//)(.+)$", re.I)

# MISP attribute types -> kinds of the parts of their value (split at '|'); None: dropped.
MISP_TYPES: dict[str, tuple[str | None, ...]] = {
    "ip-src": ("ips",), "ip-dst": ("ips",), "ip-src|port": ("ips", None),
    "ip-dst|port": ("ips", None), "domain": ("domains",), "hostname": ("domains",),
    "hostname|port": ("domains", None), "domain|ip": ("domains", "ips"), "url": ("urls",),
    "md5": ("md5",), "sha1": ("sha1",), "sha256": ("sha256",),
    "filename|md5": (None, "md5"), "filename|sha1": (None, "sha1"),
    "filename|sha256": (None, "sha256"), "malware-sample": (None, "md5"),
    "ja3-fingerprint-md5": ("ja3",)}

# STIX object paths -> kinds.
STIX_PATHS = {("ipv4-addr", "value"): "ips", ("ipv6-addr", "value"): "ips",
              ("domain-name", "value"): "domains", ("hostname", "value"): "domains",
              ("url", "value"): "urls", ("file", "hashes", "sha256"): "sha256",
              ("file", "hashes", "sha1"): "sha1", ("file", "hashes", "md5"): "md5"}
_FILE_NARROWING = {("file", "name"), ("file", "size")}


@dataclass(frozen=True)
class Problem:
    """What is wrong (or ignored) and where: ``source`` the file's name, ``where`` the
    position in it (``12`` for a line, ``objects[3] indicator--…`` …)."""

    source: str
    where: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.source}:{self.line}: {self.message}"
        return f"{self.source}: {self.where}: {self.message}" if self.where else \
            f"{self.source}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.source, "where": self.where,
                               "message": self.message}
        if self.line is not None:
            out["line"] = self.line
        return out


@dataclass
class ImportResult:
    """What one file gave: the indicators, its format, the problems (skipped entries
    when the caller allowed it) and what was ignored on purpose (not for detection)."""

    source: str
    format: str
    indicators: Indicators = field(default_factory=Indicators)
    problems: list[Problem] = field(default_factory=list)
    ignored: list[Problem] = field(default_factory=list)
    more_problems: int = 0  # problems past MAX_PROBLEMS (not kept)

    def summary(self) -> dict[str, Any]:
        return {"file": self.source, "format": self.format,
                "indicators": {k: len(getattr(self.indicators, k)) for k in INDICATOR_KINDS},
                "problems": [p.to_dict() for p in self.problems],
                "more_problems": self.more_problems,
                "ignored": [p.to_dict() for p in self.ignored]}


class IndicatorImportError(ConfigError):
    """An indicator file with problems, none of it imported; ``problems`` lists them."""

    def __init__(self, result: ImportResult) -> None:
        self.result = result
        self.problems = result.problems
        shown = "\n".join(str(p) for p in result.problems)
        more = f"\n… and {result.more_problems} more" if result.more_problems else ""
        super().__init__(f"{shown}{more}\n{result.source}: nothing imported "
                         f"({len(result.problems) + result.more_problems} problem(s)); fix "
                         "them, or skip the bad entries (--skip-bad)")


class _Collector:
    def __init__(self, source: str, fmt: str) -> None:
        self.result = ImportResult(source, fmt)
        self.values: dict[str, dict[str, None]] = {k: {} for k in INDICATOR_KINDS}

    def problem(self, where: str, message: str, line: int | None = None) -> None:
        if len(self.result.problems) < MAX_PROBLEMS:
            self.result.problems.append(Problem(self.result.source, where, message, line))
        else:
            self.result.more_problems += 1

    def ignore(self, where: str, message: str, line: int | None = None) -> None:
        if len(self.result.ignored) < MAX_PROBLEMS:
            self.result.ignored.append(Problem(self.result.source, where, message, line))

    def add(self, kind: str, value: str, where: str, line: int | None = None) -> bool:
        try:
            norm = normalise_indicator(kind, value, _SINGULAR[kind])
        except ConfigError as exc:
            self.problem(where, str(exc), line)
            return False
        self.values[kind][norm] = None
        return True

    def finish(self, skip_bad: bool) -> ImportResult:
        if self.result.problems and not skip_bad:
            raise IndicatorImportError(self.result)
        for kind in INDICATOR_KINDS:
            setattr(self.result.indicators, kind, list(self.values[kind]))
        return self.result


def load_indicator_file(path: str | Path, fmt: str = "auto", skip_bad: bool = False
                        ) -> ImportResult:
    """:func:`load_indicators` of a file (at most MAX_INDICATOR_FILE_BYTES)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_INDICATOR_FILE_BYTES:
            raise ConfigError(f"{path}: {size} bytes, over the limit of "
                              f"{MAX_INDICATOR_FILE_BYTES} bytes for an indicator file; "
                              "split it")
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the indicator file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return load_indicators(text, fmt, str(path), skip_bad)


def load_indicators(text: str, fmt: str = "auto", source: str = "indicators",
                    skip_bad: bool = False) -> ImportResult:
    """The indicators of ``text`` in format ``fmt`` (``auto``: JSON with ``"type":
    "bundle"`` is STIX, JSON with an ``Event`` is MISP, anything else text). ``source``
    names the text in problems. Raises :class:`IndicatorImportError` listing every
    problem, unless ``skip_bad`` (then they are in the result and the rest imports)."""
    if fmt not in FORMATS:
        raise ConfigError(f"{source}: format {fmt!r}: one of {', '.join(FORMATS)}")
    if len(text.encode()) > MAX_INDICATOR_FILE_BYTES:
        raise ConfigError(f"{source}: over the limit of {MAX_INDICATOR_FILE_BYTES} bytes for "
                          "an indicator file; split it")
    doc: Any = None
    if fmt in ("auto", "stix", "misp"):
        stripped = text.lstrip()
        if fmt != "auto" or stripped.startswith(("{", "[")):
            try:
                doc = json.loads(text)
            except json.JSONDecodeError as exc:
                if fmt != "auto":
                    raise ConfigError(f"{source}:{exc.lineno}:{exc.colno}: not JSON "
                                      f"({exc.msg}); a {fmt.upper()} file is JSON") from None
        if fmt == "auto":
            fmt = _detect(doc)
    if fmt == "stix":
        return _stix(doc, _Collector(source, "stix")).finish(skip_bad)
    if fmt == "misp":
        return _misp(doc, _Collector(source, "misp")).finish(skip_bad)
    return _text(text, _Collector(source, "text")).finish(skip_bad)


def _detect(doc: Any) -> str:
    if isinstance(doc, dict) and doc.get("type") == "bundle":
        return "stix"
    if isinstance(doc, dict) and ("Event" in doc or "response" in doc) or (
            isinstance(doc, list) and doc and all(isinstance(e, dict) and "Event" in e
                                                  for e in doc)):
        return "misp"
    return "text"


# -- plain text ----------------------------------------------------------------------------
def refang(value: str) -> str:
    """``hxxp://evil[.]example`` -> ``http://evil.example``."""
    v = re.sub(r"^hxxp", "http", value, flags=re.I)
    for defanged, plain in (("[.]", "."), ("(.)", "."), ("{.}", "."), ("[:]", ":"),
                            ("[://]", "://")):
        v = v.replace(defanged, plain)
    return v


def detect_kind(value: str) -> str:
    """The kind a bare value looks like (a domain when it looks like nothing else)."""
    try:
        ipaddress.ip_network(value, strict=False)
        return "ips"
    except ValueError:
        pass
    if re.match(r"(?i)^https?://", value):
        return "urls"
    if _JA4.fullmatch(value):
        return "ja4"
    if re.fullmatch(r"[0-9a-fA-F]+", value) and len(value) in _HEX_KINDS:
        return _HEX_KINDS[len(value)]
    return "domains"


def _text(text: str, out: _Collector) -> _Collector:
    for n, raw in enumerate(text.splitlines(), 1):
        if len(raw) > MAX_LINE_CHARS:
            out.problem(str(n), f"line longer than {MAX_LINE_CHARS} characters", n)
            continue
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        if len(line.split()) > 1:
            out.problem(str(n), f"{line!r}: one indicator per line (found "
                        f"{len(line.split())} words)", n)
            continue
        value, kind = refang(line), None
        m = _PREFIX.match(value)
        if m and m.group(1).lower() in PREFIXES:
            kind, value = PREFIXES[m.group(1).lower()], m.group(2)
        elif m and not _looks_ipv6(value):
            out.problem(str(n), f"{line!r}: unknown kind {m.group(1)!r}; known: "
                        f"{', '.join(PREFIXES)}", n)
            continue
        out.add(kind or detect_kind(value), value, str(n), n)
    return out


def _looks_ipv6(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


# -- MISP ----------------------------------------------------------------------------------
def _truthy(value: Any) -> bool:
    return value is True or value == 1 or str(value).lower() in ("1", "true")


def _misp(doc: Any, out: _Collector) -> _Collector:
    events: list[tuple[str, Any]]
    if isinstance(doc, dict) and "Event" in doc:
        events = [("Event", doc["Event"])]
    elif isinstance(doc, dict) and isinstance(doc.get("response"), list):
        events = [(f"response[{i}].Event", e.get("Event") if isinstance(e, dict) else None)
                  for i, e in enumerate(doc["response"])]
    elif isinstance(doc, list):
        events = [(f"[{i}].Event", e.get("Event") if isinstance(e, dict) else None)
                  for i, e in enumerate(doc)]
    else:
        out.problem("", 'not a MISP event: expected {"Event": {…}}, {"response": [{"Event": '
                    "…}]} or a list of events")
        return out
    for where, event in events:
        if not isinstance(event, dict):
            out.problem(where, "an event is a JSON object")
            continue
        for i, attr in enumerate(_list(event, "Attribute", where, out)):
            _misp_attribute(attr, f"{where}.Attribute[{i}]", out)
        for j, obj in enumerate(_list(event, "Object", where, out)):
            owhere = f"{where}.Object[{j}]"
            if not isinstance(obj, dict):
                out.problem(owhere, "an object is a JSON object")
                continue
            if _truthy(obj.get("deleted", False)):
                out.ignore(owhere, "deleted")
                continue
            for i, attr in enumerate(_list(obj, "Attribute", owhere, out)):
                _misp_attribute(attr, f"{owhere}.Attribute[{i}]", out)
    return out


def _list(parent: dict[str, Any], key: str, where: str, out: _Collector) -> list[Any]:
    value = parent.get(key, [])
    if not isinstance(value, list):
        out.problem(f"{where}.{key}", "a list")
        return []
    return value


def _misp_attribute(attr: Any, where: str, out: _Collector) -> None:
    if not isinstance(attr, dict):
        out.problem(where, "an attribute is a JSON object")
        return
    kind, value = attr.get("type"), attr.get("value")
    if "uuid" in attr:
        where = f"{where} ({attr['uuid']})"
    if not isinstance(kind, str) or not isinstance(value, str):
        out.problem(where, "an attribute has a string type and value")
        return
    if _truthy(attr.get("deleted", False)):
        out.ignore(where, f"{kind} {value!r}: deleted")
        return
    if not _truthy(attr.get("to_ids", False)):
        out.ignore(where, f"{kind} {value!r}: to_ids is not set (not for detection)")
        return
    kinds = MISP_TYPES.get(kind)
    if kinds is None:
        out.ignore(where, f"type {kind!r} is nothing a trigger matches in packets")
        return
    parts = value.split("|")
    if len(parts) != len(kinds):
        out.problem(where, f"{kind} {value!r}: expected {len(kinds)} part(s) separated by '|'")
        return
    for part_kind, part in zip(kinds, parts, strict=True):
        if part_kind is not None:
            out.add(part_kind, part, where)


# -- STIX 2.1 ------------------------------------------------------------------------------
class _Unsupported(Exception):
    pass


def _stix(doc: Any, out: _Collector) -> _Collector:
    import stix2
    from stix2.exceptions import STIXError

    if not isinstance(doc, dict) or doc.get("type") != "bundle" \
            or not isinstance(doc.get("objects", []), list):
        out.problem("", 'not a STIX bundle: expected {"type": "bundle", "objects": [...]}')
        return out
    for i, raw in enumerate(doc.get("objects", [])):
        if not isinstance(raw, dict) or raw.get("type") != "indicator":
            continue  # identities, malware, relationships …: context, not indicators
        where = f"objects[{i}] {raw.get('id', '(no id)')}"
        try:
            obj = stix2.parse(raw, allow_custom=True)
        except (STIXError, ValueError, TypeError) as exc:
            out.problem(where, f"invalid indicator: {exc}")
            continue
        if getattr(obj, "revoked", False):
            out.ignore(where, "revoked")
            continue
        pattern_type = getattr(obj, "pattern_type", "stix")
        if pattern_type != "stix":
            out.problem(where, f"unsupported pattern type {pattern_type!r} (only stix "
                        "patterns give indicators; give Suricata/YARA rules as rules)")
            continue
        try:
            found = _stix_pattern(obj.pattern)
        except _Unsupported as exc:
            out.problem(where, f"unsupported pattern {obj.pattern!r}: {exc}")
            continue
        for kind, value in found:
            out.add(kind, value, where)
    return out


def _stix_pattern(pattern: str) -> list[tuple[str, str]]:
    """(kind, value) of every indicator the pattern names; _Unsupported otherwise."""
    from stix2 import patterns as P
    from stix2.pattern_visitor import create_pattern_object

    found: list[tuple[str, str]] = []

    def observation(node: Any) -> None:
        if isinstance(node, P.ParentheticalExpression):
            observation(node.expression)
        elif isinstance(node, P.OrObservationExpression):
            for operand in node.operands:
                observation(operand)
        elif isinstance(node, P.ObservationExpression):
            comparison(node.operand)
        elif isinstance(node, P.QualifiedObservationExpression):
            raise _Unsupported(f"qualifier {node.qualifier} (a trigger matches each "
                               "occurrence, at any time)")
        else:
            raise _Unsupported(f"{getattr(node, 'operator', type(node).__name__)} of "
                               "observations (only OR)")

    def comparison(node: Any) -> None:
        if isinstance(node, P.ParentheticalExpression):
            comparison(node.expression)
        elif isinstance(node, P.OrBooleanExpression):
            for operand in node.operands:
                comparison(operand)
        elif isinstance(node, P.AndBooleanExpression):
            terms = [_flat(t) for t in node.operands]
            hashes = [t for t in terms if t is not None and _path(t)[:2] == ("file", "hashes")]
            rest = [t for t in terms if t not in hashes]
            if not hashes or not all(t is not None and _path(t) in _FILE_NARROWING
                                     for t in rest):
                raise _Unsupported("AND (accepted only in a file observation: a hash with "
                                   "file:name or file:size)")
            for t in hashes:
                comparison(t)
        else:
            found.extend(_term(node))

    observation(create_pattern_object(pattern, version="2.1"))
    return found


def _flat(node: Any) -> Any:
    from stix2 import patterns as P

    while isinstance(node, P.ParentheticalExpression):
        node = node.expression
    return node if isinstance(node, P._ComparisonExpression) else None


def _path(node: Any) -> tuple[str, ...]:
    from stix2 import patterns as P

    lhs = node.lhs
    parts = [lhs.object_type_name]
    for comp in lhs.property_path:
        if not isinstance(comp, P.BasicObjectPathComponent):
            return (*parts, "[…]")
        parts.append(str(comp.property_name))
    if parts[:2] == ["file", "hashes"] and len(parts) == 3:
        parts[2] = parts[2].strip("'").lower().replace("-", "")
    return tuple(parts)


def _term(node: Any) -> Iterator[tuple[str, str]]:
    from stix2 import patterns as P

    if not isinstance(node, P._ComparisonExpression):
        raise _Unsupported(f"{type(node).__name__}")
    path = _path(node)
    kind = STIX_PATHS.get(path)
    if kind is None:
        raise _Unsupported(f"object path {':'.join(path[:1])}:{'.'.join(path[1:])} (supported: "
                           "ipv4-addr/ipv6-addr/domain-name/hostname/url:value, "
                           "file:hashes.'SHA-256'/'SHA-1'/MD5)")
    op = "!=" if node.negated and node.operator == "=" else \
        "NOT " * bool(node.negated) + node.operator
    if isinstance(node, P.EqualityComparisonExpression) and not node.negated:
        values = [node.rhs]
    elif isinstance(node, P.InComparisonExpression) and not node.negated:
        values = list(node.rhs.value)
    elif isinstance(node, P.IsSubsetComparisonExpression) and not node.negated \
            and kind == "ips":
        values = [node.rhs]
    else:
        raise _Unsupported(f"operator {op} on {path[0]} (supported: =, IN, and ISSUBSET "
                           "for addresses)")
    for v in values:
        if not isinstance(v, P.StringConstant):
            raise _Unsupported(f"{v} is no string")
        yield kind, str(v.value)


def merge(*sets: Indicators) -> Indicators:
    """The union of indicator sets, in order, without duplicates."""
    out = Indicators()
    for kind in INDICATOR_KINDS:
        setattr(out, kind, list(dict.fromkeys(v for s in sets for v in getattr(s, kind))))
    return out
