"""Region ranking and mixture selection: which training examples each subset keeps.

A selection spec maps criteria to fractions of the *full* training set, drawn in the order
written and without replacement (the paper's "seed" format)::

    {hard_to_learn: 0.0, easy_to_learn: 0.3, ambiguous: 0.1, random: 0.6}

Criteria:

* ``ambiguous``      highest ``variability`` first
* ``hard_to_learn``  lowest ``confidence`` first
* ``easy_to_learn``  highest ``confidence`` first
* ``random``         a seeded permutation
* any numeric score column, e.g. ``aum`` (highest first) or ``low_aum`` (lowest first);
  ``forgetfulness`` ranks never-learned examples as the most forgettable.

Ties are broken by ascending ``id``, so a ranking never depends on row order. Group sizes use
cumulative rounding, k_i = round(F_i * N) - round(F_{i-1} * N) with F_i the running sum of
fractions: each k_i is within one of f_i * N (equal to round(f * N) for a single criterion)
and the groups never add up to more than N.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from datamap.io import (
    ConfigError,
    DataError,
    atomic_path,
    read_parquet,
    write_json,
    write_parquet,
)

log = logging.getLogger(__name__)

#: Named regions -> (score column, ascending?).
REGION_CRITERIA: dict[str, tuple[str, bool]] = {
    "ambiguous": ("variability", False),
    "hard_to_learn": ("confidence", True),
    "easy_to_learn": ("confidence", False),
}
RANDOM = "random"
#: Score columns of the cartography stage's scores table that a spec may rank by.
SCORE_COLUMNS = (
    "confidence", "variability", "correctness", "forgetfulness", "threshold_closeness",
    "aum", "el2n", "aleatoric", "mean_loss",
)
_NOT_RANKABLE = {"id", "gold", "region", "never_learned"}
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Criterion:
    name: str  # as written in the spec
    column: str | None  # None for random
    ascending: bool
    fraction: float


def parse_spec(
    spec_name: str, spec: Mapping[str, object], columns: list[str] | None = None
) -> list[Criterion]:
    """Validate a spec and return its criteria in order.

    ``columns`` are the score columns available for ranking (default :data:`SCORE_COLUMNS`).
    """
    key = f"selection.specs.{spec_name}"
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(f"{key} must map criteria to fractions, e.g. {{ambiguous: 0.33}}")
    criteria: list[Criterion] = []
    total = 0.0
    for name, fraction in spec.items():
        name = str(name)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise ConfigError(f"{key}.{name} must be a fraction in [0, 1], got {fraction!r}")
        fraction = float(fraction)
        if not np.isfinite(fraction) or fraction < 0 or fraction > 1:
            raise ConfigError(f"{key}.{name} must be a fraction in [0, 1], got {fraction}")
        total += fraction
        if name == RANDOM:
            criteria.append(Criterion(name, None, True, fraction))
        elif name in REGION_CRITERIA:
            column, ascending = REGION_CRITERIA[name]
            criteria.append(Criterion(name, column, ascending, fraction))
        else:
            column, ascending = (name[4:], True) if name.startswith("low_") else (name, False)
            known = [c for c in (columns or SCORE_COLUMNS) if c not in _NOT_RANKABLE]
            if column not in known:
                names = sorted([*REGION_CRITERIA, RANDOM, *known])
                raise ConfigError(
                    f"{key}.{name}: unknown criterion; use one of {', '.join(names)} "
                    "(prefix a score with low_ to rank lowest first)"
                )
            criteria.append(Criterion(name, column, ascending, fraction))
    if total > 1 + _TOLERANCE:
        raise ConfigError(
            f"{key}: fractions sum to {total:.4g} > 1; they are shares of the full training set "
            "drawn without replacement"
        )
    return criteria


def group_sizes(fractions: list[float], n: int) -> list[int]:
    """Cumulative rounding of ``fractions`` of ``n`` (see the module docstring)."""
    bounds = np.minimum(np.round(np.cumsum([0.0, *fractions]) * n).astype(np.int64), n)
    return np.diff(bounds).tolist()


def rank_ids(scores: pd.DataFrame, column: str, ascending: bool) -> np.ndarray:
    """Ids ordered by ``column`` (ties by ascending id), with the ranking rule of
    :func:`datamap.scores.order_by`: never-learned examples count as the most forgettable."""
    from datamap.scores import order_by

    if column not in scores.columns:
        raise DataError(f"scores have no column {column!r}; rerun the cartography stage")
    if scores[column].isna().any():
        raise DataError(f"scores column {column!r} has NaN values; cannot rank by it")
    positions = order_by(scores, column, descending=not ascending)
    return scores["id"].to_numpy(np.int64)[positions]


def select(
    scores: pd.DataFrame, spec_name: str, spec: Mapping[str, object], seed: int
) -> pd.DataFrame:
    """Draw the subset described by ``spec``.

    Returns one row per selected example, sorted by id: ``id``, ``group`` (the criterion that
    drew it) and ``rank`` (its position within that group, 0 = first drawn).
    """
    criteria = parse_spec(spec_name, spec, list(scores.columns))
    n = len(scores)
    if n == 0:
        raise DataError("the scores table is empty; nothing to select from")
    taken = np.zeros(0, dtype=np.int64)
    parts = []
    for criterion, k in zip(criteria, group_sizes([c.fraction for c in criteria], n),
                            strict=True):
        if k == 0:
            continue
        if criterion.column is None:
            remaining = np.setdiff1d(scores["id"].to_numpy(np.int64), taken)  # sorted
            order = np.random.default_rng(seed).permutation(remaining)
        else:
            ranked = rank_ids(scores, criterion.column, criterion.ascending)
            order = ranked[~np.isin(ranked, taken)]
        chosen = order[:k]
        taken = np.concatenate([taken, chosen])
        parts.append(pd.DataFrame({"id": chosen, "group": criterion.name,
                                   "rank": np.arange(len(chosen), dtype=np.int64)}))
    if not parts:
        raise ConfigError(
            f"selection.specs.{spec_name} selects no examples (all fractions round to 0 of "
            f"{n}); give it a positive fraction"
        )
    subset = pd.concat(parts, ignore_index=True).sort_values("id", kind="stable")
    return subset.reset_index(drop=True)


def subset_summary(
    subset: pd.DataFrame, scores: pd.DataFrame, spec_name: str, spec: Mapping[str, object],
    flipped_ids: np.ndarray | None = None,
) -> dict:
    """Counts that describe a subset: per group, per region, per class, and label noise."""
    chosen = scores[scores["id"].isin(subset["id"])]
    summary = {
        "spec": spec_name,
        "criteria": {str(k): float(v) for k, v in spec.items()},
        "n_train": int(len(scores)),
        "n_selected": int(len(subset)),
        "fraction": round(len(subset) / len(scores), 6),
        "groups": {str(k): int(v) for k, v in subset["group"].value_counts().sort_index().items()},
        "classes": {str(k): int(v) for k, v in chosen["gold"].value_counts().sort_index().items()},
    }
    if "region" in chosen.columns:
        summary["regions"] = {str(k): int(v)
                              for k, v in chosen["region"].value_counts().sort_index().items()}
    if flipped_ids is not None:
        n_flipped = int(np.isin(subset["id"].to_numpy(), flipped_ids).sum())
        summary["flipped"] = n_flipped
        summary["flipped_share"] = round(n_flipped / max(len(subset), 1), 6)
    return summary


# --------------------------------------------------------------------------------------------
# stage I/O


def write_subset(
    scores_path: str | os.PathLike,
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    spec_name: str,
    spec: Mapping[str, object],
    seed: int,
) -> dict:
    """Select one subset and write ``ids.parquet`` and ``summary.json`` into ``out_dir``."""
    from datamap.data.prepared import read_split

    spec = dict(spec)
    parse_spec(spec_name, spec)  # config errors first, before any file is read
    scores = read_parquet(scores_path, required=("id", "gold", "confidence", "variability"),
                          what="scores table", hint="run the cartography stage first").to_pandas()
    subset = select(scores, spec_name, spec, seed)
    train = read_split(prepared_dir, "train")
    flipped = None
    if train.clean_labels is not None:
        flipped = train.ids[train.labels != train.clean_labels]
    summary = subset_summary(subset, scores, spec_name, spec, flipped)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        write_parquet(tmp / "ids.parquet", pa.Table.from_pandas(subset, preserve_index=False)
                      .replace_schema_metadata(None))
        write_json(tmp / "summary.json", summary)
    log.info("select %s: %d of %d examples %s", spec_name, summary["n_selected"],
             summary["n_train"], summary["groups"])
    return summary


def read_subset_ids(subset_dir: str | os.PathLike) -> np.ndarray:
    """The selected ids of one subset directory (written by :func:`write_subset`)."""
    table = read_parquet(Path(subset_dir) / "ids.parquet", required=("id",), what="subset ids",
                         hint="run the select stage first")
    return table.column("id").to_numpy()
