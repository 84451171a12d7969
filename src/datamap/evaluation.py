"""Metrics of a trained model on the test and control sets."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from datamap.data.prepare import read_meta, read_split
from datamap.io import atomic_path, write_json, write_parquet

log = logging.getLogger(__name__)

EVAL_SPLITS = ("test", "control")


def predict_logits(model: Any, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Logits [N, K] of ``model`` (in eval mode, no gradients) on inputs ``x`` [N, ...]."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size]))
            outputs.append(model(batch.to(device)).float().cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


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


def split_metrics(model: Any, prepared_dir: str | os.PathLike, split: str,
                  meta: dict[str, Any] | None = None) -> dict[str, float]:
    """:func:`classification_metrics` of ``model`` on one prepared split."""
    meta = read_meta(prepared_dir) if meta is None else meta
    data = read_split(prepared_dir, split, meta)
    return classification_metrics(data.labels, predict_logits(model, data.x),
                                  int(meta["num_classes"]))


def evaluate(
    model: Any,
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    splits: Sequence[str] = EVAL_SPLITS,
) -> dict[str, dict[str, float]]:
    """Evaluate ``model`` on each split; write metrics.json, predictions.parquet and one
    confusion CSV per split (``actual``/``predicted`` class names, for DVC's confusion plot)."""
    out_dir = Path(out_dir)
    meta = read_meta(prepared_dir)
    class_names = np.asarray(meta["class_names"])
    metrics: dict[str, dict[str, float]] = {}
    predictions = []
    for split in splits:
        data = read_split(prepared_dir, split, meta)
        logits = predict_logits(model, data.x)
        metrics[split] = classification_metrics(data.labels, logits, int(meta["num_classes"]))
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        preds = logits.argmax(axis=1)
        rows = np.arange(len(preds))
        predictions.append(pd.DataFrame({
            "split": split,
            "id": data.ids,
            "label": data.labels,
            "pred": preds.astype(np.int64),
            "p_pred": probs[rows, preds].astype(np.float32),
            "p_label": probs[rows, data.labels].astype(np.float32),
        }))
        confusion = pd.DataFrame({"actual": class_names[data.labels],
                                  "predicted": class_names[preds]})
        with atomic_path(out_dir / f"confusion_{split}.csv") as tmp:
            confusion.to_csv(tmp, index=False)
        log.info("%s: %s", split, metrics[split])
    table = pa.Table.from_pandas(pd.concat(predictions, ignore_index=True), preserve_index=False)
    write_parquet(out_dir / "predictions.parquet", table.replace_schema_metadata(None))
    write_json(out_dir / "metrics.json", metrics)
    return metrics
