"""Which configured callbacks a fit keeps, and whether one of them shows progress."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
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


def is_media(target: str) -> bool:
    """Whether the ``_target_`` ``target`` builds a media callback (a
    :class:`~datamap.callbacks.media.ValidationMedia`)."""
    from hydra.utils import get_object

    from datamap.callbacks.media import ValidationMedia

    obj = get_object(target)
    return isinstance(obj, type) and issubclass(obj, ValidationMedia)


def without_media(callbacks: Mapping[str, Any] | None) -> dict[str, Any]:
    """A callbacks config (name -> entry) without its media callbacks, saying which it drops."""
    kept = {}
    for name, conf in (callbacks or {}).items():
        if isinstance(conf, Mapping) and "_target_" in conf and is_media(str(conf["_target_"])):
            log.info("%s skipped: no media in this fit (selection.retrain_media=false)", name)
        else:
            kept[name] = conf
    return kept
