"""PCAP queries from inside a step (``ctx.query``, ``ctx.flow_ids``): an analyzer that
pivots back into the packet store (the hash-list plugin's follow-up queries for a
known-bad file, say) asks whoever runs the engine, never opens the store itself.

The host hands the engine a :class:`PacketQueries` (``Engine(..., queries=...)``), which
decides where results go and which limits apply:

* the CLI (``pcapwire run``, ``workflow test``) gives :class:`LocalQueries`: the data
  directory's store, each result written to ``<data-dir>/results/<id>.pcap`` and kept
  in the store's query history with its case and event (what ``pcapwire query`` keeps);
* the API server gives one that submits the query as the tenant's own query
  (:mod:`pcapwire.api.stepqueries`): the tenant's ``max_query_result_bytes`` and
  concurrent query slots apply, the query is in the tenant's history and its PCAP is
  served by ``GET /api/v1/queries/{id}/pcap``.

A run without a packet store (``--pcap FILE`` and no catalog in the data directory) has
none: ``ctx.query`` then raises :class:`NoPacketStore`, which analyzers report (the run
goes on). A query that fails or exceeds a limit is a :class:`QueryResult` with
``status="error"`` and the reason, not an exception: one refused pivot is a note in the
step result, not the end of the step.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pcapwire.errors import PcapwireError

if TYPE_CHECKING:
    from pcapwire.query import QuerySpec

#: Most flow ids :meth:`PacketQueries.flow_ids` returns by default.
MAX_FLOW_IDS = 100


class NoPacketStore(PcapwireError):
    """The run has no packet store to query (a run on a capture file)."""


@dataclass(frozen=True)
class QueryResult:
    """How one query of a step ended: ``done`` (its PCAP is kept under ``query_id``) or
    ``error`` (``error`` says why; ``error_code`` names a limit when one refused it,
    e.g. ``result_too_large`` or ``too_many_queries``)."""

    query_id: str
    status: Literal["done", "error"]
    packets: int = 0
    bytes: int = 0
    error: str = ""
    error_code: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PacketQueries(Protocol):
    """What a host hands the engine so that steps can query the packet store."""

    async def flow_ids(self, spec: QuerySpec, limit: int = MAX_FLOW_IDS) -> list[int]:
        """Ids of the indexed flows that may hold packets matching ``spec`` (5-tuple,
        hosts, ports, time window...), oldest first, at most ``limit``."""
        ...

    async def query(self, spec: QuerySpec) -> QueryResult:
        """Run ``spec`` as a recorded query (case and event from the spec)."""
        ...


class LocalQueries:
    """The data directory's store, opened on first use (``close`` when the run ends);
    queries run in a worker thread, one at a time."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self._store: Any = None
        self._lock = threading.Lock()

    def _open(self) -> Any:
        if self._store is None:
            if not (self.data_dir / "catalog.sqlite").exists():
                raise NoPacketStore(f"{self.data_dir} holds no packet store (nothing "
                                    "ingested there)")
            from pcapwire.store import Store

            self._store = Store(self.data_dir)
        return self._store

    def _flow_ids(self, spec: QuerySpec, limit: int) -> list[int]:
        from pcapwire.query.flows import flows_sql

        with self._lock:
            where = flows_sql(spec)
            return [row.id for row in self._open().catalog.flows(where.where, where.args,
                                                                 limit=limit)]

    async def flow_ids(self, spec: QuerySpec, limit: int = MAX_FLOW_IDS) -> list[int]:
        return await asyncio.to_thread(self._flow_ids, spec, limit)

    def _query(self, spec: QuerySpec) -> QueryResult:
        query_id = uuid.uuid4().hex
        with self._lock:
            store = self._open()
            results = store.root / "results"
            try:
                results.mkdir(exist_ok=True)
                with open(results / f"{query_id}.pcap", "wb") as fh:
                    stats = store.query_engine().write(spec, fh, query_id=query_id,
                                                       record=True)
            except (OSError, PcapwireError) as exc:
                code = "result_too_large" if "exceeds the limit" in str(exc) else ""
                return QueryResult(query_id, "error", error=str(exc), error_code=code)
        return QueryResult(query_id, "done", stats.packets, stats.bytes)

    async def query(self, spec: QuerySpec) -> QueryResult:
        return await asyncio.to_thread(self._query, spec)

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
