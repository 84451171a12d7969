"""Gathering one record across DDP ranks, and merging the ranks' rows into one row per example.

Every rank records the examples its sampler gave it. At the end of each record the ranks' rows
are all-gathered -- padded to equal length, in chunks of bounded size, as raw bytes so any dtype
works with any backend -- and :func:`merge_ranks` drops the duplicates that
``DistributedSampler`` adds as padding, by id. The copy kept is the *first occurrence in the
global sample order* (sample ``j`` of rank ``r`` is global position ``j * world_size + r``), i.e.
the example's regular slot, never the padding copy appended at the end of the epoch. The result
must then hold every expected id exactly once, else a :class:`~datamap.errors.DataError` says which
ids were missed or repeated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pytorch_lightning as pl
import torch

from datamap.errors import DataError

#: Elements per all-gather call when collecting a record across ranks (bounds device memory).
GATHER_ELEMENTS = 1 << 24


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


def gather_record(trainer: pl.Trainer, columns: Mapping[str, torch.Tensor],
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
