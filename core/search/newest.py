"""The newest hits of a query and its count, at a cost bounded by the limit and the caps,
not by the number of matches (:mod:`.sqlplan` makes the SQL).

A small query (its estimate under :data:`.sqlplan.ESTIMATE_CAP`) is read whole and
sorted. A large one is *walked*: SQL that SQLite returns newest first without reading
every match, left at the limit — an equality term's postings backwards (they are kept in
id order), FTS5 by rowid, a range, prefix, suffix or CIDR network value by value (``v IN
(values)``: SQLite reads each value's newest postings and moves to the next value as soon
as they cannot enter the hits); an AND walks one such child and probes the others per
document; an OR takes each child's newest hits. The count reads at most ``cap + 1`` rows
of each set it starts from (:data:`.sqlplan.PROBED_COUNT_CAP`, CHECKED_COUNT_CAP when they
are probed for the other terms of an AND): past that it is a lower bound.
"""

from __future__ import annotations

import json
import sqlite3

from pcapwire.search import sqlplan
from pcapwire.search.lang import And, Node, Or, Term
from pcapwire.search.sqlplan import Planner, Scan, Sql

#: Most distinct values of a range, prefix, suffix or CIDR term whose postings are walked
#: value by value (one index seek each); with more, the term is read whole and sorted.
MERGE_VALUES_CAP = 4096
#: A range is walked value by value only when the first ESTIMATE_CAP of its postings hold
#: at least this many documents per distinct value (a time window, nearly one document per
#: value, is cheaper read whole).
MIN_DOCS_PER_VALUE = 16
#: Documents a walk checks against their own values (:mod:`.docmatch`, ~40 µs each)
#: before it gives up and the sets are read whole (a walk whose other terms rarely match).
WALK_CHECKS_CAP = 250
#: SQLite VM instructions a walk may run (~10-30 ms here) before it gives up and the sets
#: are read whole: an AND whose walked child holds many documents the others rarely match.
WALK_STEPS_CAP = 2_000_000


def top(p: Planner, node: Node, limit: int) -> tuple[list[int], int | None]:
    """The ids of the ``limit`` newest documents ``node`` matches, newest first, and their
    number when finding them read them all (a small term), else None."""
    in_order = _in_order(p, node)
    if isinstance(node, Term) and not in_order:
        rows = p.first_rows(node)
        if len(rows) <= sqlplan.ESTIMATE_CAP:  # all of them
            ids = sorted(set(rows), reverse=True)
            return ids[:limit], len(ids)
    large = in_order or p.estimate(node) >= sqlplan.ESTIMATE_CAP
    if large and isinstance(node, Or):
        found = {i for c in node.children for i in top(p, c, limit)[0]}
        return sorted(found, reverse=True)[:limit], None
    w = walk(p, node) if large else None
    if w is not None:
        stopped: list[int] = []

        def stop() -> int:  # called every WALK_STEPS_CAP instructions of one statement
            stopped.append(1)
            return 1  # the first call stops it

        p.matcher.budget, p.matcher.exhausted = WALK_CHECKS_CAP, False
        p.index.db.set_progress_handler(stop, WALK_STEPS_CAP)
        try:
            return _walked(p, w, limit), None
        except sqlite3.OperationalError:
            if not (p.matcher.exhausted or stopped):
                raise
        finally:
            p.matcher.budget = None
            p.index.db.set_progress_handler(None, 0)
    matched = p.set(node)
    return [r[0] for r in p.index.db.execute(
        f"SELECT DISTINCT id FROM ({matched.sql}) ORDER BY id DESC LIMIT ?",
        (*matched.args, limit))], None


def count(p: Planner, node: Node, cap: int) -> tuple[int, bool]:
    """(distinct matches of ``node`` counted to ``cap``, whether that is all of them). It
    reads at most ``cap + 1`` rows of each set it starts from (:meth:`.Planner.set`):
    when one had more, the count is a lower bound."""
    p.capped = []
    matched = p.set(node, cap)
    db = p.index.db
    if len(p.capped) == 1 and matched is p.capped[0].limited:  # one pass
        if _in_order(p, node):  # ids that cannot repeat
            rows = counted = int(db.execute(f"SELECT count(*) FROM ({matched.sql})",
                                            matched.args).fetchone()[0])
        else:
            rows, counted = db.execute(
                f"SELECT count(*), count(DISTINCT id) FROM ({matched.sql})",
                matched.args).fetchone()
        return min(counted, cap), rows <= cap
    counted = int(db.execute(
        f"SELECT count(*) FROM (SELECT DISTINCT id FROM ({matched.sql}) LIMIT ?)",
        (*matched.args, cap + 1)).fetchone()[0])
    if counted > cap:
        return cap, False
    deeper = any(db.execute(f"SELECT count(*) FROM ({c.sql.sql} LIMIT {c.cap + 1})",
                            c.sql.args).fetchone()[0] > c.cap for c in p.capped)
    return counted, not deeper


def _in_order(p: Planner, node: Node) -> bool:
    """Whether ``node``'s documents come in id order from the index as they are (a
    full-text search, an equality, several words): walked whatever their number."""
    if isinstance(node, Term):
        if p.fts_column(node) is not None:
            return True
        scan = p.scan(node)
        return scan is None or scan.equality
    return isinstance(node, And) and p.texts(node) is not None


def _walked(p: Planner, w: Sql, limit: int) -> list[int]:
    """The first ``limit`` distinct ids of a walk: ``ORDER BY id DESC LIMIT`` stops early;
    a document a range holds under several values comes again (next to itself), so a
    short page continues below its last id."""
    ids: list[int] = []
    below = 2**63 - 1
    while len(ids) < limit:
        need = limit - len(ids)
        rows = [r[0] for r in p.index.db.execute(
            f"SELECT w.id FROM ({w.sql}) w WHERE w.id < ? ORDER BY w.id DESC LIMIT ?",
            (*w.args, below, need))]
        ids += [i for n, i in enumerate(rows) if n == 0 or rows[n - 1] != i]
        if len(rows) < need:
            break
        below = rows[-1]
    return ids


def walk(p: Planner, node: Node) -> Sql | None:
    """``node``'s documents as SQL that SQLite returns newest first (``ORDER BY id DESC``)
    without reading them all, or None (NOT alone, an OR, a range of too many values): an
    AND walks the first child of :meth:`.Planner.drivers` that has such a form and probes
    the others."""
    if isinstance(node, Term):
        return walk_term(p, node, dense=True)
    if not isinstance(node, And):
        return None
    texts = p.texts(node)
    if texts is not None:
        base, others = texts
        return p.and_(base, [p.probe(c, "s.id", None) for c in others]) if others else base
    for driver in p.drivers(node):
        w = walk_term(p, driver, dense=False) if isinstance(driver, Term) else walk(p, driver)
        if w is not None:
            return p.and_(w, [p.probe(c, "s.id", None)
                              for c in node.children if c is not driver])
    return None


def walk_term(p: Planner, t: Term, dense: bool) -> Sql | None:
    """Full text: FTS5 in rowid order; equality: the postings of one value (in id order);
    a range, prefix, suffix or CIDR network: the postings of each of its values (with
    ``dense``, only when they hold enough documents per value: a term alone, else read
    whole; the driver of an AND has no such alternative)."""
    column = p.fts_column(t)
    if column is not None:
        return p.fts(t, column)
    scan = p.scan(t)
    if scan is None:
        return Sql(sqlplan.NOTHING)
    if scan.equality:
        return scan.sql
    found = values(p, scan, dense)
    if found is None:
        return None
    return Sql(f"SELECT doc AS id FROM {scan.table} WHERE f = ? AND v IN "
               "(SELECT value FROM json_each(?))", (scan.fid, json.dumps(found)))


def values(p: Planner, scan: Scan, dense: bool = True) -> list[object] | None:
    """The distinct values a scan reads (one index seek each), or None when there are more
    than :data:`MERGE_VALUES_CAP` or (with ``dense``, in its first ESTIMATE_CAP postings)
    fewer than :data:`MIN_DOCS_PER_VALUE` documents per value."""
    db = p.index.db
    if dense:
        if scan not in p.samples:
            c = scan.cond()
            p.samples[scan] = db.execute(
                f"SELECT count(*), count(DISTINCT v) FROM (SELECT v FROM {scan.table} "
                f"WHERE {c.sql} LIMIT {sqlplan.ESTIMATE_CAP})", c.args).fetchone()
        rows, distinct = p.samples[scan]
        if distinct * MIN_DOCS_PER_VALUE > rows:
            return None
    c = scan.cond(glob=False)  # the range alone
    # the next value: one seek above the last (with its upper bound only, or SQLite would
    # seek to the range's lower bound each time)
    upper = scan.cond(lower=False, glob=False)
    found = db.execute(
        f"WITH RECURSIVE vals(v) AS (SELECT (SELECT min(v) FROM {scan.table} WHERE "
        f"{c.sql}) UNION ALL SELECT (SELECT min(v) FROM {scan.table} WHERE {upper.sql} "
        f"AND v > vals.v) FROM vals WHERE vals.v IS NOT NULL "
        f"LIMIT {MERGE_VALUES_CAP + 1}) SELECT v, v GLOB ? FROM vals WHERE v IS NOT NULL",
        (*c.args, *upper.args, scan.glob or "*")).fetchall()
    if len(found) > MERGE_VALUES_CAP:
        return None
    return [v for v, matches in found if matches or scan.glob is None]
