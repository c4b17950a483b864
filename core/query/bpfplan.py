"""Find the index-usable part of a BPF expression.

libpcap stays the judge of every packet (the exact expression is compiled and run by
libpcap in the native scan); this module only narrows which flows can contain a match, so
the scan reads candidates instead of whole segments. The narrowing must never lose a
packet tcpdump would match, so it is deliberately conservative:

* ``host``/``net``/``port``/``portrange`` with IP literals, ``tcp``/``udp``/``sctp``/
  ``icmp``/``icmp6``, ``ip``/``ip6``, ``ip proto N`` narrow; a direction (``src``/``dst``)
  narrows like its undirected form (a flow holds both directions);
* ``and``/``or`` combine (equal precedence, left to right, as in pcap-filter(7)); ``not``
  and every other primitive (byte tests, ``vlan``, ``len``, host names, ``ether`` ...) mean
  "may match anything";
* flows that are not IP (ARP, unknown link types, undissectable frames) are candidates for
  every expression.

The result is an SQL condition over the ``flows`` table, or ``None`` when the expression
cannot narrow anything. Beyond :data:`MAX_PLAN_DEPTH` or :data:`MAX_PLAN_TERMS` the planner
does not narrow (every packet of the time window goes through libpcap, so the result is
still tcpdump's); an expression nested deeper than :data:`MAX_BPF_NESTING` is refused
(:func:`check_nesting`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

PROTO_NUMBERS = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "icmp6": 58, "sctp": 132}
PORT_PROTOS = (6, 17, 132)
TOKEN = re.compile(r"\s*(&&|\|\||!=|==|<=|>=|[0-9A-Fa-f]*::[0-9A-Fa-f:.]*(?:/\d+)?"
                   r"|[()!\[\]:&|<>=+\-*/%^]|[^\s()!\[\]&|<>=+*%^:]+(?::[^\s()!\[\]&|<>=+*%^]*)*)")
PROTO_QUALS = {"ip", "ip6", "tcp", "udp", "sctp", "icmp", "icmp6", "ether", "arp", "rarp",
               "fddi", "tr", "wlan", "igmp", "igrp", "pim", "vrrp", "carp", "decnet", "atalk",
               "aarp", "iso", "stp", "ipx", "netbeui", "lat", "sca", "moprc", "mopdl", "radio",
               "link", "ppp", "slip"}
DIR_QUALS = {"src", "dst", "inbound", "outbound"}
TYPE_QUALS = {"host", "net", "port", "portrange", "gateway", "proto", "protochain"}
CONNECTIVES = {"and", "&&", "or", "||"}
#: Nesting the planner follows: parentheses, ``not``, and each switch between ``and`` and
#: ``or``. Deeper expressions are not narrowed through the index (libpcap still runs them
#: over every packet of the time window). Keeps the planner's recursion far below Python's
#: limit and the SQL it writes below SQLite's parser stack (overflows near 28 levels).
MAX_PLAN_DEPTH = 16
#: Index-usable primitives (``host``, ``net``, ``port`` ...) the planner turns into SQL; an
#: expression with more (a long list of hosts) is not narrowed through the index. Keeps the
#: SQL far below SQLite's expression depth (1000) and bound-parameter (999) limits.
MAX_PLAN_TERMS = 128
#: Parentheses and ``not``s open at once in a BPF expression: deeper is refused as input
#: nobody writes (libpcap itself gives up near 10,000 with "memory exhausted").
MAX_BPF_NESTING = 256


class _Unparsed(Exception):
    """The expression uses syntax this planner does not model, or is deeper or longer than
    it follows; fall back to a full scan."""


@dataclass(frozen=True)
class Sql:
    where: str
    args: tuple[object, ...]


@dataclass(frozen=True)
class _Chain:
    """Conditions joined by one connective, flat (``a OR b OR c``, not ``((a OR b) OR c)``),
    so a long list of alternatives does not nest the SQL."""

    op: str  # "AND" or "OR"
    parts: tuple[Sql | _Chain, ...]
    depth: int  # chains nested in this one, itself included


Cond = Sql | _Chain
TRUE: Cond | None = None  # "may match anything"


def _depth(c: Cond) -> int:
    return c.depth if isinstance(c, _Chain) else 0


def _join(op: str, a: Cond, b: Cond) -> _Chain:
    parts: list[Cond] = []
    for c in (a, b):
        parts.extend(c.parts if isinstance(c, _Chain) and c.op == op else (c,))
    chain = _Chain(op, tuple(parts), 1 + max(_depth(p) for p in parts))
    if chain.depth > MAX_PLAN_DEPTH:
        raise _Unparsed
    return chain


def _and(a: Cond | None, b: Cond | None) -> Cond | None:
    if a is None:
        return b
    if b is None:
        return a
    return _join("AND", a, b)


def _or(a: Cond | None, b: Cond | None) -> Cond | None:
    if a is None or b is None:
        return None
    return _join("OR", a, b)


def _render(c: Cond) -> Sql:
    """SQL text of a condition (recursion bounded by :data:`MAX_PLAN_DEPTH`)."""
    if isinstance(c, Sql):
        return c
    parts = [_render(p) for p in c.parts]
    return Sql("(" + f" {c.op} ".join(p.where for p in parts) + ")",
               tuple(a for p in parts for a in p.args))


def addr_blob(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """Addresses as the catalog stores them: 16 bytes, IPv4 in the first four."""
    return addr.packed.ljust(16, b"\0")


def host_sql(text: str) -> Sql:
    addr = ipaddress.ip_address(text)
    blob = addr_blob(addr)
    return Sql(f"(ipver = {addr.version} AND (addr_a = ? OR addr_b = ?))", (blob, blob))


def net_sql(text: str) -> Sql:
    net = ipaddress.ip_network(text, strict=False)
    lo, hi = addr_blob(net.network_address), addr_blob(net.broadcast_address)
    return Sql(f"(ipver = {net.version} AND (addr_a BETWEEN ? AND ? OR addr_b BETWEEN ? AND ?))",
               (lo, hi, lo, hi))


def port_sql(lo: int, hi: int, proto: int | None = None) -> Sql:
    protos = (proto,) if proto in PORT_PROTOS else PORT_PROTOS
    plist = ",".join(str(p) for p in protos)
    if lo == hi:
        return Sql(f"(proto IN ({plist}) AND (port_a = ? OR port_b = ?))", (lo, lo))
    return Sql(f"(proto IN ({plist}) AND (port_a BETWEEN ? AND ? OR port_b BETWEEN ? AND ?))",
               (lo, hi, lo, hi))


def proto_sql(proto: int, ipver: int | None = None) -> Sql:
    if ipver is None:
        return Sql(f"(proto = {int(proto)})", ())
    return Sql(f"(ipver = {ipver} AND proto = {int(proto)})", ())


class _Parser:
    def __init__(self, expr: str) -> None:
        self.toks = [t for t in TOKEN.findall(expr) if t.strip()]
        self.i = 0
        self.last_quals: tuple[str | None, str | None] = (None, None)
        self.depth = 0  # parentheses and ``not``s being parsed
        self.terms = 0  # index-usable primitives so far

    def peek(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.toks[j].lower() if j < len(self.toks) else None

    def take(self) -> str:
        if self.i >= len(self.toks):
            raise _Unparsed
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def parse(self) -> Cond | None:
        if not self.toks:
            return TRUE
        result = self.expr()
        if self.i != len(self.toks):
            raise _Unparsed
        return result

    def expr(self) -> Cond | None:
        left = self.unary()
        while self.peek() in CONNECTIVES:
            op = self.take().lower()
            right = self.unary()
            left = _and(left, right) if op in ("and", "&&") else _or(left, right)
        return left

    def unary(self) -> Cond | None:
        tok = self.peek()
        if tok not in ("not", "!", "("):
            return self.primitive()
        self.depth += 1
        if self.depth > MAX_PLAN_DEPTH:
            raise _Unparsed
        self.take()
        if tok == "(":
            inner = self.expr()
            if self.take() != ")":
                raise _Unparsed
        else:
            self.unary()
            inner = TRUE
        self.depth -= 1
        return inner

    def _skip_relation(self) -> None:
        """Consume an arithmetic relation (``tcp[13] & 2 != 0``) up to the next connective."""
        depth = 0
        while self.peek() is not None:
            tok = self.peek()
            if depth == 0 and (tok in CONNECTIVES or tok == ")"):
                return
            depth += tok in ("(", "[")  # type: ignore[operator]
            depth -= tok in (")", "]")  # type: ignore[operator]
            self.take()

    def primitive(self) -> Cond | None:
        cond = self._primitive()
        if cond is not None:
            self.terms += 1
            if self.terms > MAX_PLAN_TERMS:
                raise _Unparsed
        return cond

    def _primitive(self) -> Cond | None:
        start = self.i
        proto: str | None = None
        qtype: str | None = None
        tok = self.peek()
        if tok in PROTO_QUALS:
            proto = self.take().lower()
            if self.peek() == "[" or self.peek() in ("&", "|", "+", "-", "*", "/", "<", ">",
                                                      "=", "==", "!=", "<=", ">="):
                self.i = start
                self._skip_relation()
                return TRUE
        if self.peek() in ("inbound", "outbound"):
            self._skip_relation()
            return TRUE
        if self.peek() in ("src", "dst"):
            self.take()
            if self.peek() in ("or", "and") and self.peek(1) in ("src", "dst"):
                self.take()
                self.take()
        if self.peek() in TYPE_QUALS:
            qtype = self.take().lower()
        if proto is None and qtype is None and self.i == start:
            # A bare id continues the previous primitive's qualifiers (``host a or b``).
            tok = self.peek()
            if tok is None:
                raise _Unparsed
            if self.last_quals != (None, None) and _looks_like_id(tok) and tok not in PROTO_QUALS:
                proto, qtype = self.last_quals
            else:
                self._skip_relation()
                return TRUE
        if qtype is None:
            if self.i != start + 1 or proto is None:  # e.g. "src 1.2.3.4": host implied
                qtype = "host" if proto in (None, "ip", "ip6") else None
                if qtype is None:
                    raise _Unparsed
            else:
                return self._proto_only(proto)
        self.last_quals = (proto, qtype)
        return self._typed(proto, qtype)

    def _proto_only(self, proto: str) -> Cond | None:
        if proto == "ip":
            return Sql("(ipver = 4)", ())
        if proto == "ip6":
            return Sql("(ipver = 6)", ())
        if proto in PROTO_NUMBERS:
            ipver = {"icmp": 4, "icmp6": 6, "igmp": 4}.get(proto)
            return proto_sql(PROTO_NUMBERS[proto], ipver)
        return TRUE

    def _typed(self, proto: str | None, qtype: str) -> Cond | None:
        value = self.take()
        try:
            if qtype == "host":
                if proto not in (None, "ip", "ip6"):
                    return TRUE
                return host_sql(value)
            if qtype == "net":
                if self.peek() == "mask":
                    self.take()
                    mask = self.take()
                    return net_sql(f"{value}/{mask}")
                return net_sql(_complete_net(value))
            if qtype in ("port", "portrange"):
                lo, _, hi = value.partition("-")
                p = PROTO_NUMBERS.get(proto or "")
                if proto not in (None, "tcp", "udp", "sctp", "ip", "ip6"):
                    return TRUE
                first, last = int(lo), int(hi or lo)
                if not (0 <= first <= 65535 and 0 <= last <= 65535):
                    return TRUE  # libpcap refuses it, with its own message
                # libpcap swaps a range written high-low (portrange 90-70 is 70-90)
                return port_sql(min(first, last), max(first, last), p)
            if qtype == "proto":
                num = PROTO_NUMBERS.get(value.lstrip("\\").lower())
                num = num if num is not None else int(value, 0)
                if not 0 <= num <= 255:
                    return TRUE  # libpcap decides (it refuses or matches nothing)
                return proto_sql(num, {"ip": 4, "ip6": 6}.get(proto or ""))
        except ValueError:
            return TRUE  # host names, named ports, odd literals: libpcap decides
        return TRUE


def _looks_like_id(tok: str) -> bool:
    return bool(re.fullmatch(r"[0-9A-Za-z:.\-/_]+", tok)) and tok not in TYPE_QUALS | DIR_QUALS


def _complete_net(value: str) -> str:
    """pcap-filter accepts abbreviated networks (``net 10``, ``net 192.168``)."""
    if "/" in value or ":" in value:
        return value
    parts = value.split(".")
    return ".".join(parts + ["0"] * (4 - len(parts))) + f"/{8 * len(parts)}"


def candidate_sql(expr: str) -> Sql | None:
    """SQL over ``flows`` selecting every flow that may hold a packet matching ``expr``
    (non-IP flows always included), or ``None`` when nothing can be narrowed."""
    try:
        cond = _Parser(expr).parse()
    except (_Unparsed, IndexError):
        return None
    if cond is None:
        return None
    sql = _render(cond)
    return Sql(f"(ipver = 0 OR {sql.where})", sql.args)


def check_nesting(expr: str) -> str | None:
    """Why ``expr`` is refused (nested deeper than :data:`MAX_BPF_NESTING`), or None."""
    depth = nesting(expr)
    if depth <= MAX_BPF_NESTING:
        return None
    return (f"the BPF expression nests parentheses and 'not' {depth} levels deep, more than "
            f"the limit of {MAX_BPF_NESTING} (max_bpf_nesting); remove redundant parentheses "
            "and double negations")


def nesting(expr: str) -> int:
    """How deep ``expr`` nests: parentheses open at once plus the ``not``s still waiting for
    their operand (``not not (not tcp)`` is 4), as libpcap's parser stacks them."""
    depth = deepest = 0
    pending = [0]  # per open parenthesis: the ``not``s waiting for their operand
    for raw in TOKEN.findall(expr):
        tok = raw.strip().lower()
        if tok in ("not", "!"):
            pending[-1] += 1
            depth += 1
        elif tok == "(":
            pending.append(0)
            depth += 1
        elif tok == ")" and len(pending) > 1:
            depth -= pending.pop() + 1 + pending[-1]  # the group is its ``not``s' operand
            pending[-1] = 0
        elif tok in CONNECTIVES:
            depth -= pending[-1]
            pending[-1] = 0
        deepest = max(deepest, depth)
    return deepest
