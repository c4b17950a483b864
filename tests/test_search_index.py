"""The index's matching semantics on documents made by the index's own mapping functions:
CIDR bounds (IPv4 and IPv6), inclusive and exclusive ranges, times (a date is its day,
now-relative), wildcards (prefix, suffix, infix; case-insensitive), words and phrases of
text fields, free text, boolean combinations and NOT; replacing a document by its key;
the limits of a search (MAX_LIMIT, COUNT_CAP); errors for values a field cannot hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from pcapwire.errors import QueryError
from pcapwire.search import index as index_mod
from pcapwire.search import query as query_mod
from pcapwire.search.ecs import Origin, email_doc, flow_doc
from pcapwire.search.index import SearchIndex
from pcapwire.search.lang import SearchSyntaxError
from pcapwire.search.query import MAX_LIMIT, search
from pcapwire.search.values import iso_us

DAY_NS = 86400 * 10**9
T0_NS = iso_us("2026-12-01T00:00:00Z") * 1000

FLOWS = [  # flow id, src, sport, dst, dport, start (ns after T0)
    (1, "198.18.0.0", 40000, "10.0.0.1", 80, 0),
    (2, "198.19.255.255", 40001, "10.0.0.2", 1000, 3600 * 10**9),
    (3, "198.20.0.0", 40002, "10.0.0.3", 2000, DAY_NS - 1),
    (4, "2001:db8::1", 40003, "2001:db8:ffff::2", 2001, DAY_NS),
    (5, "2001:db9::1", 40004, "10.0.0.5", 443, 2 * DAY_NS),
]
EMAILS = [  # id, from, to, subject, body, attachment
    ("e1", "alice@corp.example", ["bob@corp.example"], "Invoice 42 overdue",
     "Please pay the invoice.", "Invoice-42.PDF"),
    ("e2", "mallory@evil.example", ["bob@corp.example", "carol@corp.example"],
     "Re: meeting", "See the attached invoice, urgent", "invoice.exe"),
    ("e3", "bob@corp.example", ["alice@corp.example"], "Lunch?", "Tacos at noon",
     "menu.txt"),
]


def _flow(fid: int, src: str, sport: int, dst: str, dport: int, start: int):
    return flow_doc({"flow_id": fid, "proto": "tcp", "src_ip": src, "src_port": sport,
                     "dest_ip": dst, "dest_port": dport, "pkts_toserver": fid,
                     "bytes_toserver": 100 * fid, "pkts_toclient": 1, "bytes_toclient": 10},
                    T0_NS + start, T0_NS + start + 10**9)


def _email(eid: str, sender: str, to: list[str], subject: str, body: str, attachment: str):
    return email_doc({"id": eid, "flow": {"proto": "tcp", "src_ip": "10.9.0.1",
                                          "src_port": 50000, "dest_ip": "10.9.0.2",
                                          "dest_port": 25},
                      "ts": T0_NS / 1e9 + 5, "protocol": "smtp", "subject": subject,
                      "text_body": body, "sha256": eid * 32,
                      "extra": {"from_address": sender, "to_addresses": to,
                                "attachment_details": [{"filename": attachment,
                                                        "sha256": "ab" * 32}]}},
                     Origin(case=f"case-{eid}", run_id="r1"), None)


@pytest.fixture
def index(tmp_path: Path):
    with SearchIndex(tmp_path / "search.sqlite") as ix:
        ix.put([_flow(*f) for f in FLOWS] + [_email(*e) for e in EMAILS])
        yield ix


def keys(index: SearchIndex, q: str, **kw) -> set[str]:
    return {h["key"] for h in search(index, q, limit=MAX_LIMIT, **kw).hits}


def test_cidr_and_ip(index: SearchIndex) -> None:
    assert keys(index, "source.ip:198.18.0.0/15") == {"flow:1", "flow:2"}  # .18.0.0-.19.255.255
    assert keys(index, "source.ip:198.20.0.0/31") == {"flow:3"}
    assert keys(index, "source.ip:198.18.0.0") == {"flow:1"}
    assert keys(index, "source.ip:2001:db8::/32") == {"flow:4"}
    assert keys(index, "related.ip:2001:db8::/32") == {"flow:4"}
    assert keys(index, "destination.ip:10.0.0.0/8 AND source.ip:2001:db9::/32") == {"flow:5"}
    assert keys(index, "source.ip:[198.18.0.1 TO 198.20.0.0]") == {"flow:2", "flow:3"}
    with pytest.raises(SearchSyntaxError, match="not an IP address") as err:
        search(index, "url.domain:x OR source.ip:example.com")
    assert err.value.column == 27  # the value
    with pytest.raises(SearchSyntaxError, match="invalid network"):
        search(index, "source.ip:10.0.0.0/33")


def test_numeric_ranges(index: SearchIndex) -> None:
    assert keys(index, "destination.port:[1000 TO 2000]") == {"flow:2", "flow:3"}
    assert keys(index, "destination.port:{1000 TO 2000]") == {"flow:3"}
    assert keys(index, "destination.port:[1000 TO 2000}") == {"flow:2"}
    assert keys(index, "destination.port:>2000") == {"flow:4"}
    assert keys(index, "destination.port:>=2000") == {"flow:3", "flow:4"}
    assert keys(index, "destination.port:<443") == {"flow:1", "email:r1:e1", "email:r1:e2",
                                                    "email:r1:e3"}  # emails: port 25
    assert keys(index, "destination.port:<=443 AND event.dataset:pcapwire.flow") == {
        "flow:1", "flow:5"}
    assert keys(index, "network.packets:[* TO 3]") == {"flow:1", "flow:2"}  # fid + 1
    assert keys(index, "pcapwire.flow.id:4") == {"flow:4"}
    with pytest.raises(SearchSyntaxError, match="not a number"):
        search(index, "destination.port:eighty")
    with pytest.raises(SearchSyntaxError, match="wildcards do not apply"):
        search(index, "destination.port:8*")


def test_times(index: SearchIndex) -> None:
    # a date is its whole day (UTC); ends inclusive unless braced
    flows = "event.dataset:pcapwire.flow AND "
    assert keys(index, flows + "@timestamp:2026-12-01") == {"flow:1", "flow:2", "flow:3"}
    assert keys(index, flows + "@timestamp:[2026-12-02 TO 2026-12-03]") == {"flow:4", "flow:5"}
    assert keys(index, flows + "@timestamp:[2026-12-01T01:00:00Z TO 2026-12-02}") == {
        "flow:2", "flow:3"}
    assert keys(index, flows + "event.start:>=2026-12-02") == {"flow:4", "flow:5"}
    now_us = (T0_NS + 2 * DAY_NS) // 1000
    assert keys(index, flows + "@timestamp:[now-1d TO now]", now_us=now_us) == {
        "flow:4", "flow:5"}
    assert keys(index, flows + "@timestamp:>now-1h", now_us=now_us) == {"flow:5"}
    assert keys(index, flows + "@timestamp:[1796083200 TO 1796086800]") == {
        "flow:1", "flow:2"}  # Unix seconds: 2026-12-01T00:00 .. 01:00 (inclusive)
    with pytest.raises(SearchSyntaxError, match="invalid time"):
        search(index, "@timestamp:yesterday")


def test_keywords_wildcards_text_and_free_text(index: SearchIndex) -> None:
    assert keys(index, "email.from.address:MALLORY@evil.example") == {"email:r1:e2"}
    assert keys(index, "email.to.address:bob@corp.example") == {"email:r1:e1", "email:r1:e2"}
    assert keys(index, "email.from.address:*@corp.example") == {"email:r1:e1", "email:r1:e3"}
    assert keys(index, "email.from.address:mal*") == {"email:r1:e2"}
    assert keys(index, "email.attachments.file.name:*voice*") == {"email:r1:e1",
                                                                   "email:r1:e2"}
    assert keys(index, "email.attachments.file.name:invoice-4?.pdf") == {"email:r1:e1"}
    assert keys(index, "email.attachments.file.hash.sha256:" + "ab" * 32) == {
        "email:r1:e1", "email:r1:e2", "email:r1:e3"}
    # text fields: words and phrases; a trailing * is a word prefix
    assert keys(index, "email.subject:invoice") == {"email:r1:e1"}
    assert keys(index, 'email.subject:"invoice 42"') == {"email:r1:e1"}
    assert keys(index, 'email.subject:"42 invoice"') == set()
    assert keys(index, "email.subject:meet*") == {"email:r1:e2"}
    assert keys(index, "pcapwire.email.body:invoice") == {"email:r1:e1", "email:r1:e2"}
    # free text: every string field (bodies, addresses, names)
    assert keys(index, "invoice") == {"email:r1:e1", "email:r1:e2"}
    assert keys(index, "tacos OR urgent") == {"email:r1:e2", "email:r1:e3"}
    assert keys(index, '"corp example" AND NOT invoice') == {"email:r1:e3"}
    assert keys(index, "invoice AND NOT email.attachments.file.name:*.exe") == {"email:r1:e1"}
    assert keys(index, "NOT event.dataset:pcapwire.flow") == {"email:r1:e1", "email:r1:e2",
                                                              "email:r1:e3"}
    assert keys(index, "(invoice OR lunch) AND email.to.address:alice@corp.example") == {
        "email:r1:e3"}
    assert keys(index, "invoice", case="case-e2") == {"email:r1:e2"}
    with pytest.raises(SearchSyntaxError, match="may only end a word"):
        search(index, "*voice")


def test_replacing_by_key_and_the_limits(index: SearchIndex, monkeypatch) -> None:
    index.put([_flow(1, "203.0.113.9", 1, "10.0.0.1", 80, 0)])  # flow 1 grew: re-indexed
    assert keys(index, "source.ip:198.18.0.0") == set()
    assert keys(index, "source.ip:203.0.113.9") == {"flow:1"}
    assert index.count() == len(FLOWS) + len(EMAILS)
    result = search(index, "event.dataset:pcapwire.flow", limit=2)
    assert [h["key"] for h in result.hits] == ["flow:1", "flow:5"]  # newest indexed first
    assert (result.total, result.total_exact) == (5, True)
    monkeypatch.setattr(query_mod, "COUNT_CAP", 3)
    result = search(index, "event.dataset:pcapwire.flow", limit=2)
    assert (result.total, result.total_exact) == (3, False)
    search(index, "x", limit=MAX_LIMIT)
    for bad in (0, MAX_LIMIT + 1):
        with pytest.raises(QueryError, match="MAX_LIMIT"):
            search(index, "x", limit=bad)


def test_replacing_many_keys_leaves_no_stale_postings(index: SearchIndex,
                                                     monkeypatch) -> None:
    """Documents replaced in chunks of LOOKUP_CHUNK keys, a key twice in one batch (the
    last wins): every posting of a replaced document goes with it."""
    monkeypatch.setattr(index_mod, "LOOKUP_CHUNK", 2)
    index.put([_flow(fid, "203.0.113.1", 1, "10.0.0.1", 80, 0) for fid in (1, 2, 3, 4)]
              + [_flow(4, "203.0.113.4", 1, "10.0.0.1", 80, 0)])
    assert index.count() == len(FLOWS) + len(EMAILS)
    assert keys(index, "source.ip:203.0.113.1") == {"flow:1", "flow:2", "flow:3"}
    assert keys(index, "source.ip:203.0.113.4") == {"flow:4"}
    assert keys(index, "source.ip:198.18.0.0/14") == set()
    assert keys(index, "source.ip:2001:db8::1 OR 198.20.0.0") == set()
    db = index.db
    live = "(SELECT id FROM docs)"
    assert db.execute(f"SELECT count(*) FROM terms WHERE doc NOT IN {live}").fetchone() == (0,)
    assert db.execute(f"SELECT count(*) FROM nums WHERE doc NOT IN {live}").fetchone() == (0,)
    assert keys(index, "198.18.0.0") == set()  # free text: the FTS rows went too
    assert keys(index, "203.0.113.4") == {"flow:4"}


def test_records_from_elsewhere_trigger_hits(tmp_path: Path) -> None:
    from pcapwire.search.ecs import hit_doc
    from pcapwire.search.indexer import index_records
    from pcapwire.triggers.db import Hit

    hit = Hit("domain:evil.example", 6, "10.0.0.1", 51000, "192.0.2.7", 443, 1796083200.5,
              {"sni": "evil.example"}, flow_id=7)
    assert index_records(tmp_path, [hit_doc("hunt-1", hit, "m1")]) == 1
    assert index_records(tmp_path, [{"@timestamp": "2026-12-01T00:00:00Z",
                                     "event": {"kind": "event"}, "url": {"domain": "x.example"},
                                     "pcapwire": {"key": "custom:1"}}]) == 1
    with SearchIndex.of(tmp_path) as index:
        (h,) = search(index, "pcapwire.trigger:hunt-1 AND rule.id:domain\\:evil.example").hits
        assert h["pivots"]["flow_id"] == 7
        assert h["pivots"]["pcap"]["five_tuple"]["dest_ip"] == "192.0.2.7"
        assert [x["key"] for x in search(index, "url.domain:x.example").hits] == ["custom:1"]


@pytest.mark.parametrize("term", [
    "source.ip:198.18.0.0/15", "source.ip:2001:db8::/32", "destination.ip:10.0.0.2",
    "source.ip:[198.18.0.1 TO 198.20.0.0]", "destination.port:[1000 TO 2000}",
    "destination.port:>=2000", "event.start:>=2026-12-02", "network.packets:[* TO 3]",
    "url.domain:*", "network.transport:TCP", "network.transport:t?p",
    "network.transport:[tcp TO tcp]", "network.transport:{a TO tcp}"])
def test_a_term_checked_per_document_matches_as_its_index_set(index: SearchIndex,
                                                               term: str) -> None:
    """``small AND term``: the term is checked against each document of the small side's
    own values (pcapwire.search.docmatch); ``term`` alone reads the index."""
    flows = keys(index, "event.dataset:pcapwire.flow")
    assert keys(index, f"event.dataset:pcapwire.flow AND {term}") == keys(index, term) & flows
    assert keys(index, f"event.dataset:pcapwire.flow AND NOT {term}") == \
        flows - keys(index, term)


def test_a_new_index_has_large_pages_and_an_old_one_keeps_its_own(tmp_path: Path,
                                                                  monkeypatch) -> None:
    """A new file gets PAGE_BYTES pages (fewer, larger WAL writes a batch); a file made
    with SQLite's 4,096 (an index made before) keeps them, and writes and searches on it
    as before."""
    with SearchIndex(tmp_path / "new.sqlite") as ix:
        assert index_mod.PAGE_BYTES == 16384
        assert ix.db.execute("PRAGMA page_size").fetchone() == (16384,)
        assert ix.db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    monkeypatch.setattr(index_mod, "PAGE_BYTES", 4096)
    with SearchIndex(tmp_path / "old.sqlite") as ix:
        ix.put([_flow(*f) for f in FLOWS[:2]])
    monkeypatch.undo()
    with SearchIndex(tmp_path / "old.sqlite") as ix:
        assert ix.db.execute("PRAGMA page_size").fetchone() == (4096,)
        ix.put([_flow(*f) for f in FLOWS[2:]])
        assert keys(ix, "event.dataset:pcapwire.flow") == {f"flow:{f[0]}" for f in FLOWS}
        assert keys(ix, "source.ip:198.18.0.0/15") == {"flow:1", "flow:2"}
