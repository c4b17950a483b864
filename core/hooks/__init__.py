"""The public plugin marker (tox's ``tox.plugin``): a plugin needs only these two names.

::

    from pcapwire.hooks import impl

    @impl
    def pcapwire_register_analyzers(register):
        register(MyAnalyzer)

Plugins are found through the ``pcapwire`` entry-point group (built-in plugins too)::

    [project.entry-points.pcapwire]
    myplugin = "myplugin"          # a module (or any object) with ``@impl`` functions

The hooks, their arguments and when they run: :mod:`pcapwire.hooks.spec`. The analyzer
contract: :mod:`pcapwire.workflow.analyzer`.
"""

from __future__ import annotations

import pluggy

#: pluggy project name and entry-point group
NAME = "pcapwire"
#: marker for hook implementations
impl = pluggy.HookimplMarker(NAME)

__all__ = ["NAME", "impl"]
