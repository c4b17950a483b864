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

Validation (:func:`check_names`, run by ``pcapwire workflow validate``) knows what each
name holds from the records' own type hints (:data:`KIND_TYPES`, :data:`FLOW_TYPES`,
:data:`RUN_TYPES`: ``Literal`` and ``Annotated[str, OneOf(...)]`` give the values a string
takes), and reports what can never match: an unknown name, a string compared with a number
(``record.flow.proto == 6``), a value a field never takes (``stream.direction == 'up'``),
severities ordered as text, ``'in'`` on a number, a string function given a list...
"""

from __future__ import annotations

import fnmatch
import inspect
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from pcapwire.errors import WorkflowError
from pcapwire.records import IP_PROTO_NAMES, SEVERITIES

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
    end: int  # the column just after the token


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ExpressionError(f"unexpected character {text[pos]!r}", pos + 1)
        kind = m.lastgroup or ""
        raw = m.group()
        start, end = pos + 1, m.end() + 1
        if kind == "num":
            toks.append(_Tok("num", float(raw) if "." in raw else int(raw), start, end))
        elif kind == "str":
            toks.append(_Tok("str", re.sub(r"\\(.)", r"\1", raw[1:-1]), start, end))
        elif kind == "name":
            toks.append(_Tok("kw" if raw in _KEYWORDS else "name", raw, start, end))
        elif kind == "op":
            toks.append(_Tok("op", raw, start, end))
        pos = m.end()
    toks.append(_Tok("end", None, len(text) + 1, len(text) + 1))
    return toks


Node = tuple  # ("lit", v) ("name", parts) ("call", fn, args) ("list", items) ("not", x)
#              ("and", a, b) ("or", a, b) ("cmp", op, a, b) ("neg", x), each followed by
#              the columns where it starts and just after its end: node[-2], node[-1]


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

    def span(self, start: int, *node: Any) -> Node:
        """``node`` with its columns: from ``start`` to just after the last token taken."""
        return (*node, start, self.toks[self.i - 1].end)

    def parse(self) -> Node:
        node = self.or_expr()
        if self.tok.kind != "end":
            raise ExpressionError(f"unexpected {self.describe(self.tok)}", self.tok.col)
        return node

    def or_expr(self) -> Node:
        start = self.tok.col
        node = self.and_expr()
        while self.take("kw", "or"):
            node = self.span(start, "or", node, self.and_expr())
        return node

    def and_expr(self) -> Node:
        start = self.tok.col
        node = self.not_expr()
        while self.take("kw", "and"):
            node = self.span(start, "and", node, self.not_expr())
        return node

    def not_expr(self) -> Node:
        start = self.tok.col
        if self.take("kw", "not"):
            self.nest()
            node = self.span(start, "not", self.not_expr())
            self.depth -= 1
            return node
        return self.compare()

    def compare(self) -> Node:
        start = self.tok.col
        left = self.operand()
        t = self.tok
        if t.kind == "op" and t.value in ("==", "!=", "<", "<=", ">", ">="):
            self.i += 1
            return self.span(start, "cmp", t.value, left, self.operand())
        if self.take("kw", "in"):
            return self.span(start, "cmp", "in", left, self.operand())
        if t.kind == "kw" and t.value == "not" and self.toks[self.i + 1].value == "in":
            self.i += 2
            return self.span(start, "cmp", "not in", left, self.operand())
        return left

    def operand(self) -> Node:
        start = self.tok.col
        if self.take("op", "-"):
            self.nest()
            node = self.span(start, "neg", self.operand())
            self.depth -= 1
            return node
        return self.atom()

    def atom(self) -> Node:
        t = self.tok
        if t.kind in ("num", "str"):
            self.i += 1
            return self.span(t.col, "lit", t.value)
        if t.kind == "kw" and t.value in ("true", "false", "null"):
            self.i += 1
            return self.span(t.col, "lit", {"true": True, "false": False, "null": None}[t.value])
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
            return self.span(t.col, "list", items)
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
                return self.span(t.col, "call", t.value, args)
            parts = [t.value]
            while self.take("op", "."):
                name = self.take("name") or self.take("kw")
                if name is None:
                    raise ExpressionError("expected a field name after '.'", self.tok.col)
                parts.append(name.value)
            return self.span(t.col, "name", tuple(parts))
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


# ---- what each name holds: read from the records themselves ---------------------------------
@dataclass(frozen=True)
class Type:
    """What a value in a condition is, as far as validation can know it. ``name`` is one of
    ``string number boolean list mapping bytes null any``; a string may take only
    ``values`` (plus what ``other``, a regular expression, admits); a list has ``item``s;
    a mapping with known ``fields`` (a flow, a record) has only those."""

    name: str
    values: tuple[str, ...] = ()
    other: str = ""
    other_doc: str = ""
    item: Type | None = None
    fields: Mapping[str, Type] | None = field(default=None, compare=False)

    def takes(self, value: str) -> bool:
        """Whether this string may equal ``value``."""
        return (not self.values or value in self.values
                or bool(self.other and re.fullmatch(self.other, value)))

    def describe(self) -> str:
        if self.name == "string" and self.values:
            if len(self.values) == 1 and not self.other:
                return f"a string (always {self.values[0]!r} here)"
            shown = [v if v else "''" for v in self.values]
            more = f", or {self.other_doc}" if self.other_doc else ""
            return f"a string (one of: {', '.join(shown)}{more})"
        if self.name == "list":
            inner = {"string": "strings", "number": "numbers", "boolean": "booleans",
                     "list": "lists", "mapping": "mappings"}.get(
                self.item.name if self.item else "", "")
            return f"a list of {inner}" if inner else "a list"
        if self.name == "mapping" and self.fields is not None:
            return f"a mapping (fields: {', '.join(self.fields)})"
        return _ARTICLE.get(self.name, self.name)


_ARTICLE = {"string": "a string", "number": "a number", "boolean": "a boolean (true or false)",
            "mapping": "a mapping", "bytes": "bytes", "null": "null", "any": "a value"}
ANY, NUMBER, STRING, BOOLEAN = Type("any"), Type("number"), Type("string"), Type("boolean")


def type_of_hint(hint: Any) -> Type:
    """A Python type hint of :mod:`pcapwire.records` as a condition sees the value."""
    from pcapwire.records import FlowKey, OneOf

    meta: tuple[Any, ...] = ()
    if get_origin(hint) is Annotated:
        hint, *extra = get_args(hint)
        meta = tuple(extra)
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal and all(isinstance(a, str) for a in args):
        return Type("string", tuple(args))
    if origin in (Union, UnionType):
        inner = [a for a in args if a is not type(None)]
        return type_of_hint(inner[0]) if len(inner) == 1 else ANY
    if hint is str:
        for m in meta:
            if isinstance(m, OneOf):
                return Type("string", m.values, m.other, m.other_doc)
        return STRING
    if hint is bool:
        return BOOLEAN
    if hint in (int, float):
        return NUMBER
    if hint is bytes:
        return Type("bytes")
    if hint is FlowKey:
        return Type("mapping", fields=FLOW_TYPES)
    if origin in (list, tuple, set, frozenset):
        return Type("list", item=type_of_hint(args[0]) if args else ANY)
    if origin is dict or hint is dict:
        return Type("mapping")
    return ANY


def _member_type(cls: type, name: str, hints: Mapping[str, Any]) -> Type:
    member = inspect.getattr_static(cls, name)
    if isinstance(member, property):
        return type_of_hint(get_type_hints(member.fget, include_extras=True)["return"])
    return type_of_hint(hints[name])


def _flow_types() -> dict[str, Type]:
    from pcapwire.records import FlowKey

    hints = get_type_hints(FlowKey, include_extras=True)
    return {name: _member_type(FlowKey, attr, hints)
            for name, attr in FlowKey.DICT_FIELDS.items()}


#: Record fields a condition cannot use, per kind, each with the reason (none today: a
#: field added to a record is usable in conditions under its own name unless listed here).
EXCLUDED_FIELDS: dict[str, dict[str, str]] = {}


def _kind_types() -> dict[str, dict[str, Type]]:
    """Per record kind: every dataclass field (by its name and type hint), ``kind``, and
    every public property (``size`` of streams and chunks)."""
    from pcapwire.records import RECORD_TYPES

    out: dict[str, dict[str, Type]] = {}
    for kind, cls in RECORD_TYPES.items():
        hints = get_type_hints(cls, include_extras=True)
        names = [f.name for f in dataclass_fields(cls)]  # type: ignore[arg-type]
        names += [n for n, v in vars(cls).items()
                  if isinstance(v, property) and not n.startswith("_")]
        table = {"kind": Type("string", (kind,))}
        table |= {n: _member_type(cls, n, hints) for n in names
                  if n not in EXCLUDED_FIELDS.get(kind, {})}
        out[kind] = table
    return out


def _run_types() -> dict[str, Type]:
    from pcapwire.workflow.context import RunInfo

    hints = get_type_hints(RunInfo)
    return {n: type_of_hint(hints[n]) for n in ("case", "event", "query_id", "workflow",
                                                 "run_id")}


#: What ``flow.<name>`` holds (the names of :meth:`FlowKey.to_dict`).
FLOW_TYPES: dict[str, Type] = _flow_types()
#: What ``<kind>.<name>`` holds, per record kind.
KIND_TYPES: dict[str, dict[str, Type]] = _kind_types()
#: What ``run.<name>`` holds.
RUN_TYPES: dict[str, Type] = _run_types()
#: Field names a condition may use, per record kind.
KIND_FIELDS: dict[str, set[str]] = {kind: set(t) for kind, t in KIND_TYPES.items()}
RUN_FIELDS = set(RUN_TYPES)
_FLOW_FIELDS = tuple(FLOW_TYPES)


# ---- the context a condition sees ---------------------------------------------------------
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
    """What cannot work in ``expr`` for input ``kind``: names that do not exist, and
    operands whose types cannot match (a string compared with a number, a value the field
    never takes...). Each as (message, 1-based column of the offending name or operand)."""
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
            continue
        t = Type("mapping", fields=KIND_TYPES[kind])
        for i, name in enumerate(parts[1:], 1):
            if t.fields is not None:
                if name not in t.fields:
                    problems.append((f"{parts[i - 1]} has no field {name!r}; fields: "
                                     f"{', '.join(t.fields)}", col))
                    break
                t = t.fields[name]
            elif t.name in ("mapping", "any"):
                break  # free-form (``file.extra...``): anything may be there
            else:
                problems.append((f"{'.'.join(parts[:i])} is {t.describe()} and has no "
                                 f"field {name!r}", col))
                break
    problems += _TypeCheck(expr.text, kind).run(expr.tree)
    return sorted(problems, key=lambda p: p[1])


# ---- type checking ------------------------------------------------------------------------
_STRING_FUNCTIONS = ("lower", "upper", "startswith", "endswith", "contains", "glob")


class _TypeCheck:
    """Infers the type of each node of a parsed condition and reports operands that can
    never match: the static half of the language's "different types never compare"."""

    def __init__(self, text: str, kind: str) -> None:
        self.text = text
        self.kind = kind
        self.problems: list[tuple[str, int]] = []

    def run(self, tree: Node) -> list[tuple[str, int]]:
        self.infer(tree)
        return self.problems

    def src(self, node: Node) -> str:
        return self.text[node[-2] - 1:node[-1] - 1].strip()

    def report(self, message: str, node: Node) -> None:
        self.problems.append((message, node[-2]))

    def resolve(self, parts: tuple[str, ...]) -> Type:
        if parts[0] == "run":
            return RUN_TYPES.get(parts[1], ANY) if len(parts) == 2 else ANY
        if parts[0] not in (self.kind, "record") or self.kind not in KIND_TYPES:
            return ANY
        t = Type("mapping", fields=KIND_TYPES[self.kind])
        for name in parts[1:]:
            if t.fields is None or name not in t.fields:
                return ANY  # free-form, or reported as a name problem
            t = t.fields[name]
        return t

    def infer(self, n: Node) -> Type:
        tag = n[0]
        if tag == "lit":
            v = n[1]
            return (Type("null") if v is None else BOOLEAN if isinstance(v, bool)
                    else STRING if isinstance(v, str) else NUMBER)
        if tag == "name":
            return self.resolve(n[1])
        if tag in ("and", "or"):
            self.infer(n[1])
            self.infer(n[2])
            return BOOLEAN
        if tag == "not":
            self.infer(n[1])
            return BOOLEAN
        if tag == "neg":
            t = self.infer(n[1])
            if t.name not in ("number", "any", "null"):
                self.report(f"'-' needs a number; {self.src(n[1])} is {t.describe()}", n[1])
            return NUMBER
        if tag == "list":
            items = [self.infer(x) for x in n[1]]
            names = {t.name for t in items}
            return Type("list", item=items[0] if len(names) == 1 else ANY)
        if tag == "call":
            return self.call(n[1], n[2])
        if tag == "cmp":
            self.compare(n[1], n[2], n[3])
            return BOOLEAN
        return ANY

    # -- functions --
    def call(self, fn: str, args: list[Node]) -> Type:
        types = [self.infer(a) for a in args]
        if fn in _STRING_FUNCTIONS:
            for a, t in zip(args, types, strict=True):
                if t.name in ("list", "mapping", "bytes"):
                    hint = " (to test membership use 'in')" if t.name == "list" else ""
                    self.report(f"{fn}() works on strings; {self.src(a)} is "
                                f"{t.describe()}{hint}", a)
            if fn in ("lower", "upper") and types[0].values and not types[0].other:
                case = str.lower if fn == "lower" else str.upper
                return Type("string", tuple(dict.fromkeys(case(v) for v in types[0].values)))
            return STRING if fn in ("lower", "upper") else BOOLEAN
        if fn == "len":
            if types[0].name in ("number", "boolean"):
                self.report(f"len() of {self.src(args[0])}, {types[0].describe()}, is "
                            f"always 0", args[0])
            return NUMBER
        if fn == "severity":
            a, t = args[0], types[0]
            if a[0] == "lit" and isinstance(a[1], str) and a[1] not in SEVERITIES:
                self.report(f"{a[1]!r} is not a severity; severities: "
                            f"{', '.join(SEVERITIES)}", a)
            elif t.name not in ("string", "any", "null"):
                self.report(f"severity() takes a severity name; {self.src(a)} is "
                            f"{t.describe()}", a)
            return NUMBER
        if fn == "cidr":
            (ip, net), (tip, _tnet) = args, types
            if tip.name not in ("string", "any", "null"):
                self.report(f"cidr() takes an IP address; {self.src(ip)} is "
                            f"{tip.describe()}", ip)
            if net[0] == "lit":
                try:
                    ipaddress.ip_network(str(net[1]), strict=False)
                except ValueError:
                    self.report(f"{net[1]!r} is not a network (use CIDR, e.g. "
                                f"'10.0.0.0/8')", net)
            return BOOLEAN
        return ANY

    # -- comparisons --
    def compare(self, op: str, a: Node, b: Node) -> None:
        ta, tb = self.infer(a), self.infer(b)
        if op in ("in", "not in"):
            self.membership(a, ta, b, tb)
            return
        if op not in ("==", "!=") and (a[0] == "lit" and a[1] is None
                                       or b[0] == "lit" and b[1] is None):
            null = a if a[0] == "lit" and a[1] is None else b
            self.report(f"'{op}' with null is always false; test for a missing value with "
                        f"== null", null)
            return
        if not self.equal(a, ta, b, tb):
            return
        if op in ("==", "!="):
            return
        for node, t in ((a, ta), (b, tb)):
            if t.name == "string" and t.values and len(t.values) > 1:
                hint = ""
                if set(t.values) == set(SEVERITIES):
                    other = b if node is a else a
                    hint = (f"; compare ranks: severity({self.src(node)}) {op} "
                            f"severity({self.src(other)})" if node is a else
                            f"; compare ranks: severity({self.src(other)}) {op} "
                            f"severity({self.src(node)})")
                self.report(f"{self.src(node)} is {t.describe()}; '{op}' orders its "
                            f"values alphabetically{hint}", node)
                return

    def equal(self, a: Node, ta: Type, b: Node, tb: Type) -> bool:
        """Check that ``a`` and ``b`` can be equal; False (and a problem) when not."""
        if {ta.name, tb.name} & {"any", "null"}:
            return True
        # describe the name (or the left side); point at the other, the offending operand
        field_, t, other, to = (b, tb, a, ta) if a[0] != "name" and b[0] == "name" \
            else (a, ta, b, tb)
        if ta.name != tb.name:
            what = f"{self.src(other)}, {to.describe()}" if other[0] == "name" \
                else to.describe()
            hint = " (to test membership use 'in')" if t.name == "list" and \
                t.item is not None and t.item.name == to.name else ""
            if t.values == tuple(IP_PROTO_NAMES.values()) and other[0] == "lit" \
                    and isinstance(other[1], int) and not isinstance(other[1], bool):
                hint = f" (write {IP_PROTO_NAMES.get(other[1], str(other[1]))!r})"
            self.report(f"{self.src(field_)} is {t.describe()}; compared with {what}{hint}",
                        other)
            return False
        for x, tx, y in ((a, ta, b), (b, tb, a)):
            if y[0] == "lit" and isinstance(y[1], str) and tx.name == "string" \
                    and not tx.takes(y[1]):
                self.report(f"{self.src(x)} is {tx.describe()}; compared with {y[1]!r}, a "
                            f"value it never takes", y)
                return False
        return True

    def membership(self, a: Node, ta: Type, b: Node, tb: Type) -> None:
        if b[0] == "list":
            for item in b[1]:
                self.equal(a, ta, item, self.infer_quiet(item))
            return
        if tb.name in ("number", "boolean", "bytes"):
            self.report(f"'in' needs a list, a string or a mapping on its right; "
                        f"{self.src(b)} is {tb.describe()}", b)
        elif tb.name == "string" and ta.name not in ("string", "any", "null"):
            self.report(f"{self.src(b)} is a string, so 'in' looks for a substring; "
                        f"{self.src(a)} is {ta.describe()}", a)
        elif tb.name == "list" and tb.item is not None and ta.name not in ("any", "null") \
                and tb.item.name not in ("any", ta.name):
            self.report(f"{self.src(b)} is {tb.describe()}; {self.src(a)} is "
                        f"{ta.describe()}", a)

    def infer_quiet(self, n: Node) -> Type:
        """The type of ``n`` without reporting its problems again."""
        saved = len(self.problems)
        t = self.infer(n)
        del self.problems[saved:]
        return t
