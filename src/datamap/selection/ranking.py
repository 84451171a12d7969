"""Region ranking and mixture selection: which training examples each subset keeps.

A selection spec is one of two kinds.

**Fractions** map criteria to fractions of the *full* training set, drawn in the order written
and without replacement (the paper's "seed" format)::

    {hard_to_learn: 0.0, easy_to_learn: 0.3, ambiguous: 0.1, random: 0.6}

Criteria come from the score registry (:mod:`datamap.scoring.registry`):

* ``ambiguous``      highest ``variability`` first
* ``hard_to_learn``  lowest ``confidence`` first
* ``easy_to_learn``  highest ``confidence`` first
* any registered score, e.g. ``aum`` (the end its ``rank_first`` names, highest for every
  built-in score) or ``low_aum`` (lowest first); ``forgetfulness`` ranks never-learned examples
  as the most forgettable
* ``random``         a seeded permutation

Ties are broken by ascending ``id``, so a ranking never depends on row order. Group sizes use
cumulative rounding, k_i = round(F_i * N) - round(F_{i-1} * N) with F_i the running sum of
fractions: each k_i is within one of f_i * N (equal to round(f * N) for a single criterion)
and the groups never add up to more than N.

**Stratified** (``selection.stratify``): each criterion's k_i is shared out over the classes in
proportion to their sizes in the full training set (largest remainders, ties to the lower
class), and each class's share is the top of the criterion's ranking among that class's
remaining examples. A class with too few remaining examples gives its shortfall back to the
ranking as a whole, so the group still has k_i examples. Classes are the given (training)
labels, the ones the retrained model learns from.

**A file of ids**, ``{ids_file: data/selections/NAME.csv}``: exactly the examples listed in a
CSV or Parquet file with an integer ``id`` column (the interactive data map's lasso export).
The file must lie under ``data/selections/`` -- the select stages depend on that directory, so
DVC reruns them when a file there changes -- and every id must be in the training split.
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

from datamap.errors import ConfigError, DataError
from datamap.io import read_parquet
from datamap.scoring.registry import criterion_names, order_by, resolve_criterion
from datamap.selection.subsets import write_subset_dir

log = logging.getLogger(__name__)

RANDOM = "random"
#: The key of a spec given as a file of ids.
IDS_FILE = "ids_file"
#: Where ids files live, relative to the repository root (a dependency of the select stages).
SELECTIONS_DIR = Path("data") / "selections"
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Criterion:
    name: str  # as written in the spec
    column: str | None  # None for random
    ascending: bool
    fraction: float


def spec_key(spec_name: str, sweep: bool = False) -> str:
    """The config key that defines a spec, for messages: ``selection.specs.NAME``, or the
    sweep for a spec it generated."""
    return f"selection.sweep (spec {spec_name})" if sweep else f"selection.specs.{spec_name}"


def parse_spec(spec_name: str, spec: Mapping[str, object],
               key: str | None = None) -> list[Criterion]:
    """Validate a fractions spec and return its criteria in order (``key``: where the spec is
    defined, for messages; default ``selection.specs.<spec_name>``)."""
    key = key or spec_key(spec_name)
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(f"{key} must map criteria to fractions, e.g. {{ambiguous: 0.33}}, "
                          f"or name a file of ids, e.g. {{ids_file: {SELECTIONS_DIR}/x.csv}}")
    if IDS_FILE in spec:
        others = ", ".join(str(k) for k in spec if k != IDS_FILE)
        raise ConfigError(f"{key}: ids_file is a spec of its own and cannot be mixed with "
                          f"fractions ({others}); move them to a second spec")
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
            continue
        resolved = resolve_criterion(name)
        if resolved is None:
            raise ConfigError(
                f"{key}.{name}: unknown criterion; use one of "
                f"{', '.join(sorted([RANDOM, *criterion_names()]))}, or {IDS_FILE} alone"
            )
        score, descending = resolved
        criteria.append(Criterion(name, score.name, not descending, fraction))
    if total > 1 + _TOLERANCE:
        raise ConfigError(
            f"{key}: fractions sum to {total:.4g} > 1; they are shares of the full training set "
            "drawn without replacement"
        )
    return criteria


# --------------------------------------------------------------------------------------------
# a spec given as a file of ids


def ids_file_path(spec_name: str, spec: Mapping[str, object],
                  root: str | os.PathLike = ".") -> Path | None:
    """The file of an ``{ids_file: PATH}`` spec (PATH relative to the repository ``root``),
    checked to lie under :data:`SELECTIONS_DIR`; None for a fractions spec."""
    if not isinstance(spec, Mapping) or list(spec) != [IDS_FILE]:
        return None
    key = ids_file_key(spec_name)
    value = spec[IDS_FILE]
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise ConfigError(f"{key} must be a path such as {SELECTIONS_DIR}/{spec_name}.csv, "
                          f"got {value!r}")
    path = Path(root) / value
    allowed = (Path(root) / SELECTIONS_DIR).resolve()
    if not path.resolve().is_relative_to(allowed):
        raise ConfigError(
            f"{key}: {value} is outside {SELECTIONS_DIR}/; move the file into "
            f"{SELECTIONS_DIR}/ (the select stages depend on that directory, so DVC tracks it) "
            "and point ids_file at it"
        )
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"{key}: {value} must be a .csv or .parquet file with an integer id "
                          "column")
    return path


def ids_file_key(spec_name: str) -> str:
    """The config key naming spec ``spec_name``'s file of ids, for messages."""
    return f"selection.specs.{spec_name}.{IDS_FILE}"


def read_ids_file(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """The ids listed in a CSV or Parquet file with an integer ``id`` column, in file order,
    checked to be present, integer, unique and at least one. ``key``: the config key that
    names the file, for messages."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: ids file not found{f' (named by {key})' if key else ''}; "
                        "save the selection there (a CSV or Parquet file with one integer "
                        "column id) or correct the path")
    fix = "export the selection again (a CSV or Parquet file with one integer column id)"
    read = _parquet_ids if path.suffix.lower() == ".parquet" else _csv_ids
    ids = read(path, fix)
    if len(ids) == 0:
        raise DataError(f"{path}: the file lists no ids; select at least one example")
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = int(values[counts > 1][0])
        raise DataError(f"{path}: id {dup} is listed {int(counts[counts > 1][0])} times "
                        f"({int((counts > 1).sum())} duplicated id(s)); list each id once")
    return ids


def _no_id_column(path: Path, names: list[str], fix: str) -> DataError:
    return DataError(f"{path}: no column named id (has {', '.join(names) or 'none'}); {fix}")


def _empty_ids(path: Path, count: int, fix: str) -> DataError:
    return DataError(f"{path}: column id has {count} empty value(s); {fix}")


def _parquet_ids(path: Path, fix: str) -> np.ndarray:
    table = read_parquet(path, what="ids file", hint=fix)
    if "id" not in table.column_names:
        raise _no_id_column(path, table.column_names, fix)
    column = table.column("id")
    if not pa.types.is_integer(column.type):
        raise DataError(f"{path}: column id holds {column.type}, not integers; {fix}")
    if column.null_count:
        raise _empty_ids(path, column.null_count, fix)
    try:
        return column.cast(pa.int64()).to_numpy()  # a safe cast: refuses uint64 overflow
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: column id holds a value outside the 64-bit integer range; "
                        f"{fix}") from exc


def _csv_ids(path: Path, fix: str) -> np.ndarray:
    try:
        # as text: no silent float conversion of a column with gaps or decimals
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; {fix}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc}); {fix}") from exc
    if "id" not in frame.columns:
        raise _no_id_column(path, [str(c) for c in frame.columns], fix)
    text = frame["id"].str.strip()
    if (text == "").any():
        raise _empty_ids(path, int((text == "").sum()), fix)
    bad = ~text.str.fullmatch(r"[+-]?\d+")
    if bad.any():
        raise DataError(f"{path}: column id holds {text[bad].iloc[0]!r} (row "
                        f"{int(np.flatnonzero(bad)[0]) + 2}), not an integer; {fix}")
    try:
        return np.array([int(v) for v in text], dtype=np.int64)
    except OverflowError as exc:
        raise DataError(f"{path}: column id holds a value outside the 64-bit integer range; "
                        f"{fix}") from exc


def select_ids(scores: pd.DataFrame, ids: np.ndarray, source: str | os.PathLike) -> pd.DataFrame:
    """The subset listed in an ids file: one row per id, sorted by id, group ``ids_file`` and
    ``rank`` = position in the file. Refuses ids outside the training split (a stale file)."""
    known = scores["id"].to_numpy(np.int64)
    unknown = np.setdiff1d(ids, known)
    if len(unknown):
        raise DataError(
            f"{source}: {len(unknown)} of {len(ids)} id(s) are not in the training split (e.g. "
            f"{unknown[:5].tolist()}); the selection is stale: export it again from the current "
            "data map"
        )
    subset = pd.DataFrame({"id": ids, "group": IDS_FILE,
                           "rank": np.arange(len(ids), dtype=np.int64)})
    return subset.sort_values("id", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# fractions


def group_sizes(fractions: list[float], n: int) -> list[int]:
    """Cumulative rounding of ``fractions`` of ``n`` (see the module docstring)."""
    bounds = np.minimum(np.round(np.cumsum([0.0, *fractions]) * n).astype(np.int64), n)
    return np.diff(bounds).tolist()


def rank_ids(scores: pd.DataFrame, column: str, ascending: bool) -> np.ndarray:
    """Ids ordered by the registered score ``column`` (ties by ascending id), with the ranking
    rule of :func:`datamap.scoring.registry.order_by`: never-learned examples count as the most
    forgettable."""
    if column not in scores.columns:
        raise DataError(f"scores have no column {column!r}; rerun the cartography stage")
    if scores[column].isna().any():
        raise DataError(f"scores column {column!r} has NaN values; cannot rank by it")
    positions = order_by(scores, column, descending=not ascending)
    return scores["id"].to_numpy(np.int64)[positions]


def class_quotas(k: int, class_sizes: np.ndarray) -> np.ndarray:
    """``k`` shared out over classes in proportion to ``class_sizes`` (largest remainders, ties
    to the lower class index); sums to ``k``."""
    sizes = np.asarray(class_sizes, dtype=np.float64)
    exact = k * sizes / sizes.sum()
    quotas = np.floor(exact).astype(np.int64)
    short = k - int(quotas.sum())
    if short:
        by_remainder = np.lexsort((np.arange(len(sizes)), -(exact - quotas)))
        quotas[by_remainder[:short]] += 1
    return quotas


def take(order: np.ndarray, k: int, labels: pd.Series | None = None,
         class_sizes: pd.Series | None = None) -> np.ndarray:
    """The first ``k`` ids of ``order`` (candidates, best first); with ``labels`` (id -> class)
    and ``class_sizes`` (class -> size in the full set), stratified: each class's quota
    (:func:`class_quotas`) from the top of its own candidates, any shortfall filled from the
    top of the rest. Returned in ``order``'s order."""
    if labels is None:
        return order[:k]
    classes = labels.reindex(order).to_numpy()
    picked = np.zeros(len(order), dtype=bool)
    for label, quota in zip(class_sizes.index, class_quotas(k, class_sizes.to_numpy()),
                            strict=True):
        positions = np.flatnonzero(classes == label)[:quota]
        picked[positions] = True
    shortfall = k - int(picked.sum())
    if shortfall > 0:
        picked[np.flatnonzero(~picked)[:shortfall]] = True
    return order[picked]


def select(
    scores: pd.DataFrame, spec_name: str, spec: Mapping[str, object], seed: int,
    root: str | os.PathLike = ".", *, stratify: bool = False, key: str | None = None,
) -> pd.DataFrame:
    """Draw the subset described by ``spec`` (fractions, or an ids file relative to the
    repository ``root``); ``stratify``: per class, in proportion to the class sizes (by the
    ``gold`` column); ``key``: where the spec is defined, for messages.

    Returns one row per selected example, sorted by id: ``id``, ``group`` (the criterion that
    drew it, ``ids_file`` for a file) and ``rank`` (its position within that group, 0 = first
    drawn or listed).
    """
    ids_path = ids_file_path(spec_name, spec, root)
    if ids_path is not None:
        return select_ids(scores, read_ids_file(ids_path, ids_file_key(spec_name)), ids_path)
    criteria = parse_spec(spec_name, spec, key)
    n = len(scores)
    if n == 0:
        raise DataError("the scores table is empty; nothing to select from")
    labels = class_sizes = None
    if stratify:
        labels = pd.Series(scores["gold"].to_numpy(), index=scores["id"].to_numpy(np.int64))
        class_sizes = labels.value_counts().sort_index()
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
        chosen = take(order, k, labels, class_sizes)
        taken = np.concatenate([taken, chosen])
        parts.append(pd.DataFrame({"id": chosen, "group": criterion.name,
                                   "rank": np.arange(len(chosen), dtype=np.int64)}))
    if not parts:
        raise ConfigError(
            f"{key or spec_key(spec_name)} selects no examples (all fractions round to 0 of "
            f"{n}); give it a positive fraction"
        )
    subset = pd.concat(parts, ignore_index=True).sort_values("id", kind="stable")
    return subset.reset_index(drop=True)


def subset_summary(
    subset: pd.DataFrame, scores: pd.DataFrame, spec_name: str, spec: Mapping[str, object],
    flipped_ids: np.ndarray | None = None, class_names: list[str] | None = None,
    stratified: bool = False,
) -> dict:
    """Counts that describe a subset: per group, per region, per class, the classes it lacks
    (by name, from ``class_names``; by index without) and label noise."""
    chosen = scores[scores["id"].isin(subset["id"])]
    names = class_names or [str(c) for c in sorted(scores["gold"].unique())]
    present = set(chosen["gold"].astype(int))
    summary = {
        "spec": spec_name,
        "criteria": {str(k): (str(v) if k == IDS_FILE else float(v)) for k, v in spec.items()},
        "stratified": bool(stratified),
        "n_train": int(len(scores)),
        "n_selected": int(len(subset)),
        "fraction": round(len(subset) / len(scores), 6),
        "groups": {str(k): int(v) for k, v in subset["group"].value_counts().sort_index().items()},
        "classes": {str(k): int(v) for k, v in chosen["gold"].value_counts().sort_index().items()},
        "missing_classes": [name for index, name in enumerate(names) if index not in present],
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
    root: str | os.PathLike = ".",
    *,
    stratify: bool = False,
    key: str | None = None,
) -> dict:
    """Select one subset and write ``ids.parquet`` and ``summary.json`` into ``out_dir``
    (``root``: the repository, which ids files are relative to; ``key``: where the spec is
    defined, for messages)."""
    from datamap.data.splits import read_meta, read_split

    spec = dict(spec)
    # the spec's own errors first, before the pipeline's inputs are read
    ids_path = ids_file_path(spec_name, spec, root)
    if ids_path is None:
        parse_spec(spec_name, spec, key)
    else:
        listed = read_ids_file(ids_path, ids_file_key(spec_name))
    scores = read_parquet(scores_path, required=("id", "gold"), what="scores table",
                          hint="run the cartography stage first").to_pandas()
    if ids_path is None:
        subset = select(scores, spec_name, spec, seed, stratify=stratify, key=key)
    else:
        subset = select_ids(scores, listed, ids_path)
    train = read_split(prepared_dir, "train")
    flipped = None
    if train.clean_labels is not None:
        flipped = train.ids[train.labels != train.clean_labels]
    summary = subset_summary(subset, scores, spec_name, spec, flipped,
                             class_names=list(read_meta(prepared_dir)["class_names"]),
                             stratified=stratify and ids_path is None)
    write_subset_dir(out_dir, subset, summary)
    log.info("select %s: %d of %d examples %s", spec_name, summary["n_selected"],
             summary["n_train"], summary["groups"])
    if summary["missing_classes"]:
        log.warning("select %s: no example of class(es) %s; the retrained model cannot learn "
                    "them (selection.stratify=true draws every class)", spec_name,
                    ", ".join(summary["missing_classes"]))
    return summary
