"""IP-indicator hits made by SQLite (:class:`pcapwire.triggers.ip_walk.IpWalkers`): their
order when flows start at the same instant (the order of their flow ids: the capture's;
a flow's indicators side a's first, as listed), kept by the hunt's match ids, and
two flows of one key in a unit merged into one row (one match id taken, no gap); the
walkers read the catalog read-only, their staging databases attached to the trigger
database's connection while units are recorded, never the catalog; a unit's rows recorded
from a table the trigger database's connection reads
(:class:`~pcapwire.triggers.db.StagedRows`) give the result set that the same rows bound
from Python (``HitBatch``) give."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing, nullcontext
from pathlib import Path
from typing import Any

import pytest
from conftest import corpus_file
from pcapwire.store import Store
from pcapwire.store.catalog import FLOW_IDLE_TIMEOUT_NS
from pcapwire.testing.craft import Capture, udp_exchange
from pcapwire.triggers import TriggerDB, ip_walk
from pcapwire.triggers.db import HitBatch, StagedRows
from pcapwire.triggers.hunt import run_hunt
from pcapwire.triggers.ip_walk import CATALOG_MMAP_BYTES, IpWalkers, ip_hits
from pcapwire.triggers.model import Scope
from triggerutil import create_trigger

# Indicator positions: 0 (side b of F2, F4), 1 (side a of F1, F2, F3), 2 (F1's b, F5's a)
IPS = ["192.0.2.8", "10.0.0.0/24", "192.0.2.9"]
# Flows whose packets all have one time stamp; the catalog's side a is the lower end.
FLOWS = ["10.0.0.2:1000 > 192.0.2.8:53", "10.1.0.1:1 > 192.0.2.8:53",  # F2, F4
         "192.0.2.9:5 > 200.0.0.1:80", "10.0.0.3:80 > 192.0.2.7:2000",  # F5, F3
         "10.0.0.1:1000 > 192.0.2.9:53"]  # F1
# Ties broken by flow id, the order in which the flows first appear in the capture: F2,
# F4, F5, F3, F1; a flow's own indicators side a's first (F2: indicator 1 on side a,
# then 0 on side b).
ORDER = [("ip:10.0.0.0/24", "10.0.0.2"), ("ip:192.0.2.8", "10.0.0.2"),
         ("ip:192.0.2.8", "10.1.0.1"), ("ip:192.0.2.9", "192.0.2.9"),
         ("ip:10.0.0.0/24", "10.0.0.3"), ("ip:10.0.0.0/24", "10.0.0.1"),
         ("ip:192.0.2.9", "10.0.0.1")]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A store of FLOWS at one instant, then F1 again after an idle gap (a second flow of
    its key, in the same segment)."""
    cap = Capture(step_us=0).add([udp_exchange(f, b"q", b"a") for f in FLOWS])
    cap.wait(FLOW_IDLE_TIMEOUT_NS // 1000 + 1)
    cap.add([udp_exchange(FLOWS[-1], b"q", b"a")])
    (tmp_path / "tie.pcap").write_bytes(cap.pcap())
    with Store(tmp_path / "store") as store:
        store.ingest([tmp_path / "tie.pcap"])
    return tmp_path / "store"


def test_hits_at_one_instant_come_in_the_order_of_their_flows(root: Path) -> None:
    with Store(root) as store:
        (segment,) = store.catalog.segments()
        hits = ip_hits(store, segment, IPS, Scope())
    assert len({h.ts for h in hits[:7]}) == 1 and hits[7].ts > hits[0].ts
    assert [h.flow_id for h in hits] == [1, 1, 2, 3, 4, 5, 5, 6, 6]
    assert [(h.rule, h.src_ip) for h in hits] == ORDER + ORDER[5:]
    trigger, hunt_id = create_trigger(root, "tie", {"indicators": {"ips": IPS}})
    run_hunt(root, hunt_id, threading.Event())
    with TriggerDB(root) as tdb:
        found = tdb.matches(trigger)
    assert [(m["rule"], m["src_ip"]) for m in found] == ORDER  # ids in the hits' order
    assert [m["id"] - found[0]["id"] for m in found] == list(range(7))
    assert [m["evidence"]["address"] for m in found] == [
        "10.0.0.2", "192.0.2.8", "192.0.2.8", "192.0.2.9", "10.0.0.3", "10.0.0.1",
        "192.0.2.9"]
    assert [(m["hits"], m["ts"], m["flow_id"]) for m in found[5:]] == [
        (2, hits[5].ts, hits[5].flow_id)] * 2


def test_walkers_read_the_catalog_and_lend_their_staging_databases(root: Path) -> None:
    with closing(IpWalkers(root / "catalog.sqlite")) as walkers, TriggerDB(root) as tdb:
        db, schema = walkers.first()
        (mapped,) = db.execute("PRAGMA main.mmap_size").fetchone()
        assert mapped == CATALOG_MMAP_BYTES
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            db.execute("DELETE FROM main.flows")
        (segment,) = walkers.segments_of([1])
        handed: list[tuple[int, StagedRows]] = []

        def record(seg: int, rows: StagedRows, seconds: float) -> None:
            handed.append((seg, rows))
            # 7 flows: not dealt round (SPLIT_MIN_FLOWS), the second walker never opened
            assert [r[1] for r in tdb.db.execute("PRAGMA database_list")] == [
                "main", "ip_walk0"]
            assert tdb.db.execute(f"SELECT count(*), sum(hits) FROM {schema}.ip_rows"
                                  ).fetchone() == (7, 9)
            with tdb.transaction():  # a unit's: another process writes the catalog meanwhile
                writer = sqlite3.connect(root / "catalog.sqlite", timeout=0)
                writer.execute("BEGIN IMMEDIATE")
                writer.execute("ROLLBACK")
                writer.close()

        walkers.walk([segment], IPS, Scope(), None, lambda: nullcontext(), tdb.db, record)
        assert handed == [(1, StagedRows(f"{schema}.ip_rows", 1, 7, 9))]
        assert [r[1] for r in tdb.db.execute("PRAGMA database_list")] == ["main"]


# rows as HitBatch.rows: rule, flow key, flow id, proto, src, sport, dest, dport, ts,
# evidence, hits; (rule, flow key) "a" repeats with an earlier time and a first flow id
# unknown, "c" twice in the second unit, which also finds "a" again (each unit's rows
# merged, HitBatch.of_rows, before they are recorded)
K1, K2 = "17 10.0.0.1 1 10.0.0.2 2", "17 10.0.0.3 3 10.0.0.4 4"
Row = tuple[Any, ...]
UNITS: list[list[Row]] = [
    [("ip:a", K1, None, 17, "10.0.0.1", 1, "10.0.0.2", 2, 5.0, '{"n":1}', 1),
     ("ip:b", K2, 7, 17, "10.0.0.3", 3, "10.0.0.4", 4, 6.0, '{"n":2}', 1),
     ("ip:a", K1, 8, 17, "10.0.0.2", 2, "10.0.0.1", 1, 4.0, '{"n":3}', 1)],
    [("ip:c", K1, 9, 17, "10.0.0.1", 1, "10.0.0.2", 2, 9.0, '{"n":4}', 1),
     ("ip:a", K1, 10, 17, "10.0.0.1", 1, "10.0.0.2", 2, 3.0, '{"n":5}', 1),
     ("ip:c", K1, 11, 17, "10.0.0.1", 1, "10.0.0.2", 2, 8.0, '{"n":6}', 1)]]
FIELDS = ("rule", "flow_key", "flow_id", "proto", "src_ip", "src_port", "dest_ip",
          "dest_port", "ts", "segment_id", "evidence", "versions", "hits")


def _result_set(root: Path, name: str, staged: bool) -> tuple[list[Any], list[int]]:
    trigger, hunt_id = create_trigger(root, name, {"indicators": {"ips": ["10.0.0.1"]}})
    new: list[int] = []
    with TriggerDB(root) as tdb:
        tdb.plan_units(hunt_id, [(1, 100), (2, 100)])
        tdb.db.execute("CREATE TEMP TABLE staged (rule, flow_key, flow_id, proto, src_ip, "
                       "src_port, dest_ip, dest_port, ts, evidence, hits)")
        for seg, rows in enumerate(UNITS, start=1):
            tdb.start_units(hunt_id, [seg])
            if staged:
                first = tdb.db.execute("SELECT coalesce(max(rowid), 0) + 1 FROM "
                                       "temp.staged").fetchone()[0]
                merged = HitBatch.of_rows(rows).rows
                tdb.db.executemany("INSERT INTO temp.staged VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                                   merged)
                hits: HitBatch | StagedRows = StagedRows("temp.staged", first,
                                                         first + len(merged) - 1, len(rows))
            else:
                hits = HitBatch.of_rows(rows)
            new += tdb.finish_unit(hunt_id, seg, hits, 1, 0.1)
        units = [u["matches"] for u in tdb.units(hunt_id)]
        found = [(m["id"], *(m[f] for f in FIELDS)) for m in tdb.matches(trigger)]
    first_id = found[0][0]
    assert new == [m[0] for m in found]
    return [(m[0] - first_id, *m[1:]) for m in found], units


def test_staged_rows_join_the_result_set_as_merged_rows_do(tmp_path: Path) -> None:
    merged = _result_set(tmp_path, "merged", staged=False)
    assert _result_set(tmp_path, "staged", staged=True) == merged
    assert merged == ([(0, "ip:a", K1, 8, 17, "10.0.0.1", 1, "10.0.0.2", 2, 3.0, 1,
                        {"n": 1}, [1], 3),
                       (1, "ip:b", K2, 7, 17, "10.0.0.3", 3, "10.0.0.4", 4, 6.0, 1,
                        {"n": 2}, [1], 1),
                       (2, "ip:c", K1, 9, 17, "10.0.0.1", 1, "10.0.0.2", 2, 8.0, 2,
                        {"n": 4}, [1], 2)], [3, 3])


def test_ipv6_addresses_take_the_address_function(tmp_path: Path) -> None:
    """IPv6 ends get their text from the walk's SQL function (IPv4 ones from SQL itself),
    a one-address indicator's end from the indicator: as ``ipaddress`` writes them."""
    with Store(tmp_path / "store") as store:
        store.ingest([corpus_file("zeek-ftp-ipv6-epsv-eprt")])
    client, server = "2001:470:1f11:81f:c999:d94:aa7c:2e3e", "2001:470:4867:99::21"
    ips = [server, "2001:470:1f11:81f::/64"]
    trigger, hunt_id = create_trigger(tmp_path / "store", "v6", {"indicators": {"ips": ips}})
    run_hunt(tmp_path / "store", hunt_id, threading.Event())
    with TriggerDB(tmp_path / "store") as tdb:
        found = tdb.matches(trigger)
    # six FTP flows, the last two (EPRT) opened by the server
    ports = [(49185, 21), (49186, 57086), (49187, 57087), (49188, 57088), (49189, 55785),
             (49190, 55647)]
    assert [(m["rule"], m["evidence"]["address"], m["flow_key"], m["src_ip"], m["src_port"],
             m["dest_ip"], m["dest_port"]) for m in found] == [
        (f"ip:{ip}", address, f"6 {client} {cport} {server} {sport}",
         *((client, cport, server, sport) if n < 4 else (server, sport, client, cport)))
        for n, (cport, sport) in enumerate(ports)
        for ip, address in ((ips[1], client), (ips[0], server))]


def test_without_the_native_sql_function_the_python_one_makes_the_same_rows(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python whose sqlite3 does not load the SQLite library pcapwire._native links has
    no native ``pcapwire_ip_text`` (here: a name no native function has): the walkers
    register the Python form under it, and the rows are the same."""
    def rows() -> list[tuple[Any, ...]]:
        with closing(IpWalkers(root / "catalog.sqlite")) as walkers:
            handed: list[tuple[Any, ...]] = []
            walkers.walk(walkers.segments_of([1]), IPS, Scope(), None, lambda: nullcontext(),
                         None, lambda seg, rows, _: handed.extend(walkers.rows(rows)))
            db, _ = walkers.first()
            native = db.execute(f"SELECT {ip_walk.IP_TEXT_SQL}(4, x'01020304')").fetchone()
            return [native, *handed]

    native = rows()
    monkeypatch.setattr(ip_walk, "IP_TEXT_SQL", "pcapwire_ip_text_python")
    with sqlite3.connect(":memory:") as probe, pytest.raises(sqlite3.OperationalError,
                                                            match="no such function"):
        probe.execute("SELECT pcapwire_ip_text_python(4, x'01020304')")
    python = rows()
    assert python == native and len(native) == 8 and native[0] == ("1.2.3.4",)
