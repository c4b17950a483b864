"""Where an engine step keeps what must outlive the run (Zeek logs, Suricata EVE metadata).

Paths in ``with:`` resolve like every analyzer's
(:func:`pcapwire.workflow.context.resolve_path`): relative to the workflow file's
directory, ``{data_dir}`` standing for the run's pcapwire data directory
(``--data-dir``), e.g. ``{data_dir}/rules/suricata.rules``, where ``pcapwire rules
update`` writes.

A step keeps its files, in order of preference, under:

1. the step's ``keep_dir`` setting: ``<keep_dir>/<case>/<query or run>-<step>``;
2. the run's data directory, unless the run keeps nothing (``run --no-store``):
   ``<data_dir>/cases/<case>/<plugin>/<query or run>-<step>``;
3. the scratch ``workdir`` (removed with the run; the step logs that it is).

Case, query and step names come from API callers: they are sanitised into one path
component each.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pcapwire.workflow.context import resolve_path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Longest path component made from a case, query or step name.
MAX_NAME_COMPONENT = 120


def safe_name(part: str, fallback: str) -> str:
    cleaned = _UNSAFE.sub("_", part).strip("._") or fallback
    return cleaned[:MAX_NAME_COMPONENT]


def keep_dir(ctx: Any, configured: str, plugin: str) -> tuple[Path, bool]:
    """(directory, kept beyond the run?) for one step of one run."""
    run = ctx.run
    case = safe_name(run.case, "default")
    leaf = f"{safe_name(run.query_id or run.run_id, 'run')}-{safe_name(ctx.step, plugin)}"
    base_dir = getattr(ctx, "base_dir", None)
    data_dir = getattr(ctx, "data_dir", None)
    if configured:
        return resolve_path(configured, base_dir, data_dir) / case / leaf, True
    if data_dir is not None and getattr(ctx, "keep", True):
        return Path(data_dir) / "cases" / case / plugin / leaf, True
    return Path(ctx.workdir) / plugin / leaf, False
