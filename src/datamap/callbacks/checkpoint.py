"""A ``ModelCheckpoint`` that also keeps a resumable ``last.ckpt`` of the latest epoch.

Lightning's ``ModelCheckpoint`` with a ``monitor`` writes ``last.ckpt`` only when it writes a
top-k checkpoint: after the best epoch, ``last.ckpt`` stops moving. A run killed at epoch 92
whose best epoch was 32 then resumed from epoch 32 and redid 60 epochs. This subclass writes
``last.ckpt`` every ``last_every_n_epochs`` epochs as well, whatever the monitor says, so a
resumed run loses at most that many epochs. The best checkpoint is chosen exactly as before.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from datamap.errors import ConfigError


class ResumableCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` (``save_last: true``) follows the latest epoch.

    Parameters
    ----------
    dirpath
        Where checkpoints go (named here, not only in ``**kwargs``, because the fit passes the
        run's checkpoint directory to the callbacks whose signature takes ``dirpath``).
    last_every_n_epochs
        Write ``last.ckpt`` at the end of every this many epochs (1: every epoch), besides the
        times ``ModelCheckpoint`` writes it (with each top-k checkpoint). A kill loses at most
        this many epochs of work; each write costs one checkpoint's size of disk I/O.
    **kwargs
        ``ModelCheckpoint``'s arguments (``monitor``, ``mode``, ``save_top_k``, ...).
    """

    def __init__(self, dirpath: str | None = None, last_every_n_epochs: int = 1,
                 **kwargs: Any) -> None:
        if isinstance(last_every_n_epochs, bool) or not isinstance(last_every_n_epochs, int) \
                or last_every_n_epochs < 1:
            raise ConfigError("callbacks.model_checkpoint.last_every_n_epochs must be a positive "
                              f"number of epochs, got {last_every_n_epochs!r}; e.g. 1")
        super().__init__(dirpath=dirpath, **kwargs)
        self.last_every_n_epochs = last_every_n_epochs

    def state_dict(self) -> dict[str, Any]:
        # Every tensor its own copy: ModelCheckpoint's scores share one tensor in a run that
        # computed them and not in one that loaded them from a checkpoint, and torch.save writes
        # shared storage once -- equal states would otherwise give different checkpoint bytes
        # after a resume.
        def own(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return value.detach().clone()
            if isinstance(value, dict):
                return {key: own(item) for key, item in value.items()}
            return value

        return {key: own(value) for key, value in super().state_dict().items()}

    def _save_latest(self, trainer: pl.Trainer) -> None:
        # _should_skip_saving_checkpoint is also true when a checkpoint (and so last.ckpt) was
        # already written at this step: never write last.ckpt twice for one step.
        if not self.save_last or self._should_skip_saving_checkpoint(trainer):
            return
        if (trainer.current_epoch + 1) % self.last_every_n_epochs:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_latest(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_latest(trainer)
