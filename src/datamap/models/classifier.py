"""The LightningModule classifier shared by the train and retrain stages."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn


class Classifier(pl.LightningModule):
    """Cross-entropy classification over batches ``{"id", "label", "x"}``.

    Args:
        net: a partial backbone constructor (``_partial_: true`` in config) completed here with
            ``input_shape`` and ``num_classes`` from the prepared data.
        optimizer: a partial optimizer (``_partial_: true``) taking the parameters.
        scheduler: an optional partial LR scheduler taking the optimizer.
        input_shape, num_classes: supplied by the training code from ``meta.json``.

    ``training_step`` returns the detached logits with the ids and labels of the batch, so the
    dynamics recorder reads the training forward pass at zero extra compute (the paper's way).
    """

    def __init__(
        self,
        net: Callable[..., nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        input_shape: Sequence[int] = (),
        num_classes: int = 2,
    ) -> None:
        super().__init__()
        # Partials pickle into the checkpoint, so load_from_checkpoint rebuilds the same model.
        self.save_hyperparameters(logger=False)
        self.net = net(input_shape=tuple(input_shape), num_classes=int(num_classes))
        self.num_classes = int(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str, dataloader_idx: int = 0):
        logits = self(batch["x"])
        loss = F.cross_entropy(logits, batch["label"])
        acc = (logits.argmax(dim=1) == batch["label"]).float().mean()
        batch_size = len(batch["label"])
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True,
                 batch_size=batch_size, add_dataloader_idx=False)
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=stage != "train",
                 batch_size=batch_size, add_dataloader_idx=False)
        return loss, logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        loss, logits = self._shared_step(batch, "train")
        return {"loss": loss, "logits": logits.detach(), "id": batch["id"],
                "label": batch["label"]}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        loss, logits = self._shared_step(batch, "val")
        return {"loss": loss, "logits": logits.detach(), "id": batch["id"],
                "label": batch["label"]}

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int,
                     dataloader_idx: int = 0) -> torch.Tensor:
        return self(batch["x"])

    def configure_optimizers(self) -> Any:
        optimizer = self.hparams.optimizer(params=self.parameters())
        if self.hparams.scheduler is None:
            return optimizer
        scheduler = self.hparams.scheduler(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler,
                                                         "interval": "epoch"}}
