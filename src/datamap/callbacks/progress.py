"""Progress display: a progress bar for a person at a terminal, plain lines everywhere else.

Under DVC (``DVC_STAGE`` is set for every stage command), in CI (``CI``) or when standard output
is not a terminal, a bar's carriage returns would fill the log with noise; one line per epoch
says the same: ``epoch 3/20: train/loss 0.41, train/acc 0.88, val/loss 0.29, ... (0.8 s)``.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks.progress import ProgressBar

from datamap.callbacks.curves import epoch_metrics
from datamap.errors import ConfigError

log = logging.getLogger(__name__)

MODES = ("auto", "bar", "lines")


def interactive() -> bool:
    """Whether a person is watching: stdout is a terminal, and not under DVC or in CI."""
    if os.environ.get("DVC_STAGE") or os.environ.get("CI") or os.environ.get("TERM") == "dumb":
        return False
    return sys.stdout.isatty()


def progress_bar(mode: str = "auto", refresh_rate: int = 1) -> ProgressBar:
    """The progress callback: ``bar`` (Lightning's rich bar), ``lines`` (:class:`EpochLines`) or
    ``auto`` (a bar when :func:`interactive`, else lines)."""
    if mode not in MODES:
        raise ConfigError(f"callbacks.rich_progress_bar.mode must be one of {', '.join(MODES)}, "
                          f"got {mode!r}")
    if mode == "bar" or (mode == "auto" and interactive()):
        from pytorch_lightning.callbacks import RichProgressBar

        return RichProgressBar(refresh_rate=int(refresh_rate))
    return EpochLines()


class EpochLines(ProgressBar):
    """One log line per training epoch with its logged metrics and duration (rank 0 only)."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._started = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._enabled or not trainer.is_global_zero:
            return
        values = ", ".join(f"{k} {v:.4g}" for k, v in epoch_metrics(trainer).items())
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        log.info("epoch %d%s: %s (%.1f s)", trainer.current_epoch + 1, total, values or "-",
                 time.perf_counter() - self._started)
