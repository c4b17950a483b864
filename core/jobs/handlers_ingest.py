"""Job kind ``ingest``: capture files into the tenant's store, as ``pcapwire ingest`` does
(the store's retention policy applies while it fills).

Parameters: ``paths`` (1 to :data:`MAX_INGEST_PATHS` files or directories inside the
tenant's directory or the worker's read roots; a path that does not exist is reported in
the summary's errors, like ``pcapwire ingest`` does), ``limits`` (optional
:class:`~pcapwire.store.limits.IngestLimits` fields in bytes: ``max_decompressed_bytes``,
``max_decompression_ratio``, ``quota_bytes``). Output: the ingest summary
(:meth:`pcapwire.store.ingest.IngestReport.summary`, with ``stopped`` and ``unusable`` when
there are any). Error ``ingest_busy`` when another ingest holds the store.
"""

from __future__ import annotations

from typing import Any

from pcapwire.jobs.handlers import JobContext, param
from pcapwire.jobs.model import JobError

#: inputs one ingest job may name (directories count once)
MAX_INGEST_PATHS = 100
LIMIT_FIELDS = ("max_decompressed_bytes", "max_decompression_ratio", "quota_bytes")


def run(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    from pcapwire.store import IngestBusy, Store
    from pcapwire.store.limits import IngestLimits
    from pcapwire.store.maintenance import ingest_under_policy
    from pcapwire.store.segments import SEGMENT_MAX_BYTES

    raw = param(params, "paths", list)
    if not 1 <= len(raw) <= MAX_INGEST_PATHS:
        raise JobError("invalid_params", f"parameter 'paths' names {len(raw)} inputs; "
                       f"give 1 to MAX_INGEST_PATHS ({MAX_INGEST_PATHS})")
    paths = [ctx.path(params, "paths", must_exist=False, read_only=True, value=p) for p in raw]
    given = param(params, "limits", dict, {})
    unknown = sorted(set(given) - set(LIMIT_FIELDS))
    if unknown:
        raise JobError("invalid_params", f"parameter 'limits': unknown {', '.join(unknown)}; "
                       f"known: {', '.join(LIMIT_FIELDS)}")
    limits = IngestLimits(**{k: _limit(given, k) for k in LIMIT_FIELDS})
    with Store(ctx.root) as store:
        try:
            report, _deleted = ingest_under_policy(store, paths, SEGMENT_MAX_BYTES,
                                                   limits=limits)
        except IngestBusy as exc:
            raise JobError("ingest_busy", str(exc)) from None
    return report.summary()


def _limit(given: dict[str, Any], key: str) -> Any:
    value = param(given, key, (int, float), 0)
    if not value >= 0:  # also refuses nan
        raise JobError("invalid_params", f"limit {key!r} must be 0 (no limit) or more, "
                       f"not {value}")
    return value or None
