"""Cases: each one's query history, workflow runs, step results and verdicts, persisted in
SQLite (see :mod:`.store`, :mod:`.queries`), and their export as ECS JSON lines
(:mod:`.export`)."""

from pcapwire.cases.export import ECS_VERSION, ecs_line, verdict_to_ecs
from pcapwire.cases.queries import QUERY_FIELDS
from pcapwire.cases.store import CASES_FILE, CaseStore, RunRow

__all__ = ["CASES_FILE", "ECS_VERSION", "QUERY_FIELDS", "CaseStore", "RunRow", "ecs_line",
           "verdict_to_ecs"]
