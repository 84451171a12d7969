"""Cartography scores from training dynamics -- vectorised, chunked, no loop over examples.

Two ways in:

* :func:`compute_scores` takes a dynamics table (an Arrow table or the path of a Parquet file
  written by :func:`datamap.dynamics.write_dynamics`) and returns one row per example. Paths are
  read a range of ids at a time, so memory is bounded by the output plus one chunk.
* Plain-array functions in the style of cleanlab, for notebooks. Arrays are indexed
  ``[example, record]``: ``p_gold`` [N, R] float (softmax probability of the gold label),
  ``pred`` [N, R] int, ``gold`` [N] int, ``correct`` [N, R] bool, ``margin``/``loss``/``el2n``
  [N, R] float, where R counts the records kept, in time order (epoch-major, then record).
  Each function returns a float64 (or int64/bool) array of shape [N].

Definitions (R records per example after burn-out; every mean is over those R records):

======================== ====================================================================
``confidence``           mean p_gold
``variability``          population std of p_gold (ddof 0); ``include_ci=True`` gives the paper
                         code's sqrt(v + v^2 / (R - 1)) with v the population variance. At R = 1,
                         v = 0 and the correction term is 0/0; we define it as 0 (the reference
                         returns NaN there).
``correctness``          fraction of records with pred == gold (the reference stores the count;
                         the paper plots this fraction)
``forgetfulness``        number of records t >= 1 with record t-1 correct and record t wrong
                         (Toneva et al. 2019). The reference returns the sentinel 1000 for
                         examples never predicted correctly; we keep the count (0 for them) and
                         set ``never_learned``. Rankings by forgetfulness put never-learned
                         examples first (:func:`order_by`, :func:`suspicion`).
``never_learned``        no kept record is correct
``threshold_closeness``  confidence * (1 - confidence) (Active Bias, Chang et al. 2017)
``aum``                  mean margin, margin = gold logit - largest other logit (Pleiss et al. 2020)
``el2n``                 mean of ||softmax - onehot||_2 over the first ``el2n_epochs`` kept epochs
                         (Paul et al. 2021); default :data:`EL2N_EPOCHS` = 2
``aleatoric``            mean p_gold * (1 - p_gold) (Data-IQ, Seedat et al. 2022)
``mean_loss``            mean cross-entropy loss
``region``               easy-to-learn / ambiguous / hard-to-learn, see :func:`assign_regions`
======================== ====================================================================

All reductions run in float64 over the stored float32 values; every score column is float64
(``forgetfulness`` int64, ``never_learned`` bool, ``region`` a categorical of :data:`REGIONS`).
``confidence``, ``variability`` (both forms), ``correctness`` (as count / R),
``forgetfulness`` and ``threshold_closeness`` agree with ``compute_train_dy_metrics`` of
allenai/cartography to 1e-6 (tests/test_scores.py checks it against a loop oracle).

Burn-out (``burn_out=K``) keeps the records of the first K epochs; K at or above the number of
recorded epochs keeps everything (as the reference does).

Why ``el2n_epochs = 2``: EL2N is an *early-training* score -- Paul et al. compute it a few
epochs into training, where it separates hard from easy examples best; later in training
every example's error norm collapses towards zero. In ``train_pass`` recording, epoch 0's
values come from a model that is still near its initialisation for the first batches, so
averaging epochs 0 and 1 halves that noise while staying early. Values above the kept epochs
use every kept epoch; ``None`` means every kept epoch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from datamap.dynamics.storage import CHUNK_ROWS, open_dynamics
from datamap.dynamics.values import per_example_values
from datamap.io import ConfigError, DataError, read_parquet

EASY = "easy-to-learn"
AMBIGUOUS = "ambiguous"
HARD = "hard-to-learn"
#: Region names, in the order of the categorical ``region`` column.
REGIONS = (EASY, AMBIGUOUS, HARD)
#: Region name -> identifier-friendly key (JSON metrics, selection specs).
REGION_KEYS = {EASY: "easy_to_learn", AMBIGUOUS: "ambiguous", HARD: "hard_to_learn"}

#: The score columns (everything but id, gold and region), in output order.
SCORES = (
    "confidence",
    "variability",
    "correctness",
    "forgetfulness",
    "never_learned",
    "threshold_closeness",
    "aum",
    "el2n",
    "aleatoric",
    "mean_loss",
)
#: Columns of the scores table, in order.
SCORE_COLUMNS = ("id", "gold", *SCORES, "region")
#: Scores evaluated by :func:`noise_detection` (never_learned enters through forgetfulness).
DETECTION_SCORES = tuple(s for s in SCORES if s != "never_learned")

#: Default number of early epochs averaged by ``el2n`` (see the module docstring).
EL2N_EPOCHS = 2

#: Region rules and their parameters with defaults.
REGION_RULES: dict[str, dict[str, float]] = {
    # ambiguous if variability >= v; else easy-to-learn if confidence >= c; else hard-to-learn
    "threshold": {"confidence": 0.5, "variability": 0.2},
    # ambiguous = round(a*N) highest variability; hard-to-learn = round(h*N) lowest confidence
    # among the rest; easy-to-learn = the rest; ties broken by id
    "quantile": {"ambiguous": 0.33, "hard": 0.33},
}
#: The default region rule (``regions=None``).
DEFAULT_REGIONS: dict[str, Any] = {"rule": "threshold", **REGION_RULES["threshold"]}

#: How :func:`suspicion` orients each score so that a suspicious (likely mislabelled) example
#: scores high.
SUSPICION: dict[str, str] = {
    "confidence": "1 - confidence: the model rarely gives the label much probability",
    "variability": "variability: the ambiguous end (flipped labels mostly sit at LOW "
                   "variability, so an AUROC below 0.5 is expected and informative)",
    "correctness": "1 - correctness: the label is rarely predicted",
    "forgetfulness": "forgetfulness, never-learned examples above every count",
    "threshold_closeness": "threshold_closeness: confidence closest to 0.5",
    "aum": "-aum: a low (negative) margin for the label",
    "el2n": "el2n: a large early error norm",
    "aleatoric": "aleatoric: high Data-IQ aleatoric uncertainty",
    "mean_loss": "mean_loss: a high average loss",
}

_FLOAT_SCORES = ("confidence", "variability", "correctness", "threshold_closeness", "aum",
                 "el2n", "aleatoric", "mean_loss")
_VALUE_COLUMNS = ("p_gold", "pred", "margin", "loss", "el2n")


# --------------------------------------------------------------------------------------------
# plain-array scores ([N, R] in, [N] out)


def _matrix(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [examples, records], got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} needs at least one record per example")
    return arr


def _moments(p_gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population variance along records, in float64 (two-pass, like np.std)."""
    mean = p_gold.mean(axis=1, dtype=np.float64)
    dev = p_gold - mean[:, None]
    var = np.einsum("ij,ij->i", dev, dev) / p_gold.shape[1]
    return mean, var


def _ci_variability(var: np.ndarray, n_records: int, include_ci: bool) -> np.ndarray:
    if include_ci and n_records > 1:
        var = var + var * var / (n_records - 1)
    # include_ci at R = 1: var is exactly 0, the correction 0/0 is defined as 0.
    return np.sqrt(var)


def confidence(p_gold: Any) -> np.ndarray:
    """Mean gold-label probability per example. ``p_gold`` [N, R] -> [N] float64."""
    return _matrix(p_gold, "p_gold").mean(axis=1, dtype=np.float64)


def variability(p_gold: Any, *, include_ci: bool = False) -> np.ndarray:
    """Population std (ddof 0) of the gold-label probability; ``include_ci`` gives
    sqrt(v + v^2/(R-1)) (0 at R = 1). ``p_gold`` [N, R] -> [N] float64."""
    p = _matrix(p_gold, "p_gold")
    _, var = _moments(p)
    return _ci_variability(var, p.shape[1], include_ci)


def correct_matrix(pred: Any, gold: Any) -> np.ndarray:
    """``pred`` [N, R] == ``gold`` [N] per record -> [N, R] bool."""
    pred = _matrix(pred, "pred")
    gold = np.asarray(gold)
    if gold.shape != (pred.shape[0],):
        raise ValueError(f"gold must have shape ({pred.shape[0]},), got {gold.shape}")
    return pred == gold[:, None]


def correctness(correct: Any) -> np.ndarray:
    """Fraction of records predicted correctly. ``correct`` [N, R] bool -> [N] float64."""
    return _matrix(correct, "correct").mean(axis=1, dtype=np.float64)


def forgetfulness(correct: Any) -> np.ndarray:
    """Number of correct -> wrong transitions between consecutive records.
    ``correct`` [N, R] bool -> [N] int64 (0 for never-learned examples; see
    :func:`never_learned`)."""
    c = _matrix(correct, "correct").astype(bool, copy=False)
    return (c[:, :-1] & ~c[:, 1:]).sum(axis=1, dtype=np.int64)


def never_learned(correct: Any) -> np.ndarray:
    """True where no record is correct. ``correct`` [N, R] bool -> [N] bool."""
    return ~_matrix(correct, "correct").astype(bool, copy=False).any(axis=1)


def threshold_closeness(confidence: Any) -> np.ndarray:
    """confidence * (1 - confidence). ``confidence`` [N] -> [N] float64."""
    c = np.asarray(confidence, dtype=np.float64)
    return c * (1.0 - c)


def aum(margin: Any) -> np.ndarray:
    """Area under the margin: mean of (gold logit - largest other logit).
    ``margin`` [N, R] -> [N] float64."""
    return _matrix(margin, "margin").mean(axis=1, dtype=np.float64)


def el2n(el2n_values: Any) -> np.ndarray:
    """Mean error L2-norm ||softmax - onehot||_2 over the records given -- pass only the early
    epochs' records. ``el2n_values`` [N, R_early] -> [N] float64."""
    return _matrix(el2n_values, "el2n_values").mean(axis=1, dtype=np.float64)


def aleatoric(p_gold: Any) -> np.ndarray:
    """Data-IQ aleatoric uncertainty: mean p_gold * (1 - p_gold). ``p_gold`` [N, R] ->
    [N] float64."""
    p = _matrix(p_gold, "p_gold").astype(np.float64)
    return (p * (1.0 - p)).mean(axis=1)


def mean_loss(loss: Any) -> np.ndarray:
    """Mean cross-entropy loss. ``loss`` [N, R] -> [N] float64."""
    return _matrix(loss, "loss").mean(axis=1, dtype=np.float64)


def _grid_scores(
    p_gold: np.ndarray,
    pred: np.ndarray,
    gold: np.ndarray,
    margin: np.ndarray | None,
    loss: np.ndarray | None,
    el2n_values: np.ndarray | None,
    include_ci: bool,
) -> dict[str, np.ndarray]:
    """Every score for one block of examples ([n, R] arrays, possibly transposed views)."""
    n = p_gold.shape[0]
    conf, var = _moments(p_gold)
    # mean p(1-p) = conf - mean(p^2) = conf (1 - conf) - var: same value, no [n, R] temporaries
    ale = np.maximum(conf * (1.0 - conf) - var, 0.0)
    correct = correct_matrix(pred, gold)
    nan = np.full(n, np.nan)
    return {
        "confidence": conf,
        "variability": _ci_variability(var, p_gold.shape[1], include_ci),
        "correctness": correctness(correct),
        "forgetfulness": forgetfulness(correct),
        "never_learned": never_learned(correct),
        "threshold_closeness": threshold_closeness(conf),
        "aum": aum(margin) if margin is not None else nan,
        "el2n": el2n(el2n_values) if el2n_values is not None else nan,
        "aleatoric": ale,
        "mean_loss": mean_loss(loss) if loss is not None else nan,
    }


# --------------------------------------------------------------------------------------------
# options


def _positive_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer or null, not {value!r}")
    return int(value)


def region_spec(regions: Mapping[str, Any] | None = None) -> tuple[str, dict[str, float]]:
    """Validate a region mapping (``{"rule": ..., **params}``; None -> :data:`DEFAULT_REGIONS`)
    and return ``(rule, params)`` with defaults filled in."""
    spec = dict(DEFAULT_REGIONS if regions is None else regions)
    rule = spec.pop("rule", DEFAULT_REGIONS["rule"])
    if rule not in REGION_RULES:
        raise ConfigError(f"regions.rule must be one of {', '.join(REGION_RULES)}, not {rule!r}")
    defaults = REGION_RULES[rule]
    unknown = sorted(set(spec) - set(defaults))
    if unknown:
        raise ConfigError(
            f"regions: unknown parameter(s) {', '.join(unknown)} for rule {rule!r} "
            f"(expected {', '.join(defaults)})"
        )
    params: dict[str, float] = {}
    for key, default in defaults.items():
        value = spec.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                or not np.isfinite(value):
            raise ConfigError(f"regions.{key} must be a number, not {value!r}")
        params[key] = float(value)
    if rule == "threshold":
        if not 0.0 <= params["confidence"] <= 1.0:
            raise ConfigError(f"regions.confidence must lie in [0, 1], not "
                              f"{params['confidence']}")
        if params["variability"] < 0.0:
            raise ConfigError(f"regions.variability must be >= 0, not {params['variability']}")
    else:
        for key in ("ambiguous", "hard"):
            if not 0.0 <= params[key] <= 1.0:
                raise ConfigError(f"regions.{key} must be a fraction in [0, 1], not "
                                  f"{params[key]}")
        if params["ambiguous"] + params["hard"] > 1.0 + 1e-12:
            raise ConfigError(
                f"regions: ambiguous + hard = {params['ambiguous'] + params['hard']} exceeds 1"
            )
    return rule, params


def _region_codes(conf: np.ndarray, var: np.ndarray, ids: np.ndarray, rule: str,
                  params: Mapping[str, float]) -> np.ndarray:
    """int8 codes into :data:`REGIONS` (0 easy, 1 ambiguous, 2 hard)."""
    n = len(conf)
    if rule == "threshold":
        codes = np.where(conf >= params["confidence"], 0, 2).astype(np.int8)
        codes[var >= params["variability"]] = 1
        return codes
    codes = np.zeros(n, dtype=np.int8)
    k_amb = min(n, round(params["ambiguous"] * n))
    by_var = np.lexsort((ids, -var))  # highest variability first, ties by id
    codes[by_var[:k_amb]] = 1
    rest = by_var[k_amb:]
    k_hard = min(len(rest), round(params["hard"] * n))
    by_conf = rest[np.lexsort((ids[rest], conf[rest]))]  # lowest confidence first
    codes[by_conf[:k_hard]] = 2
    return codes


def assign_regions(scores: pd.DataFrame | Mapping[str, Any], rule: str = "threshold",
                   **params: float) -> np.ndarray:
    """Region of every example (vectorised) -> [N] object array of :data:`REGIONS` names.

    ``scores``: a DataFrame (or mapping of arrays) with ``confidence`` and ``variability`` [N]
    and, for tie-breaking in the quantile rule, ``id`` [N] (default: row position).

    Rules (parameters default to :data:`REGION_RULES`):

    * ``threshold`` (``confidence=0.5, variability=0.2``): ambiguous if variability >=
      ``variability``; otherwise easy-to-learn if confidence >= ``confidence``, else
      hard-to-learn. Each example's region depends on its own scores only. 0.5 is where the
      gold label becomes more likely than not; 0.2 is 40 % of the largest std a probability
      can have (0.5), which on the paper's maps separates the high-variability arch from the
      two low-variability ends.
    * ``quantile`` (``ambiguous=0.33, hard=0.33``): the round(ambiguous * N) examples of highest
      variability are ambiguous; of the others, the round(hard * N) of lowest confidence are
      hard-to-learn; the rest are easy-to-learn. Ties are broken by id (smaller id first).
      This is the paper's 33 % subsets turned into a partition.
    """
    rule, params = region_spec({"rule": rule, **params})
    conf = np.asarray(scores["confidence"], dtype=np.float64)
    var = np.asarray(scores["variability"], dtype=np.float64)
    if conf.shape != var.shape or conf.ndim != 1:
        raise ValueError("confidence and variability must be 1-D arrays of equal length")
    ids = (np.asarray(scores["id"]) if "id" in scores
           else np.arange(len(conf), dtype=np.int64))
    return np.array(REGIONS, dtype=object)[_region_codes(conf, var, ids, rule, params)]


# --------------------------------------------------------------------------------------------
# whole tables


def compute_scores(
    dynamics: pa.Table | str | os.PathLike,
    *,
    burn_out: int | None = None,
    include_ci: bool = False,
    el2n_epochs: int | None = EL2N_EPOCHS,
    regions: Mapping[str, Any] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> pd.DataFrame:
    """Cartography scores, one row per example, sorted by id.

    ``dynamics``: a dynamics table (any split) or the path of its Parquet file; paths written by
    :func:`datamap.dynamics.write_dynamics` are read ``chunk_rows`` rows at a time (epochs
    beyond ``burn_out`` are not even read). ``burn_out``: keep only the first K epochs (None:
    all). ``include_ci``: the paper code's corrected variability. ``el2n_epochs``: early epochs
    averaged by ``el2n`` (None: every kept epoch). ``regions``: ``{"rule": ..., **params}`` for
    :func:`assign_regions` (None: :data:`DEFAULT_REGIONS`).

    Returns a DataFrame with columns :data:`SCORE_COLUMNS`; ``attrs`` record the options and
    the number of records used. Raises :class:`~datamap.io.DataError` for a malformed table and
    :class:`~datamap.io.ConfigError` for bad options.
    """
    burn_out = _positive_int(burn_out, "burn_out")
    el2n_epochs = _positive_int(el2n_epochs, "el2n_epochs")
    rule, params = region_spec(regions)
    source = open_dynamics(dynamics)
    kept = source.n_epochs if burn_out is None else min(burn_out, source.n_epochs)
    early = kept if el2n_epochs is None else min(el2n_epochs, kept)
    rpe = source.records_per_epoch
    n = source.n_ids

    ids = np.empty(n, dtype=np.int64)
    gold = np.empty(n, dtype=np.int64)
    out = {name: np.empty(n, dtype=np.float64) for name in _FLOAT_SCORES}
    out["forgetfulness"] = np.empty(n, dtype=np.int64)
    out["never_learned"] = np.empty(n, dtype=bool)
    pos = 0
    for chunk in source.chunks(_VALUE_COLUMNS, epochs=kept, chunk_rows=chunk_rows):
        v = chunk.values
        m = len(chunk.ids)
        block = _grid_scores(
            v["p_gold"].T, v["pred"].T, chunk.gold, v["margin"].T, v["loss"].T,
            v["el2n"][: early * rpe].T, include_ci,
        )
        ids[pos:pos + m] = chunk.ids
        gold[pos:pos + m] = chunk.gold
        for name, values in block.items():
            out[name][pos:pos + m] = values
        pos += m
        del chunk, v, block  # release this chunk before the next one is read
    if pos != n:  # defensive: the sources guarantee it
        raise DataError(f"{source.source}: read {pos} ids, expected {n}")
    attrs = {
        "split": source.meta.split,
        "mode": source.meta.mode,
        "epochs": kept,
        "records_per_epoch": rpe,
        "records": kept * rpe,
        "burn_out": burn_out,
        "include_ci": bool(include_ci),
        "el2n_epochs": early,
        "regions": {"rule": rule, **params},
    }
    return _assemble(ids, gold, out, rule, params, attrs)


def _assemble(ids: np.ndarray, gold: np.ndarray, out: dict[str, np.ndarray], rule: str,
              params: Mapping[str, float], attrs: dict[str, Any]) -> pd.DataFrame:
    codes = _region_codes(out["confidence"], out["variability"], ids, rule, params)
    columns: dict[str, Any] = {"id": ids, "gold": gold}
    columns.update({name: out[name] for name in SCORES})
    columns["region"] = pd.Categorical.from_codes(codes, categories=list(REGIONS))
    df = pd.DataFrame(columns, copy=False)
    df.attrs.update(attrs)
    return df


def scores_from_arrays(
    p_gold: Any,
    pred: Any,
    gold: Any,
    *,
    margin: Any = None,
    loss: Any = None,
    el2n_values: Any = None,
    ids: Any = None,
    records_per_epoch: int = 1,
    burn_out: int | None = None,
    include_ci: bool = False,
    el2n_epochs: int | None = EL2N_EPOCHS,
    regions: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """:func:`compute_scores` for in-memory arrays (notebooks).

    ``p_gold``, ``pred`` and the optional ``margin``, ``loss``, ``el2n_values``: [N, R] with R =
    epochs x ``records_per_epoch`` in time order; ``gold`` [N]; ``ids`` [N] unique (default
    0..N-1). Scores whose input is missing are NaN. Same output as :func:`compute_scores`.
    """
    p = _matrix(p_gold, "p_gold")
    n, r = p.shape
    pred = _matrix(pred, "pred")
    gold = np.asarray(gold)
    rpe = _positive_int(records_per_epoch, "records_per_epoch")
    burn_out = _positive_int(burn_out, "burn_out")
    el2n_epochs = _positive_int(el2n_epochs, "el2n_epochs")
    rule, params = region_spec(regions)
    if r % rpe:
        raise ValueError(f"{r} records is not a whole number of epochs of {rpe} records")
    optional = {"margin": margin, "loss": loss, "el2n_values": el2n_values}
    arrays = {k: (None if v is None else _matrix(v, k)) for k, v in optional.items()}
    for name, arr in {"pred": pred, **arrays}.items():
        if arr is not None and arr.shape != (n, r):
            raise ValueError(f"{name} must have shape ({n}, {r}), got {arr.shape}")
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if ids.shape != (n,) or len(np.unique(ids)) != n:
        raise ValueError(f"ids must be {n} unique integers")
    n_epochs = r // rpe
    kept = n_epochs if burn_out is None else min(burn_out, n_epochs)
    early = kept if el2n_epochs is None else min(el2n_epochs, kept)
    keep = slice(0, kept * rpe)
    order = np.argsort(ids, kind="stable")
    p, pred, gold, ids = p[order, keep], pred[order, keep], gold[order], ids[order]
    for k, arr in arrays.items():
        if arr is not None:
            arrays[k] = arr[order, : (early if k == "el2n_values" else kept) * rpe]
    out = _grid_scores(p, pred, gold, arrays["margin"], arrays["loss"], arrays["el2n_values"],
                       include_ci)
    attrs = {"epochs": kept, "records_per_epoch": rpe, "records": kept * rpe,
             "burn_out": burn_out, "include_ci": bool(include_ci), "el2n_epochs": early,
             "regions": {"rule": rule, **params}}
    return _assemble(ids, gold.astype(np.int64), out, rule, params, attrs)


def scores_from_logits(logits: Any, gold: Any, **kwargs: Any) -> pd.DataFrame:
    """:func:`scores_from_arrays` from raw logits [N, R, K] and labels [N] (values derived as
    the recorder does: float32 softmax, argmax ties to the lowest class)."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 3:
        raise ValueError(f"logits must be [N, R, K], got shape {logits.shape}")
    n, r, k = logits.shape
    gold = np.asarray(gold, dtype=np.int64)
    v = per_example_values(logits.reshape(n * r, k), np.repeat(gold, r))
    grid = {name: values.reshape(n, r) for name, values in v.items()}
    return scores_from_arrays(grid["p_gold"], grid["pred"], gold, margin=grid["margin"],
                              loss=grid["loss"], el2n_values=grid["el2n"], **kwargs)


# --------------------------------------------------------------------------------------------
# ranking and noise detection


def suspicion(scores: pd.DataFrame, score: str) -> np.ndarray:
    """``score`` oriented so that a suspicious (likely mislabelled) example is high -> [N]
    float64. Orientations: :data:`SUSPICION`. For forgetfulness never-learned examples get
    max(forgetfulness) + 1, above every count."""
    if score not in SUSPICION:
        raise ConfigError(f"unknown score {score!r}; expected one of {', '.join(SUSPICION)}")
    values = np.asarray(scores[score], dtype=np.float64)
    if score in ("confidence", "correctness"):
        return 1.0 - values
    if score == "aum":
        return -values
    if score == "forgetfulness":
        never = np.asarray(scores["never_learned"], dtype=bool)
        top = values.max(initial=0.0) + 1.0
        return np.where(never, top, values)
    return values


def order_by(scores: pd.DataFrame, score: str, *, descending: bool = True) -> np.ndarray:
    """Row positions of ``scores`` ranked by one score column, ties broken by id (smaller
    first). For ``forgetfulness``, never-learned examples rank as the most forgettable (first
    when ``descending``, last otherwise)."""
    if score not in scores.columns:
        raise ConfigError(f"unknown score {score!r}; expected one of "
                          f"{', '.join(c for c in scores.columns if c not in ('id', 'region'))}")
    if score == "forgetfulness" and "never_learned" in scores.columns:
        key = suspicion(scores, "forgetfulness")
    else:
        key = np.asarray(scores[score], dtype=np.float64)
    ids = np.asarray(scores["id"])
    return np.lexsort((ids, -key if descending else key))


def noise_detection(scores: pd.DataFrame, is_flipped: Any) -> dict[str, Any]:
    """How well each score finds flipped labels, as JSON-ready plain numbers.

    ``scores``: the output of :func:`compute_scores`; ``is_flipped`` [N] bool aligned with its
    rows (True where the training label was flipped). Every score in
    :data:`DETECTION_SCORES` is oriented by :func:`suspicion` and evaluated with
    ``sklearn.metrics.roc_auc_score`` and ``average_precision_score`` (chance level: AUROC 0.5,
    AP = flip_rate). Regions report their size, flipped count, the share of all flipped labels
    they hold, and their own flip rate. Keys are stable::

        {"n_examples", "n_flipped", "flip_rate",
         "scores": {score: {"auroc", "average_precision"}},
         "regions": {easy_to_learn|ambiguous|hard_to_learn:
                     {"count", "flipped", "share_of_flipped", "flip_rate"}},
         "hard_to_learn_flipped", "hard_to_learn_share"}

    ``hard_to_learn_flipped`` is the number of flipped labels inside hard-to-learn and
    ``hard_to_learn_share`` their share of all flipped labels (the paper's claim: mislabelled
    examples gather there).

    Raises :class:`~datamap.io.DataError` unless there are both flipped and clean examples.
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
        "regions": {},
    }
    for name in DETECTION_SCORES:
        key = suspicion(scores, name)
        if not np.isfinite(key).all():
            raise DataError(f"score {name!r} has missing or infinite values")
        result["scores"][name] = {
            "auroc": float(roc_auc_score(flipped, key)),
            "average_precision": float(average_precision_score(flipped, key)),
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


# --------------------------------------------------------------------------------------------
# the scores table on disk

#: Arrow schema of ``scores.parquet``.
SCORES_SCHEMA = pa.schema(
    [("id", pa.int64()), ("gold", pa.int64())]
    + [(name, pa.float64()) for name in SCORES[:3]]
    + [("forgetfulness", pa.int64()), ("never_learned", pa.bool_())]
    + [(name, pa.float64()) for name in SCORES[5:]]
    + [("region", pa.string())]
)


def scores_table(scores: pd.DataFrame) -> pa.Table:
    """The scores DataFrame as an Arrow table with :data:`SCORES_SCHEMA` (region as plain
    strings) and the options of ``scores.attrs`` in its schema metadata (deterministic)."""
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise DataError(f"scores: missing column(s) {', '.join(missing)}")
    arrays = []
    for field in SCORES_SCHEMA:
        values = scores[field.name]
        if field.name == "region":
            arrays.append(pa.array(np.asarray(values, dtype=object), type=pa.string()))
        else:
            arrays.append(pa.array(values.to_numpy(), type=field.type))
    table = pa.Table.from_arrays(arrays, schema=SCORES_SCHEMA)
    meta = json.dumps(dict(scores.attrs), sort_keys=True, default=str).encode()
    return table.replace_schema_metadata({b"datamap": meta})


def read_scores(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``scores.parquet`` (checking its columns) back into the DataFrame form."""
    table = read_parquet(path, required=SCORE_COLUMNS, what="scores table",
                         hint="run the cartography stage (or `datamap scores`) to produce it")
    df = table.select(list(SCORE_COLUMNS)).to_pandas()
    df["region"] = pd.Categorical(df["region"].astype(object), categories=list(REGIONS))
    raw = (table.schema.metadata or {}).get(b"datamap")
    if raw:
        df.attrs.update(json.loads(raw))
    return df
