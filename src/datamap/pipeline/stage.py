"""Runtime glue shared by the stage scripts in ``stages/``.

A stage script is a Hydra app whose task function is wrapped by :func:`stage`. The wrapper
gives it the artifact layouts to read from and write to, and turns a
:class:`~datamap.errors.DatamapError` into one line on stderr and exit code 2 (no traceback, no
partial artifact: library code writes atomically).

Under DVC a stage runs on the composed ``params.yaml`` and writes into the repo's ``data/``.
In a Hydra multirun (``python -m stages.X -m key=a,b``) each job reads inputs from the repo's
``data/`` and writes its outputs under its own job directory, so jobs never clobber each other
or the DVC-tracked artifacts.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from datamap.errors import datamap_cause, disk_full_cause, disk_full_error
from datamap.layout import Layout
from datamap.pipeline.config import check_overrides_kept

log = logging.getLogger("datamap")

StageFn = Callable[[DictConfig, Layout, Layout], Any]


def output_root() -> Path:
    """The repo root for single runs; the job's own directory inside a Hydra multirun."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return Path(".")
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return Path(hydra_cfg.runtime.output_dir)
    return Path(".")


def stage(fn: StageFn) -> Callable[[DictConfig], Any]:
    """Wrap a stage body ``fn(cfg, inputs, outputs)`` as a Hydra task function."""

    @functools.wraps(fn)
    def task(cfg: DictConfig) -> Any:
        logging.getLogger("datamap").setLevel(logging.INFO)
        # Library warnings (deprecations in torch/Lightning...) belong in the log like every
        # other message; stderr carries only the one-line error of a failed stage.
        logging.captureWarnings(True)
        _route_lightning_logs()
        try:
            check_overrides_kept(cfg)  # dvc exp run must not silently drop compose's overrides
            return fn(cfg, Layout(Path(".")), Layout(output_root()))
        except Exception as exc:
            cause = datamap_cause(exc) or _full_disk(exc)  # also behind Hydra's wrapper
            if cause is None:
                raise
            print(f"error: {cause}", file=sys.stderr, flush=True)
            sys.exit(2)

    return task


def _full_disk(exc: BaseException) -> Exception | None:
    """A full file system met outside the atomic writers (a checkpoint, a log) as one line."""
    full = disk_full_cause(exc)
    if full is None:
        return None
    return disk_full_error(str(getattr(full, "filename", None) or "an output of this stage"))


def _route_lightning_logs() -> None:
    # Lightning gives its loggers their own stderr handler when imported before logging is
    # configured; hand their messages ("GPU available: ...") to the job's handlers instead.
    for name in ("pytorch_lightning", "lightning", "lightning_fabric", "lightning.pytorch"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                    handler, logging.FileHandler):
                logger.removeHandler(handler)
        logger.propagate = True
