"""Prediction samples: a table of misclassified validation examples at each validation epoch."""

from __future__ import annotations

import pandas as pd
import pytorch_lightning as pl

from datamap.callbacks.media import (
    MAX_TEXT,
    Predictions,
    ValidationMedia,
    image_grid,
    preview_text,
    table_image,
    thumbnail,
)
from datamap.errors import ConfigError
from datamap.tracking.loggers import log_image, log_table


class PredictionSamples(ValidationMedia):
    """The misclassified validation examples with the lowest ids, at most ``max_rows``.

    Columns: ``id``, ``input`` (the text, truncated; ``[CxHxW image]``; or a tabular input's first
    values), ``true``, ``pred``, ``confidence`` (softmax probability of the predicted class).
    Loggers with tables get the table (W&B shows image inputs as thumbnails in it); every logger
    also gets it as an image: a captioned thumbnail grid for images, a drawn table otherwise.
    Lowest ids first, so consecutive epochs show the same examples while they stay wrong.

    Args:
        max_rows: cap on the rows shown.
        max_chars: longest text preview.
        every_n_epochs: log every n-th validation epoch.
    """

    key = "val/prediction_samples"

    def __init__(self, max_rows: int = 16, max_chars: int = MAX_TEXT,
                 every_n_epochs: int = 1) -> None:
        super().__init__(every_n_epochs)
        if int(max_rows) < 1:
            raise ConfigError(f"callbacks.prediction_samples.max_rows must be >= 1, got {max_rows}")
        self.max_rows = int(max_rows)
        self.max_chars = int(max_chars)

    def sample_table(self, trainer: pl.Trainer, predictions: Predictions):
        """(the table, its thumbnails or None per row) for this epoch's predictions."""
        wrong = predictions.wrong.nonzero()[0][: self.max_rows]
        ids = predictions.ids[wrong]
        items = self.items(trainer, ids)
        names = self.class_names(trainer, predictions)
        frame = pd.DataFrame({
            "id": ids.astype("int64"),
            "input": [preview_text(item, self.max_chars) for item in items],
            "true": [names[i] for i in predictions.labels[wrong]],
            "pred": [names[i] for i in predictions.preds[wrong]],
            "confidence": predictions.confidence[wrong].astype(float).round(4),
        })
        return frame, [thumbnail(item) for item in items]

    def log_media(self, trainer: pl.Trainer, predictions: Predictions) -> None:
        step, epoch = self.log_step(trainer)
        frame, thumbnails = self.sample_table(trainer, predictions)
        total = int(predictions.wrong.sum())
        title = (f"Misclassified validation examples, epoch {epoch}: {len(frame)} of {total} "
                 f"(of {len(predictions.ids)}), lowest ids first")
        if len(frame) and all(t is not None for t in thumbnails):
            captions = [f"#{r.id} pred {r.pred} / true {r.true}\n({r.confidence:.2f})"
                        for r in frame.itertuples()]
            image = image_grid(thumbnails, captions, title)
        else:
            image = table_image(frame, title)
        log_table(trainer.loggers, self.key, frame, step=step, epoch=epoch, thumbnails=thumbnails)
        log_image(trainer.loggers, self.key, image, step=step, epoch=epoch, caption=title)
