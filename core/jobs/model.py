"""What a job is and what it returns, as JSON both ways: the contract between whoever
submits work (the API, a hunt, the central of a cluster) and ``pcapwire worker``.

A job names its ``kind`` (a handler of :mod:`pcapwire.jobs.runner`), its ``unit_id`` (the
idempotency key: one result per unit id, however often the job is delivered), the tenant
whose directories it may touch, and its parameters. A result says ``ok`` or carries an error
``code`` (a stable identifier the API maps to a status) and a human ``message``; ``data`` is
the kind's structured output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

#: where a job is in its life (kept in the queue's state store)
JOB_STATES = ("queued", "running", "done", "failed")
#: a unit id: letters, digits, ``._:-``; it becomes part of NATS subjects and KV keys
UNIT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")
#: a job's JSON may not exceed this (parameters name files; they never carry payloads)
MAX_JOB_BYTES = 64 * 1024


class JobError(Exception):
    """A job that cannot run: ``code`` says why in one word (see :class:`JobResult`)."""

    def __init__(self, code: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data or {}


def _object(raw: bytes | str, what: str) -> dict[str, Any]:
    if len(raw) > MAX_JOB_BYTES:
        raise JobError("invalid_job", f"{what} of {len(raw)} bytes is over MAX_JOB_BYTES "
                       f"({MAX_JOB_BYTES}); parameters name files, they never carry data")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise JobError("invalid_job", f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise JobError("invalid_job", f"{what} must be a JSON object")
    return doc


@dataclass(frozen=True, slots=True)
class Job:
    kind: str
    unit_id: str
    tenant: str
    params: dict[str, Any] = field(default_factory=dict)
    sensor: str = ""  # the sensor whose data it needs ("": wherever it is submitted)

    def __post_init__(self) -> None:
        if not UNIT_ID.fullmatch(self.unit_id):
            raise JobError("invalid_job", f"unit id {self.unit_id!r} must match "
                           f"{UNIT_ID.pattern}")
        if not isinstance(self.params, dict):
            raise JobError("invalid_job", "params must be an object")

    def to_json(self) -> bytes:
        return orjson.dumps({"kind": self.kind, "unit_id": self.unit_id,
                             "tenant": self.tenant, "params": self.params,
                             "sensor": self.sensor})

    @classmethod
    def from_json(cls, raw: bytes | str) -> Job:
        doc = _object(raw, "a job")
        missing = [k for k in ("kind", "unit_id", "tenant") if not isinstance(doc.get(k), str)]
        if missing:
            raise JobError("invalid_job", f"a job needs string {', '.join(missing)}")
        return cls(doc["kind"], doc["unit_id"], doc["tenant"], doc.get("params") or {},
                   str(doc.get("sensor") or ""))


@dataclass(frozen=True, slots=True)
class JobResult:
    unit_id: str
    ok: bool
    code: str = "ok"  # "ok", or an error code: invalid_job, unknown_kind, not_found, ...
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    worker: str = ""  # who ran it (host/sensor name), for the job's state

    @classmethod
    def failure(cls, unit_id: str, exc: JobError, worker: str = "") -> JobResult:
        return cls(unit_id, False, exc.code, str(exc), exc.data, worker)

    def to_json(self) -> bytes:
        return orjson.dumps({"unit_id": self.unit_id, "ok": self.ok, "code": self.code,
                             "message": self.message, "data": self.data,
                             "worker": self.worker})

    @classmethod
    def from_json(cls, raw: bytes | str) -> JobResult:
        doc = _object(raw, "a job result")
        if not isinstance(doc.get("unit_id"), str) or not isinstance(doc.get("ok"), bool):
            raise JobError("invalid_job", "a job result needs unit_id and ok")
        return cls(doc["unit_id"], doc["ok"], str(doc.get("code") or "ok"),
                   str(doc.get("message") or ""), dict(doc.get("data") or {}),
                   str(doc.get("worker") or ""))
