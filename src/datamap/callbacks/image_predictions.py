"""Image predictions: a fixed grid of validation images captioned with predicted and true label."""

from __future__ import annotations

import logging

import pytorch_lightning as pl

from datamap.callbacks.media import Predictions, ValidationMedia, image_grid, thumbnail
from datamap.errors import ConfigError
from datamap.tracking.loggers import log_image

log = logging.getLogger(__name__)


class ImagePredictions(ValidationMedia):
    """The ``num_images`` validation images with the lowest ids -- the same ones every epoch --
    captioned "pred X / true Y" (red when wrong). Inputs that are not images are skipped with
    one log line.

    Args:
        num_images: how many images (the grid has 8 columns).
        every_n_epochs: log every n-th validation epoch.
    """

    key = "val/image_predictions"

    def __init__(self, num_images: int = 16, every_n_epochs: int = 1) -> None:
        super().__init__(every_n_epochs)
        if int(num_images) < 1:
            raise ConfigError(
                f"callbacks.image_predictions.num_images must be >= 1, got {num_images}")
        self.num_images = int(num_images)
        self._skipped = False

    def log_media(self, trainer: pl.Trainer, predictions: Predictions) -> None:
        if self._skipped:
            return
        shown = slice(0, self.num_images)
        ids = predictions.ids[shown]
        thumbnails = [thumbnail(item) for item in self.items(trainer, ids)]
        if any(t is None for t in thumbnails):
            log.info("image predictions: the inputs are not images; skipped")
            self._skipped = True
            return
        names = self.class_names(trainer, predictions)
        labels, preds = predictions.labels[shown], predictions.preds[shown]
        captions = [f"pred {names[p]} / true {names[t]}" for p, t in zip(preds, labels,
                                                                         strict=True)]
        step, epoch = self.log_step(trainer)
        title = (f"Validation images (lowest {len(ids)} ids), epoch {epoch}: "
                 f"{int((preds == labels).sum())} of {len(ids)} right")
        image = image_grid(thumbnails, captions, title, wrong=list(preds != labels))
        log_image(trainer.loggers, self.key, image, step=step, epoch=epoch, caption=title)
