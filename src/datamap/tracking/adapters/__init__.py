"""One module per logger kind, each defining ``ADAPTER`` (see :mod:`datamap.tracking.adapter`).

Every module of this package is an adapter and all of them are loaded together
(:func:`all_adapters`), so adding a logger needs no list to edit.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from datamap.tracking.adapter import LoggerAdapter

#: Read by ``datamap deps``: importing this package loads every module in it.
LOADS_EVERY_MODULE = True


@functools.cache
def all_adapters() -> tuple[LoggerAdapter, ...]:
    """Every adapter of this package, by module name."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.append(module.ADAPTER)
    return tuple(found)
