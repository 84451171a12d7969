"""Metrics of a trained model on prepared evaluation sets: the test set and each control set.

:func:`evaluate_split` evaluates a loaded model on one prepared split file of any input kind,
through the same loader and batch encoder as training, and returns its metrics and
predictions; the evaluate stage (:func:`evaluate`) runs it on ``test`` and every control set.

``metrics.json`` keys are stable for ``dvc metrics diff``: ``test.<metric>`` and
``control.<name>.<metric>`` (``control`` is empty when the data has no control set).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from datamap.data.prepared import SPLITS, eval_splits, read_meta, read_split_file, split_path
from datamap.io import DataError, atomic_path, write_json, write_parquet

log = logging.getLogger(__name__)

#: The metrics of each evaluation set, in the report's column order.
METRICS = ("accuracy", "macro_f1", "loss")


def classification_metrics(
    labels: np.ndarray, logits: np.ndarray, num_classes: int
) -> dict[str, float]:
    """Accuracy, macro-F1 (over all classes; an absent class scores 0) and mean cross-entropy.

    ``labels`` [N] int, ``logits`` [N, K] float.
    """
    from sklearn.metrics import f1_score

    logits64 = logits.astype(np.float64)
    shifted = logits64 - logits64.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    preds = logits.argmax(axis=1)
    return {
        "accuracy": round(float((preds == labels).mean()), 6),
        "macro_f1": round(float(f1_score(labels, preds, average="macro",
                                         labels=list(range(num_classes)), zero_division=0)), 6),
        "loss": round(float(-log_probs[np.arange(len(labels)), labels].mean()), 6),
        "n": int(len(labels)),
    }


def check_model_fits(model: Any, meta: dict[str, Any], where: str) -> None:
    """Refuse a model trained on other data: another number of classes, other class names
    (when the checkpoint records them) or another input kind."""
    classes = int(meta["num_classes"])
    if int(model.num_classes) != classes:
        raise DataError(
            f"{where}: the model has {model.num_classes} classes but the prepared data has "
            f"{classes} ({', '.join(meta['class_names'][:10])}); the checkpoint belongs to "
            "other data: retrain it (dvc repro) or evaluate it on its own data"
        )
    names = getattr(model, "class_names", None)
    if names is not None and list(names) != list(meta["class_names"]):
        raise DataError(
            f"{where}: the model's classes ({', '.join(names[:10])}) are not the prepared data's "
            f"({', '.join(meta['class_names'][:10])}) in the same order; the checkpoint belongs "
            "to other data: retrain it (dvc repro) or evaluate it on its own data"
        )
    kind = getattr(model, "input_kind", None)
    if kind is not None and kind != meta.get("input_kind"):
        raise DataError(f"{where}: the model was trained on {kind} inputs but the prepared data "
                        f"is {meta.get('input_kind')}; retrain it on this data")


def predict(model: Any, path: str | os.PathLike, meta: dict[str, Any], *,
            batch_size: int = 512, num_workers: int = 0) -> tuple[Any, np.ndarray]:
    """(the split, logits [N, K]) of ``model`` on the prepared split file ``path``, batched
    through the model's own encoder, without gradients, on the model's device."""
    import torch

    from datamap.data.module import IndexedDataset, make_loader

    data = read_split_file(path, meta)
    encoder = model.batch_encoder() if hasattr(model, "batch_encoder") else None
    loader = make_loader(IndexedDataset(data), batch_size, encoder=encoder,
                         num_workers=num_workers)
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    with torch.inference_mode():
        for batch in loader:
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                     for k, v in batch.items()}
            outputs.append(model(batch).float().cpu().numpy())
    logits = np.concatenate(outputs) if outputs else np.zeros((0, int(meta["num_classes"])),
                                                              np.float32)
    return data, logits


@dataclass
class SplitEvaluation:
    """What :func:`evaluate_split` returns: metrics and one prediction row per example."""

    metrics: dict[str, float]
    predictions: pd.DataFrame


def evaluate_split(model: Any, path: str | os.PathLike, meta: dict[str, Any] | None = None,
                   *, batch_size: int = 512, num_workers: int = 0,
                   model_name: str = "the model") -> SplitEvaluation:
    """Evaluate a loaded model on one prepared split file (test, a control set, or any file
    of the prepared-split contract).

    Args:
        model: a :class:`datamap.models.Classifier` (e.g. from
            ``datamap.models.checkpoint.load_model``).
        path: the split's Parquet file.
        meta: the prepared data's ``meta.json`` (default: read from ``path``'s directory, or
            its parent's for a control set).
    Returns metrics (:func:`classification_metrics`) and predictions with columns ``id``,
    ``label``, ``pred``, ``p_pred`` (probability of the prediction), ``p_label`` (of the label).
    """
    path = Path(path)
    if meta is None:
        home = path.parent.parent if path.parent.name == "controls" else path.parent
        meta = read_meta(home)
    check_model_fits(model, meta, model_name)
    data, logits = predict(model, path, meta, batch_size=batch_size, num_workers=num_workers)
    metrics = classification_metrics(data.labels, logits, int(meta["num_classes"]))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    preds = logits.argmax(axis=1)
    rows = np.arange(len(preds))
    predictions = pd.DataFrame({
        "id": data.ids,
        "label": data.labels,
        "pred": preds.astype(np.int64),
        "p_pred": probs[rows, preds].astype(np.float32),
        "p_label": probs[rows, data.labels].astype(np.float32),
    })
    return SplitEvaluation(metrics, predictions)


def confusion_name(split: str) -> str:
    """``test`` -> ``test.csv``; ``control/mnist`` -> ``control_mnist.csv``."""
    return split.replace("/", "_") + ".csv"


def split_metrics(model: Any, prepared_dir: str | os.PathLike, split: str) -> dict[str, float]:
    """:func:`classification_metrics` of ``model`` on one split of the prepared data (``val``,
    ``test``, ``control/<name>``), computed exactly as the evaluate stage computes them."""
    return evaluate_split(model, split_path(prepared_dir, split)).metrics


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
                        prepared_dir: str | os.PathLike, *,
                        batch_size: int = 512) -> dict[str, Any]:
    """Reload a ``model.ckpt`` and evaluate it on the sets ``names`` (see
    :func:`resolve_eval_sets`) exactly as the evaluate stage does; returns the metrics nested
    as in the stage's ``metrics.json`` (``{"test": {...}, "control": {name: {...}}}``)."""
    from datamap.models.checkpoint import load_model

    meta = read_meta(prepared_dir)
    model = load_model(checkpoint)
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


def _write_evaluation(out_dir: Path, metrics: dict[str, Any], frame: pd.DataFrame,
                      class_names: np.ndarray) -> None:
    """``metrics.json``, ``predictions.parquet`` and one ``confusion/<split>.csv`` per split
    (every row of ``frame``: all seeds' predictions pooled)."""
    with atomic_path(out_dir / "confusion") as tmp:
        tmp.mkdir()
        for split, rows in frame.groupby("split", sort=True):
            pd.DataFrame({
                "actual": class_names[rows["label"].to_numpy()],
                "predicted": class_names[rows["pred"].to_numpy()],
            }).to_csv(tmp / confusion_name(str(split)), index=False)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    write_parquet(out_dir / "predictions.parquet", table.replace_schema_metadata(None))
    write_json(out_dir / "metrics.json", metrics)


def evaluate(
    model: Any,
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 512,
    model_name: str = "the model",
) -> dict[str, Any]:
    """One model on the test set and every control set.

    Writes ``metrics.json`` (``{"test": {...}, "control": {name: {...}}}``),
    ``predictions.parquet`` (column ``split``: ``test`` or ``control/<name>``) and
    ``confusion/<split>.csv`` (``actual``/``predicted`` class names, for DVC's confusion plot).
    """
    meta = read_meta(prepared_dir)
    metrics, frame = evaluate_model(model, prepared_dir, meta, batch_size=batch_size,
                                    model_name=model_name)
    _write_evaluation(Path(out_dir), metrics, frame, np.asarray(meta["class_names"]))
    return metrics


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


def evaluate_seeds(
    checkpoints: dict[int, Path],
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 512,
) -> dict[str, Any]:
    """The evaluate stage: each seed's retrained model (``checkpoints``: seed -> model.ckpt)
    on the test set and every control set.

    Writes ``metrics.json``: ``test.<metric>.mean`` / ``.std`` over the seeds (and
    ``control.<name>.<metric>...``; ``n`` the set's size, ``seeds`` their number) and each seed's
    own metrics under ``per_seed.seed_<s>``; ``predictions.parquet`` with a ``seed`` column;
    ``confusion/<split>.csv`` over every seed's predictions.
    """
    from datamap.models.checkpoint import load_model

    meta = read_meta(prepared_dir)
    per_seed: dict[str, Any] = {}
    frames = []
    for seed, checkpoint in checkpoints.items():
        metrics, frame = evaluate_model(load_model(checkpoint), prepared_dir, meta,
                                        batch_size=batch_size, model_name=str(checkpoint))
        per_seed[f"seed_{seed}"] = metrics
        frames.append(frame.assign(seed=np.int64(seed)))
    summary = over_seeds(per_seed)
    _write_evaluation(Path(out_dir), summary, pd.concat(frames, ignore_index=True),
                      np.asarray(meta["class_names"]))
    return summary
