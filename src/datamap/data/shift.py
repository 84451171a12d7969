"""Control sets made by shifting the test examples: a paired view of the test set.

A shifted view is not a new distribution (the same examples, perturbed), but it is cheap and
documented: each shift is seeded and describes itself, and the description is stored in the
control file's metadata. ``data.controls.<name>`` builds one from its ``_target_``; every
control builder has ``build(test, rng) -> RawData`` and ``describe()``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from datamap.data.sources import RawData
from datamap.errors import ConfigError


class Shift:
    """Base of the shifts: the control set is the test split with shifted inputs ``x``."""

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def build(self, test: RawData, rng: np.random.Generator) -> RawData:
        if test.x is None:
            raise ConfigError(f"data.controls: {type(self).__name__} shifts numeric inputs, but "
                              "the data is text; give control examples as a file instead")
        return replace(test, x=self(test.x, rng), origin=f"{test.origin} (shifted)")


class ImageShift(Shift):
    """Rotate, translate and add noise to images [N, C, H, W] with values in [0, 1].

    Every image gets its own rotation angle drawn uniformly from [-max_rotation, max_rotation]
    degrees, an integer translation drawn uniformly from [-max_translation, max_translation]
    pixels per axis, then Gaussian pixel noise with std ``noise_std``; values are clipped to
    [0, 1]. Interpolation is bilinear with zero padding (one batched ``grid_sample``).
    """

    def __init__(
        self, max_rotation: float = 15.0, max_translation: int = 1, noise_std: float = 0.1
    ) -> None:
        for key, value in (("max_rotation", max_rotation), ("max_translation", max_translation),
                           ("noise_std", noise_std)):
            if value < 0:
                raise ConfigError(f"data.controls: ImageShift.{key} must be >= 0, got {value}")
        self.max_rotation = float(max_rotation)
        self.max_translation = int(max_translation)
        self.noise_std = float(noise_std)

    def describe(self) -> str:
        return (
            f"test images rotated by U(-{self.max_rotation:g}, {self.max_rotation:g}) degrees, "
            f"translated by up to {self.max_translation} px per axis, Gaussian pixel noise "
            f"std {self.noise_std:g}, clipped to [0, 1]"
        )

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        if x.ndim != 4:
            raise ConfigError(
                "data.controls: ImageShift needs image inputs [N, C, H, W]; use "
                "datamap.data.FeatureNoise for tabular data"
            )
        n, _, height, width = x.shape
        angles = np.deg2rad(rng.uniform(-self.max_rotation, self.max_rotation, size=n))
        offsets = rng.integers(-self.max_translation, self.max_translation + 1, size=(n, 2))
        # One batched affine warp (bilinear, zero padding) instead of a loop over images.
        # affine_grid works in normalised [-1, 1] coordinates: a shift of k pixels is 2k/size.
        cos, sin = np.cos(angles), np.sin(angles)
        theta = np.zeros((n, 2, 3), dtype=np.float32)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
        theta[:, 1, 0], theta[:, 1, 1] = sin, cos
        theta[:, 0, 2] = -2.0 * offsets[:, 1] / width
        theta[:, 1, 2] = -2.0 * offsets[:, 0] / height
        images = torch.tensor(x, dtype=torch.float32)
        grid = F.affine_grid(torch.from_numpy(theta), list(images.shape), align_corners=False)
        warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False).numpy()
        warped += rng.normal(0.0, self.noise_std, size=warped.shape).astype(np.float32)
        return np.clip(warped, 0.0, 1.0).astype(np.float32)


class FeatureNoise(Shift):
    """Add Gaussian noise of ``std`` times each feature's standard deviation (tabular data)."""

    def __init__(self, std: float = 0.5) -> None:
        if std < 0:
            raise ConfigError(f"data.controls: FeatureNoise.std must be >= 0, got {std}")
        self.std = float(std)

    def describe(self) -> str:
        return f"test features plus Gaussian noise of {self.std:g} x each feature's std"

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        scale = x.reshape(len(x), -1).std(axis=0).reshape(x.shape[1:])
        noise = rng.normal(0.0, 1.0, size=x.shape) * (self.std * scale)
        return (x + noise).astype(np.float32)
