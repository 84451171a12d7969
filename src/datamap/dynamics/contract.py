"""What the dynamics recorder reads from a LightningModule and its batches, and how it checks it.

The contract itself is written down in :class:`datamap.dynamics.recorder.DynamicsRecorder`'s
docstring. Here: reading ids and labels from a batch (one function for every pass), reading the
logits from a step's output, and the checks that stop a recording that would be wrong (of the
logits, the batches, the trainer's settings and the training loader) -- each a
:class:`~datamap.errors.ConfigError` or :class:`~datamap.errors.DataError` of one line. The
per-batch
checks look only at shapes and dtypes (metadata: nothing is synchronised with the host); the
one check that reads values runs on the first batch of a record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from datamap.errors import ConfigError, DataError

_BATCH_FORMS = ("a batch must carry example ids and gold labels: a dict with 'id' and 'label' "
                "(as datamap.data.PreparedDataModule yields) or a tuple/list (inputs, labels, ids)"
                " of tensors")
_INTEGER_DTYPES = frozenset({torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8})


def batch_ids_labels(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The example ids and gold labels of a batch: ``batch["id"], batch["label"]`` of a mapping,
    or ``batch[2], batch[1]`` of an ``(inputs, labels, ids)`` tuple or list.

    Raises a one-line :class:`~datamap.errors.ConfigError` for any other batch (a 2-tuple ``(x, y)``
    has no ids: without them the dynamics cannot be aligned across epochs) and when the ids or
    labels are not 1-D integer tensors of the same length. Runs on every batch: metadata only.
    """
    # isinstance(dict) first: it is ~10x cheaper than the Mapping ABC check
    if (isinstance(batch, dict) or isinstance(batch, Mapping)) and "id" in batch \
            and "label" in batch:
        ids, labels = batch["id"], batch["label"]
    elif isinstance(batch, (tuple, list)) and len(batch) == 3:
        ids, labels = batch[2], batch[1]
    else:
        raise ConfigError(f"dynamics: cannot read example ids and labels from {_describe(batch)}; "
                          f"{_BATCH_FORMS}")
    for name, value in (("ids", ids), ("labels", labels)):
        if not isinstance(value, torch.Tensor) or value.dtype not in _INTEGER_DTYPES \
                or value.dim() != 1:
            raise ConfigError(f"dynamics: the batch's {name} are {_describe(value)}, not a 1-D "
                              f"integer tensor; {_BATCH_FORMS}")
    if ids.shape != labels.shape:
        raise ConfigError(f"dynamics: the batch holds {len(ids)} ids but {len(labels)} labels; "
                          f"{_BATCH_FORMS}")
    return ids, labels


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, Mapping):
        return f"a dict with keys {sorted(map(str, value))}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def step_logits(outputs: Any, hook: str) -> torch.Tensor:
    """The ``logits`` a training/validation step returned (in a dict, with the loss)."""
    logits = outputs.get("logits") if isinstance(outputs, Mapping) else None
    if not isinstance(logits, torch.Tensor):
        raise ConfigError(
            f"dynamics: {hook} must return a dict with the batch's unnormalised 'logits' "
            f"[batch, num_classes] (and the 'loss'), got {_describe(outputs)} (see "
            "datamap.models.Classifier)"
        )
    return logits


def check_shapes(logits: Any, ids: torch.Tensor, num_classes: int, source: str) -> None:
    """Logits [len(ids), num_classes] (metadata only: no host sync)."""
    if not isinstance(logits, torch.Tensor):
        raise ConfigError(f"dynamics: {source} returned {_describe(logits)}; it must return the "
                          f"unnormalised logits, a tensor [batch, {num_classes}]")
    if logits.shape != (ids.shape[0], num_classes):
        raise ConfigError(
            f"dynamics: {source} returned logits of shape {tuple(logits.shape)} for a batch of "
            f"{len(ids)} example(s); expected [{len(ids)}, {num_classes}] (batch, num_classes)"
        )


def check_not_probabilities(logits: torch.Tensor, source: str) -> None:
    """Refuse logits that are clearly probabilities: every value in [0, 1] and every row summing
    to 1. Synchronises with the host once (the recorder calls it on a record's first batch)."""
    rows, classes = logits.shape
    if rows == 0 or classes < 2:
        return
    x = logits.detach().float()
    tolerance = max(1e-3, classes * torch.finfo(logits.dtype).eps)
    in_unit = ((x >= 0) & (x <= 1)).all()
    sums_to_one = ((x.sum(dim=1) - 1).abs() <= tolerance).all()
    if bool(in_unit & sums_to_one):
        raise ConfigError(
            f"dynamics: {source} returned probabilities (every value in [0, 1], every row "
            "summing to 1), not logits; return the raw, unnormalised scores (before softmax): "
            "the recorder applies the softmax itself"
        )


def non_finite_error(what: str, ids: np.ndarray) -> DataError:
    """The error for ``ids`` whose logits hold NaN or infinity, in the record ``what``."""
    shown = ", ".join(str(int(i)) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
    return DataError(
        f"{what}: the model's logits are NaN or infinite for {len(ids)} example(s) (ids "
        f"{shown}): training diverged or the inputs hold NaN/inf; lower the learning rate "
        "(model.optimizer.lr), clip gradients (trainer.gradient_clip_val) or check the input "
        "data -- no dynamics were written"
    )


def dataset_ids(dataset: Any, what: str) -> np.ndarray:
    """The sorted ids a dataset declares (its ``ids`` attribute): every one must be recorded
    exactly once per record."""
    ids = getattr(dataset, "ids", None)
    if ids is None:
        raise ConfigError(
            f"dynamics: the {what} dataset ({type(dataset).__name__}) has no `ids` attribute "
            "listing its example ids; the recorder checks that every example is recorded exactly "
            "once per record (datamap.data.PreparedDataModule's datasets have it)"
        )
    ids = ids.cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    return np.sort(ids.astype(np.int64))


# ----------------------------------------------------------------------------------------------
# the trainer and the training loader


def check_trainer(trainer: pl.Trainer, records_val: bool) -> None:
    """Refuse trainer settings that would skip examples of a recorded split."""
    limit = trainer.limit_train_batches
    # An int limit is a batch count: it silently drops examples whenever it is too small.
    if isinstance(limit, int) or limit < 1.0:
        raise ConfigError(
            f"trainer.limit_train_batches={limit} would skip training examples; cartography "
            "needs every example in every epoch: leave it at 1.0"
        )
    if trainer.overfit_batches:
        raise ConfigError(
            f"trainer.overfit_batches={trainer.overfit_batches} trains on a few batches only; "
            "cartography needs every example in every epoch: leave it at 0"
        )
    if records_val:
        limit = trainer.limit_val_batches
        if isinstance(limit, int) or limit < 1.0:
            raise ConfigError(
                f"trainer.limit_val_batches={limit} would skip validation examples, but "
                "dynamics.splits includes val: leave it at 1.0 or drop val from the splits"
            )
        if trainer.check_val_every_n_epoch != 1:
            raise ConfigError(
                f"trainer.check_val_every_n_epoch={trainer.check_val_every_n_epoch}: "
                "dynamics.splits includes val, which is recorded from the validation run at "
                "the end of every epoch: set it to 1 or drop val from the splits"
            )


def check_train_loader(trainer: pl.Trainer) -> np.ndarray:
    """Refuse, before the first batch, a training loader that would lose examples; the ids it
    must cover."""
    loader = trainer.train_dataloader
    if not isinstance(loader, torch.utils.data.DataLoader):
        raise ConfigError(
            f"the dynamics recorder needs a single training DataLoader, got "
            f"{type(loader).__name__}"
        )
    samplers = [loader.sampler, getattr(loader.batch_sampler, "sampler", None)]
    drops = [loader.drop_last, getattr(loader.batch_sampler, "drop_last", False),
             *(getattr(s, "drop_last", False) for s in samplers)]
    if any(bool(d) for d in drops):
        raise ConfigError(
            "the training DataLoader drops its last incomplete batch (drop_last=True): those "
            "examples would have no dynamics in that epoch, and cartography needs every "
            "example in every epoch: set drop_last=False"
        )
    return dataset_ids(loader.dataset, "training")


def check_validates_after(trainer: pl.Trainer, num_batches: int) -> None:
    """With ``val`` recorded: validation must run after the last training batch."""
    every = trainer.val_check_batch
    time_based = getattr(trainer, "_val_check_time_interval", None) is not None
    if not time_based and (every is None or math.isinf(every)
                           or num_batches % int(every) == 0):
        return
    raise ConfigError(
        f"trainer.val_check_interval={trainer.val_check_interval}: validation does not run "
        f"after the last of the {num_batches} training batches, but dynamics.splits includes "
        "val, which is recorded from that run: set val_check_interval=1.0 (or to a number "
        "of batches that divides the epoch), or drop val from the splits"
    )
