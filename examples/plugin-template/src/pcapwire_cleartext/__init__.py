"""pcapwire plugin: clear-text logins in reassembled TCP streams.

pcapwire loads this module through the entry point in pyproject.toml::

    [project.entry-points.pcapwire]
    cleartext = "pcapwire_cleartext"

and calls the ``@impl`` functions below. ``pcapwire_register_analyzers`` declares the
analyzers; the broadcast hook ``pcapwire_case_completed`` shows the other kind of hook
(all hooks: ``pcapwire.hooks.spec``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from pcapwire.hooks import RegisterAnalyzer, impl

from pcapwire_cleartext.analyzer import CleartextLogins

__all__ = ["CleartextLogins"]

#: When set, a JSON line per completed run is appended to this file (a run report).
REPORT_ENV = "PCAPWIRE_CLEARTEXT_REPORT"


@impl
def pcapwire_register_analyzers(register: RegisterAnalyzer) -> None:
    register(CleartextLogins)


@impl
def pcapwire_case_completed(run: Any, summary: Any) -> None:
    """Append how many clear-text logins each run found to ``$PCAPWIRE_CLEARTEXT_REPORT``."""
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    found = sum(s.outputs.get("verdict", 0) for s in summary.steps
                if s.analyzer == CleartextLogins.name)
    line = {"run_id": run.run_id, "workflow": run.workflow, "case": run.case,
            "status": summary.status, "cleartext_logins": found}
    with open(path, "a", encoding="utf-8") as fh:  # small and rare: fine on the loop
        fh.write(json.dumps(line, sort_keys=True) + "\n")
