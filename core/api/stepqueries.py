"""The query function the API hands the workflow engine (``ctx.query`` of a step,
:mod:`pcapwire.workflow.queries`): a step's query is submitted as one of the tenant's own
queries, so everything that holds for a query posted to ``/api/v1/queries`` holds for it --
the tenant's ``max_query_result_bytes`` caps it, it takes one of the tenant's concurrent
query slots (refused, not queued, when none is free), it is kept in the tenant's query
history with its case and event, and its PCAP is served by ``GET
/api/v1/queries/{id}/pcap``. A refusal or a failure is a :class:`QueryResult` with
``status="error"`` and the API's error code (``result_too_large``, ``too_many_queries``...).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from pcapwire.api.errors import ApiError
from pcapwire.errors import PcapwireError
from pcapwire.query import QuerySpec
from pcapwire.query.flows import flows_sql

if TYPE_CHECKING:
    from pcapwire.api.jobs import QueryManager
    from pcapwire.api.tenants import TenantStore
    from pcapwire.workflow.queries import QueryResult

#: :data:`pcapwire.workflow.queries.MAX_FLOW_IDS` (the API imports the workflow package
#: only when a workflow runs)
MAX_FLOW_IDS = 100


class TenantQueries:
    """:class:`~pcapwire.workflow.queries.PacketQueries` of one tenant."""

    def __init__(self, manager: QueryManager, ts: TenantStore, max_result_bytes: int,
                 actor: str) -> None:
        self.manager = manager
        self.actor = actor  # the custody log's actor of the steps' queries
        self.ts = ts
        self.max_result_bytes = max_result_bytes

    async def flow_ids(self, spec: QuerySpec, limit: int = MAX_FLOW_IDS) -> list[int]:
        where = flows_sql(spec)  # an indexed lookup on the loop, like GET /flows
        return [row.id for row in self.ts.catalog.flows(where.where, where.args, limit=limit)]

    async def query(self, spec: QuerySpec) -> QueryResult:
        from pcapwire.workflow.queries import QueryResult

        cap = self.max_result_bytes
        spec = dataclasses.replace(spec, max_bytes=min(spec.max_bytes or cap, cap),
                                   follow=False)  # a step waits for its query's end
        try:
            job = await self.manager.submit(self.ts, spec, [], self.actor)
        except ApiError as exc:
            return QueryResult("", "error", error=exc.message, error_code=exc.code)
        except PcapwireError as exc:
            return QueryResult("", "error", error=str(exc), error_code="invalid_query")
        assert job.task is not None
        await job.task  # cancelled with the run that asked for it
        if job.status == "done":
            return QueryResult(job.id, "done", job.stats.packets, job.stats.bytes)
        return QueryResult(job.id, "error", job.stats.packets, job.stats.bytes,
                           error=job.error or f"the query ended {job.status}",
                           error_code=job.error_code or job.status)
