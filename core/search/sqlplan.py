"""A parsed query (:mod:`.lang`) as SQL over the index's tables (:mod:`.index`).

Each node has two forms: a *set* (``SELECT id ...``: the documents it matches, read from
an index) and a *probe* (a condition on one document id ``X``: point lookups). An AND
reads its most selective positive child as a set (estimated by counting at most
:data:`ESTIMATE_CAP` rows of each) and probes the others for each of its documents; an OR
is the UNION of its children's sets; NOT is a negated probe. Only a query with no
positive term at all (``NOT x``) reads every document.

A query whose estimate reaches :data:`ESTIMATE_CAP` is large: :mod:`.newest` walks it
newest first for its hits instead of reading it whole; counting it (:meth:`Planner.set`
with a cap) reads at most ``cap + 1`` rows of each set it starts from
(:attr:`Planner.capped` lists them: the count is a lower bound when one had more).
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

#: Rows counted per term to choose the set an AND starts from; a query whose estimate
#: reaches it is large: its newest hits are walked (:mod:`.newest`), not sorted.
ESTIMATE_CAP = 2000
#: Rows of a large set a count reads when each of its documents is probed for the other
#: terms of an AND by index lookups (~2-5 µs each) ...
PROBED_COUNT_CAP = 5000
#: ... and when some term is checked against each document's own values
#: (:mod:`.docmatch`, ~40 µs each).
CHECKED_COUNT_CAP = 500
#: A set of no documents.
NOTHING = "SELECT NULL AS id WHERE 0"
_FTS_SET = "SELECT rowid AS id FROM fts WHERE fts MATCH ?"


@dataclass(frozen=True)
class Sql:
    sql: str
    args: tuple[object, ...] = ()


@dataclass(frozen=True)
class Scan:
    """The postings of one term: rows of ``table`` (``terms`` or ``nums``) of field id
    ``fid`` whose value ``v`` satisfies every ``(operator, value)`` of ``conds`` and, when
    given, ``v GLOB glob``."""

    table: str
    fid: int
    conds: tuple[tuple[str, object], ...] = ()
    glob: str | None = None

    @property
    def equality(self) -> bool:
        return len(self.conds) == 1 and self.conds[0][0] == "=" and self.glob is None

    def cond(self, lower: bool = True, glob: bool = True) -> Sql:
        """The WHERE of the scan (without its lower bounds or its pattern if asked)."""
        conds = [(op, v) for op, v in self.conds if lower or op[0] != ">"]
        pattern = [self.glob] if glob and self.glob is not None else []
        return Sql(" AND ".join(["f = ?", *(f"v {op} ?" for op, _ in conds),
                                 *("v GLOB ?" for _ in pattern)]),
                   (self.fid, *(v for _, v in conds), *pattern))

    @property
    def sql(self) -> Sql:
        c = self.cond()
        return Sql(f"SELECT doc AS id FROM {self.table} WHERE {c.sql}", c.args)


@dataclass
class _Capped:
    """A set read at most ``cap + 1`` rows deep by a count (``limited``)."""

    sql: Sql
    cap: int
    limited: Sql


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
        self._estimates: dict[Term, int] = {}
        self._scans: dict[Term, Scan | None] = {}
        #: (postings, distinct values) of a scan's first ESTIMATE_CAP postings.
        self.samples: dict[Scan, tuple[int, int]] = {}
        #: The sets the last :meth:`set` with a cap read at most ``cap + 1`` rows of.
        self.capped: list[_Capped] = []

    def error(self, term: Term, message: str) -> SearchSyntaxError:
        return SearchSyntaxError(self.text, term.pos, message)

    # ---- leaves --------------------------------------------------------------------------
    def leaf(self, t: Term) -> Sql:
        """The set of documents a term matches."""
        column = self.fts_column(t)
        if column is not None:
            return self.fts(t, column)
        scan = self.scan(t)
        return Sql(NOTHING) if scan is None else scan.sql

    def scan(self, t: Term) -> Scan | None:
        """The postings a (not full-text) term reads; None when its field holds nothing."""
        if t not in self._scans:
            self._scans[t] = self._scan(t)
        return self._scans[t]

    def _scan(self, t: Term) -> Scan | None:
        assert t.field is not None
        ftype = FIELDS[t.field]
        fid = self.index.field_id(t.field)
        if fid is None:
            return None
        if ftype in ("long", "date"):
            lo, hi = self.bounds(t, ftype)  # one integer: an equality
            return Scan("nums", fid, (("=", lo),) if hi == lo + 1 else ((">=", lo), ("<", hi)))
        if ftype == "ip":
            return Scan("terms", fid, self.ip(t))
        if t.mode == "range":
            rng = t.range
            assert rng is not None
            conds: list[tuple[str, object]] = []
            if rng.lo is not None:
                conds.append((">=" if rng.lo_incl else ">", keyword(rng.lo)))
            if rng.hi is not None:
                conds.append(("<=" if rng.hi_incl else "<", keyword(rng.hi)))
            return Scan("terms", fid, tuple(conds))
        if t.mode == "wildcard":
            return self.wildcard(fid, t.value, t.field in SUFFIX_FIELDS)
        return Scan("terms", fid, (("=", keyword(t.value)),))

    def wildcard(self, fid: int, raw: str, reversed_kept: bool) -> Scan:
        pattern = glob_pattern(raw)
        prefix = _literal_prefix(raw)
        if prefix:  # an index range, then the pattern
            return Scan("terms", fid, ((">=", prefix), ("<", _next(prefix))), pattern)
        suffix = _literal_prefix(raw[::-1].replace("*\\", "\\*").replace("?\\", "\\?"))
        if suffix and reversed_kept:  # reversed values, under the field's negative id
            reversed_pattern = glob_pattern(raw[::-1].replace("*\\", "\\*")
                                            .replace("?\\", "\\?"))
            return Scan("terms", -fid, ((">=", suffix), ("<", _next(suffix))),
                        reversed_pattern)
        return Scan("terms", fid, (), pattern)  # every value of the field

    def ip(self, t: Term) -> tuple[tuple[str, object], ...]:
        """The conditions on ``v`` of a term on an ip field."""
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
            return (">=", lo), ("<=", hi)
        if "/" in t.value:
            try:
                first, last = cidr_range(t.value)
            except QueryError as exc:
                raise self.error(t, str(exc)) from None
            return (">=", first), ("<=", last)
        address = parse_ip(t.value)
        if address is None:
            raise self.error(t, f"{t.value!r} is not an IP address or CIDR network "
                             f"({t.field} is an ip field)")
        return (("=", address),)

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
            rows = self._estimates.get(node)
            if rows is None:
                s = self.leaf(node)
                rows = self._estimates[node] = int(self.index.db.execute(
                    f"SELECT count(*) FROM ({s.sql} LIMIT {ESTIMATE_CAP})", s.args
                ).fetchone()[0])
            return rows
        sizes = [self.estimate(c) for c in node.children]
        return min(sizes) if isinstance(node, And) else sum(sizes)

    def set(self, node: Node, cap: int | None = None) -> Sql:
        """The documents ``node`` matches (unordered, an id may repeat). With ``cap`` (a
        count), every set it starts from is read at most ``cap + 1`` rows deep (and listed
        in :attr:`capped`)."""
        if isinstance(node, Term):
            return self._capped(self.leaf(node), cap)
        if isinstance(node, Or):
            parts = [self.set(c, cap) for c in node.children]
            return Sql(" UNION ".join(f"SELECT id FROM ({p.sql})" for p in parts),
                       tuple(a for p in parts for a in p.args))
        positives = [] if isinstance(node, Not) else [
            c for c in node.children if not isinstance(c, Not)]
        if not positives:
            if cap is None:
                probe = self.probe(node, "d.id")
                return Sql(f"SELECT d.id AS id FROM docs d WHERE {probe.sql}", probe.args)
            probe = self.probe(node, "d.id", by_doc=None)
            docs = self._capped(Sql("SELECT id FROM docs"), self._probed_cap(cap, [node]))
            return Sql(f"SELECT d.id AS id FROM ({docs.sql}) d WHERE {probe.sql}",
                       (*docs.args, *probe.args))
        assert isinstance(node, And)
        texts = self.texts(node)
        if texts is not None:
            base, others = texts
            by_doc: bool | None = None if cap is not None else False
            base = self._capped(base, self._probed_cap(cap, others) if others else cap)
            if not others:
                return base
        else:
            size = self.estimate(node)
            if cap is None or size < ESTIMATE_CAP:
                driver = min(positives, key=self.estimate)  # the first of the smallest
                # few documents to check: each against its own values (by_doc), not
                # against every document of a wide term
                by_doc = size < ESTIMATE_CAP
            else:
                driver = self.drivers(node)[0]
                by_doc = None
            others = [c for c in node.children if c is not driver]
            base = self.set(driver, self._probed_cap(cap, others) if by_doc is None else cap)
        return self.and_(base, [self.probe(c, "s.id", by_doc) for c in others])

    def and_(self, base: Sql, probes: list[Sql]) -> Sql:
        where = " AND ".join(p.sql for p in probes)
        return Sql(f"SELECT s.id AS id FROM ({base.sql}) s WHERE {where}",
                   (*base.args, *(a for p in probes for a in p.args)))

    def texts(self, node: And) -> tuple[Sql, list[Node]] | None:
        """Several full-text terms of an AND as one MATCH (FTS5 intersects its own lists)
        and the AND's other children; None with fewer than two."""
        texts = [c for c in node.children if isinstance(c, Term) and self.fts_column(c)]
        if len(texts) < 2:
            return None
        match = " AND ".join(f"({self.fts_match(t, self.fts_column(t) or '')})"
                             for t in texts)
        return Sql(_FTS_SET, (match,)), [c for c in node.children
                                         if all(c is not t for t in texts)]

    def _capped(self, s: Sql, cap: int | None) -> Sql:
        if cap is None:
            return s
        limited = Sql(f"SELECT id FROM ({s.sql} LIMIT {cap + 1})", s.args)
        self.capped.append(_Capped(s, cap, limited))
        return limited

    def _probed_cap(self, cap: int | None, probed: list[Node]) -> int | None:
        """The rows a count reads of a large set whose documents are probed for
        ``probed``."""
        if cap is None:
            return None
        checked = any(self.checked(c) for c in probed)
        return min(cap, CHECKED_COUNT_CAP if checked else PROBED_COUNT_CAP)

    def first_rows(self, t: Term) -> list[int]:
        """The ids of a term's first ESTIMATE_CAP + 1 postings (its estimate, and the
        sample :func:`.newest.values` decides by)."""
        scan = self.scan(t)
        if scan is None:
            return []
        c = scan.cond()
        rows = self.index.db.execute(f"SELECT doc, v FROM {scan.table} WHERE {c.sql} "
                                     f"LIMIT {ESTIMATE_CAP + 1}", c.args).fetchall()
        self._estimates[t] = min(len(rows), ESTIMATE_CAP)
        first = rows[:ESTIMATE_CAP]
        self.samples[scan] = (len(first), len({v for _, v in first}))
        return [r[0] for r in rows]

    def drivers(self, node: And) -> list[Node]:
        """An AND's positive children in the order to try as the walk: fewest documents
        to check by their own values among the others first, then the smallest."""
        positives = [c for c in node.children if not isinstance(c, Not)]

        def rank(c: Node) -> tuple[int, int]:
            return (sum(self.checked(o) for o in node.children if o is not c),
                    self.estimate(c))
        return sorted(positives, key=rank)

    def checked(self, node: Node) -> int:
        """How many of ``node``'s terms a probe (``by_doc=None``) checks against each
        document's own values: large terms with no point lookup."""
        if isinstance(node, Term):
            return int(not self.point_probe(node) and self.estimate(node) >= ESTIMATE_CAP)
        if isinstance(node, Not):
            return self.checked(node.child)
        return sum(self.checked(c) for c in node.children)

    def point_probe(self, t: Term) -> bool:
        """Whether :meth:`term_probe` checks ``t`` by an index lookup of the document."""
        if t.field is None or t.field == "@timestamp" or self.fts_column(t) is not None:
            return True
        ftype = FIELDS[t.field]
        return t.mode in ("exact", "phrase") and self.index.field_id(t.field) is not None \
            and (ftype in ("long", "keyword") or (ftype == "ip" and "/" not in t.value))

    # ---- probes ----------------------------------------------------------------------
    def probe(self, node: Node, x: str, by_doc: bool | None = False) -> Sql:
        """A condition true when the document ``x`` matches ``node`` (``by_doc``: see
        :meth:`term_probe`)."""
        if isinstance(node, Term):
            return self.term_probe(node, x, by_doc)
        if isinstance(node, Not):
            inner = self.probe(node.child, x, by_doc)
            return Sql(f"NOT ({inner.sql})", inner.args)
        parts = [self.probe(c, x, by_doc) for c in node.children]
        op = " AND " if isinstance(node, And) else " OR "
        return Sql("(" + op.join(p.sql for p in parts) + ")",
                   tuple(a for p in parts for a in p.args))

    def term_probe(self, t: Term, x: str, by_doc: bool | None = False) -> Sql:
        """Equality: a point lookup of (field, value, x); ``@timestamp``: the document's
        own time; full text: a lookup of (match, x); anything else: with ``by_doc`` the
        document's own values (:mod:`.docmatch`), else membership in the term's set (read
        once); ``by_doc=None``: the own values when the term's set is large."""
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
                value = keyword(t.value) if ftype == "keyword" else self.ip(t)[0][1]
                return Sql(f"EXISTS (SELECT 1 FROM terms WHERE f = ? AND v = ? AND doc = {x})",
                           (fid, value))
        column = self.fts_column(t)
        if column is not None:
            return Sql(f"EXISTS (SELECT 1 FROM fts WHERE fts MATCH ? AND rowid = {x})",
                       (self.fts_match(t, column),))
        if by_doc is None:
            by_doc = self.estimate(t) >= ESTIMATE_CAP
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
            conds = self.ip(t)
            if conds[0][0] == "=":
                return docmatch.equals(str(conds[0][1]))
            return docmatch.string_range(str(conds[0][1]), str(conds[1][1]))
        if t.mode == "range":
            assert t.range is not None
            return docmatch.string_range(
                None if t.range.lo is None else keyword(t.range.lo),
                None if t.range.hi is None else keyword(t.range.hi),
                t.range.lo_incl, t.range.hi_incl)
        if t.mode == "wildcard":
            return docmatch.glob(glob_pattern(t.value))
        return docmatch.equals(keyword(t.value))
