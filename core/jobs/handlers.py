"""What a job handler is given, and the checks every handler applies to its parameters.

A handler (``pcapwire.jobs.handlers_<kind>``) is a module with ``run(params, ctx) -> dict``:
``params`` is the job's parameters as the submitter sent them (untrusted), ``ctx`` the
:class:`JobContext` of the worker. The handler reads each parameter through :func:`param`
and each path through :meth:`JobContext.path`, which raise :class:`~pcapwire.jobs.JobError`
with a code (``invalid_params``, ``path_not_allowed``, ``not_found``); it returns the kind's
structured output (``JobResult.data``) or raises a JobError of its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pcapwire.jobs.model import JobError

T = TypeVar("T")
_REQUIRED: Any = object()


def param(params: dict[str, Any], key: str, kind: type[T] | tuple[type, ...],
          default: Any = _REQUIRED) -> T:
    """``params[key]`` when it is a ``kind``; ``default`` when absent (if given)."""
    if key not in params or params[key] is None:
        if default is _REQUIRED:
            raise JobError("invalid_params", f"the job needs the parameter {key!r}")
        return default  # type: ignore[no-any-return]
    value = params[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise JobError("invalid_params", f"parameter {key!r} must be {names}, not "
                       f"{type(value).__name__}")
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class JobContext:
    """``root``: the tenant's store, the only tree a job may write to; ``read_roots``:
    trees the worker's operator lets jobs read as well (``pcapwire serve --ingest-path``),
    never taken from a job; ``cancel``: set when the worker is asked to stop (SIGTERM),
    for handlers that can stop cleanly; ``workflow_dirs``: the operator's workflow
    directories (``pcapwire worker --workflows``) besides the shipped ones."""

    root: Path
    read_roots: tuple[Path, ...] = ()
    cancel: threading.Event = field(default_factory=threading.Event)
    workflow_dirs: tuple[Path, ...] = ()

    def path(self, params: dict[str, Any], key: str, *, must_exist: bool = True,
             read_only: bool = False, value: Any = None) -> Path:
        """The parameter ``key`` (or ``value``, an item of it) as a resolved path inside
        ``root`` (or, when ``read_only``, inside one of ``read_roots``); relative paths are
        relative to ``root``. Symbolic links are resolved before the check."""
        raw = param(params, key, str) if value is None else value
        if not isinstance(raw, str) or not raw:
            raise JobError("invalid_params", f"parameter {key!r}: a path must be a "
                           "non-empty string")
        try:
            path = (self.root / raw).resolve()
        except (ValueError, OSError) as exc:  # NUL bytes, loops, names too long
            raise JobError("invalid_params", f"parameter {key!r}: unusable path: {exc}"
                           ) from None
        roots = (self.root, *self.read_roots) if read_only else (self.root,)
        if not any(path == r or path.is_relative_to(r) for r in roots):
            raise JobError("path_not_allowed", f"parameter {key!r}: {raw} is outside the "
                           "tenant's directory" + (" and the worker's read roots"
                                                   if read_only and self.read_roots else ""),
                           {"parameter": key})
        if must_exist and not path.exists():
            raise JobError("not_found", f"parameter {key!r}: no such file {raw}",
                           {"parameter": key})
        return path
