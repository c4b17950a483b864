"""Job kind ``workflow``: run named workflows over a capture of the tenant's store, as
``pcapwire run WORKFLOW --pcap FILE`` does (:func:`pcapwire.workflow.oneshot.run_workflows`),
recording the runs and their verdicts in the tenant's case store.

Parameters: ``workflows`` (1–:data:`MAX_WORKFLOWS` names), the capture as either ``pcap``
(a path inside the tenant's directory, e.g. a stored query result ``results/<id>.pcap``)
or ``query_id`` (that stored result, which then is the runs' query id), ``case``, optional
``event`` (each at most :data:`MAX_LABEL_CHARS` characters). Output: ``runs`` (per
workflow, in order: ``run_id``, ``workflow``, ``status``, ``verdicts``,
``verdicts_by_severity``, ``max_severity``, ``chunks``, ``error``), ``case``,
``query_id``.

Workflow names resolve only from the worker's workflow directories
(:data:`SHIPPED_WORKFLOWS` and the operator's ``pcapwire worker --workflows DIR``, loaded
as ``pcapwire serve --workflows DIR`` loads them; the first of a name wins), never
from a path in the job: a name not there fails with ``unknown_workflow`` (``data.unknown``,
``data.available``). A capture pcapwire cannot read makes the run ``failed`` with its
``error``, as for ``pcapwire run``; the job itself succeeds (its runs are recorded).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from pcapwire.jobs.handlers import JobContext, param
from pcapwire.jobs.model import JobError

#: the workflows shipped with pcapwire (the source tree's ``workflows/``)
SHIPPED_WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
#: workflows one job may name
MAX_WORKFLOWS = 16
#: longest ``case`` or ``event``
MAX_LABEL_CHARS = 256
#: what a ``query_id`` may look like (the API's are 32 hex digits)
QUERY_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
RESULTS_DIR = "results"


def run(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    from pcapwire.api.workflows import WorkflowService
    from pcapwire.workflow.oneshot import run_workflows
    from pcapwire.workflow.sources import file_chunks

    names = param(params, "workflows", list)
    if not 1 <= len(names) <= MAX_WORKFLOWS or not all(isinstance(n, str) for n in names):
        raise JobError("invalid_params", "parameter 'workflows' must list 1 to "
                       f"MAX_WORKFLOWS={MAX_WORKFLOWS} workflow names, not {names!r:.200}")
    case, event = _label(params, "case", None), _label(params, "event", "")
    pcap, query_id = _capture(params, ctx)
    if not pcap.is_file():
        raise JobError("not_found", f"{pcap.relative_to(ctx.root)} is not a file",
                       {"parameter": "pcap" if "pcap" in params else "query_id"})
    service = WorkflowService([SHIPPED_WORKFLOWS, *ctx.workflow_dirs])
    service.start()
    unknown = [n for n in names if n not in service.loaded]
    if unknown:
        raise JobError("unknown_workflow", f"no workflow {unknown[0]!r} on this worker; "
                       f"available: {', '.join(sorted(service.loaded)) or 'none'}",
                       {"unknown": unknown, "available": sorted(service.loaded)})
    runs = run_workflows(service.host, [service.loaded[n] for n in names],
                         lambda: (file_chunks(pcap, query_id=query_id), query_id),
                         data_dir=ctx.root, case=case, event=event)
    return {"case": case, "query_id": query_id,
            "runs": [{"run_id": s.run_id, "workflow": s.workflow, "status": s.status,
                      "verdicts": s.verdicts, "verdicts_by_severity": s.verdicts_by_severity,
                      "max_severity": s.max_severity, "chunks": s.chunks, "error": s.error}
                     for s, _ in runs]}


def _label(params: dict[str, Any], key: str, default: str | None) -> str:
    value = param(params, key, str) if default is None else param(params, key, str, default)
    if len(value) > MAX_LABEL_CHARS:
        raise JobError("invalid_params", f"parameter {key!r} is {len(value)} characters "
                       f"long, over MAX_LABEL_CHARS={MAX_LABEL_CHARS}")
    return value


def _capture(params: dict[str, Any], ctx: JobContext) -> tuple[Path, str]:
    """The capture file (confined to the tenant's directory) and the runs' query id."""
    if ("pcap" in params) == ("query_id" in params):
        raise JobError("invalid_params", "the job needs exactly one of the parameters "
                       "'pcap' (a capture in the tenant's directory) and 'query_id' (a "
                       "stored query result)")
    if "pcap" in params:
        return ctx.path(params, "pcap"), uuid.uuid4().hex
    query_id = param(params, "query_id", str)
    if not QUERY_ID_RE.fullmatch(query_id):
        raise JobError("invalid_params", f"parameter 'query_id': {query_id!r:.80} is no "
                       "query id (1-64 characters A-Z a-z 0-9 _ -)")
    path = ctx.path(params, "query_id", value=f"{RESULTS_DIR}/{query_id}.pcap")
    return path, query_id
