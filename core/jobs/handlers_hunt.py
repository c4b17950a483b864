"""Job kind ``hunt``: run (or resume) a trigger's retro-hunt on the tenant's store with
:func:`pcapwire.triggers.hunt.run_hunt` and return its summary.

Parameters: ``trigger`` (its name), optional ``version`` (the hunt of that version; default
the trigger's newest hunt). Output: the hunt's :func:`~pcapwire.triggers.hunt.progress`
(``status``, units and bytes done/failed/total) with ``trigger``, ``version``, ``hunt_id``,
and ``hits`` (the hits of its finished units, as each unit's checkpoint counted them).

A redelivered job (its worker died mid-hunt) resumes: the units finished before are kept by
their checkpoints and not scanned again. One runner per hunt: when another one has it
(``pcapwire serve``'s trigger service of the same store, a second job), ``run_hunt``
returns at once; the job then waits for that runner, looking every
:data:`~pcapwire.triggers.hunt.POLL_S`, and takes the hunt over if that runner stops before
the end. A paused hunt (or trigger) ends the job with status ``paused``; an aborted one
(its trigger deleted) with ``aborted``. Fails with ``not_found`` when the
trigger or that version's hunt does not exist, with ``hunt_stopped`` when the worker was
asked to stop first (the hunt resumes on the next run).
"""

from __future__ import annotations

from typing import Any

from pcapwire.jobs.handlers import JobContext, param
from pcapwire.jobs.model import UNIT_ID, JobError


def hunt_unit_id(tenant: str, sensor: str, trigger: Any, version: int, run: int = 1) -> str:
    """The unit id of a hunt's job on a sensor: ``hunt:<tenant>:<sensor>:<trigger>:v<N>``
    (a hunt of a given version is one unit, whoever queues it: the central's job route,
    the sensor's own ``serve --hunts-by-workers``), ``…:r<run>`` from its second run on
    (the first ended without ending the hunt: paused, stopped). JobError
    ``invalid_params`` when ``trigger`` is no trigger's name."""
    unit = f"hunt:{tenant}:{sensor}:{trigger}:v{version}" + (f":r{run}" if run > 1 else "")
    if not isinstance(trigger, str) or ":" in trigger or not UNIT_ID.fullmatch(unit):
        raise JobError("invalid_params", f"parameter 'trigger' must be a trigger's name "
                       f"(letters, digits, '._-'), not {trigger!r}")
    return unit


def run(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    from pcapwire.triggers.db import TRIGGERS_FILE, TriggerDB
    from pcapwire.triggers.hunt import ENDED, POLL_S, progress, run_hunt

    name = param(params, "trigger", str)
    version = param(params, "version", int, None)
    if version is not None and version < 1:
        raise JobError("invalid_params", f"parameter 'version' must be >= 1, not {version}")
    if not (ctx.root / TRIGGERS_FILE).is_file():
        raise JobError("not_found", f"no trigger {name!r}: the tenant has no triggers")
    with TriggerDB(ctx.root) as tdb:
        try:
            trigger = tdb.by_name(name)
        except KeyError:
            raise JobError("not_found", f"no trigger {name!r}") from None
        hunts = [h for h in tdb.hunts(trigger.id) if version in (None, h.version)]
        if not hunts:
            raise JobError("not_found", f"trigger {name!r} has no hunt of version {version}")
        hunt_id = hunts[-1].id
        while True:
            run_hunt(ctx.root, hunt_id, ctx.cancel, wait_paused=False)
            hunt = tdb.hunt(hunt_id)
            status = hunt.status  # a paused trigger pauses its hunt (deleted: aborted)
            if status not in ENDED and tdb.state(trigger.id) == "paused":
                status = "paused"
            if status in (*ENDED, "paused"):
                break
            if ctx.cancel.is_set():
                raise JobError("hunt_stopped", f"the hunt of {name!r} version {hunt.version} "
                               f"was stopped at {hunt.units_done} of {hunt.units_total} "
                               "units; it resumes when run again")
            ctx.cancel.wait(POLL_S)  # another runner has it: look again, take over if it stops
        units = tdb.units(hunt_id, ("done",))
    return {**progress(hunt), "status": status, "trigger": name, "version": hunt.version,
            "hunt_id": hunt.id, "hits": sum(int(u["matches"]) for u in units)}
