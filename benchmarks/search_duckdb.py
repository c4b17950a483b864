"""The DuckDB side of bench_search.py: the same documents as one wide table (a column per
searchable field; multi-valued fields as one text with \\x1f around each value), the
same parsed queries compiled to one WHERE clause. DuckDB's full-text extension is
downloaded at run time, which this machine cannot do, so free text is a substring test on
a lower-cased column of every string value (a scan, like the other terms here: DuckDB
has no secondary indexes for LIKE, ranges on strings or list membership; its min/max
zone maps help time ranges on data loaded in time order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pcapwire.search.fields import FIELDS
from pcapwire.search.index import flatten
from pcapwire.search.lang import And, Node, Not, Or, Term, parse, unescape
from pcapwire.search.sqlplan import glob_pattern
from pcapwire.search.values import cidr_range, keyword, parse_ip, parse_long, parse_time

SEP = "\x1f"


def column(field: str) -> str:
    return '"' + field + '"'


def flat_row(doc_id: int, body: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"id": doc_id}
    multi: dict[str, list[str]] = {}
    text: list[str] = []
    for name, value in flatten(body):
        ftype = FIELDS.get(name)
        if ftype is None:
            continue
        if ftype in ("long", "date"):
            from pcapwire.search.index import _date_us

            row[name] = _date_us(value) if ftype == "date" else int(value)
            continue
        s = parse_ip(str(value)) if ftype == "ip" else keyword(str(value))
        if s is None:
            continue
        multi.setdefault(name, []).append(s)
        text.append(str(value).lower())
    for name, values in multi.items():
        row[name] = values[0] if len(values) == 1 else SEP + SEP.join(values) + SEP
    row["anytext"] = "\n".join(text)
    return row


def load(con: Any, flat_jsonl: Path) -> None:
    cols = {"id": "BIGINT", "anytext": "VARCHAR"}
    cols.update({f: "BIGINT" if t in ("long", "date") else "VARCHAR" for f, t in FIELDS.items()})
    spec = "{" + ", ".join(f"'{k}': '{v}'" for k, v in cols.items()) + "}"
    con.execute(f"CREATE TABLE docs AS SELECT * FROM read_json('{flat_jsonl}', "
                f"format='newline_delimited', columns={spec})")


def _eq(col: str, value: str) -> tuple[str, list[Any]]:
    return (f"({col} = ? OR contains({col}, ?))", [value, SEP + value + SEP])


def where(node: Node) -> tuple[str, list[Any]]:
    if isinstance(node, Not):
        s, a = where(node.child)
        return f"NOT coalesce({s}, false)", a
    if isinstance(node, And | Or):
        parts = [where(c) for c in node.children]
        op = " AND " if isinstance(node, And) else " OR "
        return "(" + op.join(p[0] for p in parts) + ")", [x for p in parts for x in p[1]]
    t = node
    assert isinstance(t, Term)
    if t.field is None:
        return "contains(anytext, ?)", [t.value.lower().rstrip("*")]
    col, ftype = column(t.field), FIELDS[t.field]
    if ftype in ("long", "date"):
        if t.mode == "range":
            assert t.range is not None
            conv = parse_time if ftype == "date" else (lambda v: (parse_long(v), parse_long(v) + 1))
            rng = t.range
            lo = conv(rng.lo)[0 if rng.lo_incl else 1] if rng.lo else -(2**62)
            hi = conv(rng.hi)[1 if rng.hi_incl else 0] if rng.hi else 2**62
            return f"({col} >= ? AND {col} < ?)", [lo, hi]
        lo, hi = parse_time(t.value) if ftype == "date" else (parse_long(t.value),
                                                               parse_long(t.value) + 1)
        return f"({col} >= ? AND {col} < ?)", [lo, hi]
    if ftype == "ip":
        if "/" in t.value:
            first, last = cidr_range(t.value)
            return f"({col} BETWEEN ? AND ?)", [first, last]
        return _eq(col, parse_ip(t.value) or "")
    if ftype == "text" and t.mode != "wildcard":
        return f"contains(lower({col}), ?)", [t.value.lower()]
    if t.mode == "wildcard":
        return f"({col} GLOB ?)", [glob_pattern(t.value)]
    return _eq(col, keyword(unescape(t.value)))


def search(con: Any, text: str, limit: int = 50) -> list[int]:
    sql, args = where(parse(text))
    return [r[0] for r in con.execute(
        f"SELECT id FROM docs WHERE {sql} ORDER BY id DESC LIMIT {limit}", args).fetchall()]

