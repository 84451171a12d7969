"""Training dynamics: the recording callback and the on-disk table.

Names are loaded from their modules on first use (see ``datamap.data``): the table half needs
only NumPy/Arrow, the callback imports Lightning, so `datamap scores` and friends start fast and
a stage depends only on the modules it really runs.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module that defines it.
_EXPORTS = {
    "SCHEMA": "datamap.dynamics.table",
    "DynamicsMeta": "datamap.dynamics.table",
    "build_dynamics": "datamap.dynamics.table",
    "per_example_values": "datamap.dynamics.table",
    "read_dynamics": "datamap.dynamics.table",
    "validate_dynamics": "datamap.dynamics.table",
    "write_dynamics": "datamap.dynamics.table",
    "DynamicsRecorder": "datamap.dynamics.recorder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'datamap.dynamics' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
