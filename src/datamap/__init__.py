"""datamap: dataset cartography as a reproducible DVC + Hydra + Lightning pipeline."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from datamap.errors import ConfigError, DataError, DatamapError

__all__ = ["ConfigError", "DataError", "DatamapError", "lazy_attributes"]
__version__ = "0.1.0"


def lazy_attributes(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package`` that imports each public name of
    ``exports`` (name -> defining module) from its module on first use.

    The subpackages use it so that importing one submodule does not import its siblings: a stage
    then depends only on the modules it really runs, which keeps DVC's code dependencies exact
    (the stage-deps test reads each package's ``_EXPORTS`` literal to follow these imports).
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__
