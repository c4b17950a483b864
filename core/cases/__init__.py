"""Cases, runs, step results and verdicts, persisted in SQLite (see :mod:`.store`), and
their export as ECS JSON lines (:mod:`.export`)."""

from pcapwire.cases.export import ECS_VERSION, ecs_line, verdict_to_ecs
from pcapwire.cases.store import CaseStore, RunRow

__all__ = ["ECS_VERSION", "CaseStore", "RunRow", "ecs_line", "verdict_to_ecs"]
