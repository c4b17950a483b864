"""Triggers: a retro-hunt through the recorded history, then a watch on what arrives, as
one object with one result set (:mod:`.model` what a trigger is, :mod:`.db` where its
versions, hunts, units, matches and deliveries are kept)."""

from pcapwire.triggers.db import Hit, Hunt, Trigger, TriggerDB
from pcapwire.triggers.model import TriggerDef, from_dict, rule_key, rules_digest

__all__ = ["Hit", "Hunt", "Trigger", "TriggerDB", "TriggerDef", "from_dict", "rule_key",
           "rules_digest"]
