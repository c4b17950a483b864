"""Job kind ``hashlist_import``: load a file of hashes into the tenant's
``hashlists.sqlite``, as ``pcapwire hashlist import`` does.

Parameters: ``path`` (the file, inside the tenant's directory), ``name``, ``kind``
(``allow``/``deny``), optional ``mode`` (``create``, ``replace``, ``append``), ``severity``,
``format``, ``columns`` (list), ``label_column``, ``description``, ``shown`` (the name errors
give the file: the API shows the upload's name, never a server path) and ``limits``
(:class:`~pcapwire.hashlist.limits.ImportLimits` fields ``max_rows``, ``max_seconds``,
``max_steps``). Output: the import report (:meth:`ImportReport.to_dict`).

Errors carry the hash-list error's own code (``invalid_hashlist``, ``hashlist_exists``,
``hashlist_import_busy``, ``hashlist_limit_exceeded``, ``hashlist_import_cancelled``) and in
``data`` the ``report`` of a failed import and the ``limit`` (``what``, ``limit_name``,
``limit``) it went over. The worker's cancel event (SIGTERM) stops the import, which then
removes what it wrote.
"""

from __future__ import annotations

from typing import Any

from pcapwire.jobs.handlers import JobContext, param
from pcapwire.jobs.model import JobError

LIMIT_FIELDS = ("max_rows", "max_seconds", "max_steps")


def run(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    from pcapwire.hashlist import (
        DB_NAME,
        HashListError,
        HashListStore,
        ImportFailed,
        ImportLimits,
        LimitExceeded,
        Source,
    )

    path = ctx.path(params, "path")
    columns = param(params, "columns", list, [])
    if not all(isinstance(c, str) for c in columns):
        raise JobError("invalid_params", "parameter 'columns' must be a list of strings")
    given = param(params, "limits", dict, {})
    unknown = sorted(set(given) - set(LIMIT_FIELDS))
    if unknown:
        raise JobError("invalid_params", f"parameter 'limits': unknown {', '.join(unknown)}; "
                       f"known: {', '.join(LIMIT_FIELDS)}")
    try:
        source = Source(path, shown=param(params, "shown", str, "") or str(path),
                        format=param(params, "format", str, "auto"), columns=tuple(columns),
                        label_column=param(params, "label_column", str, None))
        limits = ImportLimits(**{k: param(given, k, (int, float)) for k in given})
        with HashListStore(ctx.root / DB_NAME) as store:
            report = store.import_sources(
                [source], name=param(params, "name", str), kind=param(params, "kind", str),
                severity=param(params, "severity", str, None),
                description=param(params, "description", str, None),
                mode=param(params, "mode", str, "create"), limits=limits, cancel=ctx.cancel)
    except HashListError as exc:
        data: dict[str, Any] = {}
        if isinstance(exc, ImportFailed):
            data["report"] = exc.report.to_dict()
        if isinstance(exc, LimitExceeded):
            data["limit"] = {"what": exc.what, "limit_name": exc.limit_name,
                             "limit": exc.limit}
        raise JobError(exc.code, str(exc), data) from None
    return dict(report.to_dict())
