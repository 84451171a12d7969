"""What the media callbacks share: the validation predictions, input previews and rendering.

:class:`ValidationMedia` keeps, for every validation example, its id, label, predicted class and
confidence (the softmax probability of the predicted class). Per batch it only appends tensors
that stay on their device -- no host synchronisation inside the loop; at the end of the epoch
they are moved to the host once (and gathered across ranks under DDP), sorted by id, and handed
to :meth:`ValidationMedia.log_media` on rank 0 -- only when a logger is there to take them.

Inputs are shown by what the batch holds: ``text`` (and ``text_pair``) as the string, truncated;
``x`` of shape [C, H, W] as a thumbnail; any other ``x`` (tabular) as its first few values.
Examples are looked up by id in the validation dataset, so previews work for every input kind.

Figures are drawn on a bare matplotlib :class:`~matplotlib.figure.Figure` with the Agg canvas
(no pyplot state, no display) into an RGB array; the same predictions give the same pixels.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from datamap.errors import ConfigError

log = logging.getLogger(__name__)

#: Longest text preview (characters) before it is cut with an ellipsis.
MAX_TEXT = 200
#: Values of a tabular input shown in its preview.
MAX_VALUES = 6


@dataclass(frozen=True)
class Predictions:
    """One validation epoch's predictions, one entry per example, sorted by id."""

    ids: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    confidence: np.ndarray

    @property
    def wrong(self) -> np.ndarray:
        return self.preds != self.labels


class ValidationMedia(pl.Callback):
    """Base class: collects validation predictions; subclasses draw and log them.

    Args:
        every_n_epochs: log at the end of every n-th validation epoch (1: each one).
        key: the name the media is logged under (``val/...``).
    """

    key = "val/media"

    def __init__(self, every_n_epochs: int = 1) -> None:
        if int(every_n_epochs) < 1:
            raise ConfigError(f"callbacks: every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = int(every_n_epochs)
        self._parts: list[tuple[torch.Tensor, ...]] = []
        self._items: dict[int, int] | None = None

    # ---- collecting ------------------------------------------------------------------------

    def _active(self, trainer: pl.Trainer) -> bool:
        return (bool(trainer.loggers) and not trainer.sanity_checking
                and (trainer.current_epoch + 1) % self.every_n_epochs == 0)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._parts = []

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if not self._active(trainer) or dataloader_idx != 0:
            return
        logits = outputs.get("logits") if isinstance(outputs, Mapping) else None
        if logits is None:
            raise ConfigError(f"callbacks: {type(self).__name__} needs validation_step to return "
                              "a dict with the batch's 'logits' (datamap's Classifier does)")
        confidence, preds = logits.detach().float().softmax(dim=1).max(dim=1)
        self._parts.append((batch["id"], batch["label"], preds, confidence))

    def _gather(self, trainer: pl.Trainer) -> Predictions | None:
        if not self._parts:
            return None
        columns = [torch.cat([part[i] for part in self._parts]) for i in range(4)]
        self._parts = []
        if trainer.world_size > 1:
            columns = _all_gather(trainer, columns)
        ids, labels, preds, confidence = (c.cpu().numpy() for c in columns)
        # DistributedSampler pads with repeated examples: keep each id once, in id order.
        ids, first = np.unique(ids, return_index=True)
        return Predictions(ids=ids, labels=labels[first], preds=preds[first],
                           confidence=confidence[first].astype(np.float32))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active(trainer):
            self._parts = []
            return
        predictions = self._gather(trainer)
        if predictions is None or not trainer.is_global_zero:
            return
        self.log_media(trainer, predictions)

    def log_media(self, trainer: pl.Trainer, predictions: Predictions) -> None:
        raise NotImplementedError

    # ---- what subclasses use ---------------------------------------------------------------

    @staticmethod
    def class_names(trainer: pl.Trainer, predictions: Predictions) -> list[str]:
        """The datamodule's class names (``meta.json``), else the class indices as strings."""
        k = int(getattr(trainer.lightning_module, "num_classes", 0) or 0)
        k = max(k, int(max(predictions.labels.max(), predictions.preds.max())) + 1)
        meta = getattr(trainer.datamodule, "meta", None) or {}
        names = meta.get("class_names") if isinstance(meta, Mapping) else None
        if names is not None and len(names) >= k:
            return [str(n) for n in names]
        return [str(i) for i in range(k)]

    def items(self, trainer: pl.Trainer, ids: Sequence[int]) -> list[Mapping[str, Any]]:
        """The validation dataset's items of these example ids."""
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, Sequence) else loaders
        dataset = loader.dataset
        if self._items is None:
            known = getattr(dataset, "ids", None)
            known = (np.asarray(known) if known is not None
                     else np.asarray([int(dataset[i]["id"]) for i in range(len(dataset))]))
            self._items = {int(i): position for position, i in enumerate(known.tolist())}
        return [dataset[self._items[int(i)]] for i in ids]

    @staticmethod
    def log_step(trainer: pl.Trainer) -> tuple[int, int]:
        return trainer.global_step, trainer.current_epoch


def _all_gather(trainer: pl.Trainer, columns: list[torch.Tensor]) -> list[torch.Tensor]:
    """Concatenate every rank's columns (ranks may hold different numbers of rows)."""
    count = torch.tensor([len(columns[0])], device=columns[0].device)
    counts = trainer.strategy.all_gather(count).reshape(-1)
    longest = int(counts.max())
    gathered = []
    for column in columns:
        padded = column.new_zeros((longest,))
        padded[: len(column)] = column
        stacked = trainer.strategy.all_gather(padded).reshape(len(counts), longest)
        gathered.append(torch.cat([stacked[r, : int(n)] for r, n in enumerate(counts)]))
    return gathered


# --------------------------------------------------------------------------------------------
# input previews


def is_image(item: Mapping[str, Any]) -> bool:
    x = item.get("x")
    return x is not None and np.ndim(x) == 3 and np.shape(x)[0] in (1, 3)


def preview_text(item: Mapping[str, Any], max_chars: int = MAX_TEXT) -> str:
    """A one-line preview of an input: the text, ``[CxHxW image]`` or the first values."""
    if "text" in item:
        text = str(item["text"])
        if item.get("text_pair") is not None:
            text = f"{text} || {item['text_pair']}"
        return text if len(text) <= max_chars else text[: max_chars - 1] + "…"
    x = np.asarray(item["x"], dtype=np.float32)
    if is_image(item):
        return "[" + "x".join(str(s) for s in x.shape) + " image]"
    flat = x.ravel()
    head = ", ".join(f"{v:.3g}" for v in flat[:MAX_VALUES])
    return f"[{head}{', …' if flat.size > MAX_VALUES else ''}] ({flat.size} values)"


def thumbnail(item: Mapping[str, Any]) -> np.ndarray | None:
    """An image input as (H, W) grey or (H, W, 3) RGB in [0, 1]; None for other inputs."""
    if not is_image(item):
        return None
    x = np.asarray(item["x"], dtype=np.float32)
    low, high = float(x.min()), float(x.max())
    x = (x - low) / (high - low) if high > low else np.zeros_like(x)
    return x[0] if x.shape[0] == 1 else np.moveaxis(x, 0, -1)


# --------------------------------------------------------------------------------------------
# rendering: Pillow straight into pixels (a matplotlib figure per epoch costs seconds)

WHITE = (255, 255, 255)
INK = (26, 26, 26)
RED = (178, 24, 43)
#: Light and dark end of the confusion matrix's colour ramp (as matplotlib's "Blues").
_RAMP = (np.array([247, 251, 255], float), np.array([8, 48, 107], float))


def font(size: int = 11) -> Any:
    """Pillow's built-in font (shipped with Pillow, so every machine draws the same pixels)."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def to_rgb(image: np.ndarray, size: int = 96) -> np.ndarray:
    """A thumbnail in [0, 1] as RGB uint8, scaled to ``size`` pixels on its longer side
    (whole-number upscaling, so small images stay sharp). Grey images are drawn dark on light,
    as in the review grid."""
    from PIL import Image

    if image.ndim == 2:
        pixels = np.repeat(((1.0 - image) * 255).round().astype(np.uint8)[..., None], 3, axis=2)
    else:
        pixels = (image * 255).round().astype(np.uint8)
    picture = Image.fromarray(np.ascontiguousarray(pixels))
    longer = max(picture.size)
    if longer < size:
        factor = size // longer
        picture = picture.resize((picture.width * factor, picture.height * factor),
                                 Image.Resampling.NEAREST)
    elif longer > size:
        picture.thumbnail((size, size), Image.Resampling.BILINEAR)
    return np.asarray(picture)


def _canvas(width: int, height: int):
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (int(width), int(height)), WHITE)
    return picture, ImageDraw.Draw(picture)


def image_grid(images: Sequence[np.ndarray], captions: Sequence[str], title: str,
               columns: int = 8, wrong: Sequence[bool] | None = None,
               size: int = 96) -> np.ndarray:
    """Thumbnails in a grid, a caption (lines split on newlines) under each, red when
    ``wrong``; returned as an RGB uint8 array."""
    from PIL import Image

    small, large = font(11), font(13)
    tiles = [to_rgb(image, size) for image in images]
    lines = [caption.split("\n") for caption in captions]
    n_lines = max((len(c) for c in lines), default=1)
    text_width = max((small.getlength(line) for c in lines for line in c), default=0)
    tile_w = int(max(size, text_width)) + 10
    tile_h = size + 8 + 14 * n_lines + 6
    columns = max(1, min(columns, len(tiles)))
    rows = -(-max(len(tiles), 1) // columns)
    width = max(columns * tile_w + 10, int(large.getlength(title)) + 20)
    picture, draw = _canvas(width, 30 + rows * tile_h)
    draw.text((10, 8), title, font=large, fill=INK)
    for i, (tile, caption) in enumerate(zip(tiles, lines, strict=True)):
        x0 = 5 + (i % columns) * tile_w
        y0 = 30 + (i // columns) * tile_h
        picture.paste(Image.fromarray(tile), (x0 + (tile_w - tile.shape[1]) // 2, y0))
        colour = RED if wrong is not None and wrong[i] else INK
        for j, line in enumerate(caption):
            x = x0 + (tile_w - small.getlength(line)) / 2
            draw.text((x, y0 + size + 6 + 14 * j), line, font=small, fill=colour)
    return np.asarray(picture)


def table_image(frame: Any, title: str, wrap: int = 60) -> np.ndarray:
    """A small DataFrame drawn as a table (for loggers that show images, not tables)."""
    small, large = font(11), font(13)
    header = [str(c) for c in frame.columns]
    rows = [[textwrap.shorten(str(v), wrap, placeholder="...") for v in row]
            for row in frame.itertuples(index=False)]
    widths = [int(max(small.getlength(text) for text in column)) + 14
              for column in zip(header, *rows, strict=True)]
    row_h = 17
    width = max(sum(widths) + 20, int(large.getlength(title)) + 20)
    picture, draw = _canvas(width, 34 + row_h * (len(rows) + 1) + 10 + (18 if not rows else 0))
    draw.text((10, 8), title, font=large, fill=INK)
    top = 32
    draw.rectangle((10, top, 10 + sum(widths), top + row_h), fill=(235, 235, 235))
    for r, cells in enumerate([header, *rows]):
        x = 10
        for width_, text in zip(widths, cells, strict=True):
            draw.text((x + 6, top + 3 + r * row_h), text, font=small, fill=INK)
            x += width_
    if not rows:
        draw.text((16, top + row_h + 4), "(none)", font=small, fill=INK)
    return np.asarray(picture)


def heatmap_image(counts: np.ndarray, names: Sequence[str], title: str) -> np.ndarray:
    """A square count matrix (rows: true class, columns: predicted) as a heat map, coloured by
    each row's share so classes of different sizes compare, counts written in the cells."""
    from PIL import Image, ImageDraw

    small, large = font(11), font(13)
    k = len(counts)
    cell = 34 if k <= 20 else max(6, 680 // k)
    labels = [textwrap.shorten(str(n), 18, placeholder="...") for n in names]
    label_w = int(max(small.getlength(label) for label in labels)) + 12 if cell >= 12 else 0
    left, top = 30 + label_w, 50 + label_w
    width = max(left + k * cell + 20, int(large.getlength(title)) + 20)
    picture, draw = _canvas(width, top + k * cell + 20)
    draw.text((10, 8), title, font=large, fill=INK)
    draw.text((left, 30), "predicted", font=small, fill=INK)
    column_head = Image.new("RGB", (int(small.getlength("true")) + 4, 14), WHITE)
    ImageDraw.Draw(column_head).text((2, 0), "true", font=small, fill=INK)
    picture.paste(column_head.rotate(90, expand=True), (8, top))
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape, float), where=totals > 0)
    colours = (_RAMP[0] + share[..., None] * (_RAMP[1] - _RAMP[0])).round().astype(np.uint8)
    for (i, j), value in np.ndenumerate(counts):
        x0, y0 = left + j * cell, top + i * cell
        draw.rectangle((x0, y0, x0 + cell - 1, y0 + cell - 1), fill=tuple(colours[i, j]))
        if value and cell >= 20:
            text = str(value)
            draw.text((x0 + (cell - small.getlength(text)) / 2, y0 + cell / 2 - 6), text,
                      font=small, fill=WHITE if share[i, j] > 0.5 else INK)
    if label_w:
        upright = label_w - 12 <= cell - 4  # column labels fit their cells without turning
        for i, label in enumerate(labels):
            y = top + i * cell + cell / 2 - 6
            draw.text((left - 6 - small.getlength(label), y), label, font=small, fill=INK)
            if upright:
                x = left + i * cell + (cell - small.getlength(label)) / 2
                draw.text((x, top - 18), label, font=small, fill=INK)
                continue
            tag = Image.new("RGB", (int(small.getlength(label)) + 4, 14), WHITE)
            ImageDraw.Draw(tag).text((2, 0), label, font=small, fill=INK)
            tag = tag.rotate(90, expand=True)
            picture.paste(tag, (int(left + i * cell + cell / 2 - 7), top - 6 - tag.height))
    return np.asarray(picture)
