"""Cartography scores from training dynamics -- vectorised, chunked, no loop over examples.

What each score is -- its reduction, dtype, ranking and label-error orientation -- lives in the
registry (:mod:`datamap.score_registry`); this module runs the registered reductions over a
dynamics table and uses the results:

* :func:`compute_scores` takes a dynamics table (an Arrow table or the path of a Parquet file
  written by :func:`datamap.dynamics.write_dynamics`) and returns one row per example: ``id``,
  ``gold``, every registered score (in registration order, each with its registered dtype) and
  ``region``. Paths are read a range of ids at a time, so memory is bounded by the output plus
  one chunk. :func:`scores_from_arrays` / :func:`scores_from_logits` do the same for in-memory
  arrays (notebooks).
* :func:`assign_regions`: easy-to-learn / ambiguous / hard-to-learn by a configurable rule.
* :func:`noise_detection`: with injected label noise, how well each score that has a
  label-error orientation finds the flipped labels (the others are listed with the reason).
* :func:`scores_table` / :func:`read_scores`: the ``scores.parquet`` file, typed by name.

The built-in scores (R records per example after burn-out; every mean is over those R records):

======================== ====================================================================
``confidence``           mean p_gold
``variability``          population std of p_gold (ddof 0); ``include_ci=True`` gives the paper
                         code's sqrt(v + v^2 / (R - 1)) with v the population variance (0 at
                         R = 1, where the reference returns NaN)
``correctness``          fraction of records with pred == gold (the reference stores the count;
                         the paper plots this fraction)
``forgetfulness``        number of records t >= 1 with record t-1 correct and record t wrong
                         (Toneva et al. 2019). The reference returns the sentinel 1000 for
                         examples never predicted correctly; we keep the count (0 for them) and
                         set ``never_learned``; rankings put never-learned examples first.
``never_learned``        no kept record is correct
``threshold_closeness``  confidence * (1 - confidence) (Active Bias, Chang et al. 2017)
``aum``                  mean margin, margin = gold logit - largest other logit (Pleiss et al.)
``el2n``                 single-run EL2N: mean of ||softmax - onehot||_2 over the first
                         ``el2n_epochs`` kept epochs of this one run (Paul et al. 2021 average
                         one early epoch over several independent runs instead; see
                         :func:`datamap.score_registry.el2n`)
``aleatoric``            mean p_gold * (1 - p_gold) (Data-IQ, Seedat et al. 2022)
``mean_loss``            mean cross-entropy loss
``region``               see :func:`assign_regions`
======================== ====================================================================

``confidence``, ``variability`` (both forms), ``correctness`` (as count / R),
``forgetfulness`` and ``threshold_closeness`` agree with ``compute_train_dy_metrics`` of
allenai/cartography to 1e-6 (tests/test_scores.py checks it against a loop oracle).

Burn-out (``burn_out=K``) keeps the records of the first K epochs; K at or above the number of
recorded epochs keeps everything (as the reference does). ``el2n_epochs`` above the kept epochs
uses every kept epoch; ``None`` means every kept epoch.
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
from datamap.score_registry import (
    EL2N_EPOCHS,
    OPTIONAL_INPUTS,
    Score,
    ScoreInputs,
    all_scores,
    as_records,
    suspicion,
)

EASY = "easy-to-learn"
AMBIGUOUS = "ambiguous"
HARD = "hard-to-learn"
#: Region names, in the order of the categorical ``region`` column.
REGIONS = (EASY, AMBIGUOUS, HARD)
#: Region name -> identifier-friendly key (JSON metrics, selection specs).
REGION_KEYS = {EASY: "easy_to_learn", AMBIGUOUS: "ambiguous", HARD: "hard_to_learn"}

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


def score_columns() -> tuple[str, ...]:
    """Columns of the scores table, in order: id, gold, the registered scores, region."""
    return ("id", "gold", *(s.name for s in all_scores()), "region")


def _reduce_block(scores: tuple[Score, ...], inputs: ScoreInputs) -> dict[str, np.ndarray]:
    """Every score for one block of examples; a score whose input was not recorded is NaN."""
    n = len(inputs.gold)
    out = {}
    for score in scores:
        if any(getattr(inputs, need) is None for need in score.needs):
            if score.dtype != "float64":
                raise ValueError(f"score {score.name!r} needs {', '.join(score.needs)}")
            out[score.name] = np.full(n, np.nan)
        else:
            out[score.name] = score.reduce(inputs)
    return out


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

    Returns a DataFrame with columns :func:`score_columns` (each registered score with its
    registered dtype); ``attrs`` record the options and the number of records used. Raises
    :class:`~datamap.io.DataError` for a malformed table and :class:`~datamap.io.ConfigError`
    for bad options.
    """
    burn_out = _positive_int(burn_out, "burn_out")
    el2n_epochs = _positive_int(el2n_epochs, "el2n_epochs")
    rule, params = region_spec(regions)
    source = open_dynamics(dynamics)
    kept = source.n_epochs if burn_out is None else min(burn_out, source.n_epochs)
    early = kept if el2n_epochs is None else min(el2n_epochs, kept)
    rpe = source.records_per_epoch
    n = source.n_ids

    scores = all_scores()  # one snapshot of the registry for the whole table
    needed = [c for c in OPTIONAL_INPUTS if any(c in s.needs for s in scores)]
    ids = np.empty(n, dtype=np.int64)
    gold = np.empty(n, dtype=np.int64)
    out = {s.name: np.empty(n, dtype=s.dtype) for s in scores}
    pos = 0
    for chunk in source.chunks(["p_gold", "pred", *needed], epochs=kept, chunk_rows=chunk_rows):
        v = chunk.values
        m = len(chunk.ids)
        inputs = ScoreInputs(
            v["p_gold"].T, v["pred"].T, chunk.gold, include_ci=include_ci,
            # [slots, n] grids, epoch-major: the first `early` epochs are the first rows
            **{c: v[c][: early * rpe].T if c == "el2n" else v[c].T for c in needed},
        )
        block = _reduce_block(scores, inputs)
        ids[pos:pos + m] = chunk.ids
        gold[pos:pos + m] = chunk.gold
        for name, values in block.items():
            out[name][pos:pos + m] = values
        pos += m
        del chunk, v, inputs, block  # release this chunk before the next one is read
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
    columns.update(out)
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
    p = as_records(p_gold, "p_gold")
    n, r = p.shape
    pred = as_records(pred, "pred")
    gold = np.asarray(gold)
    rpe = _positive_int(records_per_epoch, "records_per_epoch")
    burn_out = _positive_int(burn_out, "burn_out")
    el2n_epochs = _positive_int(el2n_epochs, "el2n_epochs")
    rule, params = region_spec(regions)
    if r % rpe:
        raise ValueError(f"{r} records is not a whole number of epochs of {rpe} records")
    optional = {"margin": margin, "loss": loss, "el2n_values": el2n_values}
    arrays = {k: (None if v is None else as_records(v, k)) for k, v in optional.items()}
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
    inputs = ScoreInputs(p, pred, gold, margin=arrays["margin"], loss=arrays["loss"],
                         el2n=arrays["el2n_values"], include_ci=include_ci)
    out = _reduce_block(all_scores(), inputs)
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
# noise detection


def noise_detection(scores: pd.DataFrame, is_flipped: Any) -> dict[str, Any]:
    """How well each score finds flipped labels, as JSON-ready plain values.

    ``scores``: the output of :func:`compute_scores`; ``is_flipped`` [N] bool aligned with its
    rows (True where the training label was flipped). Every registered score with a label-error
    orientation (``Score.suspicious``) is oriented by
    :func:`~datamap.score_registry.suspicion` -- suspicious high -- and evaluated with
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


# --------------------------------------------------------------------------------------------
# the scores table on disk

_ARROW_TYPES = {"float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_()}


def scores_schema() -> pa.Schema:
    """Arrow schema of ``scores.parquet``: id, gold, every registered score typed by its
    registered dtype, region (strings)."""
    return pa.schema([("id", pa.int64()), ("gold", pa.int64())]
                     + [(s.name, _ARROW_TYPES[s.dtype]) for s in all_scores()]
                     + [("region", pa.string())])


def scores_table(scores: pd.DataFrame) -> pa.Table:
    """The scores DataFrame as an Arrow table with :func:`scores_schema` (region as plain
    strings) and the options of ``scores.attrs`` in its schema metadata (deterministic)."""
    schema = scores_schema()
    missing = [c for c in schema.names if c not in scores.columns]
    if missing:
        raise DataError(f"scores: missing column(s) {', '.join(missing)}")
    arrays = []
    for field in schema:
        values = scores[field.name]
        if field.name == "region":
            arrays.append(pa.array(np.asarray(values, dtype=object), type=pa.string()))
        else:
            arrays.append(pa.array(values.to_numpy(), type=field.type))
    table = pa.Table.from_arrays(arrays, schema=schema)
    meta = json.dumps(dict(scores.attrs), sort_keys=True, default=str).encode()
    return table.replace_schema_metadata({b"datamap": meta})


def read_scores(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``scores.parquet`` back into the DataFrame form, checking that it has every
    registered score with its registered type."""
    hint = "run the cartography stage (or `datamap scores`) to produce it"
    schema = scores_schema()
    table = read_parquet(path, required=schema.names, what="scores table", hint=hint)
    wrong = [f"{f.name} is {table.schema.field(f.name).type}, expected {f.type}"
             for f in schema if not table.schema.field(f.name).type.equals(f.type)]
    if wrong:
        raise DataError(f"{path}: scores table has column(s) of the wrong type "
                        f"({'; '.join(wrong)}); {hint} again")
    df = table.select(schema.names).to_pandas()
    df["region"] = pd.Categorical(df["region"].astype(object), categories=list(REGIONS))
    raw = (table.schema.metadata or {}).get(b"datamap")
    if raw:
        df.attrs.update(json.loads(raw))
    return df
