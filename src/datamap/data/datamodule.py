"""Indexed datasets and the LightningDataModule over prepared splits.

Every batch is a dict ``{"id": int64 [B], "label": int64 [B]}`` plus the input: ``"x"`` float32
[B, ...], or ``"text"`` (and ``"text_pair"``), lists of B strings. The example ids travel with
the batch so the dynamics recorder can align values by id, never by position (position-based
alignment is how the reference code misaligns under shuffling/DDP).

The model decides how its input becomes tensors: a backbone that needs encoding (hashing
n-grams, tokenising) offers ``batch_encoder()``, a picklable function ``batch -> batch`` that
the loaders apply in their collate step, so DataLoader workers run it alongside training.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from datamap.data.splits import PreparedSplit, eval_splits, read_meta, read_split
from datamap.errors import ConfigError, DataError

#: A backbone's batch encoder: a raw batch (ids, labels, x or texts) -> the batch it reads.
Encoder = Callable[[dict[str, Any]], dict[str, Any]]


class IndexedDataset(Dataset):
    """A prepared split held in memory; items and batches are dicts keyed by ``id``."""

    def __init__(self, split: PreparedSplit) -> None:
        self.ids = torch.tensor(split.ids, dtype=torch.int64)
        self.labels = torch.tensor(split.labels, dtype=torch.int64)
        self.inputs: dict[str, Any] = {}
        if split.x is not None:
            self.inputs["x"] = torch.tensor(split.x, dtype=torch.float32)
        for name in ("text", "text_pair"):
            values = getattr(split, name)
            if values is not None:
                self.inputs[name] = np.asarray(values, dtype=object)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"id": self.ids[index], "label": self.labels[index],
                **{name: values[index] for name, values in self.inputs.items()}}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        # One fancy-indexing gather per batch instead of B item dicts stacked by collate.
        index = torch.as_tensor(indices, dtype=torch.long)
        batch: dict[str, Any] = {"id": self.ids[index], "label": self.labels[index]}
        for name, values in self.inputs.items():
            batch[name] = values[index] if isinstance(values, torch.Tensor) else \
                values[np.asarray(indices, dtype=np.int64)].tolist()
        return batch


def collate_batch(batch: Any) -> Any:
    """Collate for :meth:`IndexedDataset.__getitems__`, which already returns a whole batch."""
    if isinstance(batch, dict):
        return batch
    return torch.utils.data.default_collate(batch)


class BatchCollator:
    """:func:`collate_batch`, then the model's batch encoder (when it has one). Picklable, so
    it runs in DataLoader worker processes."""

    def __init__(self, encoder: Encoder | None = None) -> None:
        self.encoder = encoder

    def __call__(self, batch: Any) -> Any:
        batch = collate_batch(batch)
        return batch if self.encoder is None else self.encoder(batch)


def preload_split(encoder: Encoder | None, data: PreparedSplit) -> None:
    """Let an encoder that tokenises (``preload``) take the tokens of the whole split ``data``
    at once -- from its token store or in one call -- rather than batch by batch."""
    preload = getattr(encoder, "preload", None)
    if callable(preload) and data.text is not None:
        preload(data.ids, data.text, data.text_pair)


def make_loader(dataset: Dataset, batch_size: int, *, sampler: Sampler | None = None,
                encoder: Encoder | None = None, num_workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """The DataLoader every split goes through: training, evaluation, recording."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False if sampler is not None else None,
        num_workers=num_workers,
        collate_fn=BatchCollator(encoder),
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        drop_last=False,  # cartography needs every example in every epoch
    )


class EpochSeededSampler(Sampler[int]):
    """Random order that depends only on (seed, epoch).

    Lightning calls ``set_epoch`` at every epoch start, so the order of epoch e is the same in an
    uninterrupted run and in a run resumed from a checkpoint, independent of global RNG state.
    """

    def __init__(self, length: int, seed: int = 0, shuffle: bool = True) -> None:
        self.length = length
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.length))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())


class PreparedDataModule(pl.LightningDataModule):
    """Loaders over the prepare stage's Parquet files (train, val, test, control sets).

    Args:
        prepared_dir: the prepare stage's output directory.
        batch_size: training batch size.
        eval_batch_size: batch size for validation, test and prediction.
        num_workers: DataLoader workers (0 = load in the main process; the data is in memory).
        seed: seeds the per-epoch shuffle (see :class:`EpochSeededSampler`).
        train_ids: restrict training to these example ids (a selected subset); every id must
            exist in the train split.
        shuffle: shuffle the training examples each epoch.
        encoder: the batch encoder the loaders apply; default the ``batch_encoder()`` of the
            LightningModule the trainer fits (None for models that read ``x`` as it is).
    """

    def __init__(
        self,
        prepared_dir: str | os.PathLike = "data/prepared",
        batch_size: int = 64,
        eval_batch_size: int = 512,
        num_workers: int = 0,
        seed: int = 0,
        train_ids: np.ndarray | None = None,
        shuffle: bool = True,
        pin_memory: bool = False,
        encoder: Encoder | None = None,
    ) -> None:
        super().__init__()
        if int(batch_size) < 1 or int(eval_batch_size) < 1:
            raise ConfigError("data.datamodule.batch_size and eval_batch_size must be >= 1")
        self.prepared_dir = Path(prepared_dir)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.train_ids = None if train_ids is None else np.asarray(train_ids, dtype=np.int64)
        self.shuffle = shuffle
        self.pin_memory = pin_memory
        self.encoder = encoder
        self.meta = read_meta(self.prepared_dir)
        self.datasets: dict[str, IndexedDataset] = {}
        #: each split as prepared (``train`` before the subset): what encoders preload
        self.whole: dict[str, PreparedSplit] = {}

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["input_shape"])

    @property
    def input_kind(self) -> str:
        return str(self.meta.get("input_kind", "image"))

    def batch_encoder(self) -> Encoder | None:
        """The explicit ``encoder``, else the fitted LightningModule's ``batch_encoder()``."""
        if self.encoder is not None:
            return self.encoder
        module = self.trainer.lightning_module if self.trainer is not None else None
        make = getattr(module, "batch_encoder", None)
        return make() if callable(make) else None

    def split(self, name: str) -> IndexedDataset:
        """The dataset of one split (loaded on first use; ``train`` restricted to train_ids)."""
        if name not in self.datasets:
            data = read_split(self.prepared_dir, name, self.meta)
            self.whole[name] = data
            if name == "train" and self.train_ids is not None:
                unknown = np.setdiff1d(self.train_ids, data.ids)
                if len(unknown):
                    raise DataError(
                        f"{len(unknown)} selected id(s) (e.g. {unknown[:5].tolist()}) are not in "
                        f"{self.prepared_dir}/train.parquet; the subset is stale: rerun select"
                    )
                if len(self.train_ids) == 0:
                    raise DataError("the selected subset is empty; nothing to train on")
                data = data.subset(self.train_ids)
            self.datasets[name] = IndexedDataset(data)
        return self.datasets[name]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.split("train")
            self.split("val")
        if stage in (None, "test"):
            for name in eval_splits(self.prepared_dir):  # test and every control set
                self.split(name)

    def _loader(self, name: str, batch_size: int, sampler: Sampler | None) -> DataLoader:
        dataset = self.split(name)
        encoder = self.batch_encoder()
        preload_split(encoder, self.whole[name])
        return make_loader(dataset, batch_size, sampler=sampler, encoder=encoder,
                           num_workers=self.num_workers, pin_memory=self.pin_memory)

    def train_dataloader(self) -> DataLoader:
        sampler = EpochSeededSampler(len(self.split("train")), self.seed, shuffle=self.shuffle)
        return self._loader("train", self.batch_size, sampler)

    def eval_dataloader(self, name: str) -> DataLoader:
        return self._loader(name, self.eval_batch_size, None)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")
