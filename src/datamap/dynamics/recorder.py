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
Each goes to a file of its own (``dynamics_val.parquet``, ``dynamics_test.parquet``) with the same
schema and ``split`` in its metadata; their ``mode`` is ``eval_pass`` (eval-mode values).

Cost: nothing is synchronised with the host per batch. The training step's logits, ids and labels
are only referenced per batch; they are reduced to the stored values on their device in one
vectorised step per record (or per chunk of :data:`REDUCE_ELEMENTS` logits, so device memory stays
bounded) and moved to the host once per record. On the CPU, large epochs are reduced chunk by
chunk on a background thread while training goes on. The last training batch of an
epoch completes its record -- before validation and before any checkpoint of that epoch.

Distributed training: every rank records the examples its sampler gave it; at the end of each
record the ranks' rows are all-gathered (padded to equal length, in chunks of bounded size) and
the duplicates that ``DistributedSampler`` adds as padding are dropped by id. The copy kept is the
*first occurrence in the global sample order* (sample ``j`` of rank ``r`` is global position
``j * world_size + r``), i.e. the example's regular slot, never the padding copy appended at the
end of the epoch. The result must then hold every expected id exactly once, else a
:class:`~datamap.io.DataError` says which ids were missed or repeated. Rank 0 writes the files.

Resume: each completed epoch is written once to a part file under ``parts_dir`` (the train
stage's persistent checkpoint directory) and the callback's ``state_dict`` -- stored in every
Lightning checkpoint -- holds only the index (epochs completed per split, a run token, the
recording config and the global RNG states). Resuming from a checkpoint reloads the completed
epochs from their parts; a partial epoch is discarded and redone. Without ``parts_dir`` the arrays
themselves travel inside the checkpoint (fine for small data; checkpoints then grow with every
epoch and are rewritten in full at each save, which is why the train stage uses part files).
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytorch_lightning as pl
import torch

from datamap.dynamics.table import MODES, DynamicsMeta, build_dynamics, write_dynamics
from datamap.io import ConfigError, DataError

log = logging.getLogger(__name__)

VALUE_COLUMNS = ("p_gold", "pred", "margin", "loss", "el2n")
#: Splits the recorder knows; ``train`` is always recorded.
SPLITS = ("train", "val", "test")
#: Pending logits (elements) after which a chunk is reduced to the stored values on the device.
REDUCE_ELEMENTS = 1 << 24
#: On the CPU: logits per chunk reduced on a background thread while the epoch goes on.
BACKGROUND_ELEMENTS = 1 << 18
#: Elements per all-gather call when collecting a record across ranks (bounds device memory).
GATHER_ELEMENTS = 1 << 24
#: Bumped when the checkpoint state or part-file layout changes.
STATE_FORMAT = 1

_LOGITS_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def batch_values(logits: torch.Tensor, gold: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example values of a batch of logits [N, K] and gold labels [N], on their device.

    Matches :func:`datamap.dynamics.table.per_example_values` (the NumPy twin used by importers):
    softmax in float32, argmax ties to the lowest index, margin = gold logit - largest other
    logit, loss = cross-entropy, el2n = ||softmax - onehot||_2. Pure tensor ops: no host sync.

    Written for few passes over the [N, K] logits (log_softmax is slow for small K on CPUs), and
    stably: el2n^2 = (1 - p_gold)^2 + sum over other classes of p_j^2, with 1 - p_gold from
    ``expm1`` and the second term from a log-sum-exp over the other classes -- no cancellation
    when p_gold is close to 1.
    """
    logits = logits.detach().float()
    index = gold.detach().long().unsqueeze(1)
    lse = torch.logsumexp(logits, dim=1)
    gold_logit = logits.gather(1, index).squeeze(1)
    loss = lse - gold_logit
    _, pred = logits.max(dim=1)  # first maximal index on ties
    others = logits.scatter(1, index, -torch.inf)
    if logits.shape[1] > 1:
        margin = gold_logit - others.amax(dim=1)
    else:
        margin = torch.zeros_like(gold_logit)
    others_sq = torch.exp(torch.logsumexp(2.0 * others, dim=1) - 2.0 * lse)  # sum_j!=g p_j^2
    one_minus_p = -torch.expm1(-loss)
    return {
        "p_gold": torch.exp(-loss),
        "pred": pred.to(torch.int32),
        "margin": margin,
        "loss": loss,
        "el2n": torch.sqrt(one_minus_p * one_minus_p + others_sq),
    }


# ------------------------------------------------------------------------------------------------
# accumulation on the device


class _Accumulator:
    """The rows of one record of one split, accumulated without host synchronisation.

    ``add`` only keeps references to the batch's (detached) logits, ids and labels. Every
    :data:`REDUCE_ELEMENTS` logits, and at :meth:`finish`, the pending batches are reduced to the
    stored values in one vectorised step on their device. Stored logits (``store_logits``) are
    copied to the host asynchronously chunk by chunk, so device memory stays bounded.

    On the CPU, given a ``background`` executor, chunks of :data:`BACKGROUND_ELEMENTS` are
    reduced on a worker thread while training goes on (torch kernels release the GIL), so the
    epoch end only reduces the last chunk. On accelerators kernels are asynchronous anyway and
    everything stays on the calling thread.
    """

    def __init__(self, num_classes: int, store_logits: bool, logits_dtype: str,
                 background: ThreadPoolExecutor | None = None) -> None:
        self.num_classes = num_classes
        self.store_logits = store_logits
        self.logits_dtype = _LOGITS_DTYPES[logits_dtype]
        self._background = background
        self._limit = REDUCE_ELEMENTS
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._pending_elements = 0
        self._chunks: list[dict[str, torch.Tensor] | Future] = []
        self._async_copies = False

    def add(self, logits: torch.Tensor, ids: torch.Tensor, gold: torch.Tensor) -> None:
        if logits.requires_grad:
            logits = logits.detach()  # do not keep the autograd graph alive
        if not self._pending and not self._chunks:
            if self._background is not None and logits.device.type == "cpu":
                self._limit = BACKGROUND_ELEMENTS
            else:
                self._background = None
        self._pending.append((logits, ids, gold))
        self._pending_elements += logits.numel()  # shape metadata: no sync
        if self._pending_elements >= self._limit:
            pending, self._pending, self._pending_elements = self._pending, [], 0
            if self._background is not None:
                self._chunks.append(self._background.submit(self._reduce, pending))
            else:
                self._chunks.append(self._reduce(pending))

    def _reduce(self, pending: list[tuple[torch.Tensor, ...]]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            logits = torch.cat([p[0] for p in pending])
            ids = torch.cat([p[1] for p in pending])
            gold = torch.cat([p[2] for p in pending])
            if logits.ndim != 2 or logits.shape[1] != self.num_classes:
                raise DataError(
                    f"dynamics: the model returned logits of shape {tuple(logits.shape)}, "
                    f"expected [batch, {self.num_classes}] (num_classes)"
                )
            chunk = batch_values(logits, gold)
            chunk["id"] = ids.to(torch.int64)
            chunk["gold"] = gold.to(torch.int32)
            if self.store_logits:
                stored = logits.to(self.logits_dtype)
                if stored.is_cuda:  # into pinned host memory, overlapping the training
                    stored = stored.to("cpu", non_blocking=True)
                    self._async_copies = True
                chunk["logits"] = stored
        return chunk

    def finish(self, device: torch.device) -> dict[str, torch.Tensor]:
        """All rows, in the order they were added (value columns on ``device``)."""
        if self._pending:
            self._chunks.append(self._reduce(self._pending))
            self._pending, self._pending_elements = [], 0
        chunks = [c.result() if isinstance(c, Future) else c for c in self._chunks]
        self._chunks = []
        if self._async_copies:
            torch.cuda.synchronize(device)
        if not chunks:
            return _empty_columns(device, self.num_classes,
                                  self.logits_dtype if self.store_logits else None)
        if len(chunks) == 1:
            return chunks[0]
        return {key: torch.cat([c[key] for c in chunks]) for key in chunks[0]}


def _empty_columns(device: torch.device, num_classes: int,
                   logits_dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    columns = {name: torch.empty(0, dtype=torch.float32, device=device)
               for name in ("p_gold", "margin", "loss", "el2n")}
    columns["pred"] = torch.empty(0, dtype=torch.int32, device=device)
    columns["id"] = torch.empty(0, dtype=torch.int64, device=device)
    columns["gold"] = torch.empty(0, dtype=torch.int32, device=device)
    if logits_dtype is not None:
        columns["logits"] = torch.empty(0, num_classes, dtype=logits_dtype)
    return columns


# ------------------------------------------------------------------------------------------------
# across ranks


def _all_gather(trainer: pl.Trainer, tensor: torch.Tensor) -> torch.Tensor:
    """[world_size, *tensor.shape]: every rank's equally shaped ``tensor``."""
    import torch.distributed as dist

    tensor = tensor.contiguous()
    if dist.is_available() and dist.is_initialized():
        out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(out, tensor)
        return torch.stack(out)
    return trainer.strategy.all_gather(tensor)  # other strategies (e.g. XLA)


def _all_gather_rows(trainer: pl.Trainer, column: torch.Tensor, sizes: np.ndarray,
                     device: torch.device) -> list[np.ndarray]:
    """Every rank's rows of ``column`` (ranks hold ``sizes[r]`` rows), padded to equal length and
    gathered in chunks of about :data:`GATHER_ELEMENTS` elements. Rows travel as raw bytes, so
    any dtype works with any backend (gloo has no int16/float16 collectives)."""
    world = len(sizes)
    longest = int(sizes.max())
    shape = tuple(column.shape[1:])
    step = max(1, GATHER_ELEMENTS // max(1, math.prod(shape)))
    parts: list[list[np.ndarray]] = [[] for _ in range(world)]
    for start in range(0, max(longest, 1), step):
        rows = max(0, min(step, longest - start))
        piece = column[start:start + rows].to(device)
        if len(piece) < rows:
            pad = torch.zeros((rows - len(piece), *shape), dtype=column.dtype, device=device)
            piece = torch.cat([piece, pad])
        raw = piece.reshape(rows, math.prod(shape)).contiguous().view(torch.uint8)
        gathered = _all_gather(trainer, raw).cpu().view(column.dtype)
        gathered = gathered.reshape(world, rows, *shape)
        for rank in range(world):
            parts[rank].append(gathered[rank].numpy())
    return [np.concatenate(p)[: int(sizes[r])] for r, p in enumerate(parts)]


def _gather(trainer: pl.Trainer, columns: Mapping[str, torch.Tensor],
            device: torch.device) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every rank's rows on the host, with each row's position in the global sample order."""
    world = int(trainer.world_size)
    n = len(columns["id"])
    if world == 1:
        return {k: v.cpu().numpy() for k, v in columns.items()}, np.arange(n)
    sizes = _all_gather(trainer, torch.tensor([n], dtype=torch.int64, device=device))
    sizes = sizes.reshape(-1).cpu().numpy()
    gathered = {key: np.concatenate(_all_gather_rows(trainer, col, sizes, device))
                for key, col in columns.items()}
    positions = np.concatenate([np.arange(int(s)) * world + r for r, s in enumerate(sizes)])
    return gathered, positions


def _permutation_onto(ids: np.ndarray, expected: np.ndarray) -> np.ndarray | None:
    """``take`` with ``ids[take] == expected`` (sorted, unique) when ``ids`` is a permutation of
    ``expected``, else None. Linear time through a lookup table when the ids are dense enough."""
    n = len(expected)
    if len(ids) != n or n == 0:
        return None
    lo, hi = int(expected[0]), int(expected[-1])
    if hi - lo > 8 * n + 4096:  # sparse ids: sort instead
        take = np.argsort(ids, kind="stable")
        return take if np.array_equal(ids[take], expected) else None
    if int(ids.min()) < lo or int(ids.max()) > hi:
        return None
    slot = np.full(hi - lo + 1, -1, dtype=np.int64)
    slot[expected - lo] = np.arange(n)
    pos = slot[ids - lo]
    if (pos < 0).any():
        return None
    take = np.full(n, -1, dtype=np.int64)
    take[pos] = np.arange(n)
    return None if (take < 0).any() else take  # an unhit slot: some id came twice


def merge_ranks(
    columns: Mapping[str, np.ndarray],
    positions: np.ndarray,
    expected_ids: np.ndarray,
    world_size: int,
    what: str,
) -> dict[str, np.ndarray]:
    """One row per expected id, sorted by id, from the rows all ranks recorded for one record.

    ``positions`` are the rows' places in the global sample order. ``DistributedSampler`` pads an
    epoch to a multiple of ``world_size`` by repeating its first ``(-N) % world_size`` examples;
    those repeats are dropped, keeping each id's first occurrence in sample order (its regular,
    non-padding slot). Any other repeat, a missing id or an unknown id is a :class:`DataError`:
    cartography needs every example exactly once per record.
    """
    expected_ids = np.asarray(expected_ids, dtype=np.int64)
    if world_size == 1:
        take = _permutation_onto(np.asarray(columns["id"]), expected_ids)
        if take is not None:  # the common case: every id once, in a single process
            return {key: np.asarray(col)[take] for key, col in columns.items()}
    order = np.argsort(positions, kind="stable")
    ids = np.asarray(columns["id"])[order]
    unique, first = np.unique(ids, return_index=True)
    repeats = len(ids) - len(unique)
    allowed = (-len(expected_ids)) % world_size if world_size > 1 else 0
    if repeats > allowed:
        counts = np.bincount(np.searchsorted(unique, ids), minlength=len(unique))
        twice = unique[counts > 1]
        raise DataError(
            f"{what}: {repeats} example(s) were recorded more than once (e.g. id "
            f"{int(twice[0])}); the training sampler repeats examples, which would weight them "
            "twice in the dynamics -- cartography needs every example exactly once per epoch: use "
            "a sampler that yields each example once"
        )
    missing = np.setdiff1d(expected_ids, unique, assume_unique=True)
    extra = np.setdiff1d(unique, expected_ids, assume_unique=True)
    if len(missing):
        raise DataError(
            f"{what}: {len(missing)} example(s) were not seen (e.g. ids {missing[:5].tolist()}); "
            "cartography needs every example in every epoch: do not drop the last batch, limit "
            "the batches, stop mid-epoch (max_steps) or use a sampler that skips examples"
        )
    if len(extra):
        raise DataError(
            f"{what}: recorded id(s) {extra[:5].tolist()} are not in the dataset's ids; batches "
            "must carry the dataset's example ids"
        )
    take = order[first]
    return {key: np.asarray(col)[take] for key, col in columns.items()}


# ------------------------------------------------------------------------------------------------
# the callback


class DynamicsRecorder(pl.Callback):
    """Record every training example's gold-class probability and correctness each epoch.

    Args:
        dirpath: where ``dynamics.parquet`` (and ``dynamics_<split>.parquet`` for held-out
            splits) is written at the end of fit, by rank 0; None to keep the tables in memory
            (see :meth:`table`).
        mode: ``train_pass`` (values from the training forward pass) or ``eval_pass`` (an extra
            eval-mode pass over the training set, ``records_per_epoch`` times per epoch).
        records_per_epoch: records per epoch (``train_pass`` records exactly once).
        store_logits: also store the full logits (``logits_dtype`` float32 or float16).
        splits: ``train`` plus optionally ``val`` (from the validation loop) and ``test`` (an
            eval pass over the datamodule's test split at every epoch end).
        seed: stored in the table metadata.
        parts_dir: where completed epochs are written as part files for resuming (the train
            stage's checkpoint directory); None to carry them inside the checkpoint instead.
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
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"dynamics.mode must be one of {MODES}, got {mode!r}")
        if int(records_per_epoch) < 1:
            raise ConfigError(f"dynamics.records_per_epoch must be >= 1, got {records_per_epoch}")
        if mode == "train_pass" and int(records_per_epoch) != 1:
            raise ConfigError(
                "dynamics.records_per_epoch must be 1 in train_pass mode (each example passes "
                "through training once per epoch); use mode=eval_pass for more records"
            )
        if logits_dtype not in _LOGITS_DTYPES:
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
        self.parts_dir = Path(parts_dir) if parts_dir is not None else None
        self._parts_abs = str(self.parts_dir.resolve()) if self.parts_dir is not None else None
        self.mode = mode
        self.records_per_epoch = int(records_per_epoch)
        self.store_logits = bool(store_logits)
        self.logits_dtype = logits_dtype
        self.splits = tuple(s for s in SPLITS if s in splits)
        self.seed = seed
        self.num_classes: int | None = None
        # completed epochs per split: arrays on rank 0 (other ranks keep only the counts)
        self._epochs: dict[str, list[dict[str, np.ndarray]]] = {s: [] for s in self.splits}
        self._done: dict[str, int] = {s: 0 for s in self.splits}
        self._expected: dict[str, np.ndarray] = {}
        self._token = uuid.uuid4().hex  # ties part files to this run (not from the seeded RNG)
        self._restored: dict[str, Any] | None = None
        self._loaders: dict[str, torch.utils.data.DataLoader] = {}
        self._checked_loader = False
        self._is_zero = True
        self._epoch_records: list[dict[str, np.ndarray]] = []
        self._acc: _Accumulator | None = None
        self._val_acc: _Accumulator | None = None
        self._background: ThreadPoolExecutor | None = None
        self._points: list[int] = []  # eval_pass: 1-based batch counts after which to record
        self._next_point = -1  # the next of them (-1: none left this epoch)
        self._last_batch = -1  # batches per epoch while the epoch is being recorded, else -1

    # ---------------------------------------------------------------- config checks

    @property
    def _config(self) -> dict[str, Any]:
        return {"mode": self.mode, "records_per_epoch": self.records_per_epoch,
                "store_logits": self.store_logits, "logits_dtype": self.logits_dtype,
                "splits": list(self.splits), "num_classes": self.num_classes}

    def _check_trainer(self, trainer: pl.Trainer) -> None:
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
        if "val" in self.splits:
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

    def _check_loader(self, trainer: pl.Trainer) -> None:
        """Refuse, before the first batch, a training loader that would lose examples."""
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
        self._expected["train"] = _dataset_ids(loader.dataset, "training")

    # ---------------------------------------------------------------- lifecycle

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        num_classes = getattr(pl_module, "num_classes", None)
        if num_classes is None:
            raise ConfigError("the LightningModule needs a `num_classes` attribute for recording "
                              "dynamics (see datamap.models.Classifier)")
        self.num_classes = int(num_classes)
        self._is_zero = trainer.is_global_zero
        self._check_trainer(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._restored is not None:
            self._apply_restored(self._restored)
            self._restored = None
        elif self.parts_dir is not None and self._is_zero:
            for split in self.splits:  # a fresh run: parts of any earlier run are stale
                for path in (self.parts_dir / split).glob("epoch_*.arrow"):
                    path.unlink()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._checked_loader:
            self._check_loader(trainer)
            self._checked_loader = True
        epoch = trainer.current_epoch
        if self._done["train"] != epoch:
            raise DataError(
                f"training (re)starts at epoch {epoch} but the recorder holds the dynamics of "
                f"{self._done['train']} epoch(s); resume only from checkpoints written with the "
                "dynamics recorder at an epoch end, or start afresh"
            )
        nb = trainer.num_training_batches
        if "val" in self.splits and not _validates_after_last_batch(trainer, nb):
            raise ConfigError(
                f"trainer.val_check_interval={trainer.val_check_interval}: validation does not "
                f"run after the last of the {nb} training batches, but dynamics.splits includes "
                "val, which is recorded from that run: set val_check_interval=1.0 (or to a "
                "fraction that divides the epoch), or drop val from the splits"
            )
        if self.mode == "eval_pass":
            if math.isinf(nb):
                if self.records_per_epoch > 1:
                    raise ConfigError("dynamics.records_per_epoch > 1 needs a training loader "
                                      "with a length")
                self._points = []
            elif self.records_per_epoch > nb:
                raise ConfigError(
                    f"dynamics.records_per_epoch={self.records_per_epoch} is more than the "
                    f"{int(nb)} training batches per epoch"
                )
            else:
                r, n = self.records_per_epoch, int(nb)
                self._points = [math.ceil((i + 1) * n / r) for i in range(r)]
        self._epoch_records = []
        self._acc = (_Accumulator(self.num_classes, self.store_logits, self.logits_dtype,
                                  background=self._worker())
                     if self.mode == "train_pass" else None)
        self._next_point = self._points[0] if self._points else -1
        self._last_batch = -1 if math.isinf(nb) else int(nb)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # The hot path of train_pass: keep references, nothing else (no sync, no checks).
        if self._acc is not None:
            self._acc.add(*_step_outputs(outputs, "training_step"))
        elif batch_idx + 1 == self._next_point:
            self._record_eval_pass(trainer, pl_module)
            taken = len(self._epoch_records)
            self._next_point = self._points[taken] if taken < len(self._points) else -1
        if batch_idx + 1 == self._last_batch:
            # Complete the epoch at its last batch, before validation and any checkpoint.
            self._complete_train_epoch(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._done["train"] == trainer.current_epoch:
            # Loaders without a length, or an epoch cut short (this raises, naming the lost ids).
            self._complete_train_epoch(trainer, pl_module)
        if "val" in self.splits and self._done["val"] != self._done["train"]:
            raise DataError(
                f"epoch {trainer.current_epoch}: no validation run at the epoch end was recorded, "
                "but dynamics.splits includes val: give the datamodule a val_dataloader and keep "
                "check_val_every_n_epoch=1, or drop val from the splits"
            )

    def _complete_train_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        self._last_batch = self._next_point = -1
        if self._acc is not None:
            self._add_record(trainer, pl_module, "train", self._acc, len(self._epoch_records))
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
            with _eval_mode(pl_module):
                acc = self._eval_pass(trainer, pl_module, "test")
            test = self._merge(trainer, pl_module, "test", acc, epoch, 0)
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
            self._val_acc = _Accumulator(self.num_classes, self.store_logits, self.logits_dtype)
            if "val" not in self._expected:
                loaders = trainer.val_dataloaders
                loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
                self._expected["val"] = _dataset_ids(getattr(loader, "dataset", None),
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
            logits, ids, gold = _step_outputs(outputs, "validation_step")
            self._val_acc.add(logits, ids, gold)

    def on_validation_epoch_end(self, trainer: pl.Trainer,
                                pl_module: pl.LightningModule) -> None:
        if self._val_acc is None:
            return
        acc, self._val_acc = self._val_acc, None
        record = self._merge(trainer, pl_module, "val", acc, trainer.current_epoch, 0)
        self._store_epoch("val", trainer.current_epoch, [record])

    # ---------------------------------------------------------------- records

    def _record_eval_pass(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with _eval_mode(pl_module):
            acc = self._eval_pass(trainer, pl_module, "train")
        self._add_record(trainer, pl_module, "train", acc, len(self._epoch_records))

    def _add_record(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str,
                    acc: _Accumulator, record: int) -> None:
        self._epoch_records.append(
            self._merge(trainer, pl_module, split, acc, trainer.current_epoch, record))

    def _merge(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str,
               acc: _Accumulator, epoch: int, record: int) -> dict[str, np.ndarray]:
        """Gather one record from every rank, drop sampler padding, check coverage."""
        columns, positions = _gather(trainer, acc.finish(pl_module.device), pl_module.device)
        what = f"{split} dynamics, epoch {epoch}" + (f", record {record}"
                                                     if self.records_per_epoch > 1 else "")
        merged = merge_ranks(columns, positions, self._expected[split], trainer.world_size, what)
        n = len(merged["id"])
        merged["epoch"] = np.full(n, epoch, dtype=np.int32)
        merged["record"] = np.full(n, record, dtype=np.int32)
        return merged

    def _store_epoch(self, split: str, epoch: int, records: list[dict[str, np.ndarray]]) -> None:
        self._done[split] += 1
        if not self._is_zero:
            return  # only rank 0 writes: the other ranks keep the counts
        part = {key: np.concatenate([r[key] for r in records]) for key in records[0]}
        self._epochs[split].append(part)
        if self.parts_dir is not None:
            # now, before validation and any checkpoint that counts this epoch as done
            self._write_part(split, epoch, part)

    # ---------------------------------------------------------------- eval passes

    def _eval_pass(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                   split: str) -> _Accumulator:
        """Run the model (already in eval mode) over one split without gradients."""
        loader = self._eval_loader(trainer, split)
        acc = _Accumulator(self.num_classes, self.store_logits, self.logits_dtype)
        precision = getattr(trainer.precision_plugin, "forward_context", None)
        with _isolated_rng(pl_module.device), torch.inference_mode(), \
                (precision() if precision else nullcontext()):
            for batch_idx, batch in enumerate(loader):
                batch = trainer.strategy.batch_to_device(batch)
                logits = pl_module.predict_step(batch, batch_idx)
                acc.add(logits, batch["id"], batch["label"])
        return acc

    def _eval_loader(self, trainer: pl.Trainer, split: str) -> torch.utils.data.DataLoader:
        """A non-shuffled loader over one split (sharded across ranks), built once."""
        if split in self._loaders:
            return self._loaders[split]
        datamodule = trainer.datamodule
        source = None
        if hasattr(datamodule, "eval_dataloader"):  # datamap's PreparedDataModule
            source = datamodule.eval_dataloader(split)
        elif split == "train":
            source = trainer.train_dataloader
        elif datamodule is not None:
            loaders = datamodule.test_dataloader()
            source = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        if not isinstance(source, torch.utils.data.DataLoader):
            raise ConfigError(f"the dynamics recorder cannot build an eval loader over the "
                              f"{split} split: use datamap.data.PreparedDataModule")
        dataset = source.dataset
        self._expected.setdefault(split, _dataset_ids(dataset, split))
        sampler = None
        if trainer.world_size > 1:
            sampler = torch.utils.data.DistributedSampler(
                dataset, num_replicas=trainer.world_size, rank=trainer.global_rank,
                shuffle=False, drop_last=False)
        batch_size = getattr(datamodule, "eval_batch_size", None) or source.batch_size
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=False, sampler=sampler,
            collate_fn=source.collate_fn, num_workers=source.num_workers,
            pin_memory=source.pin_memory, persistent_workers=source.num_workers > 0,
            drop_last=False,
        )
        self._loaders[split] = loader
        return loader

    # ---------------------------------------------------------------- checkpoint state

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
        state: dict[str, Any] = {
            "format": STATE_FORMAT,
            "token": self._token,
            "config": self._config,
            "epochs": dict(self._done),
            "rng": _rng_states(),
            "parts_dir": self._parts_abs,
        }
        if self.parts_dir is None and self._is_zero:
            state["arrays"] = {split: [{k: torch.from_numpy(np.ascontiguousarray(v))
                                        for k, v in part.items()} for part in parts]
                               for split, parts in self._epochs.items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("format") != STATE_FORMAT:
            raise ConfigError("the checkpoint's dynamics state has an unknown format; start "
                              "afresh (resume: false)")
        # Lightning restores neither the global RNGs nor, by itself, dropout's random stream.
        # Restored here, they are where the uninterrupted run was when it saved this checkpoint
        # once training resumes: nothing draws from them in between (the sanity check runs
        # under isolate_rng, and the first draw is the resumed epoch's DataLoader iterator).
        _set_rng_states(state_dict["rng"])
        self._restored = state_dict  # the rest at train start, once the model and rank are known

    def _apply_restored(self, state: dict[str, Any]) -> None:
        config = dict(state["config"])
        if config != self._config:
            raise ConfigError(
                f"the checkpoint's dynamics were recorded with {config} but this run records "
                f"{self._config}; resume with the same dynamics config or start afresh "
                "(resume: false)"
            )
        self._token = state["token"]
        self._done = {split: int(state["epochs"][split]) for split in self.splits}
        if self._is_zero:
            if state.get("parts_dir") is None:
                self._epochs = {split: [{k: v.numpy() for k, v in part.items()}
                                        for part in state["arrays"][split][: self._done[split]]]
                                for split in self.splits}
            else:
                # next to this run's checkpoints, else where the checkpoint's run wrote them
                sources = [p for p in (self.parts_dir, Path(state["parts_dir"])) if p is not None]
                self._epochs = {split: [self._read_part(sources, split, e)
                                        for e in range(self._done[split])]
                                for split in self.splits}
            if self.parts_dir is not None:
                for split in self.splits:
                    for e, part in enumerate(self._epochs[split]):
                        if not self._part_path(self.parts_dir, split, e).is_file():
                            self._write_part(split, e, part)  # resumed from elsewhere
                    for path in (self.parts_dir / split).glob("epoch_*.arrow"):
                        if int(path.stem.split("_")[1]) >= self._done[split]:
                            path.unlink()  # a partial or later epoch: redone from here
        log.info("dynamics: resuming with %s recorded epoch(s)",
                 ", ".join(f"{n} {s}" for s, n in self._done.items()))

    @staticmethod
    def _part_path(root: Path, split: str, epoch: int) -> Path:
        return root / split / f"epoch_{epoch:05d}.arrow"

    def _write_part(self, split: str, epoch: int, part: Mapping[str, np.ndarray]) -> None:
        """One completed epoch of one split as an Arrow IPC file (uncompressed: written in well
        under a millisecond for small epochs, at disk speed for large ones), atomically."""
        path = self._part_path(self.parts_dir, split, epoch)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"token": self._token, "split": split, "epoch": epoch,
                           "config": self._config}, sort_keys=True)
        arrays = {k: pa.array(v) for k, v in part.items() if k != "logits"}
        if "logits" in part:
            logits = part["logits"]
            arrays["logits"] = pa.FixedSizeListArray.from_arrays(
                pa.array(logits.reshape(-1)), logits.shape[1])
        table = pa.table(arrays).replace_schema_metadata({b"datamap_part": meta.encode()})
        tmp = path.with_name(f".{path.name}.tmp")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, path)

    def _read_part(self, roots: Sequence[Path], split: str, epoch: int) -> dict[str, np.ndarray]:
        paths = [self._part_path(root, split, epoch) for root in roots]
        path = next((p for p in paths if p.is_file()), paths[-1])
        hint = "the checkpoint cannot be resumed: start afresh (resume: false)"
        if not path.is_file():
            raise DataError(f"{path}: the {split} dynamics of epoch {epoch} are missing (they are "
                            f"kept next to the checkpoint, under dynamics/); {hint}")
        try:
            with pa.OSFile(str(path), "rb") as source:
                table = pa.ipc.open_file(source).read_all()
            meta = json.loads((table.schema.metadata or {}).get(b"datamap_part", b"{}"))
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise DataError(f"{path}: unreadable dynamics part ({exc}); {hint}") from exc
        if meta.get("token") != self._token or meta.get("epoch") != epoch \
                or meta.get("split") != split:
            raise DataError(f"{path}: written by another run than the checkpoint's; {hint}")
        part = {name: table.column(name).to_numpy() for name in table.column_names
                if name != "logits"}
        if "logits" in table.column_names:
            logits = table.column("logits").combine_chunks()
            part["logits"] = logits.flatten().to_numpy().reshape(len(logits), -1)
        return part

    # ---------------------------------------------------------------- output

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._restored is not None:  # resumed from a checkpoint with no epoch left to train
            self._apply_restored(self._restored)
            self._restored = None
        if self.dirpath is None or not trainer.is_global_zero or not self._epochs["train"]:
            return
        for split in self.splits:
            name = "dynamics.parquet" if split == "train" else f"dynamics_{split}.parquet"
            write_dynamics(self.dirpath / name, self.table(split))
            log.info("wrote %s (%d epochs)", self.dirpath / name, len(self._epochs[split]))

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


# ------------------------------------------------------------------------------------------------
# helpers


def _step_outputs(outputs: Any, hook: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    try:
        return outputs["logits"], outputs["id"], outputs["label"]
    except (KeyError, TypeError, IndexError):
        raise ConfigError(
            f"{hook} must return a dict with 'logits', 'id' and 'label' for recording dynamics "
            "(see datamap.models.Classifier)"
        ) from None


def _dataset_ids(dataset: Any, what: str) -> np.ndarray:
    ids = getattr(dataset, "ids", None)
    if ids is None:
        raise ConfigError(
            f"the {what} dataset has no `ids`: batches must carry example ids "
            "(use datamap.data.PreparedDataModule)"
        )
    ids = ids.cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    return np.sort(ids.astype(np.int64))


def _validates_after_last_batch(trainer: pl.Trainer, num_batches: float) -> bool:
    if getattr(trainer, "_val_check_time_interval", None) is not None:
        return False  # time-based validation
    every = trainer.val_check_batch
    if every is None or math.isinf(every) or math.isinf(num_batches):
        return True
    return int(num_batches) % int(every) == 0


@contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode for the duration; then every submodule's own train/eval flag is restored."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def _isolated_rng(device: torch.device) -> Iterator[None]:
    """Eval passes draw from the global torch RNG (each DataLoader iterator takes a seed); fork
    it so that recording leaves the training's random stream exactly as it was."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def _rng_states() -> dict[str, Any]:
    """The global RNG states as bytes and plain values: cheap to save in every checkpoint and
    loadable with ``weights_only=True``."""
    import random

    np_name, np_keys, *np_rest = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state().numpy().tobytes(),
        "numpy": (np_name, np.asarray(np_keys, dtype=np.uint32).tobytes(), *np_rest),
        "python": (py_version, np.asarray(py_state, dtype=np.uint64).tobytes(), py_gauss),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = [s.numpy().tobytes() for s in torch.cuda.get_rng_state_all()]
    return states


def _set_rng_states(states: Mapping[str, Any]) -> None:
    import random

    def as_tensor(raw: bytes) -> torch.Tensor:
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8)

    torch.set_rng_state(as_tensor(states["torch"]))
    np_name, np_keys, *np_rest = states["numpy"]
    np.random.set_state((np_name, np.frombuffer(np_keys, dtype=np.uint32).copy(), *np_rest))
    py_version, py_state, py_gauss = states["python"]
    random.setstate((py_version, tuple(int(v) for v in np.frombuffer(py_state, np.uint64)),
                     py_gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([as_tensor(raw) for raw in states["cuda"]])
