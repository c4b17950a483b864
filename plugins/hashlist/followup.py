"""Follow-up PCAP queries for a known-bad file: one query per flow where its hash was seen,
run through the host's query function (``ctx.flow_ids``/``ctx.query``,
:mod:`pcapwire.workflow.queries`) and kept in the query history of the case.

Where a hash was seen: the file record's own flow, and every sighting the artifact store
keeps next to the file (``<sha256>.sightings.jsonl``, one line per time a carver stored
those bytes, see :mod:`pcapwire.extract.artifacts`) -- so a file carved again from another
capture or another query points back at every earlier flow too.

Each sighting's 5-tuple is resolved to the store's flow index (flows with that 5-tuple,
in either direction, alive within ``margin`` seconds of the sighting); each flow found
becomes ``QuerySpec(flow_ids=[id], case=<run's case>, event="hashlist:<sha256>")``. A
sighting that the index does not know (its capture was never ingested) becomes a query by
5-tuple and time window instead, so the pivot is on record for when the data arrives.
The plugin never opens the store: whoever runs the engine decides where a query goes and
what limits apply -- the CLI queries the data directory's store (result in
``<data-dir>/results/<id>.pcap``, recorded in its history), the API submits it as one of
the tenant's queries (its ``max_query_result_bytes`` and concurrent query slots apply; the
result is served like any query's). A query refused or failed is reported in the
evidence (``status: "error: ..."``, with ``error_code``) and as a note of the step; the
step goes on. Each flow is queried once per run.

Without a packet store (a run on a capture file, no data directory), nothing is run: the
verdict's evidence lists each flow with its BPF pivot and the reason.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcapwire.query import QuerySpec
from pcapwire.records import FileRecord, FlowKey
from pcapwire.workflow import StepContext
from pcapwire.workflow.queries import NoPacketStore, QueryResult

#: Sightings read per file (the newest are kept when there are more).
MAX_SIGHTINGS = 1000
#: Flows one sighting resolves to at most.
MAX_FLOWS_PER_SIGHTING = 100
NO_STORE = "not run: the run has no packet store (no data directory with a catalog)"


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
    error_code: str = ""  # the limit that refused the query, when one did
    spec: QuerySpec | None = None  # when there is a store to query
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
        if self.error_code:
            out["error_code"] = self.error_code
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
    """Per run: flows already queried, through the step's query function."""

    def __init__(self, ctx: StepContext[Any], case: str, margin: float, limit: int) -> None:
        self.ctx = ctx
        self.case = case
        self.margin = margin
        self.limit = limit
        self.done = 0
        self.failed = 0
        self._seen: dict[Any, FollowUp] = {}

    async def plan_and_run(self, record: FileRecord) -> list[FollowUp]:
        """Resolve the sightings to flows and query each (once per run)."""
        event = f"hashlist:{record.sha256}"
        out: list[FollowUp] = []
        for flow, ts in await asyncio.to_thread(sightings, record):
            try:
                found = await self._resolve(flow, ts, event)
            except NoPacketStore:
                out.append(FollowUp(flow, ts, event, status=NO_STORE))
                continue
            for fu in found:
                if fu.earlier is None and self.done >= self.limit:
                    fu.status = f"not run: max_follow_ups={self.limit} reached in this run"
                elif fu.earlier is None:
                    self.done += 1
                    await self._run(fu)
                out.append(fu)
        return out

    async def _resolve(self, flow: FlowKey, ts: float, event: str) -> list[FollowUp]:
        margin_ns = int(self.margin * 1e9)
        ts_ns = int(ts * 1e9)
        window = QuerySpec(five_tuple=flow, start_ns=ts_ns - margin_ns,
                           end_ns=ts_ns + margin_ns + 1, case=self.case, event=event)
        ids = await self.ctx.flow_ids(window, MAX_FLOWS_PER_SIGHTING)
        out = []
        for flow_id in ids:
            out.append(self._once(("flow", flow_id), FollowUp(
                flow, ts, event, flow_id=flow_id,
                spec=QuerySpec(flow_ids=[flow_id], case=self.case, event=event))))
        if not ids:
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

    async def _run(self, fu: FollowUp) -> None:
        assert fu.spec is not None
        try:
            result: QueryResult = await self.ctx.query(fu.spec)
        except NoPacketStore:
            fu.status = NO_STORE
            return
        fu.query_id = result.query_id
        if result.ok:
            fu.status, fu.packets, fu.bytes = "done", result.packets, result.bytes
            return
        fu.status, fu.error_code = f"error: {result.error}", result.error_code
        self.failed += 1
        self.ctx.note(f"hashlist: follow-up query {result.query_id} for {fu.event} "
                      f"({fu.flow.bpf()}) failed: {result.error}",
                      follow_ups_failed=self.failed)
