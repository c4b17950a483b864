"""Trigger matches in the store's metadata index (:mod:`pcapwire.search`): every match of
a hunt or a watch becomes an alert document (:func:`pcapwire.search.ecs.hit_doc`:
``event.dataset:pcapwire.trigger``, ``pcapwire.trigger:<name>``, ``rule.ruleset`` the
matcher kind — ``ip``, ``bpf``, ``suricata``, ``domain`` … — and ``rule.name`` the
indicator or signature), with its pivots: the PCAP query of its flow, the flow id, the
trigger's case ``trigger-<name>``. For example::

    pcapwire search 'pcapwire.trigger:bad-hosts AND rule.ruleset:ip'
    pcapwire search 'event.dataset:pcapwire.trigger AND destination.ip:198.18.0.0/15'

:func:`index_matches` adds the matches not indexed yet, one transaction per
:data:`BATCH`; how far each trigger is indexed is kept in the index itself (meta key
:data:`CURSOR_PREFIX` ``<trigger id>``, written in the same transaction as the
documents), so a crash never loses or doubles one, and ``pcapwire search rebuild``
(which clears the meta keys) has them all indexed again at the service's next pass. The
trigger service (:mod:`.service`) calls it after new matches and every
:data:`~.service.RESCAN_S`. Deleted triggers' matches are not indexed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pcapwire.search.ecs import Doc, hit_doc
from pcapwire.search.index import SearchIndex
from pcapwire.triggers.db import TRIGGERS_FILE, Hit, TriggerDB
from pcapwire.triggers.pivot import case_name

#: The index's meta key of a trigger's last indexed match id (followed by the trigger id).
CURSOR_PREFIX = "triggers.indexed."
#: Matches indexed per transaction (other writers of the index go in between).
BATCH = 5000


def match_doc(trigger_name: str, match: dict[str, Any]) -> Doc:
    """A row of :meth:`~.db.TriggerDB.matches` as its search document."""
    hit = Hit(match["rule"], match["proto"], match["src_ip"], match["src_port"],
              match["dest_ip"], match["dest_port"], match["ts"], match["evidence"],
              match["flow_id"])
    return hit_doc(trigger_name, hit, str(match["id"]), case_name(trigger_name))


def index_matches(root: str | Path) -> int:
    """Index the matches of every trigger of the store that are not indexed yet; returns
    how many were added."""
    root = Path(root)
    if not (root / TRIGGERS_FILE).is_file():
        return 0
    added = 0
    with TriggerDB(root) as db, SearchIndex.of(root) as index:
        for trig in db.triggers():
            key = f"{CURSOR_PREFIX}{trig.id}"
            after = int(index.get_meta(key, "0"))
            while batch := db.matches(trig.id, after_id=after, limit=BATCH):
                with index.write() as writer:
                    added += writer.put_many([match_doc(trig.name, m) for m in batch])
                    after = batch[-1]["id"]
                    index.set_meta(key, str(after))
    return added


def indexed_up_to(root: str | Path, trigger_id: int) -> int:
    """The id of the trigger's last indexed match (0: none)."""
    with SearchIndex.of(root) as index:
        return int(index.get_meta(f"{CURSOR_PREFIX}{trigger_id}", "0"))
