"""Eval passes: the model in eval mode, without gradients, over one unshuffled split.

The recorder runs them for ``mode: eval_pass`` (over the training set) and for the ``test``
split. They leave the training exactly as it was: every submodule's train/eval flag is restored
and the global RNGs are forked, so recording draws nothing from the training's random stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset

from datamap.dynamics.accumulate import RecordAccumulator
from datamap.errors import ConfigError


def eval_loader(trainer: pl.Trainer, split: str) -> DataLoader:
    """A non-shuffled loader over one split (sharded across ranks), with the batch size, collate
    function and workers of the loader the datamodule gives for it."""
    datamodule = trainer.datamodule
    source = None
    if hasattr(datamodule, "eval_dataloader"):  # datamap's PreparedDataModule
        source = datamodule.eval_dataloader(split)
    elif split == "train":
        source = trainer.train_dataloader
    elif datamodule is not None:
        loaders = datamodule.test_dataloader()
        source = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
    if not isinstance(source, DataLoader):
        raise ConfigError(f"dynamics: cannot build an eval loader over the {split} split: give "
                          "the datamodule an eval_dataloader(split) method returning a DataLoader "
                          "(as datamap.data.PreparedDataModule does)")
    dataset = source.dataset
    sampler = None
    if trainer.world_size > 1:
        if isinstance(dataset, IterableDataset):
            raise ConfigError(
                f"dynamics: the {split} dataset is an IterableDataset, which an eval pass cannot "
                "shard across ranks; use a map-style dataset, or mode=train_pass on one device"
            )
        sampler = DistributedSampler(dataset, num_replicas=trainer.world_size,
                                     rank=trainer.global_rank, shuffle=False, drop_last=False)
    batch_size = getattr(datamodule, "eval_batch_size", None) or source.batch_size
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, sampler=sampler,
        collate_fn=source.collate_fn, num_workers=source.num_workers,
        pin_memory=source.pin_memory, persistent_workers=source.num_workers > 0,
        drop_last=False,
    )


def run_eval_pass(trainer: pl.Trainer, pl_module: pl.LightningModule, loader: DataLoader,
                  acc: RecordAccumulator) -> None:
    """Feed ``acc`` the ``predict_step`` logits of every batch of ``loader``."""
    precision = getattr(trainer.precision_plugin, "forward_context", None)
    with eval_mode(pl_module), isolated_rng(pl_module.device), torch.inference_mode(), \
            (precision() if precision else nullcontext()):
        for batch_idx, batch in enumerate(loader):
            batch = trainer.strategy.batch_to_device(batch)
            acc.add(pl_module.predict_step(batch, batch_idx), batch)


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode for the duration; then every submodule's own train/eval flag is restored."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def isolated_rng(device: torch.device) -> Iterator[None]:
    """Eval passes draw from the global torch RNG (each DataLoader iterator takes a seed); fork
    it so that recording leaves the training's random stream exactly as it was."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield
