"""Built-in hash-list plugin: registers the ``hashlist`` analyzer (:mod:`.analyzer`)
through the ``pcapwire`` entry-point group, like any third-party plugin. The lists
themselves live in :mod:`pcapwire.hashlist` (store, formats) and are managed with
``pcapwire hashlist`` and the API (``/api/v1/hashlists``)."""

from __future__ import annotations

from pcapwire.hooks import RegisterAnalyzer, impl
from pcapwire.plugins.hashlist.analyzer import HashlistAnalyzer, HashlistConfig

__all__ = ["HashlistAnalyzer", "HashlistConfig", "pcapwire_register_analyzers"]


@impl
def pcapwire_register_analyzers(register: RegisterAnalyzer) -> None:
    register(HashlistAnalyzer)
