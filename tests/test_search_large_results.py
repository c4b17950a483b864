"""Large results: a search whose sets are large walks its newest hits and stops at the
limit (equality postings backwards, a range value by value, FTS5 by rowid; an AND probes
the others per document, an OR takes each child's newest), and its count stops early
(``total`` a lower bound, ``total_exact`` false). On a real index of 900 documents made by
the index's own mapping functions, with ESTIMATE_CAP lowered so that these sets count as
large: the hits are exactly those a Python filter over the generated records gives (newest
indexed first) and those of reading the sets whole; totals below the cap are exact; the
limits (ESTIMATE_CAP, MERGE_VALUES_CAP, MIN_DOCS_PER_VALUE, PROBED_COUNT_CAP,
CHECKED_COUNT_CAP, WALK_CHECKS_CAP, WALK_STEPS_CAP, COUNT_CAP) each change the plan as
documented, never the hits."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from pcapwire.cli import main
from pcapwire.search import newest, sqlplan
from pcapwire.search import query as query_mod
from pcapwire.search.ecs import Origin, email_doc, flow_doc
from pcapwire.search.index import SearchIndex
from pcapwire.search.lang import Term, parse
from pcapwire.search.query import search
from pcapwire.search.values import iso_us

T0_NS = iso_us("2026-12-01T00:00:00Z") * 1000
N = 900
PORTS = (80, 443, 3389, 3390, 53, 443)
SUBJECTS = ("Invoice overdue", "Payment of the invoice", "Lunch friday", "Agenda")


@dataclass(frozen=True)
class Rec:
    key: str
    src: str
    dst: str
    sport: int
    dport: int
    proto: str
    sender: str = ""
    subject: str = ""

    def ips(self) -> set[str]:
        return {self.src, self.dst}


def _records() -> tuple[list[Rec], list]:
    recs, docs = [], []
    for i in range(N):
        src = f"10.{1 + i % 3}.{i % 7}.{i % 5 + 1}"
        dst = "10.1.9.9" if i % 11 == 0 else f"192.0.2.{i % 50 + 1}"
        if i % 4 == 3:  # an email over SMTP
            sender = f"user{i % 13}@{('corp', 'evil', 'mail')[i % 3]}." \
                     f"{'example' if i // 4 % 2 else 'com'}"
            subject = SUBJECTS[i // 4 % len(SUBJECTS)]
            d = email_doc({"id": f"e{i}", "flow": {"proto": "tcp", "src_ip": src,
                                                   "src_port": 50000 + i, "dest_ip": dst,
                                                   "dest_port": 25},
                           "ts": T0_NS / 1e9 + i, "protocol": "smtp", "subject": subject,
                           "text_body": "see attached", "sha256": f"{i:064x}",
                           "extra": {"from_address": sender, "to_addresses": ["a@b.example"]}},
                          Origin(case="c1", run_id="r1"), None)
            recs.append(Rec(d.key, src, dst, 50000 + i, 25, "tcp", sender.lower(), subject))
        else:
            dport = PORTS[i % len(PORTS)]
            proto = "udp" if dport == 53 or i % 10 == 0 else "tcp"
            sport = 40000 + (i * 37) % 500
            d = flow_doc({"flow_id": i, "proto": proto, "src_ip": src, "src_port": sport,
                          "dest_ip": dst, "dest_port": dport, "pkts_toserver": 1,
                          "bytes_toserver": 100, "pkts_toclient": 1, "bytes_toclient": 10},
                         T0_NS + i * 10**9, T0_NS + i * 10**9 + 1)
            recs.append(Rec(d.key, src, dst, sport, dport, proto))
        docs.append(d)
    return recs, docs


RECS, DOCS = _records()


def _in(net: str) -> Callable[[str], bool]:
    network = ipaddress.ip_network(net)
    return lambda ip: ipaddress.ip_address(ip) in network


def _words(r: Rec) -> set[str]:
    return set(r.subject.lower().split())


#: query -> the records it matches (the Python side of every comparison).
CASES: dict[str, Callable[[Rec], bool]] = {
    "destination.port:443": lambda r: r.dport == 443,
    "destination.port:[3000 TO 4000]": lambda r: 3000 <= r.dport <= 4000,
    "source.port:[40100 TO 49999]": lambda r: 40100 <= r.sport <= 49999,
    "related.ip:10.1.0.0/16": lambda r: any(_in("10.1.0.0/16")(ip) for ip in r.ips()),
    "source.ip:10.2.0.0/16": lambda r: _in("10.2.0.0/16")(r.src),
    "email.from.address:*.example": lambda r: r.sender.endswith(".example"),
    "email.from.address:user1*": lambda r: r.sender.startswith("user1"),
    "destination.port:[3000 TO 4000] AND network.transport:udp":
        lambda r: 3000 <= r.dport <= 4000 and r.proto == "udp",
    "network.transport:tcp AND source.ip:10.1.0.0/16":
        lambda r: r.proto == "tcp" and _in("10.1.0.0/16")(r.src),
    "network.transport:tcp AND NOT destination.port:[3000 TO 4000]":
        lambda r: r.proto == "tcp" and not 3000 <= r.dport <= 4000,
    "destination.port:443 OR destination.port:80": lambda r: r.dport in (443, 80),
    "invoice": lambda r: "invoice" in _words(r),
    "invoice AND payment": lambda r: {"invoice", "payment"} <= _words(r),
    "invoice AND email.from.address:*.example":
        lambda r: "invoice" in _words(r) and r.sender.endswith(".example"),
    "NOT destination.port:443": lambda r: r.dport != 443,
    "destination.port:443 AND NOT source.ip:10.0.0.0/8": lambda r: False,
    "destination.port:443 AND NOT destination.ip:192.0.2.0/24":
        lambda r: r.dport == 443 and r.dst == "10.1.9.9",
}


def expected(query: str, limit: int) -> list[str]:
    """The keys a search must give: the matching records, newest indexed first."""
    return [r.key for r in reversed(RECS) if CASES[query](r)][:limit]


def read_whole(index: SearchIndex, query: str, limit: int) -> list[int]:
    """The ids reading the query's sets whole and sorting them gives (the plan for a
    small result)."""
    matched = sqlplan.Planner(index, query).set(parse(query))
    return [r[0] for r in index.db.execute(
        f"SELECT DISTINCT id FROM ({matched.sql}) ORDER BY id DESC LIMIT ?",
        (*matched.args, limit))]


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> SearchIndex:
    ix = SearchIndex(tmp_path_factory.mktemp("large") / "search.sqlite")
    ix.put(DOCS)
    return ix


@pytest.fixture
def large(monkeypatch) -> None:
    """Sets of more than 8 documents are large; a range of >= 1 document per value is
    walked value by value."""
    monkeypatch.setattr(sqlplan, "ESTIMATE_CAP", 8)
    monkeypatch.setattr(newest, "MIN_DOCS_PER_VALUE", 1)


def test_the_records_cover_what_the_plans_need() -> None:
    """Counts of the generated records (so the cases below test what they say)."""
    def n(q: str) -> int:
        return len(expected(q, N))
    assert [n(q) for q in ("destination.port:443", "destination.port:[3000 TO 4000]",
                           "related.ip:10.1.0.0/16", "email.from.address:*.example",
                           "invoice", "invoice AND payment")] == [150, 225, 354, 112, 113, 56]
    assert n("destination.port:443 AND NOT destination.ip:192.0.2.0/24") == 13
    # a flow whose two addresses are both in 10.1.0.0/16 (related.ip holds it twice)
    assert sum(1 for r in RECS if r.src.startswith("10.1.") and r.dst == "10.1.9.9") == 28


@pytest.mark.parametrize("query", CASES)
@pytest.mark.parametrize("limit", [1, 7, 50])
def test_walked_hits_are_the_newest_matches(index, large, query: str, limit: int) -> None:
    result = search(index, query, limit=limit)
    assert [h["key"] for h in result.hits] == expected(query, limit)
    assert [h["id"] for h in result.hits] == read_whole(index, query, limit)
    total = len(expected(query, N))
    if total <= limit:
        assert (result.total, result.total_exact) == (total, True)
    else:  # counted to COUNT_CAP (10,000) from every set it starts from: all of them
        assert result.total <= total
        if result.total_exact:
            assert result.total == total


def test_exact_totals_below_the_cap(index, large, monkeypatch) -> None:
    """Every start set here is read whole by the count (fewer rows than COUNT_CAP,
    PROBED_COUNT_CAP and, raised above the 900 documents, CHECKED_COUNT_CAP): the totals
    are exact."""
    monkeypatch.setattr(sqlplan, "CHECKED_COUNT_CAP", N)
    for query in CASES:
        result = search(index, query, limit=5)
        assert (result.total, result.total_exact) == (len(expected(query, N)), True), query


def test_the_plans_walk_and_stop(index, large) -> None:
    """Which form each query takes: walked (no sort of every match) or read whole."""
    def walk(q: str) -> str | None:
        w = newest.walk(sqlplan.Planner(index, q), parse(q))
        return None if w is None else w.sql

    assert "v IN (SELECT value FROM json_each(?))" in (walk("related.ip:10.1.0.0/16") or "")
    # one value: its postings in id order
    assert walk("destination.port:443") == "SELECT doc AS id FROM nums WHERE f = ? AND v = ?"
    assert "fts MATCH" in (walk("invoice AND payment") or "")
    # the CIDR network drives (its values walked), the transport is a point probe
    plan = walk("network.transport:tcp AND source.ip:10.1.0.0/16") or ""
    assert plan.index("json_each") < plan.index("EXISTS (SELECT 1 FROM terms")
    assert walk("destination.port:443 OR destination.port:80") is None  # each child walks
    assert walk("NOT destination.port:443") is None


def test_an_and_walks_a_range_whatever_its_density(index, large, monkeypatch) -> None:
    """A range alone with few documents per value is read whole; as the walked child of
    an AND (whose other choice would check each document's own addresses) it is walked."""
    monkeypatch.setattr(newest, "MIN_DOCS_PER_VALUE", 1000)
    query = "network.transport:tcp AND source.ip:10.1.0.0/16"
    planner = sqlplan.Planner(index, query)
    assert newest.walk(planner, parse("source.ip:10.1.0.0/16")) is None
    plan = newest.walk(planner, parse(query))
    assert plan is not None and "json_each" in plan.sql
    assert [h["key"] for h in search(index, query, limit=20).hits] == expected(query, 20)


def test_a_range_of_too_many_values_is_read_whole(index, large, monkeypatch) -> None:
    query = "source.port:[40100 TO 49999]"
    ports = sorted({r.sport for r in RECS if CASES[query](r)})
    assert len(ports) == 300
    term = parse(query)
    assert isinstance(term, Term)
    scan = sqlplan.Planner(index, query).scan(term)
    assert scan is not None
    assert newest.values(sqlplan.Planner(index, query), scan) == ports
    monkeypatch.setattr(newest, "MERGE_VALUES_CAP", 299)
    assert newest.values(sqlplan.Planner(index, query), scan) is None
    assert [h["key"] for h in search(index, query, limit=9).hits] == expected(query, 9)
    monkeypatch.setattr(newest, "MERGE_VALUES_CAP", 300)
    assert newest.values(sqlplan.Planner(index, query), scan) == ports
    monkeypatch.setattr(newest, "MIN_DOCS_PER_VALUE", 2)  # its first 8 postings: 4 ports
    assert newest.values(sqlplan.Planner(index, query), scan) == ports
    monkeypatch.setattr(newest, "MIN_DOCS_PER_VALUE", 3)
    assert newest.values(sqlplan.Planner(index, query), scan) is None
    assert [h["key"] for h in search(index, query, limit=9).hits] == expected(query, 9)


def test_a_walk_that_checks_too_many_documents_reads_the_sets_whole(index, large,
                                                                    monkeypatch) -> None:
    """13 of the 150 flows to 443 go outside 192.0.2.0/24: the walk checks the 443 flows'
    own addresses, newest first; past WALK_CHECKS_CAP it gives up and the sets are read
    whole."""
    query = "destination.port:443 AND NOT destination.ip:192.0.2.0/24"
    planner = sqlplan.Planner(index, query)
    assert newest.top(planner, parse(query), 50)[0] == read_whole(index, query, 50)
    assert planner.matcher.exhausted is False
    monkeypatch.setattr(newest, "WALK_CHECKS_CAP", 20)
    planner = sqlplan.Planner(index, query)
    ids, _ = newest.top(planner, parse(query), 50)
    assert planner.matcher.exhausted is True
    assert ids == read_whole(index, query, 50)
    assert len(ids) == 13


def test_a_walk_past_its_steps_reads_the_sets_whole(index, large, monkeypatch) -> None:
    """WALK_STEPS_CAP SQLite instructions stop a walk's statement; the query is then read
    whole (the statements run say so), with the same hits."""
    query = "network.transport:tcp AND source.ip:10.1.0.0/16"
    statements: list[str] = []

    def read_whole_ran() -> bool:
        return any(st.startswith("SELECT DISTINCT id FROM") and "ORDER BY id DESC" in st
                   for st in statements)

    index.db.set_trace_callback(statements.append)
    try:
        assert [h["key"] for h in search(index, query, limit=20).hits] == expected(query, 20)
        assert any(st.startswith("SELECT w.id FROM") for st in statements)
        assert not read_whole_ran()
        statements.clear()
        monkeypatch.setattr(newest, "WALK_STEPS_CAP", 100)
        assert [h["key"] for h in search(index, query, limit=20).hits] == expected(query, 20)
        assert read_whole_ran()
    finally:
        index.db.set_trace_callback(None)


def test_counts_stop_early_as_lower_bounds(index, large, monkeypatch) -> None:
    monkeypatch.setattr(query_mod, "COUNT_CAP", 100)
    # one set: 150 postings, counted to 100
    result = search(index, "destination.port:443")
    assert (result.total, result.total_exact) == (100, False)
    # an AND starts from the CIDR network (300 postings, 101 read; 270 matches in all)
    result = search(index, "network.transport:tcp AND source.ip:10.1.0.0/16", limit=5)
    true_total = len(expected("network.transport:tcp AND source.ip:10.1.0.0/16", N))
    assert result.total_exact is False and 5 <= result.total < true_total
    # an OR: each child read at most 101 rows deep
    result = search(index, "destination.port:443 OR destination.port:80", limit=5)
    assert (result.total, result.total_exact) == (100, False)
    # fewer matches than the cap, every start set under it: exact
    result = search(index, "invoice AND payment", limit=5)
    assert (result.total, result.total_exact) == (56, True)
    # an AND whose start set is large: PROBED_COUNT_CAP rows of it are probed by index
    # lookups, CHECKED_COUNT_CAP when a term is checked against each document's values
    monkeypatch.setattr(query_mod, "COUNT_CAP", 10_000)
    monkeypatch.setattr(sqlplan, "PROBED_COUNT_CAP", 30)
    query = "network.transport:tcp AND source.ip:10.1.0.0/16"
    result = search(index, query, limit=5)
    assert result.total_exact is False and 5 <= result.total <= 31
    query = "network.transport:tcp AND NOT destination.port:[3000 TO 4000]"
    result = search(index, query, limit=5)  # 495 matches in 690 tcp documents
    first = [r for r in RECS if r.proto == "tcp"][:sqlplan.CHECKED_COUNT_CAP + 1]
    assert sum(1 for r in first if CASES[query](r)) == 360  # those the count reads
    assert (result.total, result.total_exact) == (360, False)
    monkeypatch.setattr(sqlplan, "CHECKED_COUNT_CAP", 30)
    result = search(index, query, limit=5)
    assert result.total_exact is False and 5 <= result.total <= 31
    assert [h["key"] for h in result.hits] == expected(query, 5)
    # the hits are matches: a count that found fewer reports the hits
    monkeypatch.setattr(sqlplan, "CHECKED_COUNT_CAP", 1)
    result = search(index, query, limit=5)
    assert (result.total, result.total_exact) == (5, False)


def test_the_cli_says_or_more(index, large, monkeypatch, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with SearchIndex.of(data) as ix:
        ix.put(DOCS)
    monkeypatch.setattr(query_mod, "COUNT_CAP", 100)
    assert main(["--data-dir", str(data), "search", "--limit", "3",
                 "destination.port:443"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "3 of 100 or more hit(s)"
    assert main(["--data-dir", str(data), "search", "--limit", "3",
                 "invoice AND payment"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "3 of 56 hit(s)"
