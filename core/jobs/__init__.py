"""Jobs: long work (ingest, hash-list imports, extraction, hunt units, sandbox and workflow
runs) described as data, run by one runner (``pcapwire worker``) that returns a structured
result with an error code. The same job runs in-process on a single machine
(:mod:`pcapwire.jobs.local`) and on a cluster's sensors through NATS JetStream
(:mod:`pcapwire.jobs.nats`)."""

from pcapwire.jobs.model import JOB_STATES, Job, JobError, JobResult

__all__ = ["JOB_STATES", "Job", "JobError", "JobResult"]
