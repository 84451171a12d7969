"""The regions of the data map: easy-to-learn, ambiguous, hard-to-learn.

A region has one *name* (what ``scores.parquet``, the map and the review queue show:
``hard-to-learn``) and one *key* (the identifier form used in JSON metrics, selection specs and
config: ``hard_to_learn``); sweep spec names abbreviate the key (``hard_25``,
:data:`datamap.selection.specs.SHORT_NAMES`). :data:`REGION_KEYS` is the one table between them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from datamap.errors import ConfigError
from datamap.scoring.radix import Cut, first_k, float_keys, int_keys

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
#: The default region rule (``regions=None``): quantiles adapt to the run. Fixed thresholds
#: describe nothing when a model converges fast (every variability below 0.2, no ambiguous
#: example), while the quantile rule's ambiguous region is what ``ambiguous_33`` selects.
DEFAULT_REGIONS: dict[str, Any] = {"rule": "quantile", **REGION_RULES["quantile"]}


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


def region_codes(conf: np.ndarray, var: np.ndarray, ids: np.ndarray, rule: str,
                  params: Mapping[str, float]) -> np.ndarray:
    """int8 codes into :data:`REGIONS` (0 easy, 1 ambiguous, 2 hard)."""
    if rule == "threshold":
        return threshold_codes(conf, var, params)
    keys = RegionKeys.of(conf, var, ids)
    cuts = quantile_cuts(lambda: [keys], len(keys.ids), params)
    return quantile_codes(keys, cuts)


def threshold_codes(conf: np.ndarray, var: np.ndarray, params: Mapping[str, float]) -> np.ndarray:
    """int8 region codes of the threshold rule (each example on its own scores)."""
    codes = np.where(conf >= params["confidence"], 0, 2).astype(np.int8)
    codes[var >= params["variability"]] = 1
    return codes


@dataclass(frozen=True)
class RegionKeys:
    """The quantile rule's sort keys of a block of examples (:mod:`datamap.scoring.radix`):
    ``variability`` ordering highest first, ``confidence`` lowest first, ``ids`` for ties."""

    variability: np.ndarray
    confidence: np.ndarray
    ids: np.ndarray

    @classmethod
    def of(cls, conf: np.ndarray, var: np.ndarray, ids: np.ndarray) -> RegionKeys:
        return cls(float_keys(var, descending=True), float_keys(conf), int_keys(ids))

    def equals(self, other: RegionKeys) -> bool:
        return all(np.array_equal(getattr(self, f), getattr(other, f))
                   for f in ("variability", "confidence", "ids"))


#: The two cuts of the quantile rule: the last ambiguous example, and the last hard-to-learn
#: one among the others (None: the region is empty).
QuantileCuts = tuple[Cut | None, Cut | None]


def quantile_cuts(passes: Callable[[], Iterable[RegionKeys]], n: int,
                  params: Mapping[str, float]) -> QuantileCuts:
    """Where the quantile rule cuts ``n`` examples whose keys every ``passes()`` call yields
    (block by block): exact, in memory independent of ``n`` (:func:`radix.first_k`)."""
    n_ambiguous = min(n, round(params["ambiguous"] * n))
    ambiguous = first_k(lambda: ((k.variability, k.ids) for k in passes()), n_ambiguous)

    def others() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for k in passes():
            if ambiguous is None:
                yield k.confidence, k.ids
            else:
                keep = ~ambiguous.takes(k.variability, k.ids)
                yield k.confidence[keep], k.ids[keep]

    hard = first_k(others, min(n - n_ambiguous, round(params["hard"] * n)))
    return ambiguous, hard


def quantile_codes(keys: RegionKeys, cuts: QuantileCuts) -> np.ndarray:
    """int8 region codes of one block of examples under the quantile rule's ``cuts``."""
    ambiguous_cut, hard_cut = cuts
    codes = np.zeros(len(keys.ids), dtype=np.int8)
    ambiguous = (np.zeros(len(codes), dtype=bool) if ambiguous_cut is None
                 else ambiguous_cut.takes(keys.variability, keys.ids))
    codes[ambiguous] = 1
    if hard_cut is not None:
        codes[~ambiguous & hard_cut.takes(keys.confidence, keys.ids)] = 2
    return codes


def assign_regions(scores: pd.DataFrame | Mapping[str, Any], rule: str = "quantile",
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
    return np.array(REGIONS, dtype=object)[region_codes(conf, var, ids, rule, params)]


def region_cutoffs(conf: np.ndarray, var: np.ndarray, codes: np.ndarray, rule: str,
                   params: Mapping[str, float]) -> dict[str, float | None]:
    """The cut-offs a rule actually drew on this map.

    ``ambiguous_min_variability``: the lowest variability of an ambiguous example;
    ``hard_max_confidence``: the highest confidence of a hard-to-learn example (None for an
    empty region). For the threshold rule they lie on their side of the fixed thresholds; for
    the quantile rule they are the thresholds the quantiles came to.
    """
    conf = np.asarray(conf, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    ambiguous, hard = codes == 1, codes == 2
    return {
        "ambiguous_min_variability": (round(float(var[ambiguous].min()), 6)
                                      if ambiguous.any() else None),
        "hard_max_confidence": round(float(conf[hard].max()), 6) if hard.any() else None,
    }


def _cut(value: float | None) -> str:
    return "no example" if value is None else f"{value:.4g}"


def describe_regions(rule: str, params: Mapping[str, float],
                     cutoffs: Mapping[str, float | None]) -> str:
    """One sentence stating a region rule with its parameters and the cut-offs it drew on this
    map (:func:`region_cutoffs`), for the map, the page and the report."""
    amb = cutoffs.get("ambiguous_min_variability")
    hard = cutoffs.get("hard_max_confidence")
    if rule == "threshold":
        return (f"Fixed thresholds (the paper's rule): ambiguous where variability >= "
                f"{params['variability']:g}; of the rest, easy-to-learn where confidence >= "
                f"{params['confidence']:g}, else hard-to-learn.")
    return (f"Quantiles of this run: the {params['ambiguous']:.0%} of examples with the highest "
            f"variability are ambiguous (variability >= {_cut(amb)}); of the rest, the "
            f"{params['hard']:.0%} with the lowest confidence are hard-to-learn (confidence "
            f"<= {_cut(hard)}); the others are easy-to-learn.")


def regions_rule(scores: pd.DataFrame) -> dict[str, Any]:
    """The rule of a scores table (``scores.attrs["regions"]``), the cut-offs it drew and its
    statement: ``{"rule", "params", "cutoffs", "statement"}`` (the cartography summary's
    ``regions_rule``)."""
    rule, params = region_spec(scores.attrs.get("regions"))
    codes = np.asarray(pd.Categorical(scores["region"], categories=list(REGIONS)).codes)
    cutoffs = region_cutoffs(scores["confidence"].to_numpy(), scores["variability"].to_numpy(),
                             codes, rule, params)
    return {"rule": rule, "params": params, "cutoffs": cutoffs,
            "statement": describe_regions(rule, params, cutoffs)}


def describe_rule(regions: Mapping[str, Any] | None = None) -> str:
    """The region rule in force as one human sentence (the interactive page shows it).

    Parameters
    ----------
    regions : Mapping or None
        ``{"rule": ..., **params}`` as in :func:`region_spec` (e.g. ``scores.attrs["regions"]``;
        None: :data:`DEFAULT_REGIONS`). A ``statement`` string in it (a rule that describes
        itself) is returned as it is.

    Returns
    -------
    str
        E.g. ``threshold rule: ambiguous if variability >= 0.2, else easy-to-learn if confidence
        >= 0.5, else hard-to-learn``.
    """
    spec = dict(DEFAULT_REGIONS if regions is None else regions)
    statement = spec.pop("statement", None)
    if isinstance(statement, str) and statement:
        return statement
    rule, params = region_spec(spec)
    if rule == "threshold":
        return (f"threshold rule: {AMBIGUOUS} if variability >= {params['variability']:g}, "
                f"else {EASY} if confidence >= {params['confidence']:g}, else {HARD}")
    return (f"quantile rule: the {params['ambiguous']:.0%} of examples of highest variability "
            f"are {AMBIGUOUS}; of the rest, the {params['hard']:.0%} (of all examples) of lowest "
            f"confidence are {HARD}; the others are {EASY} (ties by id)")

