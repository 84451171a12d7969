"""The score registry: what every per-example score is, in one place.

Each :class:`Score` entry holds a score's name, its *reduction* (one block of training dynamics
in, one value per example out), its dtype, what a selection spec naming it takes first, and the
direction that is *suspicious* for label errors with the reason -- or why the score is not a
label-error score. Everything downstream reads this registry:
:func:`datamap.scoring.scores.compute_scores` (which reductions to run), the scores table's schema
(typed by name), selection criteria (``ambiguous``, ``hard_to_learn``, ``easy_to_learn``, any
score name, ``low_<score>``), :func:`order_by` and noise detection (which scores get an AUROC,
oriented how). Adding a score is one :func:`register_score` call with its reduction -- the way
cleanlab keeps its ``scoring_funcs`` and Datalab its issue-manager registry::

    register_score(Score(
        "n_confident", reduce=lambda x: (x.p_gold >= 0.5).sum(axis=1), dtype="int64",
        definition="records with p_gold >= 0.5", suspicious="low",
        why="a flipped label rarely gets half the probability"))

The plain-array functions below (cleanlab style) are the reductions' building blocks and can be
called from a notebook. Arrays are indexed ``[example, record]``: ``p_gold`` [N, R] float (softmax
probability of the gold label), ``pred`` [N, R] int, ``gold`` [N] int, ``correct`` [N, R] bool,
``margin``/``loss``/``el2n_values`` [N, R] float, R counting the records kept in time order
(epoch-major, then record). Each returns a float64 (or int64/bool) array of shape [N]. All
reductions run in float64 over the stored float32 values.

The module imports numpy, pandas and :mod:`datamap.io` only, so selection ranks with it
without loading the dynamics reader.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd

from datamap.errors import ConfigError

Direction = Literal["high", "low"]
DIRECTIONS = ("high", "low")
#: dtypes a score column may have (the scores table stores them as the Arrow equivalent).
DTYPES = ("float64", "int64", "bool")
#: Optional dynamics inputs a reduction may read (``p_gold``, ``pred`` and ``gold`` always come).
OPTIONAL_INPUTS = ("margin", "loss", "el2n")
#: Names no score may take: the scores table's other columns and selection's own keys.
RESERVED = ("id", "gold", "region", "random", "ids_file")
#: Default number of early epochs averaged by ``el2n`` (see :func:`el2n`).
EL2N_EPOCHS = 2


# --------------------------------------------------------------------------------------------
# plain-array building blocks ([N, R] in, [N] out)


def as_records(values: Any, name: str) -> np.ndarray:
    """``values`` as a 2-D [examples, records] array with at least one record."""
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [examples, records], got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} needs at least one record per example")
    return arr


def _float64_rows(values: Any, name: str) -> np.ndarray:
    """``values`` [N, R] as a C-contiguous float64 array (a copy unless it is one already).

    NumPy sums a row pairwise when it is contiguous and one element after the other when it is
    strided (a block of ids arrives as a transposed [slots, ids] grid, a block of one id is
    contiguous), and the two differ in the last bit: exact ties between examples would then
    break by how the ids were cut into blocks, and a file and a table would score differently.
    On this copy every row gets the same summation, without a casting buffer (whose size could
    cut rows too)."""
    return np.ascontiguousarray(as_records(values, name), dtype=np.float64)


def moments(p_gold: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population variance of ``p_gold`` [N, R] along records, in float64 (two-pass,
    like ``np.std``) -> two [N] arrays, the same for an example whatever the layout of the
    array it comes in (one id, a block of ids as a transposed view, a C-ordered [N, R])."""
    p = _float64_rows(p_gold, "p_gold")
    mean = p.mean(axis=1)
    dev = p - mean[:, None]
    return mean, np.einsum("ij,ij->i", dev, dev) / p.shape[1]


def _ci_variability(var: np.ndarray, n_records: int, include_ci: bool) -> np.ndarray:
    if include_ci and n_records > 1:
        var = var + var * var / (n_records - 1)
    # include_ci at R = 1: var is exactly 0, the correction 0/0 is defined as 0.
    return np.sqrt(var)


def confidence(p_gold: Any) -> np.ndarray:
    """Mean gold-label probability per example. ``p_gold`` [N, R] -> [N] float64 (the mean of
    :func:`moments`, which the ``confidence`` score reports: the same bits)."""
    return _float64_rows(p_gold, "p_gold").mean(axis=1)


def variability(p_gold: Any, *, include_ci: bool = False) -> np.ndarray:
    """Population std (ddof 0) of the gold-label probability; ``include_ci`` gives the paper
    code's sqrt(v + v^2/(R-1)), defined as 0 at R = 1 (the reference returns NaN there).
    ``p_gold`` [N, R] -> [N] float64."""
    p = as_records(p_gold, "p_gold")
    return _ci_variability(moments(p)[1], p.shape[1], include_ci)


def correct_matrix(pred: Any, gold: Any) -> np.ndarray:
    """``pred`` [N, R] == ``gold`` [N] per record -> [N, R] bool."""
    pred = as_records(pred, "pred")
    gold = np.asarray(gold)
    if gold.shape != (pred.shape[0],):
        raise ValueError(f"gold must have shape ({pred.shape[0]},), got {gold.shape}")
    return pred == gold[:, None]


def correctness(correct: Any) -> np.ndarray:
    """Fraction of records predicted correctly. ``correct`` [N, R] bool -> [N] float64."""
    return as_records(correct, "correct").mean(axis=1, dtype=np.float64)


def forgetfulness(correct: Any) -> np.ndarray:
    """Number of correct -> wrong transitions between consecutive records (Toneva et al. 2019).
    ``correct`` [N, R] bool -> [N] int64 (0 for never-learned examples; see
    :func:`never_learned`)."""
    c = as_records(correct, "correct").astype(bool, copy=False)
    return (c[:, :-1] & ~c[:, 1:]).sum(axis=1, dtype=np.int64)


def never_learned(correct: Any) -> np.ndarray:
    """True where no record is correct. ``correct`` [N, R] bool -> [N] bool."""
    return ~as_records(correct, "correct").astype(bool, copy=False).any(axis=1)


def threshold_closeness(confidence: Any) -> np.ndarray:
    """confidence * (1 - confidence) (Active Bias, Chang et al. 2017). ``confidence`` [N] ->
    [N] float64."""
    c = np.asarray(confidence, dtype=np.float64)
    return c * (1.0 - c)


def aum(margin: Any) -> np.ndarray:
    """Area under the margin (Pleiss et al. 2020): mean of (gold logit - largest other logit).
    ``margin`` [N, R] -> [N] float64."""
    return as_records(margin, "margin").mean(axis=1, dtype=np.float64)


def el2n(el2n_values: Any) -> np.ndarray:
    """Single-run EL2N: the mean error L2-norm ||softmax - onehot||_2 over the records given
    -- pass only the early epochs' records of ONE training run. ``el2n_values`` [N, R_early]
    -> [N] float64.

    Paul et al. (2021) score each example at one early epoch and average over several
    independently initialised runs; here the average is over the first ``el2n_epochs``
    (default :data:`EL2N_EPOCHS` = 2) epochs of the one run that recorded the dynamics. It is
    the same quantity, read early (later every error norm collapses towards zero), with the
    run-to-run averaging replaced by averaging neighbouring epochs -- noisier than the paper's
    ensemble. Two epochs because in ``train_pass`` recording epoch 0's first batches come from
    a model still near its initialisation.
    """
    return as_records(el2n_values, "el2n_values").mean(axis=1, dtype=np.float64)


def aleatoric(p_gold: Any) -> np.ndarray:
    """Data-IQ aleatoric uncertainty (Seedat et al. 2022): mean p_gold * (1 - p_gold).
    ``p_gold`` [N, R] -> [N] float64."""
    p = _float64_rows(p_gold, "p_gold")
    return (p * (1.0 - p)).mean(axis=1)


def mean_loss(loss: Any) -> np.ndarray:
    """Mean cross-entropy loss of the gold label. ``loss`` [N, R] -> [N] float64."""
    return as_records(loss, "loss").mean(axis=1, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# what a reduction receives


@dataclass(eq=False)
class ScoreInputs:
    """One block of examples' dynamics, as a reduction receives it, with the intermediate
    values several scores share computed once.

    ``p_gold``, ``pred`` [n, R]; ``gold`` [n]; ``margin``, ``loss`` [n, R] or None when not
    recorded; ``el2n`` [n, R_early] -- only the early epochs' records (see :func:`el2n`) -- or
    None; ``include_ci``: the variability form. The arrays may be transposed views, strided
    or contiguous depending on the block: a reduction that sums them itself should sum a
    ``np.ascontiguousarray(..., dtype=np.float64)`` copy (as :func:`moments` does), or its bits
    depend on how the ids were cut into blocks.
    """

    p_gold: np.ndarray
    pred: np.ndarray
    gold: np.ndarray
    margin: np.ndarray | None = None
    loss: np.ndarray | None = None
    el2n: np.ndarray | None = None
    include_ci: bool = False

    @property
    def n_records(self) -> int:
        return self.p_gold.shape[1]

    @cached_property
    def _moments(self) -> tuple[np.ndarray, np.ndarray]:
        return moments(self.p_gold)

    @property
    def mean_p_gold(self) -> np.ndarray:
        return self._moments[0]

    @property
    def var_p_gold(self) -> np.ndarray:
        """Population variance of p_gold."""
        return self._moments[1]

    @cached_property
    def correct(self) -> np.ndarray:
        return correct_matrix(self.pred, self.gold)


# --------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class Score:
    """One registered score.

    ``name``: the column in the scores table and the selection criterion. ``reduce``: a
    :class:`ScoreInputs` block -> one value per example. ``dtype``: one of :data:`DTYPES`.
    ``definition``: one line for tables and help. ``suspicious``: the end ("high" or "low")
    where likely label errors sit, or None when neither end isolates them; ``why``: the reason
    for that direction, or why the score is not a label-error score. ``rank_first``: the end a
    selection spec naming the score takes first (``low_<name>`` always takes the lowest first);
    None: not a selection criterion. ``aliases``: other criterion names that rank by this score,
    each with the end it takes first (the data-map regions). ``needs``: the optional inputs
    (:data:`OPTIONAL_INPUTS`) the reduction reads -- without them the score is NaN. ``rank_key``:
    scores table -> the key rankings sort by, when the column alone is not it.
    """

    name: str
    reduce: Callable[[ScoreInputs], np.ndarray]
    dtype: str
    definition: str
    suspicious: Direction | None
    why: str
    rank_first: Direction | None = "high"
    aliases: Mapping[str, Direction] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    rank_key: Callable[[pd.DataFrame], np.ndarray] | None = None

    def __post_init__(self) -> None:
        where = f"score {self.name!r}"
        if not self.name.isidentifier() or keyword.iskeyword(self.name):
            raise ValueError(f"{where}: the name must be an identifier")
        if self.name in RESERVED or self.name.startswith("low_"):
            raise ValueError(f"{where}: the name is reserved ({', '.join(RESERVED)}, low_*)")
        if self.dtype not in DTYPES:
            raise ValueError(f"{where}: dtype must be one of {', '.join(DTYPES)}")
        for value in (self.suspicious, self.rank_first, *self.aliases.values()):
            if value is not None and value not in DIRECTIONS:
                raise ValueError(f"{where}: directions are 'high', 'low' or None, not {value!r}")
        if not self.why.strip() or not self.definition.strip():
            raise ValueError(f"{where}: state its definition and why it is (not) suspicious")
        unknown = set(self.needs) - set(OPTIONAL_INPUTS)
        if unknown:
            raise ValueError(f"{where}: unknown inputs {sorted(unknown)}; "
                             f"expected some of {', '.join(OPTIONAL_INPUTS)}")

    @property
    def suspicious_when(self) -> str:
        """The README's wording: "low", "high" or "not a label-error score"."""
        return self.suspicious or "not a label-error score"


_REGISTRY: dict[str, Score] = {}


def register_score(score: Score, *, replace: bool = False) -> Score:
    """Add ``score`` to the registry (after the existing ones: the scores table's column order).
    Refuses a name or criterion alias already taken unless ``replace``."""
    taken = {alias: s.name for s in _REGISTRY.values() for alias in s.aliases}
    taken.update({s.name: s.name for s in _REGISTRY.values()})
    for name in (score.name, *score.aliases):
        owner = taken.get(name)
        if owner is not None and not (replace and owner == score.name):
            raise ValueError(f"score name or alias {name!r} is already registered by {owner!r}")
    _REGISTRY[score.name] = score
    return score


def unregister_score(name: str) -> Score:
    """Remove a registered score and return it."""
    return _REGISTRY.pop(name)


@contextmanager
def registered(score: Score) -> Iterator[Score]:
    """``score`` registered for the duration of a ``with`` block (tests, experiments)."""
    register_score(score)
    try:
        yield score
    finally:
        unregister_score(score.name)


def register_configured(scores: Mapping[str, Any] | None, key: str = "scores") -> list[str]:
    """Register the scores the ``scores`` config names -> their names.

    ``scores`` maps a score's name to the ``_target_`` that builds it: a :class:`Score`, or a
    callable returning one (a factory function of the user's module). The cartography and
    select stages call this before they compute or rank, so a score of the user's own code
    reaches the scores table, selection and noise detection through config alone. A score
    registered already under the same name by the same target is kept (a process may run
    several stages, and a factory builds a new object each time).
    """
    from hydra.utils import instantiate

    done = []
    for name, conf in (scores or {}).items():
        where = f"{key}.{name}"
        if not isinstance(conf, Mapping) or "_target_" not in conf:
            raise ConfigError(f"{where} needs a _target_: a Score, or a function returning one "
                              "(e.g. my_project.scores.n_confident)")
        try:
            built = instantiate(conf, _convert_="all")
            score = built() if callable(built) and not isinstance(built, Score) else built
        except Exception as exc:  # the user's code: say where it came from, in one line
            raise ConfigError(f"{where} ({conf['_target_']}) could not be built: "
                              f"{' '.join(str(exc).split())}") from exc
        if not isinstance(score, Score):
            raise ConfigError(f"{where} ({conf['_target_']}) gave {type(score).__name__}, not a "
                              "datamap.scoring.Score")
        if score.name != name:
            raise ConfigError(f"{where} builds a score named {score.name!r}; name the config "
                              f"entry after it ({key}.{score.name})")
        current = _REGISTRY.get(name)
        if current is not score:
            try:
                register_score(score, replace=current is not None and name in _CONFIGURED)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}; pick another name") from None
        _CONFIGURED.add(name)
        done.append(name)
    return done


#: Names registered by :func:`register_configured` (they may be replaced by a later call).
_CONFIGURED: set[str] = set()


def all_scores() -> tuple[Score, ...]:
    """Every registered score, in registration order."""
    return tuple(_REGISTRY.values())


def score_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_score(name: str) -> Score:
    """The registered score called ``name``; :class:`~datamap.errors.ConfigError` otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown score {name!r}; expected one of "
                          f"{', '.join(_REGISTRY)}") from None


def resolve_criterion(name: str) -> tuple[Score, bool] | None:
    """The score a selection criterion ranks by and whether highest comes first, or None when
    ``name`` is not a criterion: a region alias (``ambiguous``, ``hard_to_learn``,
    ``easy_to_learn``), a rankable score's name (its ``rank_first``) or ``low_<name>``."""
    for score in _REGISTRY.values():
        if name in score.aliases:
            return score, score.aliases[name] == "high"
    low = name.startswith("low_")
    score = _REGISTRY.get(name[4:] if low else name)
    if score is None or score.rank_first is None:
        return None
    return score, (False if low else score.rank_first == "high")


def criterion_names() -> list[str]:
    """Every criterion name :func:`resolve_criterion` accepts, sorted (for messages)."""
    names = [alias for s in _REGISTRY.values() for alias in s.aliases]
    names += [n for s in _REGISTRY.values() if s.rank_first is not None
              for n in (s.name, f"low_{s.name}")]
    return sorted(names)


def rank_key(scores: pd.DataFrame, name: str) -> np.ndarray:
    """The float64 key rankings by ``name`` sort on (the column unless the score says
    otherwise)."""
    score = get_score(name)
    if score.rank_key is not None:
        return np.asarray(score.rank_key(scores), dtype=np.float64)
    return np.asarray(scores[name], dtype=np.float64)


def order_by(scores: pd.DataFrame, name: str, *, descending: bool = True) -> np.ndarray:
    """Row positions of ``scores`` ranked by a registered score (its :func:`rank_key`), ties
    broken by id (smaller first) so a ranking never depends on row order."""
    key = rank_key(scores, name)
    ids = np.asarray(scores["id"])
    return np.lexsort((ids, -key if descending else key))


def suspicion(scores: pd.DataFrame, name: str) -> np.ndarray:
    """``name`` oriented so that a likely label error scores high -> [N] float64 (negated when
    the suspicious end is "low": ranks, AUROC and AP are those of 1 - confidence, -aum, ...).
    :class:`~datamap.errors.ConfigError` for a score without a label-error orientation."""
    score = get_score(name)
    if score.suspicious is None:
        raise ConfigError(f"score {name!r} has no label-error orientation: {score.why}")
    key = rank_key(scores, name)
    return key if score.suspicious == "high" else -key


def registry_table() -> str:
    """The registry as a markdown table, one row per score: the documentation's score table and
    the output of ``datamap list-scores``."""
    from datamap.markdown import Markup, markdown_table

    # the registry's own prose (written here, not data): kept as it is
    return markdown_table(["score", "definition", "type", "suspicious when", "why"],
                          [tuple(map(Markup, (f"`{s.name}`", s.definition, s.dtype,
                                              s.suspicious_when, s.why)))
                           for s in _REGISTRY.values()])


# --------------------------------------------------------------------------------------------
# the built-in scores (registration order = column order of scores.parquet)


def _never_learned_on_top(scores: pd.DataFrame) -> np.ndarray:
    """forgetfulness with never-learned examples at max + 1, above every count."""
    values = np.asarray(scores["forgetfulness"], dtype=np.float64)
    if "never_learned" not in scores:
        return values
    never = np.asarray(scores["never_learned"], dtype=bool)
    return np.where(never, values.max(initial=0.0) + 1.0, values)


_P_GOLD_PEAKS_AT_HALF = (
    "peaks where p_gold hovers around 0.5 (ambiguous examples); mislabelled (p_gold near 0) "
    "and easy (p_gold near 1) examples both score low"
)

for _score in (
    Score("confidence", lambda x: x.mean_p_gold, "float64",
          "mean p_gold (softmax probability of the given label, float32)",
          suspicious="low",
          why="the model learns the true class, so a wrong label keeps little probability "
              "all through training",
          aliases={"easy_to_learn": "high", "hard_to_learn": "low"}),
    Score("variability", lambda x: _ci_variability(x.var_p_gold, x.n_records, x.include_ci),
          "float64",
          "population std of p_gold (ddof 0); `include_ci: true` gives the paper code's "
          "sqrt(v + v²/(R−1))",
          suspicious=None,
          why="high marks ambiguous examples; mislabelled examples sit at LOW variability "
              "(p_gold stays near 0), as easy ones do (near 1)",
          aliases={"ambiguous": "high"}),
    Score("correctness", lambda x: correctness(x.correct), "float64",
          "fraction of records with argmax == gold (argmax ties go to the lowest class)",
          suspicious="low", why="the model rarely predicts a wrong label"),
    Score("forgetfulness", lambda x: forgetfulness(x.correct), "int64",
          "records t ≥ 1 where t−1 was correct and t is not",
          suspicious="high",
          why="label errors are forgotten often or never learned (Toneva et al.); "
              "never-learned examples rank above every count",
          rank_key=_never_learned_on_top),
    Score("never_learned", lambda x: never_learned(x.correct), "bool",
          "no record is correct",
          suspicious=None,
          why="a yes/no flag: forgetfulness ranks never-learned examples on top and is "
              "evaluated with them",
          rank_first=None),
    Score("threshold_closeness", lambda x: threshold_closeness(x.mean_p_gold), "float64",
          "confidence · (1 − confidence) (Active Bias)",
          suspicious=None, why=_P_GOLD_PEAKS_AT_HALF),
    Score("aum", lambda x: aum(x.margin), "float64",
          "mean of gold logit − largest other logit (area under the margin; from logits, "
          "never probabilities)",
          suspicious="low",
          why="another class keeps winning, so a mislabelled example's margin stays negative "
              "(Pleiss et al.)",
          needs=("margin",)),
    Score("el2n", lambda x: el2n(x.el2n), "float64",
          "single-run EL2N: ‖softmax − onehot‖₂ averaged over the first `el2n_epochs` "
          "(default 2) epochs of this one run; Paul et al. average one early epoch over several "
          "independently initialised runs",
          suspicious="high",
          why="early in training the prediction is far from a wrong label's one-hot vector",
          needs=("el2n",)),
    Score("aleatoric",
          # mean p(1-p) = conf (1 - conf) - var: the same value, no [n, R] temporaries
          lambda x: np.maximum(threshold_closeness(x.mean_p_gold) - x.var_p_gold, 0.0),
          "float64", "mean p_gold · (1 − p_gold) (Data-IQ aleatoric uncertainty)",
          suspicious=None, why=_P_GOLD_PEAKS_AT_HALF),
    Score("mean_loss", lambda x: mean_loss(x.loss), "float64",
          "mean cross-entropy of the given label",
          suspicious="high", why="a wrong label keeps a high loss",
          needs=("loss",)),
):
    register_score(_score)
del _score
