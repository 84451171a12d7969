"""Indexed datasets and the LightningDataModule over prepared splits.

Every batch is a dict ``{"id": int64 [B], "label": int64 [B], "x": float32 [B, ...]}``: the
example ids travel with the batch so the dynamics recorder can align values by id, never by
position (position-based alignment is how the reference code misaligns under shuffling/DDP).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from datamap.data.prepare import PreparedSplit, read_meta, read_split
from datamap.io import ConfigError, DataError


class IndexedDataset(Dataset):
    """A prepared split held as tensors; items and batches are dicts keyed by ``id``."""

    def __init__(self, split: PreparedSplit) -> None:
        self.ids = torch.tensor(split.ids, dtype=torch.int64)
        self.labels = torch.tensor(split.labels, dtype=torch.int64)
        self.x = torch.tensor(split.x, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"id": self.ids[index], "label": self.labels[index], "x": self.x[index]}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        # One fancy-indexing gather per batch instead of B item dicts stacked by collate.
        index = torch.as_tensor(indices, dtype=torch.long)
        return {"id": self.ids[index], "label": self.labels[index], "x": self.x[index]}


def collate_batch(batch: Any) -> Any:
    """Collate for :meth:`IndexedDataset.__getitems__`, which already returns a whole batch."""
    if isinstance(batch, dict):
        return batch
    return torch.utils.data.default_collate(batch)


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
    """Train/val/test/control loaders over the prepare stage's Parquet files.

    Args:
        prepared_dir: the prepare stage's output directory.
        batch_size: training batch size.
        eval_batch_size: batch size for validation, test and prediction.
        num_workers: DataLoader workers (0 = load in the main process; the data is in memory).
        seed: seeds the per-epoch shuffle (see :class:`EpochSeededSampler`).
        train_ids: restrict training to these example ids (a selected subset); every id must
            exist in the train split.
        shuffle: shuffle the training examples each epoch.
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
        self.meta = read_meta(self.prepared_dir)
        self.datasets: dict[str, IndexedDataset] = {}

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["input_shape"])

    def split(self, name: str) -> IndexedDataset:
        """The dataset of one split (loaded on first use; ``train`` restricted to train_ids)."""
        if name not in self.datasets:
            data = read_split(self.prepared_dir, name, self.meta)
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
            self.split("test")
            self.split("control")

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Sampler | None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False if sampler is not None else None,
            num_workers=self.num_workers,
            collate_fn=collate_batch,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=False,  # cartography needs every example in every epoch
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.split("train")
        sampler = EpochSeededSampler(len(dataset), self.seed, shuffle=self.shuffle)
        return self._loader(dataset, self.batch_size, sampler)

    def eval_dataloader(self, name: str) -> DataLoader:
        return self._loader(self.split(name), self.eval_batch_size, None)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")
