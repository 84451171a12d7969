"""The recording callback: per-example training dynamics, aligned by example id.

Two modes (``dynamics.mode``):

- ``train_pass`` (the paper's way): values come from the logits that ``training_step`` already
  computed, so recording costs no extra forward pass.
- ``eval_pass``: the model is put in eval mode and run without gradients over the (unshuffled)
  training set ``records_per_epoch`` times per epoch -- evenly spaced through the epoch, the last
  at its end -- for dynamics free of dropout/augmentation noise or with sub-epoch resolution.

Held-out splits (``dynamics.splits``): ``val`` is read from the validation loop's outputs at the
end of every epoch (sanity-check and mid-epoch validation runs are not recorded); ``test`` gets an
eval pass of its own at the end of every epoch, because the fit loop never runs the test loop.
Each goes to a file of its own, ``heldout_dirpath / dynamics_<split>.parquet``, with the same
schema and ``split`` in its metadata; their ``mode`` is ``eval_pass`` (eval-mode values).

The contract with your LightningModule and DataModule (checked; a violation stops the run with
one line saying what to return):

- the LightningModule has a ``num_classes`` attribute;
- ``train_pass``: ``training_step`` returns a dict with the ``loss`` and the batch's ``logits``
  [batch, num_classes] -- unnormalised scores (before softmax), rows in batch order;
- ``eval_pass`` and the ``test`` split: ``predict_step(batch, batch_idx)`` returns the logits
  [batch, num_classes] themselves (unnormalised); the datamodule's ``eval_dataloader(split)``
  gives the loader to run it over (else the training loader, or ``test_dataloader``);
- the ``val`` split: ``validation_step`` returns a dict with the batch's ``logits``;
- every batch carries its examples' ids and gold labels: a dict with ``id`` and ``label`` (1-D
  integer tensors) next to the inputs, or a tuple/list ``(inputs, labels, ids)`` -- read the
  same way in every pass (:func:`~datamap.dynamics.contract.batch_ids_labels`);
- every recorded dataset has an ``ids`` attribute listing its example ids, and every one of them
  is recorded exactly once per record: no ``drop_last``, no ``limit_train_batches``, no
  sampler that skips or repeats examples. Loaders without a length (an ``IterableDataset``)
  work, with one record per epoch, and with ``val`` when validation runs after the last batch.

Logits whose shape is not [batch, num_classes] are refused at once (a check of metadata); the
first batch of every record is checked not to be probabilities (every value in [0, 1], rows
summing to 1); NaN or infinite logits are refused when the record completes, naming the split,
epoch, record and examples. Nothing is written then. Values: :mod:`datamap.dynamics.values`.

Cost: nothing is synchronised with the host per batch. The step's logits, ids and labels are
only referenced per batch and reduced to the stored values on their device once per record (or
per bounded chunk; see :mod:`datamap.dynamics.accumulate`), then moved to the host once. The
last training batch of an epoch -- known from Lightning's ``is_last_batch``, also for loaders
without a length -- completes its record, before validation and before any checkpoint of that
epoch.

Distributed training: each rank records its share; at the end of each record the rows are
gathered and the sampler's padding duplicates dropped (:mod:`datamap.dynamics.distributed`).
Rank 0 writes the files. Resume: completed epochs go to part files, the checkpoint holds their
index and the RNG states (:mod:`datamap.dynamics.resume`).
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytorch_lightning as pl
import torch

from datamap.dynamics import resume
from datamap.dynamics.accumulate import LOGITS_DTYPES, RecordAccumulator
from datamap.dynamics.contract import (
    check_train_loader,
    check_trainer,
    check_validates_after,
    dataset_ids,
    non_finite_error,
    step_logits,
)
from datamap.dynamics.distributed import gather_record, merge_ranks
from datamap.dynamics.eval_pass import eval_loader, run_eval_pass
from datamap.dynamics.schema import MODES, DynamicsMeta, build_dynamics
from datamap.dynamics.storage import write_dynamics
from datamap.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Splits the recorder knows; ``train`` is always recorded.
SPLITS = ("train", "val", "test")


class DynamicsRecorder(pl.Callback):
    """Record every training example's gold-class probability and correctness each epoch.

    Args:
        dirpath: where ``dynamics.parquet`` is written at the end of fit, by rank 0; None to
            keep the tables in memory (see :meth:`table`).
        mode: ``train_pass`` (values from the training forward pass) or ``eval_pass`` (an extra
            eval-mode pass over the training set, ``records_per_epoch`` times per epoch).
        records_per_epoch: records per epoch (``train_pass`` records exactly once).
        store_logits: also store the full logits (``logits_dtype`` float32 or float16).
        splits: ``train`` plus optionally ``val`` (from the validation loop) and ``test`` (an
            eval pass over the datamodule's test split at every epoch end).
        seed: stored in the table metadata.
        parts_dir: where completed epochs are written as part files for resuming (the train
            stage's checkpoint directory); None to carry them inside the checkpoint instead.
        heldout_dirpath: where ``dynamics_<split>.parquet`` of the held-out splits go (default:
            ``dirpath``).
        run_token: ties part files and checkpoints to one run: the caller's fingerprint of the
            run's configuration (a run of the same configuration writes the same parts, so
            checkpoints come out byte-identical, as DVC's cache needs); None: a random token.
    """

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        mode: str = "train_pass",
        records_per_epoch: int = 1,
        store_logits: bool = False,
        logits_dtype: str = "float32",
        splits: Sequence[str] = ("train",),
        seed: int | None = None,
        parts_dir: str | os.PathLike | None = None,
        heldout_dirpath: str | os.PathLike | None = None,
        run_token: str | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"dynamics.mode must be one of {MODES}, got {mode!r}")
        if int(records_per_epoch) < 1:
            raise ConfigError(f"dynamics.records_per_epoch must be >= 1, got {records_per_epoch}")
        if mode == "train_pass" and int(records_per_epoch) != 1:
            raise ConfigError(
                f"dynamics.records_per_epoch={records_per_epoch} needs dynamics=eval_pass: in "
                "train_pass mode each example passes through training once per epoch, so it has "
                "one training-pass value per epoch; dynamics=eval_pass records every example "
                "records_per_epoch times (eval-mode passes over the training set)"
            )
        if logits_dtype not in LOGITS_DTYPES:
            raise ConfigError(f"dynamics.logits_dtype must be float32 or float16, got "
                              f"{logits_dtype!r}")
        splits = [str(s) for s in splits]
        unknown = [s for s in splits if s not in SPLITS]
        if unknown or "train" not in splits or len(set(splits)) != len(splits):
            raise ConfigError(
                f"dynamics.splits must list 'train' once plus optionally 'val' and 'test', got "
                f"{splits}"
            )
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.heldout_dirpath = Path(heldout_dirpath) if heldout_dirpath is not None \
            else self.dirpath
        self.parts_dir = Path(parts_dir) if parts_dir is not None else None
        self._parts_abs = self.parts_dir.resolve() if self.parts_dir is not None else None
        self.mode = mode
        self.records_per_epoch = int(records_per_epoch)
        self.store_logits = bool(store_logits)
        self.logits_dtype = logits_dtype
        self.splits = tuple(s for s in SPLITS if s in splits)
        self.seed = seed
        self.num_classes: int | None = None
        # completed epochs per split: arrays on rank 0 (other ranks keep only the counts)
        self._epochs: dict[str, list[resume.Part]] = {s: [] for s in self.splits}
        self._done: dict[str, int] = {s: 0 for s in self.splits}
        self._expected: dict[str, np.ndarray] = {}
        # ties part files to this run (a random one: not from the seeded RNG)
        self._token = str(run_token) if run_token else uuid.uuid4().hex
        self._restored: dict[str, Any] | None = None
        self._loaders: dict[str, torch.utils.data.DataLoader] = {}
        self._checked_loader = False
        self._is_zero = True
        self._epoch_records: list[resume.Part] = []
        self._acc: RecordAccumulator | None = None
        self._val_acc: RecordAccumulator | None = None
        self._background: ThreadPoolExecutor | None = None
        self._points: list[int] = []  # eval_pass: 1-based batch counts after which to record
        self._next_point = -1  # the next of them (-1: none left this epoch)

    # ---------------------------------------------------------------- config

    @property
    def _config(self) -> dict[str, Any]:
        return {"mode": self.mode, "records_per_epoch": self.records_per_epoch,
                "store_logits": self.store_logits, "logits_dtype": self.logits_dtype,
                "splits": list(self.splits), "num_classes": self.num_classes}

    # ---------------------------------------------------------------- lifecycle

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        num_classes = getattr(pl_module, "num_classes", None)
        if num_classes is None:
            raise ConfigError("the LightningModule needs a `num_classes` attribute for recording "
                              "dynamics (see datamap.models.Classifier)")
        self.num_classes = int(num_classes)
        self._is_zero = trainer.is_global_zero
        check_trainer(trainer, records_val="val" in self.splits)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._restored is not None:
            self._apply_restored(self._restored)
        elif self.parts_dir is not None and self._is_zero:
            for split in self.splits:  # a fresh run: parts of any earlier run are stale
                resume.remove_parts(self.parts_dir, split)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._checked_loader:
            self._expected["train"] = check_train_loader(trainer)
            self._checked_loader = True
        epoch = trainer.current_epoch
        if self._done["train"] != epoch:
            raise DataError(
                f"training (re)starts at epoch {epoch} but the recorder holds the dynamics of "
                f"{self._done['train']} epoch(s); resume only from checkpoints written with the "
                "dynamics recorder at an epoch end, or start afresh"
            )
        nb = trainer.num_training_batches
        if "val" in self.splits and not math.isinf(nb):  # else checked at the last batch
            check_validates_after(trainer, int(nb))
        self._points = []
        if self.mode == "eval_pass":
            if math.isinf(nb):
                if self.records_per_epoch > 1:
                    raise ConfigError(
                        "dynamics.records_per_epoch > 1 needs a training loader with a length "
                        "(records are spaced by batch counts); this one has none (an "
                        "IterableDataset?): record once per epoch"
                    )
            elif self.records_per_epoch > nb:
                raise ConfigError(
                    f"dynamics.records_per_epoch={self.records_per_epoch} is more than the "
                    f"{int(nb)} training batches per epoch"
                )
            else:
                r, n = self.records_per_epoch, int(nb)
                self._points = [math.ceil((i + 1) * n / r) for i in range(r)]
        self._epoch_records = []
        self._acc = (RecordAccumulator(self.num_classes, self.store_logits, self.logits_dtype,
                                       "training_step", background=self._worker())
                     if self.mode == "train_pass" else None)
        self._next_point = self._points[0] if self._points else -1

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # The hot path of train_pass: keep references and check shapes, no host sync (but for
        # the probabilities check on the epoch's first batch).
        if self._acc is not None:
            self._acc.add(step_logits(outputs, "training_step"), batch)
        elif batch_idx + 1 == self._next_point:
            self._record_eval_pass(trainer, pl_module)
            taken = len(self._epoch_records)
            self._next_point = self._points[taken] if taken < len(self._points) else -1
        # Set by Lightning before the batch hooks, for loaders with and without a length.
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            if "val" in self.splits and math.isinf(trainer.num_training_batches):
                check_validates_after(trainer, batch_idx + 1)
            # Complete the epoch at its last batch, before validation and any checkpoint.
            self._complete_train_epoch(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._done["train"] == trainer.current_epoch:
            # An epoch cut short (this raises, naming the lost ids).
            self._complete_train_epoch(trainer, pl_module)
        if "val" in self.splits and self._done["val"] != self._done["train"]:
            raise DataError(
                f"epoch {trainer.current_epoch}: no validation run at the epoch end was recorded, "
                "but dynamics.splits includes val: give the datamodule a val_dataloader and keep "
                "check_val_every_n_epoch=1, or drop val from the splits"
            )

    def _complete_train_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        self._next_point = -1
        if self._acc is not None:
            self._add_record(trainer, pl_module, self._acc)
            self._acc = None
        while self.mode == "eval_pass" and not self._points \
                and len(self._epoch_records) < self.records_per_epoch:
            self._record_eval_pass(trainer, pl_module)
        if len(self._epoch_records) != self.records_per_epoch:
            raise DataError(
                f"epoch {epoch}: {len(self._epoch_records)} of {self.records_per_epoch} records "
                "were taken; the epoch ended early (max_steps or a stopped loader?) -- cartography "
                "needs whole epochs"
            )
        self._store_epoch("train", epoch, self._epoch_records)
        self._epoch_records = []
        if "test" in self.splits:
            test = self._merge(trainer, pl_module, "test", self._eval_pass(trainer, pl_module,
                                                                           "test"), epoch, 0)
            self._store_epoch("test", epoch, [test])

    # ---------------------------------------------------------------- validation

    def _recording_val(self, trainer: pl.Trainer) -> bool:
        from pytorch_lightning.trainer.states import TrainerFn

        return ("val" in self.splits and not trainer.sanity_checking
                and trainer.state.fn == TrainerFn.FITTING
                and self._done["train"] == trainer.current_epoch + 1
                and self._done["val"] == trainer.current_epoch)

    def on_validation_epoch_start(self, trainer: pl.Trainer,
                                  pl_module: pl.LightningModule) -> None:
        self._val_acc = None
        if self._recording_val(trainer):
            self._val_acc = RecordAccumulator(self.num_classes, self.store_logits,
                                              self.logits_dtype, "validation_step")
            if "val" not in self._expected:
                loaders = trainer.val_dataloaders
                loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
                self._expected["val"] = dataset_ids(getattr(loader, "dataset", None),
                                                    "validation")

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._val_acc is not None and dataloader_idx == 0:
            self._val_acc.add(step_logits(outputs, "validation_step"), batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer,
                                pl_module: pl.LightningModule) -> None:
        if self._val_acc is None:
            return
        acc, self._val_acc = self._val_acc, None
        record = self._merge(trainer, pl_module, "val", acc, trainer.current_epoch, 0)
        self._store_epoch("val", trainer.current_epoch, [record])

    # ---------------------------------------------------------------- records

    def _record_eval_pass(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._add_record(trainer, pl_module, self._eval_pass(trainer, pl_module, "train"))

    def _add_record(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                    acc: RecordAccumulator) -> None:
        """One more record of the training split in this epoch."""
        self._epoch_records.append(self._merge(trainer, pl_module, "train", acc,
                                               trainer.current_epoch, len(self._epoch_records)))

    def _merge(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str,
               acc: RecordAccumulator, epoch: int, record: int) -> resume.Part:
        """Gather one record from every rank, drop sampler padding, check coverage and that
        every logit was finite."""
        device = pl_module.device
        columns, positions = gather_record(trainer, acc.finish(device), device)
        what = f"{split} dynamics, epoch {epoch}" + (
            f", record {record}" if split == "train" and self.records_per_epoch > 1 else "")
        merged = merge_ranks(columns, positions, self._expected[split], trainer.world_size, what)
        finite = merged.pop("finite")
        if not finite.all():
            raise non_finite_error(what, merged["id"][~finite])
        n = len(merged["id"])
        merged["epoch"] = np.full(n, epoch, dtype=np.int32)
        merged["record"] = np.full(n, record, dtype=np.int32)
        return merged

    def _store_epoch(self, split: str, epoch: int, records: list[resume.Part]) -> None:
        self._done[split] += 1
        if not self._is_zero:
            return  # only rank 0 writes: the other ranks keep the counts
        part = {key: np.concatenate([r[key] for r in records]) for key in records[0]}
        self._epochs[split].append(part)
        if self.parts_dir is not None:
            # now, before validation and any checkpoint that counts this epoch as done
            resume.write_part(self.parts_dir, split, epoch, part, self._token, self._config)

    def _eval_pass(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                   split: str) -> RecordAccumulator:
        """One eval-mode pass of ``predict_step`` over a split, without gradients."""
        if split not in self._loaders:
            self._loaders[split] = eval_loader(trainer, split)
            self._expected.setdefault(split, dataset_ids(self._loaders[split].dataset, split))
        acc = RecordAccumulator(self.num_classes, self.store_logits, self.logits_dtype,
                                "predict_step")
        run_eval_pass(trainer, pl_module, self._loaders[split], acc)
        return acc

    # ---------------------------------------------------------------- threads and checkpoints

    def _worker(self) -> ThreadPoolExecutor:
        """The background thread for chunk reductions on the CPU (started on first use)."""
        if self._background is None:
            self._background = ThreadPoolExecutor(1, thread_name_prefix="dynamics")
        return self._background

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._background is not None:
            self._background.shutdown()
            self._background = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        if self._background is not None:  # the partial epoch is discarded anyway
            self._background.shutdown(wait=False, cancel_futures=True)
            self._background = None

    def state_dict(self) -> dict[str, Any]:
        return resume.checkpoint_state(
            token=self._token, config=self._config, done=self._done, parts_dir=self._parts_abs,
            epochs=self._epochs if self.parts_dir is None and self._is_zero else None)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        resume.load_checkpoint_state(state_dict)
        self._restored = state_dict  # the rest at train start, once the model and rank are known

    def _apply_restored(self, state: dict[str, Any]) -> None:
        self._restored = None
        restored = resume.restore(state, self._config, self.splits, self.parts_dir,
                                  self._is_zero)
        self._token, self._done = restored.token, restored.done
        if restored.epochs is not None:
            self._epochs = restored.epochs

    # ---------------------------------------------------------------- output

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._restored is not None:  # resumed from a checkpoint with no epoch left to train
            self._apply_restored(self._restored)
        if self.dirpath is None or not trainer.is_global_zero or not self._epochs["train"]:
            return
        for split in self.splits:
            path = (self.dirpath / "dynamics.parquet" if split == "train"
                    else self.heldout_dirpath / f"dynamics_{split}.parquet")
            write_dynamics(path, self.table(split))
            log.info("wrote %s (%d epochs)", path, len(self._epochs[split]))

    def table(self, split: str = "train") -> pa.Table:
        """The recorded epochs of one split as a validated dynamics table (on rank 0)."""
        if split not in self.splits:
            raise ConfigError(f"split {split!r} is not recorded (dynamics.splits={self.splits})")
        epochs = self._epochs[split]
        if not epochs:
            raise DataError(f"no {split} epoch was recorded; train for at least one epoch")
        columns = {key: np.concatenate([e[key] for e in epochs])
                   for key in epochs[0] if key != "logits"}
        logits = np.concatenate([e["logits"] for e in epochs]) if self.store_logits else None
        meta = DynamicsMeta(
            num_classes=int(self.num_classes or 0),
            mode=self.mode if split == "train" else "eval_pass",
            records_per_epoch=self.records_per_epoch if split == "train" else 1,
            seed=self.seed,
            split=split,
        )
        return build_dynamics(columns, meta, logits=logits, logits_dtype=self.logits_dtype)
