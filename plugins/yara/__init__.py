"""Built-in YARA plugin: registers the ``yara`` analyzer through the ``pcapwire``
entry-point group, like any third-party plugin (see :mod:`.analyzer`, :mod:`.rules`)."""

from __future__ import annotations

from pcapwire.hooks import RegisterAnalyzer, impl
from pcapwire.plugins.yara.analyzer import YaraAnalyzer

__all__ = ["YaraAnalyzer", "pcapwire_register_analyzers"]


@impl
def pcapwire_register_analyzers(register: RegisterAnalyzer) -> None:
    register(YaraAnalyzer)
