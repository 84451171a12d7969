"""The recording callback: per-example training dynamics, aligned by example id.

In ``train_pass`` mode (the paper's way) it reads the logits that ``training_step`` already
computed, so recording costs no extra forward pass. Values are derived and kept on the device
during the epoch and moved to the host once, at epoch end.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from datamap.dynamics.table import MODES, DynamicsMeta, build_dynamics, write_dynamics
from datamap.io import ConfigError, DataError

log = logging.getLogger(__name__)

VALUE_COLUMNS = ("p_gold", "pred", "margin", "loss", "el2n")


def batch_values(logits: torch.Tensor, gold: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example values of one batch, on the logits' device, in float32.

    Matches :func:`datamap.dynamics.table.per_example_values` (the NumPy twin used by importers):
    softmax in float32, argmax ties to the lowest index, margin = gold logit - largest other.
    """
    logits = logits.detach().float()
    rows = torch.arange(len(gold), device=logits.device)
    log_probs = F.log_softmax(logits, dim=1)
    probs = log_probs.exp()
    p_gold = probs[rows, gold]
    others = logits.clone()
    others[rows, gold] = -torch.inf
    margin = logits[rows, gold] - others.max(dim=1).values
    residual = probs.clone()
    residual[rows, gold] -= 1.0
    return {
        "p_gold": p_gold,
        "pred": logits.argmax(dim=1).to(torch.int32),
        "margin": margin,
        "loss": -log_probs[rows, gold],
        "el2n": residual.norm(dim=1),
    }


class DynamicsRecorder(pl.Callback):
    """Record every training example's gold-class probability and correctness each epoch.

    Args:
        dirpath: where ``dynamics.parquet`` is written at the end of fit (rank 0 only); None to
            keep the table in memory (see :meth:`table`).
        mode: ``train_pass`` (values from the training forward pass) or ``eval_pass``.
        records_per_epoch: records per epoch (``train_pass`` records exactly once).
        store_logits: also store the full logits (``logits_dtype`` float32 or float16).
        seed: stored in the table metadata.
    """

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        mode: str = "train_pass",
        records_per_epoch: int = 1,
        store_logits: bool = False,
        logits_dtype: str = "float32",
        splits: tuple[str, ...] | list[str] = ("train",),
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"dynamics.mode must be one of {MODES}, got {mode!r}")
        if mode == "train_pass" and int(records_per_epoch) != 1:
            raise ConfigError(
                "dynamics.records_per_epoch must be 1 in train_pass mode (each example passes "
                "through training once per epoch); use mode=eval_pass for more records"
            )
        if logits_dtype not in ("float32", "float16"):
            raise ConfigError(f"dynamics.logits_dtype must be float32 or float16, got "
                              f"{logits_dtype!r}")
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.mode = mode
        self.records_per_epoch = int(records_per_epoch)
        self.store_logits = bool(store_logits)
        self.logits_dtype = logits_dtype
        self.splits = tuple(splits)
        self.seed = seed
        self.num_classes: int | None = None
        self._buffer: list[dict[str, torch.Tensor]] = []
        self._epochs: list[dict[str, np.ndarray]] = []
        self._expected_ids: np.ndarray | None = None

    # ---------------------------------------------------------------- lifecycle

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.num_classes = int(getattr(pl_module, "num_classes"))
        self._check_trainer(trainer)

    def _check_trainer(self, trainer: pl.Trainer) -> None:
        limit = trainer.limit_train_batches
        # An int limit is a batch count: it silently drops examples whenever it is too small.
        if isinstance(limit, int) or limit < 1.0:
            raise ConfigError(
                f"trainer.limit_train_batches={limit} would skip training examples; cartography "
                "needs every example in every epoch: leave it at 1.0"
            )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._buffer = []
        if self._expected_ids is None:
            dataset = trainer.train_dataloader.dataset
            ids = getattr(dataset, "ids", None)
            if ids is None:
                raise ConfigError(
                    "the training dataset has no `ids`: batches must carry example ids "
                    "(use datamap.data.PreparedDataModule)"
                )
            self._expected_ids = np.sort(np.asarray(ids, dtype=np.int64))

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not isinstance(outputs, dict) or "logits" not in outputs:
            raise ConfigError(
                "training_step must return a dict with 'loss', 'logits', 'id' and 'label' for "
                "train_pass recording (see datamap.models.Classifier)"
            )
        ids, gold = outputs["id"], outputs["label"]
        values = batch_values(outputs["logits"], gold)
        values["id"] = ids.detach()
        values["gold"] = gold.detach().to(torch.int32)
        if self.store_logits:
            values["logits"] = outputs["logits"].detach().float()
        self._buffer.append(values)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._buffer:
            return
        # One device->host transfer per column per epoch, not per batch.
        epoch = {key: torch.cat([b[key] for b in self._buffer]).cpu().numpy()
                 for key in self._buffer[0]}
        self._buffer = []
        self._check_epoch(epoch, trainer.current_epoch)
        epoch["epoch"] = np.full(len(epoch["id"]), trainer.current_epoch, dtype=np.int32)
        epoch["record"] = np.zeros(len(epoch["id"]), dtype=np.int32)
        self._epochs.append(epoch)

    def _check_epoch(self, epoch: dict[str, np.ndarray], index: int) -> None:
        ids = np.sort(epoch["id"])
        duplicated = ids[1:][ids[1:] == ids[:-1]]
        if len(duplicated):
            raise DataError(
                f"epoch {index}: example id {int(duplicated[0])} was recorded twice; the sampler "
                "repeats examples, which would corrupt the dynamics"
            )
        if self._expected_ids is not None and not np.array_equal(ids, self._expected_ids):
            missing = np.setdiff1d(self._expected_ids, ids)
            raise DataError(
                f"epoch {index}: {len(missing)} training example(s) were not seen (e.g. ids "
                f"{missing[:5].tolist()}); cartography needs every example each epoch: do not "
                "drop the last batch or limit training batches"
            )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.dirpath is not None and trainer.is_global_zero and self._epochs:
            path = self.dirpath / "dynamics.parquet"
            write_dynamics(path, self.table())
            log.info("wrote %s (%d epochs)", path, len(self._epochs))

    # ---------------------------------------------------------------- output

    def table(self) -> pa.Table:
        """The recorded epochs as a validated dynamics table."""
        if not self._epochs:
            raise DataError("no epoch was recorded; train for at least one epoch")
        columns = {key: np.concatenate([e[key] for e in self._epochs])
                   for key in self._epochs[0] if key != "logits"}
        logits = (np.concatenate([e["logits"] for e in self._epochs])
                  if self.store_logits else None)
        meta = DynamicsMeta(
            num_classes=int(self.num_classes or 0),
            mode=self.mode,
            records_per_epoch=self.records_per_epoch,
            seed=self.seed,
            split="train",
        )
        return build_dynamics(columns, meta, logits=logits, logits_dtype=self.logits_dtype)
