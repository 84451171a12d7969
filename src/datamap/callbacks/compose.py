"""Which configured callbacks a fit keeps, and whether one of them shows progress."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)


def fit_callbacks(callbacks: Sequence[Any], loggers: Sequence[Any], *,
                  every_epoch: bool) -> list[Any]:
    """Drop the configured callbacks this fit cannot use, saying why in the log.

    ``every_epoch``: the fit must run every epoch up to ``trainer.max_epochs`` (the train
    stage: cartography needs each epoch's dynamics), so early stopping is dropped. A learning-rate
    monitor without a logger would make Lightning refuse to start, so it is dropped too.
    """
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor

    kept = []
    for callback in callbacks:
        if every_epoch and isinstance(callback, EarlyStopping):
            log.info("early stopping is off for this fit: the training dynamics of every epoch "
                     "up to trainer.max_epochs are recorded for cartography")
        elif not loggers and isinstance(callback, LearningRateMonitor):
            log.info("lr_monitor skipped: no logger to log the learning rate to (logger=none)")
        else:
            kept.append(callback)
    return kept


def shows_progress(callbacks: Sequence[Any]) -> bool:
    """Whether a progress callback is configured (else Lightning shows no progress bar, rather
    than adding its own)."""
    from pytorch_lightning.callbacks.progress import ProgressBar

    return any(isinstance(callback, ProgressBar) for callback in callbacks)
