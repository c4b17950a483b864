"""What the CLI and the API show of triggers, and the controls they share.

- :func:`trigger_view`: a trigger as JSON (its definition without secrets, its current
  hunt with progress and ETA, its number of matches; with ``detail`` every version and
  hunt, and the failed units of each).
- :func:`match_view`: a match with its pivots (:mod:`.pivot`): the body of a PCAP query
  of its flow (``POST /api/v1/queries``: the flow id when the catalog knows it, else the
  5-tuple around its time), its BPF, the API paths of its trigger and case.
- :func:`version_diff`: what a version found that another (the one before, by default)
  did not, and what it no longer finds, as match views (``pcapwire trigger matches
  --diff`` and ``GET /api/v1/triggers/{id}/diff``).
- :func:`pause`, :func:`resume`, :func:`abort`: the trigger's state and its hunt's status
  in the trigger database; the runner reads them between units.
- :func:`keep_secrets`: an edited definition sent back as shown (``"secret": "(set)"``)
  keeps the stored secret of the same webhook.
"""

from __future__ import annotations

from typing import Any

from pcapwire.errors import ConfigError
from pcapwire.triggers import pivot
from pcapwire.triggers.db import Hunt, Trigger, TriggerDB
from pcapwire.triggers.hunt import progress
from pcapwire.triggers.model import TriggerDef

GOING = ("queued", "running", "paused")
SHOWN_SECRET = "(set)"


class TriggerConflict(ConfigError):
    """The request conflicts with the triggers as they are (a name taken, no hunt to
    abort)."""


def create(db: TriggerDB, defn: TriggerDef, actor: str) -> tuple[Trigger, Hunt]:
    """A new trigger and its queued hunt; TriggerConflict when the name is taken."""
    _name_free(db, defn.name, None)
    return db.create(defn, actor)


def edit(db: TriggerDB, trig: Trigger, defn: TriggerDef, actor: str
         ) -> tuple[Trigger, Hunt | None]:
    """The new definition (a new version and hunt when its results would differ); the
    new hunt of a paused trigger starts paused."""
    if defn.name != trig.name:
        _name_free(db, defn.name, trig.id)
        # a deleted trigger's row keeps its (unique) name until it is reused
        db.db.execute("DELETE FROM triggers WHERE name=? AND state='deleted'", (defn.name,))
    trig, hunt = db.update(trig.id, defn, actor, "edited")
    if hunt is not None and trig.state == "paused":
        db.set_hunt_status(hunt.id, "paused")
        hunt = db.hunt(hunt.id)
    return trig, hunt


def _name_free(db: TriggerDB, name: str, trigger_id: int | None) -> None:
    try:
        other = db.by_name(name)
    except KeyError:
        return
    if other.id != trigger_id:
        raise TriggerConflict(f"a trigger named {name!r} exists (id {other.id}); edit it or "
                              "delete it first")


def current_hunt(db: TriggerDB, trig: Trigger) -> Hunt | None:
    """The hunt of the trigger's current version (the latest hunt, if none)."""
    hunts = db.hunts(trig.id)
    mine = [h for h in hunts if h.version == trig.version]
    return (mine or hunts or [None])[-1]


def hunt_view(db: TriggerDB, hunt: Hunt, now: float | None = None) -> dict[str, Any]:
    """The hunt's row with its progress (0..1 of its bytes), rate and ETA
    (:func:`.hunt.progress`) and its failed units."""
    p = progress(hunt, now)
    return {"id": hunt.id, "version": hunt.version, "status": hunt.status,
            "units_total": hunt.units_total, "units_done": hunt.units_done,
            "units_failed": hunt.units_failed, "bytes_total": hunt.bytes_total,
            "bytes_done": hunt.bytes_done, "progress": round(p["percent"] / 100, 4),
            "rate_bytes_s": p["rate_bytes_s"], "eta_s": p["eta_s"], "created": hunt.created,
            "started": hunt.started, "finished": hunt.finished, "error": hunt.error,
            "failed_units": [{"segment_id": u["segment_id"], "attempts": u["attempts"],
                              "error": u["error"]}
                             for u in db.units(hunt.id, ("failed",))]}


def trigger_view(db: TriggerDB, trig: Trigger, detail: bool = False) -> dict[str, Any]:
    hunt = current_hunt(db, trig)
    out: dict[str, Any] = {
        "id": trig.id, "name": trig.name, "state": trig.state, "version": trig.version,
        "created": trig.created, "created_by": trig.created_by, "updated": trig.updated,
        "looks_for": trig.definition.looks_for(), "definition": trig.definition.public(),
        "hunt": hunt_view(db, hunt) if hunt is not None else None,
        "matches": db.match_count(trig.id)}
    if detail:
        out["versions"] = db.versions(trig.id)
        out["hunts"] = [hunt_view(db, h) for h in db.hunts(trig.id)]
    return out


def match_view(m: dict[str, Any], trig: Trigger) -> dict[str, Any]:
    """A row of :meth:`TriggerDB.matches` with its ``pivots`` (:func:`.pivot.pivots`, the
    notifications' too), whose ``query`` is a body for ``POST /api/v1/queries``."""
    out = pivot.pivots(trig.id, trig.name, m)
    query = {k: v for k, v in out["query"].items() if not k.endswith("_ns")}
    for key in ("start", "end"):
        if out["query"].get(f"{key}_ns") is not None:
            query[key] = pivot.iso(out["query"][f"{key}_ns"] / 1e9)
    return {**m, "pivots": {**out, "query": query}}


def version_diff(db: TriggerDB, trig: Trigger, version: int, base: int | None = None,
                 limit: int | None = None) -> dict[str, Any]:
    """``new`` (matches ``version`` found that ``base``, default ``version - 1``, did not)
    and ``gone`` (the reverse) as :func:`match_view` s, oldest first, each list cut at
    ``limit`` (None: whole); ``new_total`` and ``gone_total`` count them all."""
    base = version - 1 if base is None else base
    diff = db.version_diff(trig.id, version, base)
    out: dict[str, Any] = {"from": base, "to": version}
    for what in ("new", "gone"):
        ids = diff[what][:limit] if limit is not None else diff[what]
        out[what] = [match_view(m, trig) for m in db.matches(trig.id, limit=len(ids),
                                                              ids=ids)] if ids else []
        out[f"{what}_total"] = len(diff[what])
    return out


def pause(db: TriggerDB, trig: Trigger) -> Trigger:
    """The watch stops and the hunt (queued or running) pauses after its running units."""
    out = db.set_state(trig.id, "paused")
    hunt = current_hunt(db, trig)
    if hunt is not None and hunt.status in ("queued", "running"):
        db.set_hunt_status(hunt.id, "paused")
    return out


def resume(db: TriggerDB, trig: Trigger) -> Trigger:
    """The watch goes on and a paused hunt is queued again (its finished units kept)."""
    hunt = current_hunt(db, trig)
    if hunt is not None and hunt.status == "paused":
        db.set_hunt_status(hunt.id, "queued")
    return db.set_state(trig.id, "active")


def abort(db: TriggerDB, trig: Trigger) -> Hunt:
    """The current hunt ends (aborted); its matches stay, the watch goes on."""
    hunt = current_hunt(db, trig)
    if hunt is None or hunt.status not in GOING:
        raise TriggerConflict(f"trigger {trig.name!r}: no hunt to abort (the current one is "
                          f"{hunt.status if hunt else 'missing'})")
    db.set_hunt_status(hunt.id, "aborted")
    return db.hunt(hunt.id)


def keep_secrets(raw: dict[str, Any], old: TriggerDef) -> dict[str, Any]:
    """``raw`` (a definition to store) with every webhook secret shown as ``(set)``
    replaced by the stored secret of the webhook with the same URL."""
    stored = {t.url: t.secret for t in old.notify if t.type == "webhook"}
    notify = raw.get("notify")
    if not isinstance(notify, list):
        return raw
    out = []
    for t in notify:
        if isinstance(t, dict) and t.get("type") == "webhook" \
                and t.get("secret") == SHOWN_SECRET:
            if t.get("url") not in stored or not stored[t.get("url")]:
                raise ConfigError(f"notify: webhook {t.get('url')!r}: secret {SHOWN_SECRET!r} "
                                  "keeps a stored secret, and this webhook has none")
            t = {**t, "secret": stored[t["url"]]}
        out.append(t)
    return {**raw, "notify": out}
