"""Noise detection: with injected label noise, how well each score finds the flipped labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from datamap.errors import DataError
from datamap.scoring.regions import HARD, REGION_KEYS, REGIONS
from datamap.scoring.registry import all_scores, suspicion


def noise_detection(scores: pd.DataFrame, is_flipped: Any) -> dict[str, Any]:
    """How well each score finds flipped labels, as JSON-ready plain values.

    ``scores``: the output of :func:`compute_scores`; ``is_flipped`` [N] bool aligned with its
    rows (True where the training label was flipped). Every registered score with a label-error
    orientation (``Score.suspicious``) is oriented by
    :func:`~datamap.scoring.registry.suspicion` -- suspicious high -- and evaluated with
    ``sklearn.metrics.roc_auc_score`` and ``average_precision_score`` (chance level: AUROC 0.5,
    AP = flip_rate). Scores without one (high for *ambiguous* examples, such as
    ``variability``, ``threshold_closeness`` and ``aleatoric``: a mislabelled and an easy
    example both score low) get no AUROC -- one far below 0.5 would read as "useless" when the
    score simply measures something else -- and are listed under ``excluded`` with the reason.
    Regions report their size, flipped count, the share of all flipped labels they hold, and
    their own flip rate. Keys are stable::

        {"n_examples", "n_flipped", "flip_rate",
         "scores": {score: {"auroc", "average_precision", "suspicious_when"}},
         "excluded": {score: reason},
         "regions": {easy_to_learn|ambiguous|hard_to_learn:
                     {"count", "flipped", "share_of_flipped", "flip_rate"}},
         "hard_to_learn_flipped", "hard_to_learn_share"}

    ``suspicious_when`` is "low" or "high"; ``hard_to_learn_flipped`` is the number of flipped
    labels inside hard-to-learn and ``hard_to_learn_share`` their share of all flipped labels
    (the paper's claim: mislabelled examples gather there). A score with missing values (its
    input was not recorded) is excluded with that reason.

    Raises :class:`~datamap.errors.DataError` unless there are both flipped and clean examples.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    flipped = np.asarray(is_flipped)
    n = len(scores)
    if flipped.shape != (n,):
        raise DataError(f"is_flipped has shape {flipped.shape}, expected ({n},) -- one flag per "
                        "row of the scores table")
    if flipped.dtype != bool:
        if not np.isin(flipped, (0, 1)).all():
            raise DataError("is_flipped must hold booleans (or 0/1)")
        flipped = flipped.astype(bool)
    n_flipped = int(flipped.sum())
    if n_flipped in (0, n):
        raise DataError(
            f"noise detection needs both flipped and clean examples ({n_flipped} of {n} flipped)"
        )
    result: dict[str, Any] = {
        "n_examples": int(n),
        "n_flipped": n_flipped,
        "flip_rate": n_flipped / n,
        "scores": {},
        "excluded": {},
        "regions": {},
    }
    for score in all_scores():
        if score.suspicious is None:
            result["excluded"][score.name] = score.why
            continue
        key = suspicion(scores, score.name)
        missing = int((~np.isfinite(key)).sum())
        if missing:
            result["excluded"][score.name] = (f"{missing} of {n} examples have no value (its "
                                              "input was not recorded)")
            continue
        result["scores"][score.name] = {
            "auroc": float(roc_auc_score(flipped, key)),
            "average_precision": float(average_precision_score(flipped, key)),
            "suspicious_when": score.suspicious,
        }
    region = np.asarray(scores["region"], dtype=object)
    for name in REGIONS:
        inside = region == name
        count = int(inside.sum())
        hit = int((inside & flipped).sum())
        result["regions"][REGION_KEYS[name]] = {
            "count": count,
            "flipped": hit,
            "share_of_flipped": hit / n_flipped,
            "flip_rate": hit / count if count else 0.0,
        }
    hard = result["regions"][REGION_KEYS[HARD]]
    result["hard_to_learn_flipped"] = hard["flipped"]
    result["hard_to_learn_share"] = hard["share_of_flipped"]
    return result
