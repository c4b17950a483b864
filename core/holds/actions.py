"""Creating and releasing holds, and what a hold looks like to the CLI and the API.

A hold names a case, a selection (flow ids, a 5-tuple, a BPF expression, hosts, ports:
all combine with AND, as in a query), a window (either side may be open) and a reason.
Creating one copies its packets at once (:func:`.copying.copy_new`) and logs
``hold.create`` in the case's custody log. A hold that matched nothing and whose window
has passed (it could never hold anything) is refused and leaves nothing behind; one that
matched nothing yet but whose window reaches into the future is created.

Releasing needs a reason, stops protection and feeding, and is logged
(``hold.release``); the evidence stays.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcapwire import custody
from pcapwire.cases import CASES_FILE
from pcapwire.errors import ConfigError, QueryError
from pcapwire.holds.copying import (
    copy_lock,
    copy_new,
    log_parts,
    part_object,
    window,
)
from pcapwire.holds.evidence import part_path
from pcapwire.holds.table import Hold, HoldsDB
from pcapwire.query.bpfcache import compiled
from pcapwire.query.spec import QuerySpec

if TYPE_CHECKING:
    from pcapwire.store import Store

#: Characters of a reason (create or release), at most.
MAX_REASON_CHARS = 2000
#: Characters of a case name, at most (as the API's query requests allow).
MAX_CASE_CHARS = 200
#: The query filters a hold's selection keeps.
SELECTION_FIELDS = ("flow_ids", "five_tuple", "bpf", "hosts", "nets", "ports", "protos")


class NoSuchHold(ConfigError):
    """No hold of that id in this store."""


class HoldReleased(ConfigError):
    """The hold was released already."""


def check_reason(reason: str, what: str) -> str:
    text = reason.strip()
    if not text:
        raise ConfigError(f"{what} needs a reason (--reason TEXT): say why, it is kept in "
                          "the case's custody log")
    if len(text) > MAX_REASON_CHARS:
        raise ConfigError(f"the reason has {len(text)} characters, more than the limit of "
                          f"{MAX_REASON_CHARS}; keep it short and refer to a document")
    return text


def selection_of(spec: QuerySpec) -> dict[str, Any]:
    """The filters of ``spec`` that are set, as plain data."""
    d = spec.to_dict()
    return {k: d[k] for k in SELECTION_FIELDS if d[k]}


def create_hold(store: Store, spec: QuerySpec, reason: str, actor: str,
                now_ns: int | None = None) -> Hold:
    """Create a hold of ``spec``'s filters and window for ``spec.case`` and copy what it
    matches now; returns the hold with its parts."""
    reason = check_reason(reason, "a hold")
    if not spec.case or len(spec.case) > MAX_CASE_CHARS:
        raise ConfigError(f"a hold needs a case name of 1..{MAX_CASE_CHARS} characters")
    selection = selection_of(spec)
    if not selection:
        raise QueryError("name what to hold: --flow, --five-tuple, --bpf, --host or --port "
                         "(every packet of the window: --bpf 'len >= 0')")
    _check_flows(store, spec.flow_ids)
    if spec.bpf:
        for key in store.query_engine().filter_keys(spec):
            compiled(spec.bpf, *key)  # a syntax error is a QueryError before anything
    with copy_lock(store.root), HoldsDB(store.root / CASES_FILE) as db:
        hold_id = db.add(spec.case, selection, spec.start_ns, spec.end_ns, reason, actor)
        try:
            hold = _get(db, hold_id)
            done = copy_new(store, db, hold, now_ns)
        except BaseException:  # nothing of it was logged: nothing of it stays
            db.drop(hold_id)
            shutil.rmtree(part_path(store.root, spec.case, hold_id, 1).parent,
                          ignore_errors=True)
            raise
        if done.completed and not done.parts:
            db.drop(hold_id)
            raise QueryError(f"nothing to hold: no packet in {window_text(hold)} matches "
                             f"({done.segments} segments searched) and the window has "
                             "passed; check the filters and the window")
        first = done.parts[:1]
        custody.append(store.root, hold.case, "hold.create", actor,
                       [part_object(store.root, p) for p in first],
                       {"hold": hold_id, "selection": selection, "window": _window(hold),
                        "reason": reason, "packets": done.packets,
                        "segments": first[0].segments if first else [],
                        "segments_searched": done.segments,
                        **({"damage": first[0].damage} if first and first[0].damage else {})})
        log_parts(store.root, hold, done.parts[1:], actor)
        if done.completed:
            custody.append(store.root, hold.case, "hold.complete", actor, [],
                           {"hold": hold_id, "parts": len(done.parts)})
        return _get(db, hold_id)


def _check_flows(store: Store, flow_ids: list[int]) -> None:
    if not flow_ids:
        return
    ids = sorted(set(flow_ids))
    found = {r[0] for r in store.catalog.db.execute(
        f"SELECT id FROM flows WHERE id IN ({','.join('?' * len(ids))})", ids)}
    missing = [i for i in ids if i not in found]
    if missing:
        raise QueryError(f"no flow {', '.join(map(str, missing))} in this store; flow ids "
                         "come from `pcapwire flows`")


def release_hold(root: Path, hold_id: int, reason: str, actor: str) -> Hold:
    """Release a hold: no more protection or copying; its evidence stays."""
    reason = check_reason(reason, "releasing a hold")
    with copy_lock(root), HoldsDB(root / CASES_FILE) as db:  # not in the middle of a copy
        hold = _get(db, hold_id)
        if not db.release(hold_id, actor, reason):
            raise HoldReleased(f"hold {hold_id} was released already, by {hold.released_by} "
                               f"at {_iso_s(hold.released)}")
        custody.append(root, hold.case, "hold.release", actor, [],
                       {"hold": hold_id, "reason": reason, "parts": len(hold.parts),
                        "packets": hold.packets})
        return _get(db, hold_id)


def get_hold(root: Path, hold_id: int) -> Hold:
    with HoldsDB(root / CASES_FILE) as db:
        return _get(db, hold_id)


def list_holds(root: Path, case: str | None = None, states: list[str] | None = None
               ) -> list[Hold]:
    if not (root / CASES_FILE).exists():
        return []
    with HoldsDB(root / CASES_FILE) as db:
        return db.holds(case=case, states=states)


def _get(db: HoldsDB, hold_id: int) -> Hold:
    hold = db.get(hold_id)
    if hold is None:
        raise NoSuchHold(f"no hold {hold_id} in this store (see `pcapwire hold list`)")
    return hold


# -- views ---------------------------------------------------------------------------------
def iso_ns(ns: int | None) -> str | None:
    if ns is None:
        return None
    s, rest = divmod(ns, 10**9)
    return datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{rest:09d}Z"


def _iso_s(t: float | None) -> str | None:
    return None if t is None else iso_ns(int(t * 10**9))


def _window(hold: Hold) -> dict[str, Any]:
    return {"start": iso_ns(hold.start_ns), "end": iso_ns(hold.end_ns),
            "start_ns": hold.start_ns, "end_ns": hold.end_ns}


def window_text(hold: Hold) -> str:
    return f"[{iso_ns(hold.start_ns) or 'the beginning'}, {iso_ns(hold.end_ns) or 'open'})"


def protects(store: Store, hold: Hold) -> dict[str, Any]:
    """What an open hold still protects: the segments of its window it has not copied."""
    if hold.state != "open":
        return {"segments": [], "bytes": 0}
    with HoldsDB(store.root / CASES_FILE) as db:
        todo = window(store.catalog, hold).uncopied(db.copied(hold.id))
    return {"segments": [s.id for s in todo], "bytes": sum(s.size for s in todo)}


def hold_view(store: Store, hold: Hold) -> dict[str, Any]:
    """A hold as plain data (``hold show --json``, the API)."""
    released = None
    if hold.state == "released":
        released = {"by": hold.released_by, "at": _iso_s(hold.released),
                    "reason": hold.release_reason}
    return {"id": hold.id, "case": hold.case, "selection": hold.selection,
            "window": _window(hold), "reason": hold.reason, "created_by": hold.created_by,
            "created": _iso_s(hold.created), "state": hold.state,
            "completed": _iso_s(hold.completed), "released": released,
            "parts": [{**p.to_dict(), "created": _iso_s(p.created)} for p in hold.parts],
            "packets": hold.packets, "bytes": hold.bytes,
            "protects": protects(store, hold)}
