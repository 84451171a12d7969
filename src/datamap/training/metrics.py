"""Metrics of a trained model on one prepared split: what the train and retrain stages report
for their saved checkpoint (``metrics.json``) and what the evaluate stage reports on the test and
control sets, computed by the same code.

:func:`evaluate_split` evaluates a loaded model on one prepared split file of any input kind,
through the same loader and batch encoder as training, and returns its metrics and predictions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datamap.data.splits import read_meta, read_split_file, split_path
from datamap.errors import DataError

#: The metrics of each evaluation set, in the report's column order.
METRICS = ("accuracy", "macro_f1", "loss")


def macro_f1(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> float:
    """Macro-averaged F1 over the classes ``0..num_classes-1`` -> float.

    Per class F1 = 2 TP / (2 TP + FP + FN), 0 for a class neither present nor predicted (as
    scikit-learn's ``f1_score(average="macro", labels=range(K), zero_division=0)``; computed
    here from one bincount so evaluating imports no scikit-learn and SciPy).
    """
    k = int(num_classes)
    counts = np.bincount(np.asarray(labels, np.int64) * k + np.asarray(preds, np.int64),
                         minlength=k * k).reshape(k, k)  # [actual, predicted]
    tp = np.diag(counts).astype(np.float64)
    denominator = counts.sum(axis=0) + counts.sum(axis=1)  # (TP + FP) + (TP + FN)
    f1 = np.divide(2 * tp, denominator, out=np.zeros(k), where=denominator > 0)
    return float(f1.mean())


def classification_metrics(
    labels: np.ndarray, logits: np.ndarray, num_classes: int
) -> dict[str, float]:
    """Accuracy, macro-F1 (over all classes; an absent class scores 0) and mean cross-entropy.

    ``labels`` [N] int, ``logits`` [N, K] float.
    """
    logits64 = logits.astype(np.float64)
    shifted = logits64 - logits64.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    preds = logits.argmax(axis=1)
    return {
        "accuracy": round(float((preds == labels).mean()), 6),
        "macro_f1": round(macro_f1(labels, preds, num_classes), 6),
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

    from datamap.data.datamodule import IndexedDataset, make_loader, preload_split

    data = read_split_file(path, meta)
    encoder = model.batch_encoder() if hasattr(model, "batch_encoder") else None
    preload_split(encoder, data)
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


def split_metrics(model: Any, prepared_dir: str | os.PathLike, split: str) -> dict[str, float]:
    """:func:`classification_metrics` of ``model`` on one split of the prepared data (``val``,
    ``test``, ``control/<name>``), computed exactly as the evaluate stage computes them."""
    return evaluate_split(model, split_path(prepared_dir, split)).metrics
