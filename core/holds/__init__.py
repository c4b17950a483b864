"""Legal holds: the packets a case must keep, copied into its evidence so that the base
segments can age out while the evidence stays.

::

    hold = create_hold(store, QuerySpec(bpf="host 10.0.0.5", start_ns=..., end_ns=...,
                                        case="IR-42"), "litigation notice 7", actor)
    feed(store)                   # the maintenance loop: copy newly sealed segments
    protected_segment_ids(store)  # retention: what open holds still have to copy
    release_hold(store.root, hold.id, "matter closed", actor)   # evidence stays
    evidence_files(data_dir, "IR-42")                            # for a case bundle

Modules: :mod:`.table` (the holds tables in ``cases.sqlite``), :mod:`.evidence` (the
part files), :mod:`.copying` (copying, feeding, protection), :mod:`.actions` (create,
release, views). Every action is appended to the case's custody log.
"""

from __future__ import annotations

from pcapwire.holds.actions import (
    HoldReleased,
    NoSuchHold,
    create_hold,
    get_hold,
    hold_view,
    list_holds,
    release_hold,
)
from pcapwire.holds.copying import feed, protected_segment_ids
from pcapwire.holds.evidence import evidence_files
from pcapwire.holds.table import Hold, Part

__all__ = ["Hold", "HoldReleased", "NoSuchHold", "Part", "create_hold", "evidence_files",
           "feed", "get_hold", "hold_view", "list_holds", "protected_segment_ids",
           "release_hold"]
