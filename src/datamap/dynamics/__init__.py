"""Training dynamics: the recording callback and the on-disk table.

The table half (``datamap.dynamics.table``) needs only NumPy/Arrow; the callback imports
Lightning, so it is loaded on first use to keep `datamap scores` and friends fast to start.
"""

from datamap.dynamics.table import (
    SCHEMA,
    DynamicsMeta,
    build_dynamics,
    per_example_values,
    read_dynamics,
    validate_dynamics,
    write_dynamics,
)

__all__ = [
    "SCHEMA",
    "DynamicsMeta",
    "DynamicsRecorder",
    "build_dynamics",
    "per_example_values",
    "read_dynamics",
    "validate_dynamics",
    "write_dynamics",
]


def __getattr__(name: str):
    if name == "DynamicsRecorder":
        from datamap.dynamics.recorder import DynamicsRecorder

        return DynamicsRecorder
    raise AttributeError(name)
