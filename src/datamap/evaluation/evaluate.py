"""The evaluate stage: every subset's retrained models on the test set and each control set.

One stage evaluates every selection spec (evaluating is quick; one process start-up instead of
one per spec), into ``data/eval/``:

* ``metrics.json``: per spec, each metric's mean and standard deviation over the retraining seeds
  (``<spec>.test.<metric>.mean`` / ``.std``, ``<spec>.control.<name>.<metric>...``, ``n`` the
  set's size, ``seeds`` their number) and each seed's own metrics under
  ``<spec>.per_seed.seed_<s>``. Keys are stable for ``dvc metrics diff``.
* ``predictions/<spec>.parquet``: one row per (seed, evaluation set, example).
* ``confusion/<spec>/<set>.csv``: actual and predicted class names over every seed's
  predictions (DVC's confusion plot).

The per-split metrics themselves are :mod:`datamap.training.metrics`, shared with the train and
retrain stages' reports of their checkpoints. :func:`evaluate_checkpoint` is the same evaluation
of any checkpoint on named sets (``datamap evaluate``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from datamap.data.splits import SPLITS, eval_splits, read_meta, split_path
from datamap.errors import DataError
from datamap.io import atomic_path, write_csv, write_json, write_parquet
from datamap.layout import EVAL_CONFUSION, EVAL_METRICS, EVAL_PREDICTIONS
from datamap.training.metrics import METRICS, evaluate_split

log = logging.getLogger(__name__)



def confusion_name(split: str) -> str:
    """``test`` -> ``test.csv``; ``control/mnist`` -> ``control_mnist.csv``."""
    return split.replace("/", "_") + ".csv"


def resolve_eval_sets(prepared_dir: str | os.PathLike, names: Sequence[str]
                      ) -> list[tuple[tuple[str, ...], Path]]:
    """What ``datamap evaluate --data`` names, as (metrics key path, split file) pairs.

    ``test``/``val``/``train``: that prepared split; ``control``: every control set;
    ``control/<name>``: one control set; anything else: a Parquet file of the prepared-split
    contract (e.g. a split of the same data prepared elsewhere)."""
    found: list[tuple[tuple[str, ...], Path]] = []
    for name in names:
        if name in SPLITS:
            found.append(((name,), split_path(prepared_dir, name)))
        elif name == "control" or name.startswith("control/"):
            controls = [s for s in eval_splits(prepared_dir) if s.startswith("control/")]
            wanted = controls if name == "control" else [name]
            unknown = [w for w in wanted if w not in controls]
            if not controls or unknown:
                have = ", ".join(controls) or "none"
                raise DataError(f"--data {name}: {prepared_dir} has no such control set (it has "
                                f"{have}); name one of them or a split file")
            found.extend(((("control", w.split("/", 1)[1])), split_path(prepared_dir, w))
                         for w in wanted)
        else:
            path = Path(name)
            if not path.is_file():
                raise DataError(f"--data {name}: not a split name (test, val, train, control, "
                                "control/<name>) nor an existing Parquet file")
            found.append(((str(path),), path))
    return found


def evaluate_checkpoint(checkpoint: str | os.PathLike, names: Sequence[str],
                        prepared_dir: str | os.PathLike, *, batch_size: int = 512,
                        trusted: Sequence[str] = ()) -> dict[str, Any]:
    """Reload a ``model.ckpt`` and evaluate it on the sets ``names`` (see
    :func:`resolve_eval_sets`) exactly as the evaluate stage does; returns the metrics nested
    as in the stage's ``metrics.json`` (``{"test": {...}, "control": {name: {...}}}``).
    ``trusted``: classes beyond datamap's and torch's that the checkpoint may be rebuilt from
    (see ``datamap.models.checkpoint.load_model``)."""
    from datamap.models.checkpoint import load_model

    meta = read_meta(prepared_dir)
    model = load_model(checkpoint, trusted)
    metrics: dict[str, Any] = {}
    for keys, path in resolve_eval_sets(prepared_dir, names):
        result = evaluate_split(model, path, meta, batch_size=batch_size,
                                model_name=str(checkpoint))
        node = metrics
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = result.metrics
    return metrics


def evaluate_model(model: Any, prepared_dir: str | os.PathLike, meta: dict[str, Any], *,
                   batch_size: int = 512, model_name: str = "the model",
                   ) -> tuple[dict[str, Any], pd.DataFrame]:
    """``model`` on the test set and every control set: (metrics ``{"test": {...}, "control":
    {name: {...}}}``, predictions with a ``split`` column: ``test`` or ``control/<name>``)."""
    metrics: dict[str, Any] = {"control": {}}
    predictions = []
    for split in eval_splits(prepared_dir):
        result = evaluate_split(model, split_path(prepared_dir, split), meta,
                                batch_size=batch_size, model_name=model_name)
        if split == "test":
            metrics["test"] = result.metrics
        else:
            metrics["control"][split.split("/", 1)[1]] = result.metrics
        predictions.append(result.predictions.assign(split=split))
        log.info("%s: %s", split, result.metrics)
    frame = pd.concat(predictions, ignore_index=True)
    return metrics, frame[["split", *(c for c in frame.columns if c != "split")]]


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value), rounded to 6
    places."""
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": round(float(array.mean()), 6), "std": round(std, 6)}


def over_seeds(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per evaluation set and metric, :func:`mean_std` over the seeds' metrics (``per_seed``:
    ``seed_<s>`` -> ``{"test": {...}, "control": {...}}``); ``n`` stays the set's size."""
    runs = list(per_seed.values())

    def summarise(sets: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {m: mean_std([s[m] for s in sets]) for m in METRICS}
        out["n"] = sets[0]["n"]
        return out

    return {
        "seeds": len(runs),
        "test": summarise([r["test"] for r in runs]),
        "control": {name: summarise([r["control"][name] for r in runs])
                    for name in runs[0]["control"]},
        "per_seed": per_seed,
    }


def evaluate_retrained(checkpoints: Mapping[int, Path], prepared_dir: str | os.PathLike, *,
                       batch_size: int = 512,
                       trusted: Sequence[str] = ()) -> tuple[dict[str, Any], pd.DataFrame]:
    """One subset's retrained models (``checkpoints``: seed -> model.ckpt) on the test set and
    every control set: (:func:`over_seeds` of their metrics, every seed's predictions with a
    ``seed`` column)."""
    from datamap.models.checkpoint import load_model

    meta = read_meta(prepared_dir)
    per_seed: dict[str, Any] = {}
    frames = []
    for seed, checkpoint in checkpoints.items():
        metrics, frame = evaluate_model(load_model(checkpoint, trusted), prepared_dir, meta,
                                        batch_size=batch_size, model_name=str(checkpoint))
        per_seed[f"seed_{seed}"] = metrics
        frames.append(frame.assign(seed=np.int64(seed)))
    return over_seeds(per_seed), pd.concat(frames, ignore_index=True)


def _confusion_tables(frame: pd.DataFrame, class_names: np.ndarray) -> dict[str, pd.DataFrame]:
    """``<set>.csv`` -> actual/predicted class names of every row of ``frame`` in that set."""
    return {confusion_name(str(split)): pd.DataFrame({
        "actual": class_names[rows["label"].to_numpy()],
        "predicted": class_names[rows["pred"].to_numpy()],
    }) for split, rows in frame.groupby("split", sort=True)}


def evaluate_subsets(retrained: Mapping[str, Mapping[int, Path]],
                     prepared_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                     batch_size: int = 512, trusted: Sequence[str] = ()) -> dict[str, Any]:
    """The evaluate stage: every spec's retrained models (``retrained``: spec -> seed ->
    model.ckpt, in the order to report) into ``out_dir`` (see the module docstring), replaced
    whole: a failure leaves none of it. Returns the metrics. ``trusted``: the run's model
    config targets (see ``datamap.models.checkpoint.load_model``)."""
    meta = read_meta(prepared_dir)
    class_names = np.asarray(meta["class_names"])
    metrics: dict[str, Any] = {}
    with atomic_path(out_dir) as staging:
        for spec, checkpoints in retrained.items():
            if not checkpoints:
                raise DataError(f"no seed_<s>/model.ckpt of spec {spec!r}; run its retrain "
                                "stage first (dvc repro)")
            log.info("evaluate %s (%d seeds)", spec, len(checkpoints))
            metrics[spec], frame = evaluate_retrained(checkpoints, prepared_dir,
                                                      batch_size=batch_size, trusted=trusted)
            for name, table in _confusion_tables(frame, class_names).items():
                path = staging / EVAL_CONFUSION / spec / name
                write_csv(path, table)  # class names: spreadsheet-guarded
            arrow = pa.Table.from_pandas(frame, preserve_index=False)
            write_parquet(staging / EVAL_PREDICTIONS / f"{spec}.parquet",
                          arrow.replace_schema_metadata(None))
        write_json(staging / EVAL_METRICS, metrics)
    return metrics
