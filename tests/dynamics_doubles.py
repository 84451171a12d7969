"""Test doubles for the dynamics recorder's contract with LightningModules and DataModules.

Importable by the train stage in a subprocess (``model._target_=tests.dynamics_doubles.X``,
``data.datamodule._target_=tests.dynamics_doubles.Y``) as well as in-process.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from datamap.data.datamodule import EpochSeededSampler, PreparedDataModule
from datamap.models import Classifier

# ------------------------------------------------------------------------------------------------
# tuple batches


def as_tuple(batch: dict[str, torch.Tensor], with_ids: bool) -> tuple[torch.Tensor, ...]:
    """A collate function: the dict batch of IndexedDataset.__getitems__ as (x, label[, id])."""
    if with_ids:
        return batch["x"], batch["label"], batch["id"]
    return batch["x"], batch["label"]


class TupleDataModule(PreparedDataModule):
    """The prepared splits, batched as tuples ``(x, label, id)`` -- or ``(x, label)`` without
    ``with_ids``, which the recorder must refuse."""

    def __init__(self, *args: Any, with_ids: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.with_ids = with_ids

    def _as_tuples(self, loader: DataLoader) -> DataLoader:
        return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=loader.sampler,
                          collate_fn=partial(as_tuple, with_ids=self.with_ids))

    def train_dataloader(self) -> DataLoader:
        return self._as_tuples(super().train_dataloader())

    def eval_dataloader(self, name: str) -> DataLoader:
        return self._as_tuples(super().eval_dataloader(name))


class TupleClassifier(Classifier):
    """:class:`Classifier` on ``(x, label, ...)`` batches, computing exactly what it computes."""

    def _step(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        logits = self(batch[0])
        return {"loss": F.cross_entropy(logits, batch[1]), "logits": logits.detach()}

    def training_step(self, batch, batch_idx):
        return self._step(batch)

    def validation_step(self, batch, batch_idx):
        return self._step(batch)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self(batch[0])


# ------------------------------------------------------------------------------------------------
# models that break the contract


#: NanLogitsClassifier reports NaN logits for the ids divisible by this.
NAN_EVERY = 100


class NanLogitsClassifier(Classifier):
    """Reports NaN logits for the examples whose id is divisible by :data:`NAN_EVERY` (training
    itself stays finite, so exactly those examples are non-finite)."""

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        nan = (batch["id"] % NAN_EVERY == 0).unsqueeze(1)
        out["logits"] = out["logits"].masked_fill(nan, float("nan"))
        return out


class ProbabilitiesClassifier(Classifier):
    """``predict_step`` returns softmax probabilities instead of logits."""

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return super().predict_step(batch, batch_idx, dataloader_idx).softmax(dim=1)


# ------------------------------------------------------------------------------------------------
# a training loader without a length


class IterableSplit(IterableDataset):
    """A prepared split as an IterableDataset (no ``__len__``): every example once per pass, in
    the order :class:`EpochSeededSampler` gives for the pass's epoch, so a run on it trains
    exactly like one on the sized loader."""

    def __init__(self, dataset, seed: int) -> None:
        self.dataset = dataset
        self.ids = dataset.ids  # what the recorder checks every record against
        self.seed = seed
        self.epoch = 0

    def __iter__(self):
        sampler = EpochSeededSampler(len(self.dataset), self.seed)
        sampler.set_epoch(self.epoch)
        self.epoch += 1
        for index in sampler:
            yield self.dataset[index]


class IterableTrainDataModule(PreparedDataModule):
    """:class:`PreparedDataModule` with a training loader that has no length."""

    def train_dataloader(self) -> DataLoader:
        return DataLoader(IterableSplit(self.split("train"), self.seed),
                          batch_size=self.batch_size)
