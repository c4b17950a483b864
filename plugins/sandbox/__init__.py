"""Built-in sandbox plugin: registers the ``sandbox`` analyzer (input kind ``file``)
through the ``pcapwire`` entry-point group, like any third-party plugin. See
:mod:`.analyzer`; the scoring is documented in ``README.md`` next to this file."""

from __future__ import annotations

from pcapwire.hooks import RegisterAnalyzer, impl
from pcapwire.plugins.sandbox.analyzer import SandboxAnalyzer, SandboxConfig

__all__ = ["SandboxAnalyzer", "SandboxConfig", "pcapwire_register_analyzers"]


@impl
def pcapwire_register_analyzers(register: RegisterAnalyzer) -> None:
    register(SandboxAnalyzer)
