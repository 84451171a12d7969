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


def progress_bar(mode: str = "auto", refresh_rate: int = 1,
                 every_seconds: float = 30.0) -> ProgressBar:
    """The progress callback: ``bar`` (Lightning's rich bar), ``lines`` (:class:`EpochLines`,
    with a progress line within an epoch every ``every_seconds``) or ``auto`` (a bar when
    :func:`interactive`, else lines)."""
    if mode not in MODES:
        raise ConfigError(f"callbacks.rich_progress_bar.mode must be one of {', '.join(MODES)}, "
                          f"got {mode!r}")
    if isinstance(every_seconds, bool) or not isinstance(every_seconds, (int, float)) \
            or not every_seconds > 0:
        raise ConfigError("callbacks.rich_progress_bar.every_seconds must be a positive number "
                          f"of seconds, got {every_seconds!r}")
    if mode == "bar" or (mode == "auto" and interactive()):
        from pytorch_lightning.callbacks import RichProgressBar

        return RichProgressBar(refresh_rate=int(refresh_rate))
    return EpochLines(every_seconds=float(every_seconds))


def eta_text(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class EpochLines(ProgressBar):
    """One log line per training epoch with its logged metrics and duration, and within a long
    epoch one line every ``every_seconds`` with the batches done, the rate and the epoch's
    remaining time (rank 0 only): ``epoch 3/5: 1200/4297 batches (27.9 %), 41.3 batches/s,
    2640 examples/s, epoch ETA 1 min 15 s``."""

    def __init__(self, every_seconds: float = 30.0, clock=time.perf_counter) -> None:
        super().__init__()
        self._enabled = True
        self._started = 0.0
        self._last_line = 0.0
        self._examples = 0
        self.every_seconds = every_seconds
        self._clock = clock

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = self._last_line = self._clock()
        self._examples = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs, batch, batch_idx: int) -> None:
        self._examples += _batch_size(batch)
        if not self._enabled or not trainer.is_global_zero:
            return
        now = self._clock()
        if now - self._last_line < self.every_seconds:
            return
        self._last_line = now
        done, elapsed = batch_idx + 1, max(now - self._started, 1e-9)
        total_batches = trainer.num_training_batches
        known = isinstance(total_batches, int) and total_batches > 0
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        of = f"/{total_batches} batches ({100 * done / total_batches:.1f} %)" if known \
            else " batches"
        eta = f", epoch ETA {eta_text((total_batches - done) * elapsed / done)}" if known else ""
        log.info("epoch %d%s: %d%s, %.1f batches/s, %.0f examples/s%s",
                 trainer.current_epoch + 1, total, done, of, done / elapsed,
                 self._examples / elapsed, eta)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._enabled or not trainer.is_global_zero:
            return
        values = ", ".join(f"{k} {v:.4g}" for k, v in epoch_metrics(trainer).items())
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        log.info("epoch %d%s: %s (%.1f s)", trainer.current_epoch + 1, total, values or "-",
                 self._clock() - self._started)


def _batch_size(batch) -> int:
    """The number of examples in a batch (the first tensor's length; 0 when none is found)."""
    if isinstance(batch, dict):
        batch = next(iter(batch.values()), None)
    while isinstance(batch, (list, tuple)) and batch:
        batch = batch[0]
    shape = getattr(batch, "shape", None)
    return int(shape[0]) if shape else 0
