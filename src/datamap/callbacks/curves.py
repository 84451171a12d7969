"""Training curves: the per-epoch metrics of a fit as a small CSV table that DVC plots.

Written whatever the loggers are (``logger=none`` included), one row per epoch: ``epoch``
(0-based, as in the dynamics), ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``,
``val_macro_f1`` and the learning rate the epoch ran with. An epoch without validation
(``check_val_every_n_epoch``) leaves the validation cells empty. The rows travel in Lightning
checkpoints, so a resumed fit writes the whole table.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from datamap.io import write_text

#: The logged metrics the table keeps, in column order (the column name is the metric's with
#: ``/`` replaced by ``_``).
METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "val/macro_f1")
COLUMNS = ("epoch", *(m.replace("/", "_") for m in METRICS), "lr")


def epoch_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """The epoch-level values logged so far this epoch (not the per-step ``*_step`` ones)."""
    return {key: float(value) for key, value in sorted(trainer.callback_metrics.items())
            if not key.endswith("_step")}


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class TrainingCurves(pl.Callback):
    """Collect :data:`METRICS` at each epoch's end; write ``path`` (CSV) when the fit ends.

    Args:
        path: the CSV file to write (atomically, on rank 0).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        self._lr: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the rate this epoch runs with: an epoch-interval scheduler steps before the epoch end
        optimizers = trainer.optimizers
        self._lr = float(optimizers[0].param_groups[0]["lr"]) if optimizers else None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        values = epoch_metrics(trainer)
        row = {"epoch": trainer.current_epoch, "lr": self._lr}
        row.update({m.replace("/", "_"): values.get(m) for m in METRICS})
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            lines = [",".join(COLUMNS)]
            lines += [",".join(_cell(row.get(c)) for c in COLUMNS) for row in self.rows]
            write_text(self.path, "\n".join(lines) + "\n")

    def state_dict(self) -> dict[str, Any]:
        # Keys are the module's COLUMNS strings, in their order: pickle writes a string object
        # once and refers to it after, so rows whose keys are other (equal) string objects --
        # as rows loaded from a checkpoint are -- would give other checkpoint bytes on resume.
        return {"rows": [{column: r[column] for column in COLUMNS if column in r}
                         for r in self.rows]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state_dict.get("rows", [])]


def write_mean_curves(paths: list[str | os.PathLike], path: str | os.PathLike) -> None:
    """The per-epoch mean of several fits' tables (:class:`TrainingCurves` files: the seeds of
    one retrained subset) as one table with the same columns, written to ``path``. An epoch
    only some fits reached (early stopping) is the mean over those."""
    import pandas as pd

    tables = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    mean = tables.groupby("epoch", sort=True).mean().reset_index()
    lines = [",".join(COLUMNS)]
    lines += [",".join(_cell(None if pd.isna(row[c]) else (int(row[c]) if c == "epoch"
                                                          else float(row[c])))
                       for c in COLUMNS) for _, row in mean.iterrows()]
    write_text(path, "\n".join(lines) + "\n")
