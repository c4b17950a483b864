"""Flow selection and presentation: the one place that turns a QuerySpec into SQL over the
catalog's ``flows`` table (used by the query planner, ``pcapwire flows`` and the API) and
a flow row into the EVE-like dict everything prints."""

from __future__ import annotations

import ipaddress
import socket
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pcapwire.query.bpfplan import Sql, addr_blob, candidate_sql, host_sql, net_sql
from pcapwire.query.spec import QuerySpec
from pcapwire.records import IP_PROTO_NAMES

if TYPE_CHECKING:
    from pcapwire.store import FlowRow
    from pcapwire.store.catalog import Catalog

#: Text addresses whose catalog blob :func:`five_tuple_sql` keeps (16 bytes each).
ADDR_BLOB_CACHE = 4096
_V4_PAD = bytes(12)


def narrowing_sql(spec: QuerySpec) -> Sql | None:
    """The explicit filters AND the flows a BPF expression may match, or None when the
    index cannot narrow the query (it then reads every segment in the time window)."""
    explicit = explicit_sql(spec)
    bpf = candidate_sql(spec.bpf) if spec.bpf else None
    if bpf is None or explicit is None:
        return explicit or bpf
    return Sql(f"{explicit.where} AND {bpf.where}", explicit.args + bpf.args)


def flows_sql(spec: QuerySpec) -> Sql:
    """Every flow that may hold a matching packet, time window included."""
    narrow = narrowing_sql(spec)
    sql, args = (narrow.where, list(narrow.args)) if narrow else ("1=1", [])
    if spec.start_ns is not None:
        sql += " AND last_ns >= ?"
        args.append(spec.start_ns)
    if spec.end_ns is not None:
        sql += " AND first_ns < ?"
        args.append(spec.end_ns)
    return Sql(sql, tuple(args))


def find_flows(catalog: Catalog, spec: QuerySpec, limit: int | None = None
               ) -> list[dict[str, Any]]:
    """The flows as :func:`flow_dict`s; a flow some of whose packets retention deleted
    also has ``packets_expired`` (all of them: the flow's packets are expired, its row
    is metadata only)."""
    where = flows_sql(spec)
    rows = [flow_dict(f) for f in catalog.flows(where.where, where.args, limit)]
    ids = [r["flow_id"] for r in rows]
    expired: dict[int, int] = {}
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        expired.update(catalog.db.execute(
            f"SELECT flow_id, packets FROM expired_flows WHERE flow_id IN "
            f"({','.join('?' * len(part))})", part).fetchall())
    for r in rows:
        if r["flow_id"] in expired:
            r["packets_expired"] = expired[r["flow_id"]]
    return rows


def explicit_sql(spec: QuerySpec) -> Sql | None:
    """SQL over ``flows`` for the explicit (flow-level, exact) filters, or None."""
    parts: list[Sql] = [host_sql(h) for h in spec.hosts] + [net_sql(n) for n in spec.nets]
    if spec.ports:  # any of them, as repeated protos: tcpdump's "port A or port B"
        marks = ",".join("?" * len(spec.ports))
        parts.append(Sql(f"(proto IN (6,17,132) AND (port_a IN ({marks}) OR port_b IN "
                         f"({marks})))", (*spec.ports, *spec.ports)))
    if spec.protos:
        parts.append(Sql(f"(proto IN ({','.join(str(int(p)) for p in spec.protos)}))", ()))
    if spec.flow_ids:
        parts.append(Sql(f"(id IN ({','.join(str(int(i)) for i in spec.flow_ids)}))", ()))
    if spec.five_tuple is not None:
        parts.append(five_tuple_sql(spec.five_tuple))
    if not parts:
        return None
    return Sql(" AND ".join(p.where for p in parts), tuple(a for p in parts for a in p.args))


@lru_cache(maxsize=ADDR_BLOB_CACHE)
def _text_blob(text: str) -> bytes:
    """:func:`addr_blob` of a text address; a dotted IPv4 one by ``inet_pton`` (which
    takes the same texts as :mod:`ipaddress`: four decimal parts, no leading zeros; ~10x
    cheaper: the search indexer meets a run's ~8,000 hosts, more than it keeps)."""
    try:
        return socket.inet_pton(socket.AF_INET, text) + _V4_PAD
    except (OSError, ValueError):  # ValueError: a NUL in text; ipaddress says why
        return addr_blob(ipaddress.ip_address(text))


def _blob(addr: Any) -> bytes:
    """The catalog's blob of an address (a text one remembered: the search indexer asks
    for the same hosts' 5-tuples again and again)."""
    return _text_blob(addr) if type(addr) is str else addr_blob(ipaddress.ip_address(addr))


def five_tuple_sql(key: Any) -> Sql:
    a = (_blob(key.src), key.sport)
    b = (_blob(key.dst), key.dport)
    lo, hi = min(a, b), max(a, b)
    return Sql("(addr_a = ? AND port_a = ? AND addr_b = ? AND port_b = ? AND proto = ?)",
               (lo[0], lo[1], hi[0], hi[1], key.proto))


def _addr(ipver: int, blob: bytes) -> str:
    if ipver == 4:
        return str(ipaddress.IPv4Address(blob[:4]))
    if ipver == 6:
        return str(ipaddress.IPv6Address(blob))
    return ""


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


def flow_dict(f: FlowRow) -> dict[str, Any]:
    """A flow oriented initiator -> responder, with EVE-like field names."""
    a = (_addr(f.ipver, f.addr_a), f.port_a)
    b = (_addr(f.ipver, f.addr_b), f.port_b)
    (src, sport), (dst, dport) = (a, b) if f.initiator_is_a else (b, a)
    to_srv = (f.pkts_a2b, f.bytes_a2b) if f.initiator_is_a else (f.pkts_b2a, f.bytes_b2a)
    to_cli = (f.pkts_b2a, f.bytes_b2a) if f.initiator_is_a else (f.pkts_a2b, f.bytes_a2b)
    proto = IP_PROTO_NAMES.get(f.proto, str(f.proto)) if f.ipver else f"ethertype:{f.port_a:#06x}"
    return {"flow_id": f.id, "proto": proto, "src_ip": src, "src_port": sport, "dest_ip": dst,
            "dest_port": dport, "start": _iso(f.first_ns), "end": _iso(f.last_ns),
            "pkts_toserver": to_srv[0], "bytes_toserver": to_srv[1],
            "pkts_toclient": to_cli[0], "bytes_toclient": to_cli[1]}
