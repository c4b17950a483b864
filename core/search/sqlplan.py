"""A parsed query (:mod:`.lang`) as SQL over the index's tables (:mod:`.index`).

Each node has two forms: a *set* (``SELECT id ...``: the documents it matches, read from
an index) and a *probe* (a condition on one document id ``X``: point lookups). An AND
reads its most selective positive child as a set (estimated by counting at most
:data:`ESTIMATE_CAP` rows of each) and probes the others for each of its documents; an OR
is the UNION of its children's sets; NOT is a negated probe. Only a query with no
positive term at all (``NOT x``) reads every document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pcapwire.errors import QueryError
from pcapwire.search import docmatch
from pcapwire.search.docmatch import DocMatcher
from pcapwire.search.fields import FIELDS
from pcapwire.search.index import FTS_COLUMN_OF, SUFFIX_FIELDS, SearchIndex
from pcapwire.search.lang import And, Node, Not, Or, SearchSyntaxError, Term, unescape
from pcapwire.search.values import cidr_range, keyword, parse_ip, parse_long, parse_time

#: Rows counted per term to choose the set an AND starts from.
ESTIMATE_CAP = 2000
_NOTHING = "SELECT NULL AS id WHERE 0"
_FTS_SET = "SELECT rowid AS id FROM fts WHERE fts MATCH ?"


@dataclass(frozen=True)
class Sql:
    sql: str
    args: tuple[object, ...] = ()


def glob_pattern(raw: str) -> str:
    """A query wildcard (``*``, ``?``, ``\\`` escapes) as a GLOB pattern over case-folded
    values."""
    out, i = [], 0
    while i < len(raw):
        c = raw[i]
        if c == "\\" and i + 1 < len(raw):
            i += 1
            out.append({"*": "[*]", "?": "[?]", "[": "[[]"}.get(raw[i], keyword(raw[i])))
        elif c in "*?":
            out.append(c)
        elif c == "[":
            out.append("[[]")
        else:
            out.append(keyword(c))
        i += 1
    return "".join(out)


def _literal_prefix(raw: str) -> str:
    """The case-folded text before the first unescaped wildcard."""
    m = re.search(r"(?<!\\)[*?]", raw)
    return keyword(unescape(raw[:m.start()] if m else raw))


def _next(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _fts_phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


class Planner:
    def __init__(self, index: SearchIndex, query_text: str, now_us: int | None = None) -> None:
        self.index = index
        self.text = query_text
        self.now_us = now_us
        self.matcher = DocMatcher()
        index.db.create_function("pw_match", 2, self.matcher)

    def error(self, term: Term, message: str) -> SearchSyntaxError:
        return SearchSyntaxError(self.text, term.pos, message)

    # ---- leaves --------------------------------------------------------------------------
    def _terms(self, fid: int, where: str, args: tuple[object, ...]) -> tuple[str, tuple]:
        return f"SELECT doc AS id FROM terms WHERE f = ? AND {where}", (fid, *args)

    def leaf(self, t: Term) -> Sql:
        """The set of documents a term matches."""
        column = self.fts_column(t)
        if column is not None:
            return self.fts(t, column)
        assert t.field is not None
        ftype = FIELDS[t.field]
        fid = self.index.field_id(t.field)
        if fid is None:
            return Sql(_NOTHING)
        if ftype in ("long", "date"):
            lo, hi = self.bounds(t, ftype)
            return Sql("SELECT doc AS id FROM nums WHERE f = ? AND v >= ? AND v < ?",
                       (fid, lo, hi))
        if ftype == "ip":
            return Sql(*self._terms(fid, *self.ip(t)))
        if t.mode == "range":
            rng = t.range
            assert rng is not None
            conds, args = [], []
            if rng.lo is not None:
                conds.append("v >= ?" if rng.lo_incl else "v > ?")
                args.append(keyword(rng.lo))
            if rng.hi is not None:
                conds.append("v <= ?" if rng.hi_incl else "v < ?")
                args.append(keyword(rng.hi))
            return Sql(*self._terms(fid, " AND ".join(conds) or "1", tuple(args)))
        if t.mode == "wildcard":
            return self.wildcard(fid, t.value, t.field in SUFFIX_FIELDS)
        return Sql(*self._terms(fid, "v = ?", (keyword(t.value),)))

    def wildcard(self, fid: int, raw: str, reversed_kept: bool) -> Sql:
        pattern = glob_pattern(raw)
        prefix = _literal_prefix(raw)
        if prefix:  # an index range, then the pattern
            return Sql(*self._terms(fid, "v >= ? AND v < ? AND v GLOB ?",
                                    (prefix, _next(prefix), pattern)))
        suffix = _literal_prefix(raw[::-1].replace("*\\", "\\*").replace("?\\", "\\?"))
        if suffix and reversed_kept:  # reversed values, under the field's negative id
            reversed_pattern = glob_pattern(raw[::-1].replace("*\\", "\\*")
                                            .replace("?\\", "\\?"))
            return Sql(*self._terms(-fid, "v >= ? AND v < ? AND v GLOB ?",
                                    (suffix, _next(suffix), reversed_pattern)))
        return Sql(*self._terms(fid, "v GLOB ?", (pattern,)))  # every value of the field

    def ip(self, t: Term) -> tuple[str, tuple[object, ...]]:
        if t.mode == "wildcard":
            raise self.error(t, f"wildcards do not apply to the ip field {t.field}: use a "
                             "CIDR network (e.g. 10.0.0.0/8)")
        if t.mode == "range":
            assert t.range is not None
            lo = parse_ip(t.range.lo) if t.range.lo else "0" * 32
            hi = parse_ip(t.range.hi) if t.range.hi else "f" * 32
            if lo is None or hi is None:
                raise self.error(t, f"expected IP addresses as the ends of the {t.field} "
                                 "range")
            return "v >= ? AND v <= ?", (lo, hi)
        if "/" in t.value:
            try:
                first, last = cidr_range(t.value)
            except QueryError as exc:
                raise self.error(t, str(exc)) from None
            return "v >= ? AND v <= ?", (first, last)
        address = parse_ip(t.value)
        if address is None:
            raise self.error(t, f"{t.value!r} is not an IP address or CIDR network "
                             f"({t.field} is an ip field)")
        return "v = ?", (address,)

    def bounds(self, t: Term, ftype: str) -> tuple[int, int]:
        """[lo, hi) of a long or date term."""
        if t.mode == "wildcard":
            raise self.error(t, f"wildcards do not apply to the {ftype} field {t.field}: "
                             "use a range such as [1000 TO 2000]")

        def one(value: str) -> tuple[int, int]:
            try:
                if ftype == "date":
                    return parse_time(value, now_us=self.now_us)
                n = parse_long(value)
                return n, n + 1
            except QueryError as exc:
                raise self.error(t, f"{t.field}: {exc}") from None

        if t.mode != "range":
            return one(t.value)
        rng = t.range
        assert rng is not None
        lo = -(2**63) if rng.lo is None else one(rng.lo)[0 if rng.lo_incl else 1]
        hi = 2**63 - 1 if rng.hi is None else one(rng.hi)[1 if rng.hi_incl else 0]
        return lo, hi

    def fts_column(self, t: Term) -> str | None:
        """The FTS5 column a term searches, or None when it is no full-text term."""
        if t.field is None:
            return "anytext"
        if FIELDS[t.field] == "text" and (t.mode in ("exact", "phrase") or (
                t.mode == "wildcard" and re.fullmatch(r"\w+\*", t.value))):
            return FTS_COLUMN_OF[t.field]
        return None

    def fts_match(self, t: Term, column: str) -> str:
        """The FTS5 MATCH expression of a full-text term."""
        if t.mode == "range":
            raise self.error(t, "ranges apply to long, date, ip and keyword fields, not "
                             "to free text")
        if t.mode == "wildcard":
            m = re.fullmatch(r"(\w+)\*", t.value)
            if m is None:
                raise self.error(t, "in free text a wildcard may only end a word (invoi*); "
                                 "for other patterns name the field (file.name:*.exe)")
            return f"{column} : {_fts_phrase(m.group(1))} *"
        if not re.search(r"\w", t.value):
            raise self.error(t, f"nothing to search in {t.value!r}: give letters or digits")
        return f"{column} : {_fts_phrase(t.value)}"

    def fts(self, t: Term, column: str) -> Sql:
        return Sql(_FTS_SET, (self.fts_match(t, column),))

    # ---- trees ---------------------------------------------------------------------------
    def estimate(self, node: Node) -> int:
        if isinstance(node, Not):
            return 2**62
        if isinstance(node, Term):
            s = self.leaf(node)
            row = self.index.db.execute(
                f"SELECT count(*) FROM ({s.sql} LIMIT {ESTIMATE_CAP})", s.args).fetchone()
            return int(row[0])
        sizes = [self.estimate(c) for c in node.children]
        return min(sizes) if isinstance(node, And) else sum(sizes)

    def set(self, node: Node) -> Sql:
        if isinstance(node, Term):
            return self.leaf(node)
        if isinstance(node, Or):
            parts = [self.set(c) for c in node.children]
            return Sql(" UNION ".join(f"SELECT id FROM ({p.sql})" for p in parts),
                       tuple(a for p in parts for a in p.args))
        if isinstance(node, Not):
            probe = self.probe(node, "d.id")
            return Sql(f"SELECT d.id AS id FROM docs d WHERE {probe.sql}", probe.args)
        positives = [c for c in node.children if not isinstance(c, Not)]
        if not positives:
            probe = self.probe(node, "d.id")
            return Sql(f"SELECT d.id AS id FROM docs d WHERE {probe.sql}", probe.args)
        texts = [c for c in positives if isinstance(c, Term) and self.fts_column(c)]
        if len(texts) > 1:  # one MATCH for all the words: FTS5 intersects its own lists
            match = " AND ".join(f"({self.fts_match(t, self.fts_column(t) or '')})"
                                 for t in texts)
            base = Sql(_FTS_SET, (match,))
            rest = [self.probe(c, "s.id") for c in node.children
                    if all(c is not t for t in texts)]
            if not rest:
                return base
        else:
            sizes = [(self.estimate(c), i) for i, c in enumerate(positives)]
            size, i = min(sizes)
            driver = positives[i]
            base = self.set(driver)
            # few documents to check: each against its own values (by_doc), not against
            # every document of a wide term
            rest = [self.probe(c, "s.id", by_doc=size < ESTIMATE_CAP)
                    for c in node.children if c is not driver]
        where = " AND ".join(p.sql for p in rest)
        return Sql(f"SELECT s.id AS id FROM ({base.sql}) s WHERE {where}",
                   (*base.args, *(a for p in rest for a in p.args)))

    def probe(self, node: Node, x: str, by_doc: bool = False) -> Sql:
        """A condition true when the document ``x`` matches ``node``."""
        if isinstance(node, Term):
            return self.term_probe(node, x, by_doc)
        if isinstance(node, Not):
            inner = self.probe(node.child, x, by_doc)
            return Sql(f"NOT ({inner.sql})", inner.args)
        parts = [self.probe(c, x, by_doc) for c in node.children]
        op = " AND " if isinstance(node, And) else " OR "
        return Sql("(" + op.join(p.sql for p in parts) + ")",
                   tuple(a for p in parts for a in p.args))

    def term_probe(self, t: Term, x: str, by_doc: bool = False) -> Sql:
        """Equality: a point lookup of (field, value, x); ``@timestamp``: the document's
        own time; full text: a lookup of (match, x); anything else: with ``by_doc`` the
        document's own values (:mod:`.docmatch`), else membership in the term's set (read
        once)."""
        ftype = FIELDS.get(t.field or "")
        fid = self.index.field_id(t.field) if t.field else None
        if t.field == "@timestamp":
            lo, hi = self.bounds(t, "date")
            return Sql(f"(SELECT ts FROM docs WHERE id = {x}) BETWEEN ? AND ?", (lo, hi - 1))
        if fid is not None and t.mode in ("exact", "phrase"):
            if ftype == "long":
                lo, hi = self.bounds(t, "long")
                return Sql(f"EXISTS (SELECT 1 FROM nums WHERE f = ? AND v = ? AND doc = {x})",
                           (fid, lo))
            if ftype == "keyword" or (ftype == "ip" and "/" not in t.value):
                value = keyword(t.value) if ftype == "keyword" else self.ip(t)[1][0]
                return Sql(f"EXISTS (SELECT 1 FROM terms WHERE f = ? AND v = ? AND doc = {x})",
                           (fid, value))
        column = self.fts_column(t)
        if column is not None:
            return Sql(f"EXISTS (SELECT 1 FROM fts WHERE fts MATCH ? AND rowid = {x})",
                       (self.fts_match(t, column),))
        if by_doc and t.field is not None:
            n = self.matcher.add(t.field, self.predicate(t, ftype or ""))
            return Sql(f"pw_match((SELECT body FROM docs WHERE id = {x}), ?)", (n,))
        s = self.leaf(t)
        return Sql(f"{x} IN ({s.sql})", s.args)

    def predicate(self, t: Term, ftype: str) -> docmatch.Predicate:
        """The term as a check of one document's values (as :meth:`leaf` selects)."""
        if ftype in ("long", "date"):
            return docmatch.number_range(*self.bounds(t, ftype))
        if ftype == "ip":
            where, args = self.ip(t)
            if where == "v = ?":
                return docmatch.equals(str(args[0]))
            return docmatch.string_range(str(args[0]), str(args[1]))
        if t.mode == "range":
            assert t.range is not None
            return docmatch.string_range(
                None if t.range.lo is None else keyword(t.range.lo),
                None if t.range.hi is None else keyword(t.range.hi),
                t.range.lo_incl, t.range.hi_incl)
        if t.mode == "wildcard":
            return docmatch.glob(glob_pattern(t.value))
        return docmatch.equals(keyword(t.value))
