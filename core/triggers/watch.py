"""The watch: after its hunt, a trigger keeps matching what arrives, as it arrives.

Who reads which packets. Each packet is matched once per trigger, by one path, so a hit is
never counted twice (matches are deduplicated per (rule, flow) anyway; ``hits`` counts):

- **History is the hunt's.** When a trigger is made, its watch starts below the first
  segment being recorded, else after the last segment
  (:func:`~.db.watch_start`); the hunt takes the sealed segments up to there. A new
  version's hunt takes every segment the watch had finished
  (:meth:`~.db.TriggerDB.hunt_scope`); the watch goes on with the new rules from where it
  is.
- **Recorded segments are read live** (those in the catalog's ``capture_segments``): at
  every commit of the recorder (about every 0.5 s), from the byte the watch reached to
  the committed size, in one read transaction as a follow query reads them
  (:class:`~pcapwire.query.follow.Snapshots`). IP indicators and the BPF are matched on
  packets the native scan returns through a BPF filter (the IPs as ``host``/``net``
  terms, up to :data:`MAX_IP_FILTER` of them; more are matched on every packet). Content
  rules (Suricata, YARA, domains, URLs, JA3/JA4) run in one streaming engine per (trigger
  version, segment) that gets each step's new bytes as chunks and raises hits as it finds
  them (:mod:`.live_engines`: Suricata starts once per segment, TCP streams spanning
  steps are whole; a restarted engine reads the segment from its start again, its
  repeated hits not counted twice). A sealed segment is finished once read to its end and
  its engine has drained; then file hash indicators (which need the files carved from
  whole streams) run as one unit over it.
- **Every other new segment** (``pcapwire ingest``) is sealed when it appears and is one
  unit of the hunt's unit function with the whole definition.

A live step's IP/BPF hits and the segments' new offsets (what was handed to the
engines), and a unit's hits and its ``done``, are kept in one transaction each
(:meth:`~.db.TriggerDB.watch_checkpoint`): a watch stopped at any moment resumes where it
was, nothing skipped, nothing counted twice. IP and
BPF hits count once per (rule, flow, segment), as a unit counts them: a flow seen in
several live steps of one segment is counted once (remembered in memory while the
segment is read; after a restart in the middle of a segment, a flow already counted
there counts once more).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcapwire import _native
from pcapwire.pcapformat import HEADER_LEN
from pcapwire.query.engine import Plan, QueryEngine, SegmentPlan
from pcapwire.query.follow import Snapshots
from pcapwire.query.spec import QuerySpec
from pcapwire.reassembly.packets import address
from pcapwire.records import PcapChunk
from pcapwire.store import Store
from pcapwire.store.catalog import Segment
from pcapwire.triggers.db import Hit, Trigger, TriggerDB, flow_key
from pcapwire.triggers.live_engines import LiveEngines, with_flow_id
from pcapwire.triggers.match_engines import EngineSettings, needs_engines
from pcapwire.triggers.match_index import combine_bpf
from pcapwire.triggers.model import Indicators, TriggerDef, rule_key

log = logging.getLogger(__name__)

#: IP indicators matched live through a BPF prefilter (``host A or net B ...``, compiled
#: once by libpcap); with more, every packet of the new bytes is decoded and looked up.
MAX_IP_FILTER = 256
#: Indicator kinds that need whole carved files: matched when a recorded segment is sealed.
FILE_KINDS = ("sha256", "md5", "sha1")
_META = struct.Struct(_native.META_STRUCT)

#: ``on_matches(trigger_id, new match ids)``: called after each checkpoint that added some.
OnMatches = Callable[[int, list[int]], None]
#: The hunt's unit function: (store root, segment id, definition) -> hits.
UnitFunction = Callable[[Path, int, TriggerDef], list[Hit]]


def file_part(defn: TriggerDef) -> TriggerDef | None:
    """The part of ``defn`` only a sealed segment can answer (file hashes), or None."""
    ind = defn.indicators
    if not any(getattr(ind, k) for k in FILE_KINDS):
        return None
    return TriggerDef(defn.name, indicators=Indicators(sha256=ind.sha256, md5=ind.md5,
                                                       sha1=ind.sha1), scope=defn.scope)


def live_part(defn: TriggerDef) -> TriggerDef:
    """What the live path matches: everything but the file hashes."""
    ind = dataclasses.replace(defn.indicators, sha256=[], md5=[], sha1=[])
    return dataclasses.replace(defn, indicators=ind)


class IpIndicators:
    """IP addresses and CIDR networks (canonical, as :func:`~.model.normalise_indicator`
    writes them) looked up by address (16 bytes as the native reader gives them, IPv4 in
    the first four), as the query engine's ``host``/``net`` filters match: one table per
    (IP version, prefix length)."""

    def __init__(self, values: list[str]) -> None:
        self.nets: dict[tuple[int, int], dict[int, list[str]]] = {}
        for value in values:
            net = ipaddress.ip_network(value, strict=False)
            bits = net.max_prefixlen - net.prefixlen
            self.nets.setdefault((net.version, net.prefixlen), {}).setdefault(
                int(net.network_address) >> bits, []).append(value)

    def match(self, ipver: int, raw: bytes) -> list[str]:
        addr = int.from_bytes(raw[:4] if ipver == 4 else raw[:16], "big")
        width = 32 if ipver == 4 else 128
        out: list[str] = []
        for (version, prefix), table in self.nets.items():
            if version == ipver:
                out += table.get(addr >> (width - prefix), [])
        return out


def ips_bpf(ips: list[str]) -> str:
    """``host A or net B/n ...``: the packets an IP indicator list can match."""
    return " or ".join(f"net {i}" if "/" in i else f"host {i}" for i in ips)


@dataclass
class SeenFlow:
    """A flow's packets in what one step read: oriented as its first packet."""

    ipver: int
    proto: int
    src: str
    sport: int
    dst: str
    dport: int
    first_ns: int
    raw: tuple[bytes, bytes]  # the addresses as the native reader gives them (16 bytes)
    packets: int = 0


def flows_of(chunks: Iterator[PcapChunk]) -> dict[str, SeenFlow]:
    """The IP flows (direction-independent key, :func:`~.db.flow_key`) of some chunks;
    non-first fragments (no ports) are left out."""
    flows: dict[str, SeenFlow] = {}
    skip = _native.FLAG_FRAGMENT
    for chunk in chunks:
        reader = _native.Reader(f"chunk {chunk.query_id}#{chunk.seq}")
        for batch in reader.feed(chunk.data) + reader.finish():
            for m in _META.iter_unpack(batch[4]):
                ipver, flags = m[13], m[11]
                if ipver not in (4, 6) or (flags & skip and
                                           not flags & _native.FLAG_FIRST_FRAGMENT):
                    continue
                src, dst = address(m[7], ipver), address(m[8], ipver)
                key = flow_key(m[14], src, m[9], dst, m[10])
                f = flows.get(key)
                if f is None:
                    f = flows[key] = SeenFlow(ipver, m[14], src, m[9], dst, m[10], m[0],
                                              (m[7], m[8]))
                f.packets += 1
    return flows


def _hit(rule: str, f: SeenFlow, evidence: dict[str, Any]) -> Hit:
    return Hit(rule, f.proto, f.src, f.sport, f.dst, f.dport, f.first_ns / 1e9, evidence)


class Watch:
    """The watch of one store's triggers; :meth:`live_step` and :meth:`unit_step` each from
    one thread (they hold their own connections)."""

    def __init__(self, root: str | Path, on_matches: OnMatches,
                 unit: UnitFunction | None = None, work_dir: Path | None = None,
                 engine_settings: EngineSettings | None = None, sensor: str = "") -> None:
        self.root = Path(root)
        self.sensor = sensor  # this server's name: a trigger scoped to others is skipped
        self.on_matches = on_matches
        self.unit = unit
        self.work_dir = work_dir or self.root / "work" / "triggers"
        #: the content rules' engines over the segments being recorded
        self.engines = LiveEngines(self.root, self.work_dir, on_matches, engine_settings)
        self.store = Store(self.root)
        self.engine: QueryEngine = self.store.query_engine()
        self.cat = Snapshots(self.store.catalog.path)
        self.live_db = TriggerDB(self.root)
        self.unit_db = TriggerDB(self.root)
        #: (trigger id, segment id) -> (rule, flow key) already counted in that segment
        self.counted: dict[tuple[int, int], set[tuple[str, str]]] = {}

    def close(self) -> None:
        self.engines.close()
        self.cat.close()
        self.live_db.close()
        self.unit_db.close()
        self.store.close()

    def catalog_version(self) -> int:
        return self.cat.version()

    # -- the recorded segments, live ------------------------------------------------------
    def live_step(self, stop: threading.Event | None = None) -> int:
        """Read what was recorded since the last step, for every active trigger; returns
        the number of new matches."""
        new = 0
        live: set[tuple[int, int]] = set()
        for trig in self.live_db.triggers():
            if trig.state == "active" and trig.definition.scope.covers(self.sensor) \
                    and not (stop is not None and stop.is_set()):
                new += self._live(trig, stop, live)
        if not (stop is not None and stop.is_set()):
            self.engines.keep_only(live)  # those of paused or deleted triggers stop
        return new

    def _snapshot(self, cursor: int) -> tuple[list[int], dict[int, str], dict[int, Segment]]:
        """Segment ids above ``cursor``, the recorder's state of those it records, and the
        recorded ones' rows, all of one commit."""
        with self.cat.snapshot():
            ids = [r[0] for r in self.cat.db.execute(
                "SELECT id FROM segments WHERE id > ? ORDER BY id", (cursor,))]
            recorded = dict(self.cat.db.execute(
                "SELECT segment_id, state FROM capture_segments WHERE segment_id > ?",
                (cursor,)).fetchall())
            segs = {s.id: s for s in self.cat.segments(ids=[i for i in ids if i in recorded])}
        return ids, recorded, segs

    def _live(self, trig: Trigger, stop: threading.Event | None,
              live: set[tuple[int, int]]) -> int:
        """One step of one trigger over its live segments; adds the (trigger, segment)
        pairs whose engines must keep running to ``live``."""
        cursor, rows = self.live_db.watch_state(trig.id)
        ids, recorded, segs = self._snapshot(cursor)
        has_files = file_part(trig.definition) is not None
        defn = live_part(trig.definition)
        content = needs_engines(defn)
        progress: dict[int, tuple[int, str]] = {}
        parts: list[SegmentPlan] = []
        for sid, seg in segs.items():
            offset, state = rows.get(sid, (HEADER_LEN, "live"))
            if state != "live":
                continue
            sealed = recorded[sid] != "open"
            finished = True
            if content:
                live.add((trig.id, sid))
                self._feed_engine(trig, defn, seg, sealed, stop)
                finished = sealed and self.engines.finished(trig.id, sid)
            if seg.size > offset:
                parts.append(SegmentPlan(seg, None, offset))
            if seg.size > offset or (sealed and finished):
                progress[sid] = (seg.size, ("read" if has_files else "done")
                                 if sealed and finished else "live")
        if not progress:
            return 0
        hits: list[tuple[Hit, int | None]] = []
        for part in parts:
            hits += [(h, part.segment.id) for h in self.live_hits(trig.id, defn, part, stop)]
        if stop is not None and stop.is_set():
            return 0  # not checkpointed: read again on the next start
        new = self.live_db.watch_checkpoint(trig.id, trig.version, hits, progress, ids)
        for sid, (_off, state) in progress.items():
            if state != "live":
                self.counted.pop((trig.id, sid), None)
                self.engines.forget(trig.id, sid)
                live.discard((trig.id, sid))
        if new:
            self.on_matches(trig.id, new)
        return len(new)

    def _feed_engine(self, trig: Trigger, defn: TriggerDef, seg: Segment, sealed: bool,
                     stop: threading.Event | None) -> None:
        """Hand the segment's committed bytes not yet handed to the engine of (trigger
        version, segment) — all of them to a new one — and end its input once sealed."""
        eng = self.engines.engine(trig.id, trig.version, seg.id, defn)
        if eng is None:
            return
        if seg.size > eng.fed:
            spec = self._spec(defn, defn.scope.bpf)
            plan = self._plan(spec, SegmentPlan(seg, None, eng.fed))
            if not self.engines.feed(eng, self.engine.iter_chunks(spec, "", stop, plan),
                                     seg.size, stop):
                return
        if sealed:
            self.engines.end(eng, stop)

    def live_hits(self, trigger_id: int, defn: TriggerDef, part: SegmentPlan,
                  stop: threading.Event | None) -> list[Hit]:
        """What ``defn``'s BPF and IP indicators find in ``part`` (one segment from a
        byte to its committed size); its content rules are the live engines'."""
        seg = part.segment
        counted = self.counted.setdefault((trigger_id, seg.id), set())
        scope = defn.scope
        hits: list[Hit] = []

        def fresh(rule: str, key: str) -> bool:
            if (rule, key) in counted:
                return False
            counted.add((rule, key))
            return True

        if defn.bpf.strip():
            for key, f in self._flows(part, combine_bpf(scope.bpf, defn.bpf), defn,
                                      stop).items():
                if fresh("bpf", key):
                    hits.append(_hit("bpf", f, {"bpf": defn.bpf, "packets": f.packets}))
        if defn.indicators.ips:
            table = IpIndicators(defn.indicators.ips)
            ips = defn.indicators.ips
            prefilter = ips_bpf(ips) if len(ips) <= MAX_IP_FILTER else ""
            for key, f in self._flows(part, combine_bpf(scope.bpf, prefilter), defn,
                                      stop).items():
                matched: dict[str, str] = {}
                for raw, text in zip(f.raw, (f.src, f.dst), strict=True):
                    for value in table.match(f.ipver, raw):
                        matched.setdefault(value, text)
                for value, addr in matched.items():
                    rule = rule_key("ip", value)
                    if fresh(rule, key):
                        hits.append(_hit(rule, f, {"indicator": value, "address": addr}))
        return [with_flow_id(self.store.catalog.db, h) for h in hits]

    def _spec(self, defn: TriggerDef, bpf: str) -> QuerySpec:
        return QuerySpec(bpf=bpf, start_ns=defn.scope.start_ns, end_ns=defn.scope.end_ns,
                         case="", event="trigger-watch")

    def _plan(self, spec: QuerySpec, part: SegmentPlan) -> Plan:
        seg = part.segment
        return Plan(spec, [part], None, {seg.linktype: seg.snaplen}, settled=True)

    def _flows(self, part: SegmentPlan, bpf: str, defn: TriggerDef,
               stop: threading.Event | None) -> dict[str, SeenFlow]:
        spec = self._spec(defn, bpf)
        return flows_of(self.engine.iter_chunks(spec, "", stop, self._plan(spec, part)))

    # -- sealed segments, as units --------------------------------------------------------
    def unit_step(self, stop: threading.Event | None = None) -> int:
        """Run at most one unit per active trigger: a new sealed segment that was not
        recorded (the whole definition), or a recorded one read live to its end (its file
        hashes). Returns the number of units run."""
        ran = 0
        for trig in self.unit_db.triggers():
            if trig.state != "active" or not trig.definition.scope.covers(self.sensor) \
                    or (stop is not None and stop.is_set()):
                continue
            ran += self._unit(trig)
        return ran

    def _unit(self, trig: Trigger) -> int:
        cursor, rows = self.unit_db.watch_state(trig.id)
        with self.cat.snapshot():
            ids = [r[0] for r in self.cat.db.execute(
                "SELECT id FROM segments WHERE id > ? ORDER BY id", (cursor,))]
            recorded = {r[0] for r in self.cat.db.execute(
                "SELECT segment_id FROM capture_segments WHERE segment_id > ?", (cursor,))}
        for sid in ids:
            state = rows.get(sid, (0, ""))[1]
            if sid in recorded:
                if state != "read":
                    continue
                defn = file_part(trig.definition)
            elif state == "done":
                continue
            else:
                defn = trig.definition
            hits = self._run_unit(sid, defn) if defn is not None else []
            new = self.unit_db.watch_checkpoint(trig.id, trig.version,
                                                [(h, sid) for h in hits],
                                                {sid: (0, "done")}, ids)
            if new:
                self.on_matches(trig.id, new)
            return 1
        return 0

    def _run_unit(self, segment_id: int, defn: TriggerDef) -> list[Hit]:
        return (self.unit or default_unit)(self.root, segment_id, defn)


def default_unit(root: Path, segment_id: int, defn: TriggerDef) -> list[Hit]:
    """The hunt's unit function (:func:`.units.run_unit`), in this thread."""
    from pcapwire.triggers.units import run_unit

    hits, _seconds = run_unit(str(root), segment_id, json.dumps(defn.to_dict()),
                              str(root / "work"))
    return hits
