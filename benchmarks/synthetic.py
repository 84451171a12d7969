"""Seeded synthetic training dynamics: easy, ambiguous and mislabelled examples.

Each example gets a true class and a kind:

* ``easy`` -- the true-class logit grows steadily with training progress t in (0, 1]:
  high confidence, low variability;
* ``ambiguous`` -- the true-class logit swings from record to record (large per-record noise):
  medium confidence, high variability;
* ``mislabelled`` -- the gold label is a different class; the model learns the true class and
  only a few examples are memorised late (their gold logit rises after t = 0.7): low
  confidence, low variability, the hard-to-learn corner.

Logits are turned into the stored columns with ``per_example_values`` (float32 softmax, as the
recorder does), all vectorised. Generation is deterministic per (seed, chunk of ids, slot), so
the in-memory and the streamed versions are identical and any size can be written in bounded
memory.

Usage::

    python benchmarks/synthetic.py OUT.parquet --examples 1000000 --epochs 10 [--classes 3]
        [--records 1] [--seed 0] [--noise 0.1] [--ambiguous 0.2] [--logits]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from datamap.dynamics.schema import DynamicsMeta, build_dynamics
from datamap.dynamics.storage import ROW_GROUP_IDS, DynamicsWriter
from datamap.dynamics.values import per_example_values

EASY, AMBIGUOUS, MISLABELLED = 0, 1, 2


def synthetic_examples(a: int, b: int, n_classes: int, *, seed: int = 0, noise: float = 0.1,
                       ambiguous: float = 0.2) -> dict[str, np.ndarray]:
    """Per-example parameters of ids a..b-1: ``ids``, ``true``, ``gold``, ``kind``,
    ``strength`` (deterministic in seed and the id range's chunk, see :func:`_chunks`)."""
    rng = np.random.default_rng([seed, a])
    n = b - a
    true = rng.integers(0, n_classes, n)
    u = rng.random(n)
    kind = np.where(u < noise, MISLABELLED, np.where(u < noise + ambiguous, AMBIGUOUS, EASY))
    shift = rng.integers(1, n_classes, n) if n_classes > 1 else np.zeros(n, np.int64)
    gold = np.where(kind == MISLABELLED, (true + shift) % n_classes, true)
    return {
        "ids": np.arange(a, b, dtype=np.int64),
        "true": true,
        "gold": gold,
        "kind": kind,
        "strength": rng.uniform(0.5, 1.5, n),
        "memorise": rng.random(n) < 0.3,
    }


def synthetic_logits(ex: dict[str, np.ndarray], slot: int, n_slots: int, n_classes: int, *,
                     seed: int = 0) -> np.ndarray:
    """float32 logits [n, K] of the examples ``ex`` at one (epoch, record) slot."""
    a = int(ex["ids"][0])
    rng = np.random.default_rng([seed, a, 1 + slot])
    n = len(ex["ids"])
    t = (slot + 1) / n_slots
    rows = np.arange(n)
    logits = rng.normal(0.0, 0.7, size=(n, n_classes))
    kind, s = ex["kind"], ex["strength"]
    boost = np.where(kind == EASY, s * (0.5 + 4.0 * t),
                     np.where(kind == AMBIGUOUS, 1.2 * t + rng.normal(0.0, 2.0, n),
                              s * (0.5 + 3.0 * t)))
    logits[rows, ex["true"]] += boost
    late = (kind == MISLABELLED) & ex["memorise"]
    logits[rows, ex["gold"]] += np.where(late, 12.0 * max(0.0, t - 0.7), 0.0)
    return logits.astype(np.float32)


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def _slot_columns(ex: dict[str, np.ndarray], logits: np.ndarray, epoch: int,
                  record: int) -> dict[str, np.ndarray]:
    n = len(ex["ids"])
    return {
        "id": ex["ids"],
        "epoch": np.full(n, epoch, dtype=np.int32),
        "record": np.full(n, record, dtype=np.int32),
        "gold": ex["gold"],
        **per_example_values(logits, ex["gold"]),
    }


def synthetic_dynamics(n_examples: int, n_epochs: int, n_classes: int = 3, *,
                       records_per_epoch: int = 1, seed: int = 0, noise: float = 0.1,
                       ambiguous: float = 0.2, logits: bool = False,
                       chunk_ids: int = ROW_GROUP_IDS) -> pa.Table:
    """An in-memory dynamics table (canonical order); with ``logits`` the logits column too."""
    meta = DynamicsMeta(num_classes=n_classes, records_per_epoch=records_per_epoch, seed=seed)
    n_slots = n_epochs * records_per_epoch
    parts: list[dict[str, np.ndarray]] = []
    all_logits: list[np.ndarray] = []
    for slot in range(n_slots):
        e, r = divmod(slot, records_per_epoch)
        for a, b in _chunks(n_examples, chunk_ids):
            ex = synthetic_examples(a, b, n_classes, seed=seed, noise=noise, ambiguous=ambiguous)
            lg = synthetic_logits(ex, slot, n_slots, n_classes, seed=seed)
            parts.append(_slot_columns(ex, lg, e, r))
            if logits:
                all_logits.append(lg)
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return build_dynamics(columns, meta, logits=np.concatenate(all_logits) if logits else None)


def synthetic_flips(n_examples: int, n_classes: int = 3, *, seed: int = 0, noise: float = 0.1,
                    ambiguous: float = 0.2, chunk_ids: int = ROW_GROUP_IDS) -> np.ndarray:
    """[N] bool, True where the gold label was flipped (ids 0..N-1)."""
    return np.concatenate([
        synthetic_examples(a, b, n_classes, seed=seed, noise=noise,
                           ambiguous=ambiguous)["kind"] == MISLABELLED
        for a, b in _chunks(n_examples, chunk_ids)
    ])


def write_synthetic(path: str | Path, n_examples: int, n_epochs: int, n_classes: int = 3, *,
                    records_per_epoch: int = 1, seed: int = 0, noise: float = 0.1,
                    ambiguous: float = 0.2, logits: bool = False,
                    chunk_ids: int = ROW_GROUP_IDS) -> Path:
    """Stream the same table as :func:`synthetic_dynamics` to Parquet in bounded memory."""
    meta = DynamicsMeta(num_classes=n_classes, records_per_epoch=records_per_epoch, seed=seed)
    n_slots = n_epochs * records_per_epoch
    with DynamicsWriter(path, meta, logits_dtype="float32" if logits else None) as writer:
        for slot in range(n_slots):
            e, r = divmod(slot, records_per_epoch)
            for a, b in _chunks(n_examples, chunk_ids):
                ex = synthetic_examples(a, b, n_classes, seed=seed, noise=noise,
                                        ambiguous=ambiguous)
                lg = synthetic_logits(ex, slot, n_slots, n_classes, seed=seed)
                writer.write(_slot_columns(ex, lg, e, r), logits=lg if logits else None)
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("output")
    p.add_argument("--examples", type=int, default=200_000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--records", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--ambiguous", type=float, default=0.2)
    p.add_argument("--logits", action="store_true")
    args = p.parse_args(argv)
    start = time.perf_counter()
    path = write_synthetic(args.output, args.examples, args.epochs, args.classes,
                           records_per_epoch=args.records, seed=args.seed, noise=args.noise,
                           ambiguous=args.ambiguous, logits=args.logits)
    size = path.stat().st_size / 2**20
    print(f"wrote {path} ({args.examples} x {args.epochs} epochs, {size:.1f} MiB) in "
          f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
