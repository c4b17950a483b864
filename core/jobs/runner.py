"""Run one job: dispatch by its ``kind`` to a handler module and turn whatever happens into
a :class:`~pcapwire.jobs.JobResult`, so that the submitter (the API, a NATS consumer) always
gets an error code, never a traceback or stderr text to parse.

Codes of the runner itself: ``unknown_kind``; ``invalid_params``, ``path_not_allowed`` and
``not_found`` from the parameter checks (:mod:`pcapwire.jobs.handlers`); ``input_error``
when the job's input made pcapwire refuse it (a :class:`~pcapwire.errors.PcapwireError`:
the message says what and where); ``internal_error`` for anything else (logged with its
traceback). Handlers add their own (``ingest_busy``, the hash lists' codes,
``hunt_stopped``).

``data_dir`` is the tenant's store, the one tree a job may write to (a server's tenant
lives in ``DATA/tenants/<tenant>``: :func:`tenant_root`); handler modules are imported on
first use, so ``ping`` (the dispatch benchmark) costs no import of the store.
"""

from __future__ import annotations

import importlib
import logging
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pcapwire.errors import PcapwireError
from pcapwire.jobs.handlers import JobContext
from pcapwire.jobs.model import Job, JobError, JobResult

log = logging.getLogger(__name__)

#: kind -> handler module (``run(params, ctx) -> dict``); ``ping`` is answered here
HANDLERS: dict[str, str] = {"ingest": "pcapwire.jobs.handlers_ingest",
                            "hashlist_import": "pcapwire.jobs.handlers_hashlist",
                            "extract": "pcapwire.jobs.handlers_extract",
                            "hunt": "pcapwire.jobs.handlers_hunt",
                            "workflow": "pcapwire.jobs.handlers_workflow",
                            "sandbox": "pcapwire.jobs.handlers_sandbox"}
KINDS: tuple[str, ...] = ("ping", *HANDLERS)
#: codes that say the job itself is wrong (``pcapwire worker`` exits 2 on them, not 1)
INVALID_CODES = frozenset({"invalid_job", "unknown_kind", "invalid_params",
                           "path_not_allowed", "unknown_workflow"})


def tenant_root(data_dir: Path, tenant: str) -> Path:
    """Where a server (``pcapwire serve --data-dir DATA``) keeps ``tenant``'s store."""
    from pcapwire.api.authdb import check_name

    try:
        check_name("tenant", tenant)
    except PcapwireError as exc:
        raise JobError("invalid_job", str(exc)) from None
    return Path(data_dir) / "tenants" / tenant


def run_job(job: Job, data_dir: Path, worker: str = "", *,
            read_roots: Sequence[Path] = (), cancel: threading.Event | None = None,
            workflow_dirs: Sequence[Path] = ()) -> JobResult:
    """Run ``job`` on the store ``data_dir`` (see the module docstring); ``read_roots``
    are extra trees the operator lets jobs read, ``cancel`` asks a running job to stop,
    ``workflow_dirs`` are the operator's workflow directories (besides the shipped ones)."""
    worker = worker or socket.gethostname()
    ctx = JobContext(Path(data_dir).resolve(), tuple(Path(r).resolve() for r in read_roots),
                     cancel or threading.Event(),
                     tuple(Path(d).resolve() for d in workflow_dirs))
    try:
        data = _dispatch(job, ctx)
    except JobError as exc:
        return JobResult.failure(job.unit_id, exc, worker)
    except PcapwireError as exc:
        return JobResult(job.unit_id, False, "input_error", str(exc), worker=worker)
    except Exception as exc:  # the contract: every failure becomes a result with a code
        log.exception("job %s (%s) failed", job.unit_id, job.kind)
        return JobResult(job.unit_id, False, "internal_error",
                         f"{type(exc).__name__}: {exc}", worker=worker)
    return JobResult(job.unit_id, True, data=data, worker=worker)


def _dispatch(job: Job, ctx: JobContext) -> dict[str, Any]:
    if job.kind == "ping":
        return {"kinds": list(KINDS)}
    name = HANDLERS.get(job.kind)
    if name is None:
        raise JobError("unknown_kind", f"no job kind {job.kind!r}; this worker runs "
                       f"{', '.join(KINDS)}")
    if not ctx.root.is_dir():
        raise JobError("not_found", f"the tenant's store {ctx.root} does not exist")
    result: dict[str, Any] = importlib.import_module(name).run(job.params, ctx)
    return result
