"""Selection: ranking rules, tie-breaks, mixtures without replacement, ids files, bad specs."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datamap.errors import ConfigError, DataError
from datamap.io import write_parquet
from datamap.selection.ranking import (
    group_sizes,
    ids_file_path,
    parse_spec,
    rank_ids,
    read_ids_file,
    select,
    subset_summary,
)

from .helpers import assert_one_line_error, run_stage


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
        ({"never_learned": 0.2}, "unknown criterion"),
        ({"ids_file": "data/selections/a.csv", "random": 0.2},
         "ids_file is a spec of its own and cannot be mixed with fractions"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_spec("bad", spec)


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


# --------------------------------------------------------------------------------------------
# a spec given as a file of ids


def selections(tmp_path):
    folder = tmp_path / "data" / "selections"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_ids_file_selects_exactly_the_listed_ids(tmp_path):
    scores = make_scores(10)
    (selections(tmp_path) / "lasso.csv").write_text("id\n107\n101\n104\n")
    spec = {"ids_file": "data/selections/lasso.csv"}
    subset = select(scores, "lasso", spec, seed=0, root=tmp_path)
    assert subset["id"].tolist() == [101, 104, 107]
    assert subset["group"].unique().tolist() == ["ids_file"]
    assert dict(zip(subset["id"], subset["rank"], strict=True)) == {107: 0, 101: 1, 104: 2}
    summary = subset_summary(subset, scores, "lasso", spec, flipped_ids=np.array([104]))
    assert summary["criteria"] == {"ids_file": "data/selections/lasso.csv"}
    assert summary["groups"] == {"ids_file": 3} and summary["n_selected"] == 3
    assert summary["flipped"] == 1
    json.dumps(summary)
    # the same ids from Parquet (any integer type), and a CSV with other columns too
    pq.write_table(pa.table({"id": pa.array([104, 101, 107], pa.int32())}),
                   selections(tmp_path) / "lasso.parquet")
    (selections(tmp_path) / "wide.csv").write_text("label,id\ncat, 101\ndog,104\nemu,107\n")
    for name in ("lasso.parquet", "wide.csv"):
        again = select(scores, "x", {"ids_file": f"data/selections/{name}"}, seed=0,
                       root=tmp_path)
        assert again["id"].tolist() == [101, 104, 107], name


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "ids file not found"),
        ("", "the file is empty"),
        ("id\n", "the file lists no ids"),
        ("name\n101\n", "no column named id (has name)"),
        ("id\n101\nabc\n", "column id holds 'abc' (row 3), not an integer"),
        ("id\n101\n1.5\n", "column id holds '1.5' (row 3), not an integer"),
        ("id,x\n101,1\n,2\n", "column id has 1 empty value(s)"),
        ("id\n101\n102\n101\n", "id 101 is listed 2 times (1 duplicated id(s))"),
        ("id\n101\n99999999999999999999\n", "column id holds a value outside the 64-bit "
                                             "integer range"),
    ],
)
def test_bad_ids_files(tmp_path, content, message):
    path = selections(tmp_path) / "s.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=re.escape(f"s.csv: {message}")):
        read_ids_file(path)


def test_bad_parquet_ids_file(tmp_path):
    path = selections(tmp_path) / "s.parquet"
    pq.write_table(pa.table({"id": pa.array([1.0, 2.0])}), path)
    with pytest.raises(DataError, match="column id holds double, not integers"):
        read_ids_file(path)
    pq.write_table(pa.table({"id": pa.array([1, None], pa.int64())}), path)
    with pytest.raises(DataError, match="column id has 1 empty value"):
        read_ids_file(path)


def test_stale_ids_are_refused(tmp_path):
    (selections(tmp_path) / "old.csv").write_text("id\n101\n5000\n5001\n")
    with pytest.raises(DataError, match=r"old.csv: 2 of 3 id\(s\) are not in the training "
                                        r"split \(e.g. \[5000, 5001\]\); the selection is stale"):
        select(make_scores(10), "old", {"ids_file": "data/selections/old.csv"}, 0, root=tmp_path)


@pytest.mark.parametrize("value", ["/tmp/lasso.csv", "lasso.csv", "data/lasso.csv",
                                   "data/selections/../lasso.csv", "data/selectionsX/a.csv"])
def test_ids_file_must_live_under_data_selections(tmp_path, value):
    with pytest.raises(ConfigError, match=r"selection.specs.s.ids_file: .* is outside "
                                          r"data/selections/; move the file into"):
        ids_file_path("s", {"ids_file": value}, tmp_path)


def test_ids_file_path_forms(tmp_path):
    assert ids_file_path("s", {"ambiguous": 0.3}, tmp_path) is None
    nested = ids_file_path("s", {"ids_file": "data/selections/team/a.parquet"}, tmp_path)
    assert nested == tmp_path / "data/selections/team/a.parquet"
    with pytest.raises(ConfigError, match=r"must be a .csv or .parquet file"):
        ids_file_path("s", {"ids_file": "data/selections/a.txt"}, tmp_path)
    with pytest.raises(ConfigError, match=r"ids_file must be a path such as "
                                          r"data/selections/s.csv, got 3"):
        ids_file_path("s", {"ids_file": 3}, tmp_path)


# the select stage as a user runs it: one line naming the file and the fix, nothing written


def test_select_stage_refuses_an_ids_file_outside_data_selections(tmp_path):
    result = run_stage("select", "+selection.specs.mine={ids_file: /tmp/mine.csv}", "+spec=mine",
                       cwd=tmp_path)
    assert_one_line_error(result, "selection.specs.mine.ids_file: /tmp/mine.csv is outside "
                          "data/selections/", "move the file into data/selections/")
    assert not (tmp_path / "data" / "subsets").exists()


def test_select_stage_refuses_a_missing_ids_file(tmp_path):
    result = run_stage("select", "+selection.specs.mine={ids_file: data/selections/mine.csv}",
                       "+spec=mine", cwd=tmp_path)
    assert_one_line_error(result, "data/selections/mine.csv: ids file not found (named by "
                          "selection.specs.mine.ids_file)", "save the selection there")
    assert not (tmp_path / "data" / "subsets").exists()


def test_select_stage_selects_an_ids_file_and_refuses_a_stale_one(tmp_path, digits_prepared):
    import shutil

    from datamap.data.splits import read_split
    from datamap.scoring.scores import scores_table

    data = tmp_path / "data"
    shutil.copytree(digits_prepared, data / "prepared")
    train = read_split(data / "prepared", "train")
    scores = pd.DataFrame({"id": np.sort(train.ids), "gold": 0})
    rng = np.random.default_rng(0)
    for name in ("confidence", "variability", "correctness", "threshold_closeness", "aum",
                 "el2n", "aleatoric", "mean_loss"):
        scores[name] = rng.random(len(scores))
    scores["forgetfulness"] = 0
    scores["never_learned"] = False
    scores["region"] = "ambiguous"
    write_parquet(data / "cartography" / "scores.parquet", scores_table(scores))
    chosen = rng.choice(train.ids, 25, replace=False)
    selections(tmp_path)
    pd.DataFrame({"id": chosen}).to_csv(data / "selections" / "lasso.csv", index=False)
    spec = "+selection.specs.lasso={ids_file: data/selections/lasso.csv}"
    ok = run_stage("select", spec, "+spec=lasso", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    ids = pq.read_table(data / "subsets" / "lasso" / "ids.parquet").column("id").to_pylist()
    assert ids == sorted(chosen.tolist())
    summary = json.loads((data / "subsets" / "lasso" / "summary.json").read_text())
    assert summary["groups"] == {"ids_file": 25} and summary["n_selected"] == 25

    pd.DataFrame({"id": [*chosen[:3], 10**6]}).to_csv(data / "selections" / "old.csv",
                                                      index=False)
    stale = run_stage("select", "+selection.specs.old={ids_file: data/selections/old.csv}",
                      "+spec=old", cwd=tmp_path)
    assert_one_line_error(stale, "data/selections/old.csv: 1 of 4 id(s) are not in the "
                          "training split", "export it again")
    assert not (data / "subsets" / "old").exists()


def test_the_ambiguous_third_is_the_ambiguous_region_under_the_default_rule():
    # a model that converges fast: no variability reaches the paper's 0.2, yet ambiguous_33
    # must be reported as what it is -- the default regions are the run's own quantiles
    from datamap.scoring.scores import scores_from_arrays

    rng = np.random.default_rng(1)
    n, epochs = 3000, 6
    start = rng.uniform(0.3, 0.9, (n, 1))
    p_gold = np.clip(start + np.linspace(0, 0.3, epochs) * rng.uniform(0, 1, (n, 1)), 0, 1)
    scores = scores_from_arrays(p_gold, (p_gold > 0.5).astype(np.int64) * 0, np.zeros(n))
    assert scores["variability"].max() < 0.2
    picked = select(scores, "ambiguous_33", {"ambiguous": 0.33}, 0)
    assert len(picked) == round(0.33 * n)
    summary = subset_summary(picked, scores, "ambiguous_33", {"ambiguous": 0.33})
    assert summary["regions"] == {"easy-to-learn": 0, "ambiguous": len(picked),
                                  "hard-to-learn": 0}
