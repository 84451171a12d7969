"""Confusion matrix: a figure of the validation set's confusion at each validation epoch."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl

from datamap.callbacks.media import Predictions, ValidationMedia, heatmap_image
from datamap.tracking.loggers import log_image


def confusion_counts(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """[true, predicted] counts, shape (num_classes, num_classes)."""
    index = np.asarray(labels, np.int64) * num_classes + np.asarray(preds, np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


class ConfusionMatrix(ValidationMedia):
    """The validation confusion matrix as a figure, one per validation epoch.

    Args:
        every_n_epochs: log every n-th validation epoch.
    """

    key = "val/confusion_matrix"

    def log_media(self, trainer: pl.Trainer, predictions: Predictions) -> None:
        names = self.class_names(trainer, predictions)
        counts = confusion_counts(predictions.labels, predictions.preds, len(names))
        step, epoch = self.log_step(trainer)
        accuracy = np.trace(counts) / max(counts.sum(), 1)
        title = (f"Validation confusion, epoch {epoch} ({counts.sum()} examples, "
                 f"accuracy {accuracy:.3f})")
        image = heatmap_image(counts, names, title)
        log_image(trainer.loggers, self.key, image, step=step, epoch=epoch, caption=title)
