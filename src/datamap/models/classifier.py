"""The LightningModule classifier shared by the train and retrain stages.

The classifier is input-agnostic: its backbone turns a batch into logits. A backbone that reads
``x`` as it is (``MLP``, ``SmallCNN``) is called with the tensor ``batch["x"]``; one that needs
its input encoded (hashed n-grams, tokens) offers ``batch_encoder()`` -- a picklable function
the DataModule applies in its loaders -- and is called with the whole encoded batch. Everything
after the backbone (loss, dynamics, evaluation) sees only logits, ids and labels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from datamap.errors import ConfigError
from datamap.models.factories import as_factory, describe

#: What to suggest for each input kind when a backbone cannot read it.
MODELS_FOR = {"image": "model=mlp or model=cnn", "tabular": "model=mlp",
              "text": "model=text_bow or model=hf"}


def check_input_kind(net: Callable[..., nn.Module], input_kind: str | None) -> None:
    """Refuse a backbone that cannot read the prepared data's input kind (its class lists the
    kinds it reads in ``input_kinds``; one without the attribute is not checked)."""
    backbone = getattr(net, "func", net)  # the class behind a functools.partial
    kinds = getattr(backbone, "input_kinds", None)
    if input_kind is None or kinds is None or input_kind in kinds:
        return
    name = getattr(backbone, "__name__", type(backbone).__name__)
    raise ConfigError(
        f"model.net: {name} reads {' or '.join(kinds)} inputs, but the prepared data is "
        f"{input_kind}; use {MODELS_FOR.get(input_kind, 'a backbone for it')}"
    )


#: torch optimizers that take sparse gradients (e.g. of ``nn.EmbeddingBag(sparse=True)``);
#: others say so with a class attribute ``takes_sparse_gradients = True``.
SPARSE_OPTIMIZERS = ("SGD", "Adagrad", "SparseAdam")


def check_sparse_support(net: nn.Module, optimizer: Callable[..., Any]) -> None:
    """Refuse an optimizer (a partial constructor) that would crash at its first step on the
    sparse gradients of ``net``."""
    sparse = any(getattr(m, "sparse", False) for m in net.modules()
                 if isinstance(m, (nn.Embedding, nn.EmbeddingBag)))
    optimizer = getattr(optimizer, "func", optimizer)
    name = getattr(optimizer, "__name__", type(optimizer).__name__)
    takes_sparse = name in SPARSE_OPTIMIZERS or getattr(optimizer, "takes_sparse_gradients", False)
    if sparse and not takes_sparse:
        raise ConfigError(
            f"model.optimizer: {name} cannot take the sparse embedding gradients of model.net "
            f"(sparse: true); use datamap.models.text.RowAdagrad or torch.optim's "
            f"{', '.join(SPARSE_OPTIMIZERS)}, or set model.net.sparse=false"
        )


class Classifier(pl.LightningModule):
    """Cross-entropy classification over batches ``{"id", "label", <input>}``.

    Args:
        net: a partial backbone constructor (``_partial_: true`` in config) completed here with
            ``input_shape`` and ``num_classes`` from the prepared data.
        optimizer: a partial optimizer (``_partial_: true``) taking the parameters.
        scheduler: an optional partial LR scheduler taking the optimizer.
            Each of the three may also be the plain description a checkpoint holds (see
            :mod:`datamap.models.factories`); ``load_from_checkpoint`` rebuilds datamap's and
            torch's classes from it, ``datamap.models.checkpoint.load_model`` also others the
            run's config names.
        input_shape, num_classes, input_kind, class_names: supplied by the training code from
            ``meta.json``; ``input_kind`` (image, tabular, text) is checked against the
            backbone's ``input_kinds``. They are saved in the checkpoint, so a reloaded model
            knows what its outputs mean and which data it can be evaluated on.

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
        input_kind: str | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        # Checkpoints hold the constructors as plain descriptions, not pickled code: they load
        # with torch.load(weights_only=True) and rebuild the same model from trusted classes.
        self.save_hyperparameters({
            "net": describe(net, "net"), "optimizer": describe(optimizer, "optimizer"),
            "scheduler": describe(scheduler, "scheduler"),
            "input_shape": [int(n) for n in input_shape], "num_classes": int(num_classes),
            "input_kind": input_kind,
            "class_names": [str(c) for c in class_names] if class_names is not None else None,
        }, logger=False)
        net = as_factory(net, "net")
        self.optimizer_factory = as_factory(optimizer, "optimizer")
        self.scheduler_factory = as_factory(scheduler, "scheduler")
        check_input_kind(net, input_kind)
        self.net = net(input_shape=tuple(input_shape), num_classes=int(num_classes))
        check_sparse_support(self.net, self.optimizer_factory)
        self.num_classes = int(num_classes)
        self.train_acc = MulticlassAccuracy(self.num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(self.num_classes, average="micro")
        self.val_macro_f1 = MulticlassF1Score(self.num_classes, average="macro")
        self.input_kind = input_kind
        self.class_names = list(class_names) if class_names is not None else None

    def batch_encoder(self) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
        """The backbone's batch encoder, or None when it reads ``x`` as it is."""
        make = getattr(self.net, "batch_encoder", None)
        return make() if callable(make) else None

    def forward(self, batch: Mapping[str, Any] | torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes] of a batch dict, or of a tensor of inputs ``x``."""
        if isinstance(batch, torch.Tensor):
            return self.net(batch)
        if callable(getattr(self.net, "batch_encoder", None)):
            return self.net(batch)
        return self.net(batch["x"])

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str):
        logits = self(batch)
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
        return self(batch)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler,
                                                         "interval": "epoch"}}

