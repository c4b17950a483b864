"""``pcapwire worker``: run jobs (:mod:`pcapwire.jobs`) on the store ``--data-dir``.

``--job FILE`` (``-``: stdin) runs one job and prints its result as one JSON line
(:class:`~pcapwire.jobs.JobResult`); exit 0 done, 1 failed, 2 the job itself is invalid
(not JSON, unknown kind, bad parameters, a path outside the store). SIGTERM asks the job to
stop (a hash-list import then removes what it wrote). This is what ``pcapwire serve`` runs
for each upload it ingests, hash list it imports and result it carves.

``--nats URL --sensor NAME`` serves the jobs queued for this sensor on NATS JetStream until
SIGTERM or SIGINT (:func:`pcapwire.jobs.nats.serve_worker`), each in the store of its
tenant (``DATA/tenants/<tenant>``, :func:`pcapwire.jobs.runner.tenant_root`).

``--workflows DIR`` (repeatable) adds workflow directories whose workflows ``workflow``
jobs may name, besides the shipped ``workflows/`` (as ``pcapwire serve --workflows``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pcapwire.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run jobs: one (--job) or a sensor's queue (--nats)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--job", metavar="FILE", help="a job as JSON ('-': stdin)")
    source.add_argument("--nats", metavar="URL", help="serve this sensor's jobs from NATS")
    p.add_argument("--sensor", metavar="NAME", help="the sensor this worker serves "
                   "(with --nats; names the worker in job results)")
    p.add_argument("--read-root", action="append", default=[], type=Path, metavar="DIR",
                   help="a directory jobs may read besides the store (repeat; "
                   "`pcapwire serve --ingest-path`)")
    p.add_argument("--workflows", action="append", default=[], type=Path, metavar="DIR",
                   help="a directory of workflow YAML documents `workflow` jobs may name, "
                   "besides the shipped ones (repeat; `pcapwire serve --workflows`)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.nats:
        if not args.sensor:
            print("pcapwire: error: worker --nats needs --sensor NAME", file=sys.stderr)
            return EXIT_USAGE
        return _serve(args.nats, args.sensor, Path(args.data_dir), args.read_root,
                      args.workflows)
    return _one(args)


def _one(args: argparse.Namespace) -> int:
    from pcapwire.cli.hashlist import _cancel_on_sigterm
    from pcapwire.jobs.model import MAX_JOB_BYTES, Job, JobError, JobResult
    from pcapwire.jobs.runner import INVALID_CODES, run_job

    try:
        if args.job == "-":
            raw = sys.stdin.buffer.read(MAX_JOB_BYTES + 1)
        else:
            with open(args.job, "rb") as f:
                raw = f.read(MAX_JOB_BYTES + 1)
        job = Job.from_json(raw)
    except OSError as exc:
        result = JobResult.failure("", JobError("invalid_job", f"cannot read --job: {exc}"))
    except JobError as exc:
        result = JobResult.failure("", exc)
    else:
        with _cancel_on_sigterm() as cancel:
            result = run_job(job, Path(args.data_dir), args.sensor or "",
                             read_roots=args.read_root, cancel=cancel,
                             workflow_dirs=args.workflows)
    sys.stdout.buffer.write(result.to_json() + b"\n")
    sys.stdout.flush()
    if result.ok:
        return EXIT_OK
    return EXIT_USAGE if result.code in INVALID_CODES else EXIT_PARTIAL


def _serve(url: str, sensor: str, data_dir: Path, read_roots: list[Path],
           workflow_dirs: list[Path]) -> int:
    import asyncio
    import signal

    from pcapwire.jobs.nats import serve_worker

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_worker(url, sensor, data_dir, stop=stop, read_roots=read_roots,
                           workflow_dirs=workflow_dirs)

    asyncio.run(main())
    return EXIT_OK
