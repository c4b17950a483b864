"""Follow-up PCAP queries for a known-bad file: one query per flow where its hash was seen,
run against the run's packet store and kept in the case history.

Where a hash was seen: the file record's own flow, and every sighting the artifact store
keeps next to the file (``<sha256>.sightings.jsonl``, one line per time a carver stored
those bytes, see :mod:`pcapwire.extract.artifacts`) -- so a file carved again from another
capture or another query points back at every earlier flow too.

Each sighting's 5-tuple is resolved to the store's flow index (flows with that 5-tuple,
in either direction, alive within ``margin`` seconds of the sighting); each flow found
becomes ``QuerySpec(flow_ids=[id], case=<run's case>, event="hashlist:<sha256>")``. A
sighting that the index does not know (its capture was never ingested) becomes a query by
5-tuple and time window instead, so the pivot is on record for when the data arrives.
Queries are written like any other (``pcapwire.query``): recorded in the catalog's query
history with the case and event, and their PCAP kept as ``<data-dir>/results/<id>.pcap``
(where the API serves a query's result from). Each flow is queried once per run.

Without a packet store (a run on a capture file, no data directory), nothing is run: the
verdict's evidence lists each flow with its BPF pivot and the reason.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcapwire.errors import PcapwireError
from pcapwire.records import FileRecord, FlowKey

log = logging.getLogger(__name__)

#: Sightings read per file (the newest are kept when there are more).
MAX_SIGHTINGS = 1000


@dataclass
class FollowUp:
    flow: FlowKey
    ts: float
    event: str
    query_id: str = ""
    flow_id: int | None = None
    status: str = "planned"
    packets: int = 0
    bytes: int = 0
    spec: Any = None  # a QuerySpec, when there is a store to query
    earlier: FollowUp | None = None  # the same flow, already queried in this run

    def evidence(self) -> dict[str, Any]:
        if self.earlier is not None:
            return {**self.earlier.evidence(), "ts": self.ts,
                    "status": f"{self.earlier.status} (queried earlier in this run)"}
        out: dict[str, Any] = {"flow": self.flow.to_dict(), "ts": self.ts,
                               "bpf": self.flow.bpf(), "event": self.event,
                               "status": self.status}
        if self.query_id:
            out.update(query_id=self.query_id, flow_id=self.flow_id, packets=self.packets,
                       bytes=self.bytes)
        return out


def _key(flow: FlowKey) -> tuple[int, frozenset[tuple[str, int]]]:
    return flow.proto, frozenset({(flow.src, flow.sport), (flow.dst, flow.dport)})


def sightings(record: FileRecord) -> list[tuple[FlowKey, float]]:
    """``(flow, time)`` of every place the file's bytes were seen (its own first)."""
    out = [(record.flow, record.ts)]
    path = Path(str(record.path) + ".sightings.jsonl")
    try:
        lines = path.read_text().splitlines()[-MAX_SIGHTINGS:]
    except OSError:
        lines = []
    for line in lines:
        try:
            d = json.loads(line)
            out.append((FlowKey.from_dict(d["flow"]), float(d["ts"])))
        except (ValueError, KeyError, TypeError):
            continue  # a torn or foreign line: the others still count
    seen: set[tuple[Any, int]] = set()
    unique = []
    for flow, ts in out:
        k = (_key(flow), int(ts))
        if k not in seen:
            seen.add(k)
            unique.append((flow, ts))
    return unique


class FollowUps:
    """Per run: the packet store (opened on first use), flows already queried."""

    def __init__(self, data_dir: Path | None, case: str, margin: float, limit: int) -> None:
        self.data_dir = data_dir
        self.case = case
        self.margin = margin
        self.limit = limit
        self.done = 0
        self._store: Any = None
        self._seen: dict[Any, FollowUp] = {}

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def _open(self) -> Any:
        if self._store is None and self.data_dir is not None \
                and (self.data_dir / "catalog.sqlite").exists():
            from pcapwire.store import Store

            self._store = Store(self.data_dir)
        return self._store

    def plan_and_run(self, record: FileRecord) -> list[FollowUp]:
        """Blocking (run it in a thread): resolve the sightings to flows and query each."""
        event = f"hashlist:{record.sha256}"
        store = self._open()
        out: list[FollowUp] = []
        for flow, ts in sightings(record):
            if store is None:
                out.append(FollowUp(flow, ts, event, status="not run: the run has no packet "
                                    "store (no data directory with a catalog)"))
                continue
            for fu in self._resolve(store, flow, ts, event):
                if fu.earlier is None and self.done >= self.limit:
                    fu.status = f"not run: max_follow_ups={self.limit} reached in this run"
                elif fu.earlier is None:
                    self.done += 1
                    self._run(store, fu)
                out.append(fu)
        return out

    def _resolve(self, store: Any, flow: FlowKey, ts: float, event: str) -> list[FollowUp]:
        from pcapwire.query import QuerySpec
        from pcapwire.query.flows import flows_sql

        margin_ns = int(self.margin * 1e9)
        ts_ns = int(ts * 1e9)
        window = QuerySpec(five_tuple=flow, start_ns=ts_ns - margin_ns,
                           end_ns=ts_ns + margin_ns + 1, case=self.case, event=event)
        where = flows_sql(window)
        rows = list(store.catalog.flows(where.where, where.args, limit=100))
        out = []
        for row in rows:
            out.append(self._once(("flow", row.id), FollowUp(
                flow, ts, event, flow_id=row.id,
                spec=QuerySpec(flow_ids=[row.id], case=self.case, event=event))))
        if not rows:
            out.append(self._once(("tuple", _key(flow), int(ts)),
                                  FollowUp(flow, ts, event, spec=window)))
        return out

    def _once(self, key: Any, fu: FollowUp) -> FollowUp:
        """``fu``, or a reference to the follow-up of the same flow earlier in the run."""
        if key in self._seen:
            fu.earlier = self._seen[key]
        else:
            self._seen[key] = fu
        return fu

    def _run(self, store: Any, fu: FollowUp) -> None:
        fu.query_id = uuid.uuid4().hex
        results = store.root / "results"
        try:
            results.mkdir(exist_ok=True)
            with open(results / f"{fu.query_id}.pcap", "wb") as fh:
                stats = store.query_engine().write(fu.spec, fh, query_id=fu.query_id,
                                                   record=True)
        except (OSError, PcapwireError) as exc:
            fu.status = f"error: {exc}"
            log.warning("follow-up query %s for %s failed: %s", fu.query_id, fu.event, exc)
            return
        fu.status, fu.packets, fu.bytes = "done", stats.packets, stats.bytes
