"""The condition language of a step's ``if:`` — small, safe, never Python ``eval``.

Grammar (EBNF; keywords are lowercase)::

    expr     = or_expr
    or_expr  = and_expr { "or" and_expr }
    and_expr = not_expr { "and" not_expr }
    not_expr = "not" not_expr | compare
    compare  = operand [ op operand ]
    op       = "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in"
    operand  = "-" operand | atom
    atom     = NUMBER | STRING | "true" | "false" | "null"
             | NAME "(" [ expr { "," expr } ] ")"       (a function below)
             | NAME { "." NAME }                        (a value from the context)
             | "(" expr ")" | "[" [ expr { "," expr } ] "]"
    NUMBER   = digits [ "." digits ]     STRING = '...' or "..." (backslash escapes \\ \' \")

Names: the input record under its kind (``stream``, ``file``, ``email``, ``verdict``,
``pcap``) and under ``record``; the run under ``run`` (``case``, ``event``,
``query_id``, ``workflow``). Record fields are those of :mod:`pcapwire.records`; ``flow``
has ``proto``, ``src_ip``, ``src_port``, ``dest_ip``, ``dest_port``; ``stream.size`` and
``pcap.size`` are byte counts. A missing field is ``null``.

Functions: ``len(x)``, ``lower(s)``, ``upper(s)``, ``startswith(s, prefix)``,
``endswith(s, suffix)``, ``contains(s, part)``, ``glob(s, pattern)`` (fnmatch, case
sensitive), ``cidr(ip, "10.0.0.0/8")``, ``severity(name)`` (rank 0-4, so
``severity(verdict.severity) >= severity("high")``).

Semantics: ``and``/``or`` short-circuit and return booleans; comparing values of
different types (other than int/float) is false for ``==``, true for ``!=``, false for
the ordering operators; ``in`` works on strings (substring), lists and mappings (keys).
Limits: :data:`MAX_EXPRESSION_LENGTH` characters, :data:`MAX_EXPRESSION_DEPTH` nesting.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pcapwire.errors import WorkflowError
from pcapwire.records import SEVERITIES

#: Longest condition accepted (characters).
MAX_EXPRESSION_LENGTH = 2000
#: Deepest nesting accepted (parentheses, lists, calls, not).
MAX_EXPRESSION_DEPTH = 32

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>\d+(?:\.\d+)?)
  | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,|\.|-)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
""", re.VERBOSE)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}


class ExpressionError(WorkflowError):
    """A condition that does not parse; ``column`` is 1-based within the expression."""

    def __init__(self, message: str, column: int) -> None:
        self.column = column
        super().__init__(f"{message} (at column {column})")


def _severity(name: Any) -> int:
    return SEVERITIES.index(name) if name in SEVERITIES else -1


def _cidr(ip: Any, net: Any) -> bool:
    try:
        return ipaddress.ip_address(str(ip)) in ipaddress.ip_network(str(net), strict=False)
    except ValueError:
        return False


def _s(x: Any) -> str:
    return x if isinstance(x, str) else "" if x is None else str(x)


FUNCTIONS: dict[str, tuple[int, Callable[..., Any]]] = {
    "len": (1, lambda x: len(x) if hasattr(x, "__len__") else 0),
    "lower": (1, lambda s: _s(s).lower()),
    "upper": (1, lambda s: _s(s).upper()),
    "startswith": (2, lambda s, p: _s(s).startswith(_s(p))),
    "endswith": (2, lambda s, p: _s(s).endswith(_s(p))),
    "contains": (2, lambda s, p: _s(p) in _s(s)),
    "glob": (2, lambda s, p: fnmatch.fnmatchcase(_s(s), _s(p))),
    "cidr": (2, _cidr),
    "severity": (1, _severity),
}


@dataclass(frozen=True)
class _Tok:
    kind: str  # num str op name kw end
    value: Any
    col: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ExpressionError(f"unexpected character {text[pos]!r}", pos + 1)
        kind = m.lastgroup or ""
        raw = m.group()
        if kind == "num":
            toks.append(_Tok("num", float(raw) if "." in raw else int(raw), pos + 1))
        elif kind == "str":
            toks.append(_Tok("str", re.sub(r"\\(.)", r"\1", raw[1:-1]), pos + 1))
        elif kind == "name":
            toks.append(_Tok("kw" if raw in _KEYWORDS else "name", raw, pos + 1))
        elif kind == "op":
            toks.append(_Tok("op", raw, pos + 1))
        pos = m.end()
    toks.append(_Tok("end", None, len(text) + 1))
    return toks


Node = tuple  # ("lit", v) ("name", parts) ("call", fn, args) ("list", items) ("not", x)
#              ("and", a, b) ("or", a, b) ("cmp", op, a, b) ("neg", x)


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def take(self, kind: str, value: Any = None) -> _Tok | None:
        t = self.tok
        if t.kind == kind and (value is None or t.value == value):
            self.i += 1
            return t
        return None

    def expect(self, kind: str, value: Any, what: str) -> _Tok:
        t = self.take(kind, value)
        if t is None:
            raise ExpressionError(f"expected {what}, found {self.describe(self.tok)}",
                                  self.tok.col)
        return t

    @staticmethod
    def describe(t: _Tok) -> str:
        return "end of expression" if t.kind == "end" else repr(t.value)

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_EXPRESSION_DEPTH:
            raise ExpressionError(f"nesting deeper than MAX_EXPRESSION_DEPTH="
                                  f"{MAX_EXPRESSION_DEPTH}", self.tok.col)

    def parse(self) -> Node:
        node = self.or_expr()
        if self.tok.kind != "end":
            raise ExpressionError(f"unexpected {self.describe(self.tok)}", self.tok.col)
        return node

    def or_expr(self) -> Node:
        node = self.and_expr()
        while self.take("kw", "or"):
            node = ("or", node, self.and_expr())
        return node

    def and_expr(self) -> Node:
        node = self.not_expr()
        while self.take("kw", "and"):
            node = ("and", node, self.not_expr())
        return node

    def not_expr(self) -> Node:
        if self.take("kw", "not"):
            self.nest()
            node = ("not", self.not_expr())
            self.depth -= 1
            return node
        return self.compare()

    def compare(self) -> Node:
        left = self.operand()
        t = self.tok
        if t.kind == "op" and t.value in ("==", "!=", "<", "<=", ">", ">="):
            self.i += 1
            return ("cmp", t.value, left, self.operand())
        if self.take("kw", "in"):
            return ("cmp", "in", left, self.operand())
        if t.kind == "kw" and t.value == "not" and self.toks[self.i + 1].value == "in":
            self.i += 2
            return ("cmp", "not in", left, self.operand())
        return left

    def operand(self) -> Node:
        if self.take("op", "-"):
            self.nest()
            node = ("neg", self.operand())
            self.depth -= 1
            return node
        return self.atom()

    def atom(self) -> Node:
        t = self.tok
        if t.kind in ("num", "str"):
            self.i += 1
            return ("lit", t.value)
        if t.kind == "kw" and t.value in ("true", "false", "null"):
            self.i += 1
            return ("lit", {"true": True, "false": False, "null": None}[t.value])
        if self.take("op", "("):
            self.nest()
            node = self.or_expr()
            self.expect("op", ")", "')'")
            self.depth -= 1
            return node
        if self.take("op", "["):
            self.nest()
            items = self.items("]")
            self.depth -= 1
            return ("list", items)
        if t.kind == "name":
            self.i += 1
            if self.take("op", "("):
                if t.value not in FUNCTIONS:
                    raise ExpressionError(f"unknown function {t.value!r}; functions: "
                                          f"{', '.join(sorted(FUNCTIONS))}", t.col)
                self.nest()
                args = self.items(")")
                self.depth -= 1
                arity = FUNCTIONS[t.value][0]
                if len(args) != arity:
                    raise ExpressionError(f"{t.value}() takes {arity} argument(s), "
                                          f"got {len(args)}", t.col)
                return ("call", t.value, args)
            parts = [t.value]
            while self.take("op", "."):
                name = self.take("name") or self.take("kw")
                if name is None:
                    raise ExpressionError("expected a field name after '.'", self.tok.col)
                parts.append(name.value)
            return ("name", tuple(parts), t.col)
        raise ExpressionError(f"unexpected {self.describe(t)}", t.col)

    def items(self, close: str) -> list[Node]:
        items: list[Node] = []
        if self.take("op", close):
            return items
        while True:
            items.append(self.or_expr())
            if self.take("op", close):
                return items
            self.expect("op", ",", f"',' or '{close}'")


def _lookup(ctx: Mapping[str, Any], parts: tuple[str, ...]) -> Any:
    value: Any = ctx
    for p in parts:
        if isinstance(value, Mapping):
            value = value.get(p)
        else:
            return None
        if value is None:
            return None
    return value


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _compare(op: str, a: Any, b: Any) -> bool:
    if op in ("in", "not in"):
        try:
            hit = a in b if isinstance(b, (str, list, tuple, Mapping)) else False
            if isinstance(b, str) and not isinstance(a, str):
                hit = False
        except TypeError:
            hit = False
        return hit if op == "in" else not hit
    same = type(a) is type(b) or (_num(a) and _num(b))
    if op == "==":
        return same and a == b
    if op == "!=":
        return not (same and a == b)
    if not same or a is None:
        return False
    try:
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    except TypeError:
        return False


Evaluator = Callable[[Mapping[str, Any]], Any]


def _compile(node: Node) -> Evaluator:
    """The tree as nested closures (evaluated once per input record: no tree walk)."""
    tag = node[0]
    if tag == "lit":
        value = node[1]
        return lambda ctx: value
    if tag == "name":
        parts = node[1]
        if len(parts) == 2:  # the common case: stream.size, run.case
            head, field = parts

            def name2(ctx: Mapping[str, Any]) -> Any:
                v = ctx.get(head)
                return v.get(field) if isinstance(v, Mapping) else None
            return name2
        return lambda ctx: _lookup(ctx, parts)
    if tag == "and":
        left, right = _compile(node[1]), _compile(node[2])
        return lambda ctx: bool(left(ctx)) and bool(right(ctx))
    if tag == "or":
        left, right = _compile(node[1]), _compile(node[2])
        return lambda ctx: bool(left(ctx)) or bool(right(ctx))
    if tag == "not":
        inner = _compile(node[1])
        return lambda ctx: not inner(ctx)
    if tag == "cmp":
        op, left, right = node[1], _compile(node[2]), _compile(node[3])
        if op in ("==", "!="):
            equal = op == "=="

            def eq(ctx: Mapping[str, Any]) -> bool:
                a, b = left(ctx), right(ctx)
                same = (type(a) is type(b) or (_num(a) and _num(b))) and a == b
                return same if equal else not same
            return eq
        return lambda ctx: _compare(op, left(ctx), right(ctx))
    if tag == "neg":
        inner = _compile(node[1])

        def neg(ctx: Mapping[str, Any]) -> Any:
            v = inner(ctx)
            return -v if _num(v) else None
        return neg
    if tag == "list":
        items = [_compile(n) for n in node[1]]
        return lambda ctx: [f(ctx) for f in items]
    if tag == "call":
        fn = FUNCTIONS[node[1]][1]
        args = [_compile(n) for n in node[2]]
        return lambda ctx: fn(*[a(ctx) for a in args])
    raise AssertionError(tag)


class Expression:
    """A parsed condition: ``Expression("stream.size > 0")(context) -> bool``."""

    def __init__(self, text: str) -> None:
        if len(text) > MAX_EXPRESSION_LENGTH:
            raise ExpressionError(f"longer than MAX_EXPRESSION_LENGTH="
                                  f"{MAX_EXPRESSION_LENGTH} characters", 1)
        self.text = text
        self.tree = _Parser(text).parse()
        self._fn = _compile(self.tree)

    def __call__(self, ctx: Mapping[str, Any]) -> bool:
        return bool(self._fn(ctx))

    def names(self) -> list[tuple[tuple[str, ...], int]]:
        """Every dotted name used, with its column (for validation)."""
        out: list[tuple[tuple[str, ...], int]] = []

        def walk(n: Any) -> None:
            if isinstance(n, tuple) and n and n[0] == "name":
                out.append((n[1], n[2]))
                return
            if isinstance(n, (tuple, list)):
                for x in n[1:] if isinstance(n, tuple) else n:
                    walk(x)

        walk(self.tree)
        return out


# ---- the context a condition sees ---------------------------------------------------------
_FLOW_FIELDS = ("proto", "src_ip", "src_port", "dest_ip", "dest_port")


def _kind_fields() -> dict[str, set[str]]:
    from dataclasses import fields

    from pcapwire.records import RECORD_TYPES

    out = {kind: {f.name for f in fields(cls)} | {"kind"}  # type: ignore[arg-type]
           for kind, cls in RECORD_TYPES.items()}
    out["stream"].add("size")
    out["pcap"].add("size")
    return out


#: Field names a condition may use, per record kind.
KIND_FIELDS: dict[str, set[str]] = _kind_fields()
RUN_FIELDS = {"case", "event", "query_id", "workflow", "run_id"}


class _RecordView(Mapping[str, Any]):
    """A record's fields as a condition sees them, read on demand (most conditions use
    one or two of them): ``flow`` as its dict, ``size`` for streams and chunks."""

    __slots__ = ("_record", "_fields")

    def __init__(self, record: Any) -> None:
        self._record = record
        self._fields = KIND_FIELDS[record.kind]

    def get(self, name: str, default: Any = None) -> Any:
        if name not in self._fields:
            return default
        if name == "kind":
            return self._record.kind
        if name == "size" and self._record.kind in ("stream", "pcap"):
            return len(self._record.data)
        value = getattr(self._record, name, None)
        if name == "flow" and value is not None:
            return value.to_dict()
        return value

    def __getitem__(self, name: str) -> Any:
        if name not in self._fields:
            raise KeyError(name)
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._fields))

    def __len__(self) -> int:
        return len(self._fields)


def record_context(record: Any, run: Mapping[str, Any]) -> dict[str, Any]:
    """The names a condition sees for ``record`` (a lazy view: fields are read as-is)."""
    view = _RecordView(record)
    return {record.kind: view, "record": view, "run": run}


def check_names(expr: Expression, kind: str) -> list[tuple[str, int]]:
    """Names of ``expr`` that cannot exist for input ``kind``: (message, column)."""
    problems = []
    for parts, col in expr.names():
        head = parts[0]
        if head == "run":
            if len(parts) != 2 or parts[1] not in RUN_FIELDS:
                problems.append((f"unknown name {'.'.join(parts)!r}; run has "
                                 f"{', '.join(sorted(RUN_FIELDS))}", col))
            continue
        if head not in (kind, "record"):
            problems.append((f"unknown name {'.'.join(parts)!r}: this step's input kind is "
                             f"{kind!r}, so use {kind}.<field>, record.<field> or run.<field>",
                             col))
            continue
        if len(parts) >= 2 and parts[1] not in KIND_FIELDS[kind]:
            problems.append((f"{kind} has no field {parts[1]!r}; fields: "
                             f"{', '.join(sorted(KIND_FIELDS[kind]))}", col))
        elif len(parts) >= 3 and parts[1] == "flow" and parts[2] not in _FLOW_FIELDS:
            problems.append((f"flow has no field {parts[2]!r}; fields: "
                             f"{', '.join(_FLOW_FIELDS)}", col))
    return problems
