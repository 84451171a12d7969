"""Selection: ranking rules, tie-breaks, mixtures without replacement, and bad specs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from datamap.io import ConfigError
from datamap.selection import group_sizes, parse_spec, rank_ids, select, subset_summary


def make_scores(n=10):
    ids = np.arange(100, 100 + n)
    return pd.DataFrame({
        "id": ids,
        "gold": ids % 3,
        "confidence": np.linspace(0.05, 0.95, n),
        "variability": np.linspace(0.3, 0.0, n),
        "forgetfulness": np.arange(n) % 4,
        "never_learned": np.arange(n) == n - 1,
        "aum": np.linspace(-2, 2, n),
        "region": ["hard-to-learn"] * 3 + ["ambiguous"] * 3 + ["easy-to-learn"] * (n - 6),
    })


def test_regions_rank_by_their_scores():
    scores = make_scores()
    assert select(scores, "s", {"hard_to_learn": 0.3}, 0)["id"].tolist() == [100, 101, 102]
    assert select(scores, "s", {"easy_to_learn": 0.2}, 0)["id"].tolist() == [108, 109]
    assert select(scores, "s", {"ambiguous": 0.2}, 0)["id"].tolist() == [100, 101]
    assert select(scores, "s", {"low_aum": 0.1}, 0)["id"].tolist() == [100]
    assert select(scores, "s", {"aum": 0.1}, 0)["id"].tolist() == [109]


def test_ties_break_by_id_regardless_of_row_order():
    scores = make_scores()
    scores["confidence"] = 0.5
    shuffled = scores.sample(frac=1.0, random_state=0)
    assert rank_ids(shuffled, "confidence", True).tolist() == list(range(100, 110))
    assert rank_ids(shuffled, "confidence", False).tolist() == list(range(100, 110))


def test_never_learned_ranks_most_forgettable():
    scores = make_scores()
    assert rank_ids(scores, "forgetfulness", False)[0] == 109


def test_mixture_is_drawn_in_order_without_replacement():
    scores = make_scores(100)
    spec = {"hard_to_learn": 0.1, "easy_to_learn": 0.3, "ambiguous": 0.1, "random": 0.5}
    subset = select(scores, "mixed", spec, seed=1)
    assert len(subset) == 100 and subset["id"].is_unique
    counts = subset["group"].value_counts().to_dict()
    assert counts == {"hard_to_learn": 10, "easy_to_learn": 30, "ambiguous": 10, "random": 50}
    # ambiguous = highest variability = lowest ids here, but those went to hard_to_learn first
    ambiguous = subset.loc[subset["group"] == "ambiguous", "id"]
    assert ambiguous.min() == 110


def test_random_is_seeded():
    scores = make_scores(50)
    a = select(scores, "r", {"random": 0.5}, seed=3)
    b = select(scores, "r", {"random": 0.5}, seed=3)
    c = select(scores, "r", {"random": 0.5}, seed=4)
    assert a.equals(b) and not a["id"].equals(c["id"])


def test_group_sizes_cumulative_rounding():
    assert group_sizes([0.33], 10) == [3]
    assert group_sizes([0.5, 0.5], 3) == [2, 1]  # never more than N in total
    assert group_sizes([0.0, 0.3, 0.1, 0.6], 1167) == [0, 350, 117, 700]
    assert sum(group_sizes([0.25] * 4, 7)) == 7


def test_full_spec_selects_everything():
    scores = make_scores(37)
    assert select(scores, "full", {"random": 1.0}, 0)["id"].tolist() == scores["id"].tolist()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"ambiguous": 0.7, "random": 0.4}, r"selection.specs.bad: fractions sum to 1.1 > 1"),
        ({"ambiguous": -0.1}, r"selection.specs.bad.ambiguous must be a fraction in \[0, 1\]"),
        ({"ambigous": 0.1}, r"selection.specs.bad.ambigous: unknown criterion"),
        ({"ambiguous": "a third"}, "must be a fraction"),
        ({}, "must map criteria to fractions"),
        ({"region": 0.2}, "unknown criterion"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_spec("bad", spec, list(make_scores().columns))


def test_empty_selection_is_an_error():
    with pytest.raises(ConfigError, match="selects no examples"):
        select(make_scores(10), "tiny", {"ambiguous": 0.01}, 0)


def test_summary_counts_noise():
    scores = make_scores(10)
    subset = select(scores, "h", {"hard_to_learn": 0.3}, 0)
    summary = subset_summary(subset, scores, "h", {"hard_to_learn": 0.3},
                             flipped_ids=np.array([100, 105]))
    assert summary["n_selected"] == 3 and summary["flipped"] == 1
    assert summary["regions"] == {"hard-to-learn": 3}
    assert summary["fraction"] == pytest.approx(0.3)
