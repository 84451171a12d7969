"""The LightningModule classifier shared by the train and retrain stages."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score


class Classifier(pl.LightningModule):
    """Cross-entropy classification over batches ``{"id", "label", "x"}``.

    Args:
        net: a partial backbone constructor (``_partial_: true`` in config) completed here with
            ``input_shape`` and ``num_classes`` from the prepared data.
        optimizer: a partial optimizer (``_partial_: true``) taking the parameters.
        scheduler: an optional partial LR scheduler taking the optimizer.
        input_shape, num_classes: supplied by the training code from ``meta.json``.

    ``training_step`` returns the detached logits with the ids and labels of the batch, so the
    dynamics recorder reads the training forward pass at zero extra compute (the paper's way);
    ``validation_step`` returns the same for the media callbacks.

    Logged per epoch (names are stable; checkpoints and DVC plots use them): ``train/loss``,
    ``train/acc``, ``val/loss``, ``val/acc``, ``val/macro_f1``. Accuracy and macro-F1 are
    torchmetrics metrics, accumulated on the device and reduced across ranks once per epoch.
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
        self.train_acc = MulticlassAccuracy(self.num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(self.num_classes, average="micro")
        self.val_macro_f1 = MulticlassF1Score(self.num_classes, average="macro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str):
        logits = self(batch["x"])
        labels = batch["label"]
        loss = F.cross_entropy(logits, labels)
        epoch_only = {"on_step": False, "on_epoch": True, "batch_size": len(labels),
                      "add_dataloader_idx": False}
        self.log(f"{stage}/loss", loss, prog_bar=True, **epoch_only)
        metrics = {"acc": self.train_acc} if stage == "train" else {
            "acc": self.val_acc, "macro_f1": self.val_macro_f1}
        for name, metric in metrics.items():
            metric.update(logits.detach(), labels)
            self.log(f"{stage}/{name}", metric, prog_bar=stage != "train", **epoch_only)
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
