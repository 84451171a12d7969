"""Backbones for numeric inputs ``x``: ``nn.Module``s mapping a tensor batch to class logits.

Each takes ``input_shape`` and ``num_classes`` as keyword arguments, which the classifier
supplies from the prepared data's ``meta.json``; the config sets only the architecture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from datamap.errors import ConfigError


class MLP(nn.Module):
    """Flatten, then ``hidden`` Linear-ReLU(-Dropout) layers, then a linear classifier."""

    input_kinds: ClassVar[tuple[str, ...]] = ("image", "tabular")

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (128,),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for size in hidden:
            layers += [nn.Linear(width, int(size)), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(size)
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SmallCNN(nn.Module):
    """Conv-BN-ReLU blocks (``channels``), global average pooling, a linear classifier.

    For image inputs [C, H, W]; 3x3 convolutions with stride 1 keep small images (8x8 digits)
    usable, and pooling after each block halves the resolution while it is above 4.
    """

    input_kinds: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (16, 32),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError(
                f"model=cnn (SmallCNN) needs image inputs [C, H, W], got shape "
                f"{list(input_shape)}; use model=mlp for tabular data"
            )
        in_channels, size = int(input_shape[0]), min(int(input_shape[1]), int(input_shape[2]))
        blocks: list[nn.Module] = []
        for out_channels in channels:
            blocks += [
                nn.Conv2d(in_channels, int(out_channels), 3, padding=1, bias=False),
                nn.BatchNorm2d(int(out_channels)),
                nn.ReLU(),
            ]
            if size > 4:
                blocks.append(nn.MaxPool2d(2))
                size //= 2
            in_channels = int(out_channels)
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(in_channels, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
