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

from pathlib import Path
from typing import Any

from pcapwire.cases.kept import step_leaf
from pcapwire.workflow.context import resolve_path


def keep_dir(ctx: Any, configured: str, plugin: str) -> tuple[Path, bool]:
    """(directory, kept beyond the run?) for one step of one run; a kept directory is
    recorded with the step (``ctx.kept_in``: the session view and the index read it)."""
    where, kept = _where(ctx, configured, plugin)
    if kept:
        ctx.kept_in(where)
    return where, kept


def _where(ctx: Any, configured: str, plugin: str) -> tuple[Path, bool]:
    run = ctx.run
    case, leaf = step_leaf(run.case, run.query_id or run.run_id, ctx.step, plugin)
    base_dir = getattr(ctx, "base_dir", None)
    data_dir = getattr(ctx, "data_dir", None)
    if configured:
        return resolve_path(configured, base_dir, data_dir) / case / leaf, True
    if data_dir is not None and getattr(ctx, "keep", True):
        return Path(data_dir) / "cases" / case / plugin / leaf, True
    return Path(ctx.workdir) / plugin / leaf, False
