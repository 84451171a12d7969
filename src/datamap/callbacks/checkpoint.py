"""A ``ModelCheckpoint`` that also keeps a resumable ``last.ckpt`` of the latest epoch.

Lightning's ``ModelCheckpoint`` with a ``monitor`` writes ``last.ckpt`` only when it writes a
top-k checkpoint: after the best epoch, ``last.ckpt`` stops moving. A run killed at epoch 92
whose best epoch was 32 then resumed from epoch 32 and redid 60 epochs. This subclass writes
``last.ckpt`` every ``last_every_n_epochs`` epochs as well, whatever the monitor says, so a
resumed run loses at most that many epochs. The best checkpoint is chosen exactly as before.

Checkpoints are *taken* when ``ModelCheckpoint`` takes them (the end of validation) but
*written* -- and the files they replace removed -- once the epoch is over and every logger's rows
of it are on disk (the next epoch's start, or the end of training). Lightning logs an epoch's
training-epoch metrics after the checkpoint hooks, so a checkpoint written at once could be on
disk without that epoch's last log rows: a run killed in between resumed from it and never
logged them. Written later, a checkpoint never gets ahead of the logs; a kill before it is
written resumes from the one before and redoes the epoch.

Each checkpoint is written to a temporary file in its own directory, flushed to the disk and
renamed onto its name (then the directory is flushed), so a kill or a crash leaves the old file
or the new one, never a truncated one. (Lightning's own writer stages the file in ``$TMPDIR``
and moves it: on another file system that is a copy into place, which a kill cuts short.)

Written with it, once the epoch's logs are on disk, are the epoch's logged values (the
trainer's ``callback_metrics``): a run resumed from its final epoch's checkpoint trains no epoch
and logs nothing, and takes them from there (:attr:`ResumableCheckpoint.restored_metrics`), so
its ``metrics.json`` says what the uninterrupted run's says.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from weakref import proxy

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from datamap.errors import ConfigError
from datamap.io import fsync_path

#: The key of a checkpoint callback state under which the epoch's logged values are kept.
LOGGED_METRICS = "logged_metrics"


def atomic_torch_save(checkpoint: dict[str, Any], filepath: str | os.PathLike) -> None:
    """``torch.save(checkpoint)`` onto ``filepath`` through a temporary file in its directory:
    flushed to the disk, renamed onto ``filepath``, the directory flushed. The same bytes as
    Lightning's writer (both pickle to a file object, not a named file)."""
    path = Path(filepath)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)  # the rename itself


def _logged_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """The trainer's ``callback_metrics`` as plain floats, sorted by name (the same bytes in a
    resumed run, whose metrics were logged in another order)."""
    from datamap.callbacks.portable import intern_strings

    values = {}
    for key, value in sorted(trainer.callback_metrics.items()):
        try:
            values[key] = float(value)
        except (TypeError, ValueError, RuntimeError):
            continue  # not a single number
    return intern_strings(values)


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
        if kwargs.get("save_last") == "link":
            raise ConfigError("callbacks.model_checkpoint.save_last must be true or false: "
                              "'link' would point at a checkpoint not written yet")
        if isinstance(last_every_n_epochs, bool) or not isinstance(last_every_n_epochs, int) \
                or last_every_n_epochs < 1:
            raise ConfigError("callbacks.model_checkpoint.last_every_n_epochs must be a positive "
                              f"number of epochs, got {last_every_n_epochs!r}; e.g. 1")
        super().__init__(dirpath=dirpath, **kwargs)
        self.last_every_n_epochs = last_every_n_epochs
        #: ("save", path, checkpoint) and ("remove", path, None), in the order they were asked
        self._pending: list[tuple[str, str, dict[str, Any] | None]] = []
        #: The logged values of the epoch of the checkpoint this run resumed from ({} when it
        #: started afresh, or the checkpoint predates them).
        self.restored_metrics: dict[str, float] = {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.restored_metrics = dict(state_dict.get(LOGGED_METRICS) or {})

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

    # -- taken now, written once the epoch's logs are on disk (see the module docstring) ------

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        # the state of this moment, as Trainer.save_checkpoint would dump it: nothing changes
        # the model or the optimizer before the pending writes run (the next epoch's start)
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(self.save_weights_only)
        self._pending.append(("save", filepath, checkpoint))
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    def _remove_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        # after the checkpoint that supersedes it is written, never before
        self._pending.append(("remove", filepath, None))

    def _write_pending(self, trainer: pl.Trainer) -> None:
        if not self._pending:
            return
        for logger in trainer.loggers:
            logger.save()  # the epoch's rows first: a checkpoint never gets ahead of the logs
        pending, self._pending = self._pending, []
        logged = _logged_metrics(trainer)  # the epoch's, its last rows included
        for action, filepath, checkpoint in pending:
            if action == "remove":
                super()._remove_checkpoint(trainer, filepath)
                continue
            state = (checkpoint.get("callbacks") or {}).get(self.state_key)
            if isinstance(state, dict):
                state[LOGGED_METRICS] = dict(logged)
            self._write(trainer, checkpoint, filepath)
            trainer.strategy.barrier("ResumableCheckpoint._write_pending")
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.after_save_checkpoint(proxy(self))

    @staticmethod
    def _write(trainer: pl.Trainer, checkpoint: dict[str, Any], filepath: str) -> None:
        from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
        from pytorch_lightning.strategies import Strategy

        strategy = trainer.strategy
        local = "://" not in str(filepath)
        if (local and type(strategy).save_checkpoint is Strategy.save_checkpoint
                and type(strategy.checkpoint_io) is TorchCheckpointIO):
            # what Strategy.save_checkpoint does, with a writer a kill cannot leave half done
            if strategy.is_global_zero:
                atomic_torch_save(checkpoint, filepath)
        else:  # a strategy or checkpoint plugin that writes its own way (sharded, remote)
            strategy.save_checkpoint(checkpoint, filepath)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._write_pending(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._write_pending(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        # what was taken before the failure is a finished epoch's: keep it for a resume
        super().on_exception(trainer, pl_module, exception)
        self._write_pending(trainer)
