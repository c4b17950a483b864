"""The catalog: one SQLite database per store that knows every source file, segment and flow.

A flow is direction-independent: its key is normalised so that ``(addr_a, port_a) <=
(addr_b, port_b)``. A flow spans segments (``flow_segments`` holds, per segment, the byte
offsets of the flow's packets), so a session that lasted for days is one row in ``flows``.
Packets of one key that are more than ``FLOW_IDLE_TIMEOUT_NS`` apart start a new flow.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcapwire import _native

#: Silence after which packets of a 5-tuple start a new flow (within a segment the native
#: indexer splits them, across segments :meth:`Catalog._merge_flows`).
FLOW_IDLE_TIMEOUT_NS: int = _native.FLOW_IDLE_TIMEOUT_NS
SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
  id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL UNIQUE, path TEXT NOT NULL,
  size INTEGER NOT NULL, state TEXT NOT NULL, packets_done INTEGER NOT NULL DEFAULT 0,
  errors TEXT NOT NULL DEFAULT '[]', started REAL NOT NULL, finished REAL);
CREATE TABLE IF NOT EXISTS segments (
  id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL UNIQUE, linktype INTEGER NOT NULL,
  snaplen INTEGER NOT NULL, tsprec INTEGER NOT NULL, first_ns INTEGER NOT NULL,
  last_ns INTEGER NOT NULL, packets INTEGER NOT NULL, size INTEGER NOT NULL,
  source_id INTEGER NOT NULL REFERENCES sources(id));
CREATE INDEX IF NOT EXISTS segments_time ON segments(first_ns, last_ns);
CREATE TABLE IF NOT EXISTS flows (
  id INTEGER PRIMARY KEY, ipver INTEGER NOT NULL, proto INTEGER NOT NULL,
  addr_a BLOB NOT NULL, port_a INTEGER NOT NULL, addr_b BLOB NOT NULL, port_b INTEGER NOT NULL,
  initiator_is_a INTEGER NOT NULL, first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL,
  pkts_a2b INTEGER NOT NULL, bytes_a2b INTEGER NOT NULL,
  pkts_b2a INTEGER NOT NULL, bytes_b2a INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS flows_key ON flows(addr_a, addr_b, port_a, port_b, proto);
CREATE INDEX IF NOT EXISTS flows_b ON flows(addr_b);
CREATE INDEX IF NOT EXISTS flows_ports ON flows(port_a, port_b);
CREATE INDEX IF NOT EXISTS flows_port_b ON flows(port_b);
CREATE INDEX IF NOT EXISTS flows_time ON flows(first_ns);
CREATE TABLE IF NOT EXISTS flow_segments (
  flow_id INTEGER NOT NULL, segment_id INTEGER NOT NULL, packets INTEGER NOT NULL,
  first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL, offsets BLOB NOT NULL,
  PRIMARY KEY (flow_id, segment_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS flow_segments_seg ON flow_segments(segment_id);
CREATE TABLE IF NOT EXISTS capture_runs (
  id INTEGER PRIMARY KEY, pid INTEGER NOT NULL, started REAL NOT NULL, stopped REAL,
  inputs TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS capture_segments (
  segment_id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, interface TEXT NOT NULL,
  state TEXT NOT NULL, opened REAL NOT NULL, sealed REAL);
CREATE TABLE IF NOT EXISTS capture_loss (
  run_id INTEGER NOT NULL, interface TEXT NOT NULL, segment_id INTEGER NOT NULL,
  first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL, kernel_drops INTEGER NOT NULL,
  if_drops INTEGER NOT NULL, backlog_drops INTEGER NOT NULL, disk_drops INTEGER NOT NULL,
  PRIMARY KEY (run_id, interface, segment_id));
CREATE INDEX IF NOT EXISTS capture_loss_seg ON capture_loss(segment_id);
CREATE TABLE IF NOT EXISTS expired_segments (
  id INTEGER PRIMARY KEY, path TEXT NOT NULL, first_ns INTEGER NOT NULL,
  last_ns INTEGER NOT NULL, packets INTEGER NOT NULL, size INTEGER NOT NULL,
  stored_size INTEGER NOT NULL, reason TEXT NOT NULL, deleted_at REAL NOT NULL,
  removed INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS expired_segments_time ON expired_segments(first_ns, last_ns);
CREATE INDEX IF NOT EXISTS expired_segments_pending ON expired_segments(removed);
CREATE TABLE IF NOT EXISTS expired_flows (
  flow_id INTEGER PRIMARY KEY, packets INTEGER NOT NULL, first_ns INTEGER NOT NULL,
  last_ns INTEGER NOT NULL, expired_at REAL NOT NULL);
"""
# Retention's tables (pcapwire.retention): the segments it deleted (``removed`` once their
# files are gone: a crash between the commit and the unlink leaves 0, and the next run
# deletes the files), and per flow the packets of it that went with them (the flow row
# stays until the policy's flow_max_age). Segment ids are never reused (AUTOINCREMENT;
# catalogs made before retention are rebuilt so once, see Catalog._segment_ids_unique).
# The recorder's tables (pcapwire.capture.ledger): its runs, the state of the segments it
# writes (open while it writes them, see pcapwire.store.segments.LIVE_SUFFIX) and the
# packets lost per run, interface and segment (0: while no segment was open), by cause.

#: Schema 1 also kept the query history (table ``queries``); it lives in the case store
#: now (:mod:`pcapwire.cases.queries`), see :meth:`Catalog.legacy_queries`.
_LEGACY_QUERY_COLUMNS = ("id, case_name, event, spec, started, finished, status, packets, "
                         "bytes, error")


# A segment's flows on their way in (see Catalog._merge_flows): the native indexer's flow
# tuples, the row number, and the flow each becomes.
_INCOMING_COLUMNS = ("i, ipver, proto, addr_a, port_a, addr_b, port_b, init_a, first_ns, "
                     "last_ns, p_ab, b_ab, p_ba, b_ba, offsets")
_INCOMING = ("CREATE TEMP TABLE IF NOT EXISTS incoming (i INTEGER PRIMARY KEY, ipver INT, "
             "proto INT, addr_a BLOB, port_a INT, addr_b BLOB, port_b INT, init_a INT, "
             "first_ns INT, last_ns INT, p_ab INT, b_ab INT, p_ba INT, b_ba INT, "
             "offsets BLOB, flow_id INT, new INT NOT NULL DEFAULT 0)")


@dataclass(frozen=True, slots=True)
class Segment:
    id: int
    path: str
    linktype: int
    snaplen: int
    tsprec: int
    first_ns: int
    last_ns: int
    packets: int
    size: int


@dataclass(frozen=True, slots=True)
class FlowRow:
    id: int
    ipver: int
    proto: int
    addr_a: bytes
    port_a: int
    addr_b: bytes
    port_b: int
    initiator_is_a: bool
    first_ns: int
    last_ns: int
    pkts_a2b: int
    bytes_a2b: int
    pkts_b2a: int
    bytes_b2a: int

    @property
    def packets(self) -> int:
        return self.pkts_a2b + self.pkts_b2a

    @property
    def bytes(self) -> int:
        return self.bytes_a2b + self.bytes_b2a


FLOW_COLUMNS = ("id, ipver, proto, addr_a, port_a, addr_b, port_b, initiator_is_a, first_ns, "
                "last_ns, pkts_a2b, bytes_a2b, pkts_b2a, bytes_b2a")


def overlap_sql(start_ns: int | None, end_ns: int | None) -> tuple[str, list[int]]:
    """``" AND ..."`` and its arguments: rows (``first_ns``, ``last_ns``) overlapping
    ``[start_ns, end_ns)``; None leaves that side open."""
    sql, args = "", []
    if end_ns is not None:
        sql += " AND first_ns < ?"
        args.append(end_ns)
    if start_ns is not None:
        sql += " AND last_ns >= ?"
        args.append(start_ns)
    return sql, args


class Catalog:
    """Thin typed layer over the SQLite catalog; one connection, used from one thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.execute("PRAGMA cache_size=-65536")  # 64 MiB: flow index inserts stay in memory
        self.db.execute("PRAGMA temp_store=MEMORY")
        self.db.executescript(SCHEMA)
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),))
        self._segment_ids_unique()

    def _segment_ids_unique(self) -> None:
        """Rebuild a ``segments`` table made without AUTOINCREMENT (catalogs older than
        retention), so that the id of a deleted segment is never given to a new one; ids
        and rows are kept, in one transaction (a crash leaves the old table)."""
        def made_without() -> bool:
            row = self.db.execute("SELECT sql FROM sqlite_master WHERE type='table' AND "
                                  "name='segments'").fetchone()
            return "AUTOINCREMENT" not in row[0].upper()

        if not made_without():
            return
        create = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS segments"):]
        create = create[:create.index(";")].replace("IF NOT EXISTS segments", "segments_new")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if made_without():  # another process may have rebuilt it meanwhile
                self.db.execute(create)
                self.db.execute("INSERT INTO segments_new SELECT * FROM segments")
                self.db.execute("DROP TABLE segments")
                self.db.execute("ALTER TABLE segments_new RENAME TO segments")
                self.db.execute("CREATE INDEX IF NOT EXISTS segments_time ON "
                                "segments(first_ns, last_ns)")
                self.db.execute("DELETE FROM sqlite_sequence WHERE name='segments'")
                self.db.execute("INSERT INTO sqlite_sequence (name, seq) SELECT 'segments', "
                                "max(coalesce((SELECT max(id) FROM segments), 0), "
                                "coalesce((SELECT max(id) FROM expired_segments), 0))")
            self.db.execute("COMMIT")
        except BaseException:
            self.abort()
            raise

    def close(self) -> None:
        self.db.close()

    # -- sources ---------------------------------------------------------------------------
    def source(self, fingerprint: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT id, path, state, packets_done, errors FROM sources WHERE fingerprint=?",
            (fingerprint,)).fetchone()
        if row is None:
            return None
        return {"id": row[0], "path": row[1], "state": row[2], "packets_done": row[3],
                "errors": json.loads(row[4])}

    def add_source(self, fingerprint: str, path: str, size: int) -> int:
        cur = self.db.execute(
            "INSERT INTO sources (fingerprint, path, size, state, started) VALUES (?,?,?,?,?)",
            (fingerprint, path, size, "partial", time.time()))
        return int(cur.lastrowid or 0)

    def finish_source(self, source_id: int, errors: Sequence[tuple[int, str]]) -> None:
        self.db.execute("UPDATE sources SET state='done', finished=?, errors=? WHERE id=?",
                        (time.time(), json.dumps(list(errors)), source_id))

    def forget_source(self, source_id: int) -> None:
        """Drop a source that stored nothing (an input that was not a capture)."""
        self.db.execute("DELETE FROM sources WHERE id=? AND NOT EXISTS (SELECT 1 FROM "
                        "segments WHERE source_id=?)", (source_id, source_id))

    # -- segments --------------------------------------------------------------------------
    def segment_paths(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT path FROM segments")}

    def kept_range(self) -> tuple[int | None, int | None]:
        """(oldest first_ns, newest last_ns) of the stored segments; (None, None) when
        there are none."""
        oldest, newest = self.db.execute("SELECT min(first_ns), max(last_ns) FROM segments"
                                         ).fetchone()
        return oldest, newest

    def segments(self, start_ns: int | None = None, end_ns: int | None = None,
                 ids: Iterable[int] | None = None) -> list[Segment]:
        where, window = overlap_sql(start_ns, end_ns)
        sql = "SELECT id, path, linktype, snaplen, tsprec, first_ns, last_ns, packets, size " \
              f"FROM segments WHERE 1=1{where}"
        args: list[Any] = list(window)
        if ids is not None:
            id_list = sorted(set(ids))
            sql += f" AND id IN ({','.join('?' * len(id_list))})"
            args += id_list
        sql += " ORDER BY id"
        return [Segment(*r) for r in self.db.execute(sql, args)]

    def commit_checkpoint(self, source_id: int, packets_done: int,
                          segments: Sequence[tuple[dict[str, Any], Sequence[tuple]]]
                          ) -> list[int]:
        """Record closed segments and their flows, and advance the source's resume point,
        all in one transaction (a crash leaves either all of it or none of it); returns
        the segments' ids."""
        db = self.db
        ids: list[int] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for seg, flows in segments:
                cur = db.execute(
                    "INSERT INTO segments (path, linktype, snaplen, tsprec, first_ns, last_ns, "
                    "packets, size, source_id) VALUES (?,?,?,?,?,?,?,?,?)",
                    (seg["path"], seg["linktype"], seg["snaplen"], seg["tsprec"], seg["first_ns"],
                     seg["last_ns"], seg["packets"], seg["size"], source_id))
                ids.append(int(cur.lastrowid or 0))
                self._merge_flows(ids[-1], flows)
            db.execute("UPDATE sources SET packets_done=? WHERE id=?", (packets_done, source_id))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return ids

    def begin_segment(self, source_id: int, path: str) -> int:
        """Open a transaction for a segment whose flows come in parts (a file indexed in
        place: its flows are merged while the rest of it is still being read); returns
        the segment's id. Follow with :meth:`add_flows` for each part, then
        :meth:`end_segment` (commit) or :meth:`abort` (nothing of it is kept)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            cur = self.db.execute(
                "INSERT INTO segments (path, linktype, snaplen, tsprec, first_ns, last_ns, "
                "packets, size, source_id) VALUES (?,0,0,0,0,0,0,0,?)", (path, source_id))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return int(cur.lastrowid or 0)

    def add_flows(self, segment_id: int, flows: Sequence[tuple]) -> None:
        """One part's flows (inside :meth:`begin_segment`'s transaction)."""
        self._merge_flows(segment_id, flows)

    def end_segment(self, source_id: int, segment_id: int, seg: dict[str, Any],
                    packets_done: int) -> None:
        """Complete the segment row, advance the source, commit."""
        try:
            self.db.execute(
                "UPDATE segments SET linktype=?, snaplen=?, tsprec=?, first_ns=?, last_ns=?, "
                "packets=?, size=? WHERE id=?",
                (seg["linktype"], seg["snaplen"], seg["tsprec"], seg["first_ns"],
                 seg["last_ns"], seg["packets"], seg["size"], segment_id))
            self.db.execute("UPDATE sources SET packets_done=? WHERE id=?",
                            (packets_done, source_id))
            self.db.execute("COMMIT")
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Roll back the open transaction, if any."""
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def _merge_flows(self, segment_id: int, flows: Sequence[tuple]) -> None:
        """Add a segment's flows (as the native indexer returns them, in order of their
        first packet): the first flow of a key in the segment continues the latest stored
        flow of that key when that one was seen less than FLOW_IDLE_TIMEOUT_NS before;
        every other flow is new (inside a segment the native indexer has already split a
        key's packets at idle gaps). Set-based: the flows are bound once, into a temporary
        table, and everything else is SQL (a join to find stored flows, INSERT/UPDATE ...
        SELECT); inside the caller's transaction, which also makes the explicit ids safe."""
        db = self.db
        db.execute(_INCOMING)
        db.execute("DELETE FROM incoming")
        db.executemany(f"INSERT INTO incoming ({_INCOMING_COLUMNS}) VALUES "
                       "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       [(i, *f) for i, f in enumerate(flows)])
        stored: dict[int, tuple[int, int]] = {}  # incoming row -> latest stored flow, last_ns
        for i, flow_id, last_ns in db.execute(
                "SELECT n.i, f.id, f.last_ns FROM incoming n JOIN flows f ON "
                "f.addr_a=n.addr_a AND f.addr_b=n.addr_b AND f.port_a=n.port_a AND "
                "f.port_b=n.port_b AND f.proto=n.proto AND f.ipver=n.ipver"):
            if i not in stored or last_ns > stored[i][1]:
                stored[i] = (flow_id, last_ns)
        continuing: list[tuple[int, int]] = []  # (stored flow id, incoming row)
        if stored:
            seen: set[tuple] = set()
            for i, f in enumerate(flows):
                key = (f[0], f[1], f[2], f[3], f[4], f[5])
                if key in seen:
                    continue
                seen.add(key)
                prev = stored.get(i)
                if prev is not None and f[7] - prev[1] <= FLOW_IDLE_TIMEOUT_NS:
                    continuing.append((prev[0], i))
        db.executemany("UPDATE incoming SET flow_id=? WHERE i=?", continuing)
        next_id = db.execute("SELECT coalesce(max(id), 0) + 1 FROM flows").fetchone()[0]
        db.execute("UPDATE incoming SET flow_id = ? + n.rank, new = 1 FROM (SELECT i, "
                   "row_number() OVER (ORDER BY i) - 1 AS rank FROM incoming "
                   "WHERE flow_id IS NULL) AS n WHERE incoming.i = n.i", (next_id,))
        db.execute(f"INSERT INTO flows ({FLOW_COLUMNS}) SELECT flow_id, ipver, proto, addr_a, "
                   "port_a, addr_b, port_b, init_a, first_ns, last_ns, p_ab, b_ab, p_ba, b_ba "
                   "FROM incoming WHERE new = 1 ORDER BY i")
        if continuing:
            db.execute("UPDATE flows SET first_ns = min(flows.first_ns, n.first_ns), "
                       "last_ns = max(flows.last_ns, n.last_ns), "
                       "pkts_a2b = pkts_a2b + n.p_ab, bytes_a2b = bytes_a2b + n.b_ab, "
                       "pkts_b2a = pkts_b2a + n.p_ba, bytes_b2a = bytes_b2a + n.b_ba "
                       "FROM incoming AS n WHERE n.new = 0 AND flows.id = n.flow_id")
        # A flow already in this segment (an earlier part of an in-place segment, see
        # begin_segment) gets the part's offsets appended.
        db.execute("INSERT INTO flow_segments SELECT flow_id, ?, p_ab + p_ba, first_ns, "
                   "last_ns, offsets FROM incoming WHERE true ORDER BY i "
                   "ON CONFLICT (flow_id, segment_id) DO UPDATE SET "
                   "packets = packets + excluded.packets, "
                   "first_ns = min(first_ns, excluded.first_ns), "
                   "last_ns = max(last_ns, excluded.last_ns), "
                   "offsets = CAST(offsets || excluded.offsets AS BLOB)", (segment_id,))

    # -- flows -----------------------------------------------------------------------------
    def flows(self, where: str = "1=1", args: Sequence[Any] = (), limit: int | None = None
              ) -> Iterator[FlowRow]:
        sql = f"SELECT {FLOW_COLUMNS} FROM flows WHERE {where} ORDER BY first_ns, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        for r in self.db.execute(sql, tuple(args)):
            yield FlowRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8], r[9],
                          r[10], r[11], r[12], r[13])

    def flow_offsets(self, flow_ids: Sequence[int], segment_ids: Sequence[int] | None = None
                     ) -> Iterator[tuple[int, int, int, bytes]]:
        """(segment_id, flow_id, packets, offsets) for the given flows, by segment."""
        yield from self._flow_segments("segment_id, flow_id, packets, offsets", flow_ids,
                                       segment_ids)

    def flow_packets(self, flow_ids: Sequence[int], segment_ids: Sequence[int] | None = None
                     ) -> dict[int, int]:
        """segment_id -> packets of the given flows in that segment (what
        :meth:`flow_offsets` would list, without reading the offsets)."""
        out: dict[int, int] = {}
        for seg_id, packets in self._flow_segments("segment_id, SUM(packets)", flow_ids,
                                                   segment_ids, " GROUP BY segment_id"):
            out[seg_id] = out.get(seg_id, 0) + packets
        return out

    def _flow_segments(self, columns: str, flow_ids: Sequence[int],
                       segment_ids: Sequence[int] | None, tail: str = ""
                       ) -> Iterator[tuple[Any, ...]]:
        for i in range(0, len(flow_ids), 500):
            part = list(flow_ids[i:i + 500])
            sql = (f"SELECT {columns} FROM flow_segments "
                   f"WHERE flow_id IN ({','.join('?' * len(part))})")
            args: list[Any] = part
            if segment_ids is not None:
                sql += f" AND segment_id IN ({','.join('?' * len(segment_ids))})"
                args = part + list(segment_ids)
            yield from self.db.execute(sql + tail, args)

    # -- the query history of schema 1 -------------------------------------------------------
    def legacy_queries(self) -> list[tuple[Any, ...]] | None:
        """The query history this catalog kept before it moved to the case store, as rows
        of (id, case, event, spec JSON, started, finished, status, packets, bytes, error);
        None when it has none (a new catalog, or one whose history has moved)."""
        self.db.execute("BEGIN")  # one snapshot: the table and its rows
        try:
            if not self._has_legacy_queries():
                return None
            return self.db.execute(f"SELECT {_LEGACY_QUERY_COLUMNS} FROM queries "
                                   "ORDER BY rowid").fetchall()
        finally:
            self.db.execute("COMMIT")

    def drop_legacy_queries(self, moved: Sequence[Sequence[Any]]) -> bool:
        """Drop the old query history once it is stored elsewhere: only if every row it
        holds now is one of ``moved`` (else False, nothing changes: read it again)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if self._has_legacy_queries():
                rows = db.execute(f"SELECT {_LEGACY_QUERY_COLUMNS} FROM queries").fetchall()
                if not set(rows) <= {tuple(r) for r in moved}:
                    db.execute("ROLLBACK")
                    return False
                db.execute("DROP TABLE queries")
                db.execute("UPDATE meta SET value=? WHERE key='schema_version'",
                           (str(SCHEMA_VERSION),))
            db.execute("COMMIT")
        except BaseException:
            self.abort()
            raise
        return True

    def _has_legacy_queries(self) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                               "name='queries'").fetchone() is not None

    def stats(self) -> dict[str, int]:
        seg = self.db.execute("SELECT count(*), coalesce(sum(packets),0), coalesce(sum(size),0) "
                              "FROM segments").fetchone()
        flows = self.db.execute("SELECT count(*) FROM flows").fetchone()[0]
        return {"segments": seg[0], "packets": seg[1], "bytes": seg[2], "flows": flows}
