"""Retention: whole sealed segments deleted by policy, oldest first, never what is
protected (open, indexed in place, held); flows outlive their packets.

The policy is the store's ``[retention]`` (:mod:`pcapwire.store.config`); the background
loop that applies it beside ``capture`` and ``serve`` is :mod:`pcapwire.store.maintenance`.
"""

from pcapwire.retention.enforce import RunReport, enforce, has_policy
from pcapwire.retention.status import status

__all__ = ["RunReport", "enforce", "has_policy", "status"]
