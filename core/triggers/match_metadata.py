"""Narrowing a hunt through the metadata index (:mod:`pcapwire.search`): domain, URL, JA3
and JA4 indicators are looked for only in the segments whose indexed DNS, TLS and HTTP
records (Suricata's EVE, Zeek's logs, as ``dns.question.name``, ``tls.client.*``,
``url.*``) name one of them — when the index is known to hold every such record of the
segment. The hunt's planner (:mod:`.hunt`) drops the other segments' units; the content
scan of the rest is unchanged, so the hunt finds exactly what the whole scan finds
(tests/test_trigger_narrow.py), in fewer units.

Covered (the index holds the segment's records): a workflow run's Suricata step finished
(``ok``) on a query that read the segment whole — the case store's query history has it
``done``, with no packet filter (BPF, host, net, port, protocol, 5-tuple, flow ids, a byte
limit, a follow), a time window containing the segment, started after the segment's
capture was stored (its ingest source's ``finished``). JA3 (JA4) indicators also need the
run's TLS records to carry JA3 (JA4): the run indexed a ``tls.client.ja3``
(``tls.client.ja4``) value, or no TLS record at all. JA4 of QUIC is not in the index: a
segment with a UDP flow on port :data:`QUIC_PORT` is always scanned for JA4. A segment not
covered is scanned.

A covered segment is scanned when an indexed record of one of its flows matches an
indicator as the generated rules compare (:mod:`.indicator_rules`): names whole and
case-insensitive, with or without the trailing dot, ``*.base`` as a suffix; a URL's host
and request target (origin or absolute form); the JA3 hash; the JA4 fingerprint. A
record the index could not tie to a flow gets every segment within
:data:`~pcapwire.search.ecs.PIVOT_MARGIN_S` of its time scanned.

Only definitions whose packets are read for these indicators alone are narrowed
(:func:`narrowable`): IP indicators, a BPF, file hashes, Suricata or YARA rules need
every segment.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from pcapwire.cases import CASES_FILE, CaseStore
from pcapwire.query.spec import QuerySpec
from pcapwire.search.ecs import PIVOT_MARGIN_S
from pcapwire.search.index import SEARCH_FILE, SearchIndex
from pcapwire.search.lang import And, Node, Or, Term
from pcapwire.search.sqlplan import Planner
from pcapwire.store import Segment
from pcapwire.store.catalog import Catalog
from pcapwire.triggers.indicator_rules import needs_content, parse_url
from pcapwire.triggers.match_files import wanted
from pcapwire.triggers.model import TriggerDef

log = logging.getLogger(__name__)

#: Where a domain indicator is looked for in the index (DNS query, TLS SNI, HTTP host).
DOMAIN_FIELDS = ("dns.question.name", "tls.client.server_name", "url.domain")
#: Terms ORed in one statement (SQLite allows 500 parts of a compound SELECT).
TERMS_PER_QUERY = 200
#: JA4 of QUIC client hellos is not indexed: segments with UDP flows on it are scanned.
QUIC_PORT = 443
#: The analyzer whose records cover a segment, and its step status when it finished.
COVERING_ANALYZER, STEP_OK, QUERY_DONE = "suricata", "ok", "done"
#: Query filters that read part of the packets (a query with one covers nothing).
PARTIAL_FILTERS = ("bpf", "hosts", "nets", "ports", "protos", "five_tuple", "flow_ids",
                   "max_bytes", "follow")


def narrowable(defn: TriggerDef) -> bool:
    """Whether the definition reads packets for domain, URL, JA3 and JA4 indicators alone."""
    ind = defn.indicators
    return needs_content(ind) and not (ind.ips or defn.bpf.strip() or wanted(defn)
                                       or defn.suricata_rules.strip()
                                       or defn.yara_rules.strip())


def needed_segments(root: Path, catalog: Catalog, defn: TriggerDef,
                    segment_ids: list[int]) -> set[int]:
    """The segments among ``segment_ids`` whose content a narrowable definition's hunt
    must scan: those the index does not cover, and covered ones with a matching record."""
    wanted_ids = set(segment_ids)
    segments = [s for s in catalog.segments(ids=segment_ids) if s.id in wanted_ids]
    if not (root / SEARCH_FILE).is_file() or not (root / CASES_FILE).is_file():
        return wanted_ids
    with SearchIndex.of(root) as index:
        covered = _covered(root, catalog, index, defn, segments)
        if not covered:
            return wanted_ids
        flow_ids, loose_ts = _matching_records(index, defn)
    scan = wanted_ids - covered
    scan |= _segments_of_flows(catalog, sorted(flow_ids), covered)
    margin = int(PIVOT_MARGIN_S * 1e9)
    for s in segments:
        if s.id in covered and any(s.first_ns - margin <= ts <= s.last_ns + margin
                                   for ts in loose_ts):
            scan.add(s.id)
    if defn.indicators.ja4:
        scan |= _quic_segments(catalog, covered)
    return scan


# -- coverage -----------------------------------------------------------------------------
def _covered(root: Path, catalog: Catalog, index: SearchIndex, defn: TriggerDef,
             segments: list[Segment]) -> set[int]:
    stored = dict(catalog.db.execute(
        "SELECT s.id, src.finished FROM segments s JOIN sources src ON src.id = s.source_id"))
    windows = list(_covering_queries(root, index, defn))
    out = set()
    for s in segments:
        finished = stored.get(s.id)
        if finished is None:
            continue
        if any(started >= finished and (lo is None or lo <= s.first_ns)
               and (hi is None or s.last_ns < hi) for lo, hi, started in windows):
            out.add(s.id)
    return out


def _covering_queries(root: Path, index: SearchIndex, defn: TriggerDef
                      ) -> Iterator[tuple[int | None, int | None, float]]:
    """(start_ns, end_ns, started) of the unfiltered queries a Suricata step read whole,
    whose TLS records carry what the definition's JA3/JA4 indicators need."""
    cases = CaseStore(root / CASES_FILE, interrupt_running=False)
    try:
        for run in cases.runs():
            if not run.query_id or not any(
                    st.analyzer == COVERING_ANALYZER and st.status == STEP_OK
                    for st in cases.steps(run.run_id)):
                continue
            query = cases.get_query(run.query_id)
            if query is None or query["status"] != QUERY_DONE:
                continue
            spec = QuerySpec.from_dict(query["spec"])
            if any(getattr(spec, f) for f in PARTIAL_FILTERS):
                continue
            if not _tls_fingerprints(index, run.run_id, defn):
                continue
            yield spec.start_ns, spec.end_ns, float(query["started"])
    finally:
        cases.close()


def _tls_fingerprints(index: SearchIndex, run_id: str, defn: TriggerDef) -> bool:
    """Whether the run's TLS records carry JA3/JA4 as the definition needs (or it has
    none)."""
    run = Term("pcapwire.run_id", "exact", run_id)
    needs = [f for f, values in (("tls.client.ja3", defn.indicators.ja3),
                                 ("tls.client.ja4", defn.indicators.ja4)) if values]
    if not needs:
        return True
    if not _exists(index, And((run, Term("event.dataset", "exact", "suricata.tls")))):
        return True
    return all(_exists(index, And((run, Term(f, "wildcard", "*")))) for f in needs)


def _exists(index: SearchIndex, tree: Node) -> bool:
    with index.lock:
        sql = Planner(index, "").set(tree)
        return index.db.execute(f"SELECT 1 FROM ({sql.sql}) LIMIT 1",
                                sql.args).fetchone() is not None


# -- matching records ---------------------------------------------------------------------
def indicator_terms(defn: TriggerDef) -> Iterator[Node]:
    """The index terms of the definition's domain, URL, JA3 and JA4 indicators."""
    ind = defn.indicators
    for domain in ind.domains:
        name = domain.lower().rstrip(".")
        mode = "wildcard" if name.startswith("*.") else "exact"
        for value in (name, f"{name}."):
            for f in DOMAIN_FIELDS:
                yield Term(f, mode, value)  # type: ignore[arg-type]
    for url in ind.urls:
        u = parse_url(url)
        netloc = u.host if u.port is None else f"{u.host}:{u.port}"
        targets = [u.target, *(f"{s}://{netloc}{u.target}" for s in ("http", "https"))]
        yield And((Term("url.domain", "exact", u.host),
                   Or(tuple(Term("url.original", "exact", t) for t in targets))))
    for value in ind.ja3:
        yield Term("tls.client.ja3", "exact", value.lower())
    for value in ind.ja4:
        yield Term("tls.client.ja4", "exact", value.lower())


def _matching_records(index: SearchIndex, defn: TriggerDef) -> tuple[set[int], list[int]]:
    """The flow ids of the indexed records that match an indicator, and the times (ns) of
    those the index could not tie to a flow."""
    terms = list(indicator_terms(defn))
    flows: set[int] = set()
    loose: list[int] = []
    for i in range(0, len(terms), TERMS_PER_QUERY):
        part = terms[i:i + TERMS_PER_QUERY]
        with index.lock:
            sql = Planner(index, "").set(Or(tuple(part)) if len(part) > 1 else part[0])
            rows = index.db.execute(
                f"SELECT json_extract(d.body, '$.pcapwire.flow.id'), d.ts FROM docs d "
                f"WHERE d.id IN ({sql.sql})", sql.args).fetchall()
        for flow_id, ts_us in rows:
            if flow_id is None:
                loose.append(int(ts_us) * 1000)
            else:
                flows.add(int(flow_id))
    return flows, loose


def _segments_of_flows(catalog: Catalog, flow_ids: list[int], among: set[int]) -> set[int]:
    out: set[int] = set()
    for i in range(0, len(flow_ids), TERMS_PER_QUERY):
        part = flow_ids[i:i + TERMS_PER_QUERY]
        out |= {r[0] for r in catalog.db.execute(
            f"SELECT DISTINCT segment_id FROM flow_segments WHERE flow_id IN "
            f"({','.join('?' * len(part))})", part)}
    return out & among


def _quic_segments(catalog: Catalog, among: set[int]) -> set[int]:
    return among & {r[0] for r in catalog.db.execute(
        "SELECT DISTINCT s.segment_id FROM flows f JOIN flow_segments s ON s.flow_id = f.id "
        "WHERE f.proto = 17 AND (f.port_a = ? OR f.port_b = ?)", (QUIC_PORT, QUIC_PORT))}
