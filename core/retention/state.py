"""What the last retention run found, kept in ``<data-dir>/retention/state.json`` for
``retention status``, the recorder's status and the metrics, across processes.

Written like the recorder's status file (:class:`pcapwire.capture.status.StatusFile`: in
place into blocks allocated beforehand), so it can still be written on a full disk, which
is when its alarm matters. The alarm is logged once when it is raised and once when it
clears, not at every run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pcapwire.capture.status import StatusFile, read_status

log = logging.getLogger(__name__)

STATE_DIR = "retention"
STATE_FILE = "state.json"


def state_path(root: Path) -> Path:
    return root / STATE_DIR / STATE_FILE


def read_state(root: Path) -> dict[str, Any] | None:
    return read_status(state_path(root))


def write_state(root: Path, alarm: bool, doc: dict[str, Any], why: str = "") -> dict[str, Any]:
    """Write the state (``doc`` plus ``alarm``, ``alarm_since``, ``updated``); logs when
    the alarm changes. Returns what it wrote."""
    before = read_state(root) or {}
    now = time.time()
    since = before.get("alarm_since") if before.get("alarm") else now
    out = {**doc, "updated": now, "alarm": alarm, "alarm_since": since if alarm else None,
           "alarm_reason": why if alarm else None}
    if alarm and not before.get("alarm"):
        log.error("%s: retention alarm: %s", root, why)
    elif before.get("alarm") and not alarm:
        log.warning("%s: retention alarm cleared: usage is below the high watermark again",
                    root)
    path = state_path(root)
    try:
        path.parent.mkdir(exist_ok=True)
    except OSError as exc:
        log.error("cannot create %s: %s", path.parent, exc)
        return out
    StatusFile(path).write(out)
    return out
