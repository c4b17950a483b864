"""Where a run's steps kept their files, read back from the case store for the readers
that serve one data directory or tenant (the session view, the metadata index).

The engine records every directory a step keeps files in with the step
(:meth:`pcapwire.workflow.context.StepContext.kept_in` -> ``StepResult.kept`` -> the
step's record in the case store): the case folder by default, or the directory an
operator named in the step's ``keep_dir``. A step record written before pcapwire recorded
it (``kept`` is None) is looked for where steps keep their files by default,
``<root>/cases/<case>/<analyzer>/<query or run>-<step>``.

``keep_dir`` is the operator's setting and may name any directory of the server. What is
read for a tenant must lie inside that tenant's own directory: a recorded directory whose
real path (symbolic links resolved) is outside ``root`` is refused and logged, and so is a
file in it that links out.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pcapwire.cases.store import RunRow
    from pcapwire.workflow.results import StepResult

log = logging.getLogger(__name__)


def _inside(path: Path, real_root: Path) -> bool:
    real = Path(os.path.realpath(path))
    return real == real_root or real.is_relative_to(real_root)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Longest path component made from a case, query or step name.
MAX_NAME_COMPONENT = 120


def safe_name(part: str, fallback: str) -> str:
    """A case, query or step name (they come from API callers) as one path component."""
    cleaned = _UNSAFE.sub("_", part).strip("._") or fallback
    return cleaned[:MAX_NAME_COMPONENT]


def step_leaf(case: str, run_name: str, step: str, analyzer: str) -> tuple[str, str]:
    """(case folder, ``<query or run>-<step>`` folder) of a step's kept files."""
    return safe_name(case, "default"), f"{safe_name(run_name, 'run')}-{safe_name(step, analyzer)}"


def default_dir(root: Path, run: RunRow, step: StepResult) -> Path:
    """Where the step kept its files when no ``keep_dir`` was set
    (:func:`pcapwire.plugins.enginekit.keep.keep_dir`)."""
    case, leaf = step_leaf(run.case, run.query_id or run.run_id, step.step, step.analyzer)
    return root / "cases" / case / step.analyzer / leaf


def step_dirs(root: Path, run: RunRow, step: StepResult) -> list[Path]:
    """The existing directories ``step`` of ``run`` kept files in, inside ``root`` only
    (one outside is logged and left out)."""
    recorded = [Path(p) for p in step.kept] if step.kept is not None \
        else [default_dir(root, run, step)]
    real_root = Path(os.path.realpath(root))
    out = []
    for folder in recorded:
        if not _inside(folder, real_root):
            log.warning("run %s step %r kept its files in %s, outside %s: not read "
                        "(keep_dir must lie inside the tenant's directory to be served)",
                        run.run_id, step.step, folder, root)
        elif folder.is_dir():
            out.append(folder)
    return out


def kept_files(root: Path, folder: Path, pattern: str) -> list[Path]:
    """The regular files of ``folder`` matching ``pattern``, those whose real path lies
    inside ``root`` (a symbolic link out of it is logged and left out)."""
    real_root = Path(os.path.realpath(root))
    out = []
    for path in sorted(folder.glob(pattern)):
        if not _inside(path, real_root):
            log.warning("%s links outside %s: not read", path, root)
        elif path.is_file():
            out.append(path)
    return out
