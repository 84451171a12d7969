"""datamap: dataset cartography as a reproducible DVC + Hydra + Lightning pipeline."""

from __future__ import annotations

import importlib
import os
import platform
from collections.abc import Callable
from typing import Any

from datamap.errors import ConfigError, DataError, DatamapError

#: The CPU numerics every datamap process asks for, unless its environment says otherwise:
#: PyTorch's own kernels, MKL and oneDNN limited to AVX2 (MKL in its strict reproducible mode).
#: Left to themselves they pick the widest instructions of the CPU (AVX-512 on one machine,
#: AVX2 on the next) and, for some kernels, split work by thread count, so the same seed gives
#: other last digits on another CPU or core count. Pinned, any x86-64 CPU with AVX2 computes the
#: same bits with the same PyTorch build. They take effect only when set before torch is
#: imported: the stages import datamap first. DATAMAP_NATIVE_CPU=1 leaves the CPU's choice.
CPU_PINS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT",
            "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _pin_cpu_numerics() -> None:
    if os.environ.get("DATAMAP_NATIVE_CPU") == "1":
        return
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return  # the pins name x86 instruction sets; other CPUs keep their own
    for name, value in CPU_PINS.items():
        os.environ.setdefault(name, value)
    # MKL lets MKL_ENABLE_INSTRUCTIONS=AVX512 override its reproducible mode on an AVX-512 CPU
    # (seen on Intel Xeon): capped at AVX2 too (DATAMAP_NATIVE_CPU=1 leaves it be)
    os.environ["MKL_ENABLE_INSTRUCTIONS"] = "AVX2"



_pin_cpu_numerics()

__all__ = ["CPU_PINS", "ConfigError", "DataError", "DatamapError", "lazy_attributes"]
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
