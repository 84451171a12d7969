"""Cartography scores: hand-computed cases, the reference semantics, regions, noise detection."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from datamap import scoring as S
from datamap.dynamics.schema import DynamicsMeta, build_dynamics
from datamap.dynamics.storage import write_dynamics
from datamap.dynamics.values import per_example_values
from datamap.errors import ConfigError, DataError
from datamap.io import write_parquet
from datamap.scoring import registry as R

from .helpers import make_table


def table_from_logits(logits: np.ndarray, gold: np.ndarray, ids: np.ndarray | None = None,
                      records: int = 1):
    """A dynamics table from logits [N, R, K] (R = epochs x records, time order)."""
    n, r, k = logits.shape
    ids = np.arange(n, dtype=np.int64) if ids is None else ids
    slot = np.repeat(np.arange(r), n)
    flat = logits.transpose(1, 0, 2).reshape(r * n, k)
    gold_rows = np.tile(gold, r)
    cols = {"id": np.tile(ids, r), "epoch": slot // records, "record": slot % records,
            "gold": gold_rows, **per_example_values(flat, gold_rows)}
    return build_dynamics(cols, DynamicsMeta(num_classes=k, records_per_epoch=records),
                          logits=flat)


def table_from_p(p: np.ndarray, correct: np.ndarray, margin=None, loss=None, el2n=None,
                 ids=None, records: int = 1):
    """A 2-class dynamics table with chosen p_gold [N, R] and correctness [N, R]."""
    n, r = p.shape
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids)
    zeros = np.zeros((n, r), np.float32)
    gold = np.zeros(n, np.int64)
    pred = np.where(correct, 0, 1)
    slot = np.repeat(np.arange(r), n)
    cols = {"id": np.tile(ids, r), "epoch": slot // records, "record": slot % records,
            "gold": np.tile(gold, r)}
    for name, value in {"p_gold": p, "pred": pred, "margin": margin, "loss": loss,
                        "el2n": el2n}.items():
        value = zeros if value is None else np.asarray(value)
        cols[name] = value.T.reshape(-1)
    return build_dynamics(cols, DynamicsMeta(num_classes=2, records_per_epoch=records))


# --------------------------------------------------------------------------------------------
# an independent oracle with the per-example semantics of allenai/cartography's
# compute_train_dy_metrics (plain Python loops, torch softmax per record, like the reference)


def oracle(training_dynamics: dict, burn_out: int, include_ci: bool) -> dict:
    import torch

    result = {}
    for guid, rec in training_dynamics.items():
        probs_trend, correct_trend = [], []
        for epoch_logits in rec["logits"]:
            probs = torch.nn.functional.softmax(torch.tensor(epoch_logits,
                                                             dtype=torch.float32), dim=-1)
            probs_trend.append(float(probs[rec["gold"]]))
            correct_trend.append(bool(np.argmax(epoch_logits) == rec["gold"]))
        if burn_out < len(rec["logits"]):
            probs_trend = probs_trend[:burn_out]
            correct_trend = correct_trend[:burn_out]
        conf = float(np.mean(probs_trend))
        if include_ci:
            var = np.var(probs_trend)
            with np.errstate(invalid="ignore", divide="ignore"):  # R = 1: 0/0 as in the reference
                spread = float(np.sqrt(var + var * var / (len(probs_trend) - 1)))
        else:
            spread = float(np.std(probs_trend))
        if not any(correct_trend):
            forgotten = 1000
        else:
            learnt, forgotten = False, 0
            for ok in correct_trend:
                if learnt and not ok:
                    learnt, forgotten = False, forgotten + 1
                elif not learnt and ok:
                    learnt = True
        result[guid] = {"confidence": conf, "variability": spread,
                        "correctness": sum(correct_trend), "forgetfulness": forgotten,
                        "threshold_closeness": conf * (1 - conf)}
    return result


def random_logits(n: int, r: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, size=(n, r, k))
    gold = rng.integers(0, k, n)
    strength = rng.uniform(-2, 4, size=(n, 1))
    logits[np.arange(n), :, gold] += strength * np.linspace(0.2, 1.0, r)
    ties = rng.random(n) < 0.3  # integer logits: exact ties in argmax
    logits[ties] = rng.integers(-1, 2, size=(int(ties.sum()), r, k))
    return logits.astype(np.float32), gold


@pytest.mark.parametrize("burn_out", [None, 1, 3, 50])
@pytest.mark.parametrize("include_ci", [False, True])
def test_agrees_with_reference_semantics(burn_out, include_ci):
    n, r, k = 400, 6, 4
    logits, gold = random_logits(n, r, k, seed=7)
    ids = np.random.default_rng(3).permutation(5 * n)[:n].astype(np.int64)
    training_dynamics = {int(ids[i]): {"gold": int(gold[i]),
                                       "logits": [logits[i, t].tolist() for t in range(r)]}
                         for i in range(n)}
    ref = oracle(training_dynamics, burn_out if burn_out is not None else 100, include_ci)
    ours = S.compute_scores(table_from_logits(logits, gold, ids), burn_out=burn_out,
                            include_ci=include_ci)
    assert ours["id"].tolist() == sorted(training_dynamics)
    expected = pd.DataFrame.from_dict(ref, orient="index").loc[ours["id"]]
    kept = min(burn_out or r, r)
    if include_ci and kept == 1:
        assert expected["variability"].isna().all()  # the reference's 0/0 at R = 1 ...
        expected["variability"] = 0.0  # ... which we define as 0
    for col in ("confidence", "variability", "threshold_closeness"):
        np.testing.assert_allclose(ours[col], expected[col], rtol=0, atol=1e-6, err_msg=col)
    np.testing.assert_allclose(ours["correctness"] * kept, expected["correctness"], atol=1e-9)
    sentinel = expected["forgetfulness"].to_numpy() == 1000
    assert sentinel.any() and (~sentinel).any()
    np.testing.assert_array_equal(ours["never_learned"], sentinel)
    np.testing.assert_array_equal(ours["forgetfulness"][~sentinel],
                                  expected["forgetfulness"][~sentinel])
    assert (ours["forgetfulness"][sentinel] == 0).all()
    assert (ours["forgetfulness"] > 0).any() == (kept > 1)


def test_other_scores_agree_with_loops():
    n, r, k = 200, 5, 3
    logits, gold = random_logits(n, r, k, seed=11)
    ours = S.compute_scores(table_from_logits(logits, gold), el2n_epochs=2)
    for i in range(0, n, 17):
        margins, losses, norms, ale = [], [], [], []
        for t in range(r):
            z = logits[i, t].astype(np.float64)
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            margins.append(z[gold[i]] - max(z[j] for j in range(k) if j != gold[i]))
            losses.append(-np.log(p[gold[i]]))
            onehot = np.eye(k)[gold[i]]
            norms.append(np.sqrt(((p - onehot) ** 2).sum()))
            ale.append(p[gold[i]] * (1 - p[gold[i]]))
        row = ours.iloc[i]
        assert row["aum"] == pytest.approx(np.mean(margins), abs=1e-5)
        assert row["mean_loss"] == pytest.approx(np.mean(losses), abs=1e-5)
        assert row["el2n"] == pytest.approx(np.mean(norms[:2]), abs=1e-6)
        assert row["aleatoric"] == pytest.approx(np.mean(ale), abs=1e-6)


# --------------------------------------------------------------------------------------------
# hand-computed cases


def test_single_record():
    table = table_from_p(np.array([[0.7], [0.2]], np.float32), np.array([[True], [False]]))
    for include_ci in (False, True):
        df = S.compute_scores(table, include_ci=include_ci)
        np.testing.assert_allclose(df["confidence"], [0.7, 0.2], atol=1e-7)
        assert df["variability"].tolist() == [0.0, 0.0]
        assert df["correctness"].tolist() == [1.0, 0.0]
        assert df["forgetfulness"].tolist() == [0, 0]
        assert df["never_learned"].tolist() == [False, True]
        assert df.attrs["records"] == 1


def test_argmax_ties_go_to_the_lowest_class():
    logits = np.array([[[1.0, 1.0, 0.0]], [[1.0, 1.0, 0.0]], [[0.0, 2.0, 2.0]]], np.float32)
    df = S.compute_scores(table_from_logits(logits, np.array([0, 1, 2])))
    assert df["correctness"].tolist() == [1.0, 0.0, 0.0]
    assert df["never_learned"].tolist() == [False, True, True]
    np.testing.assert_allclose(df["confidence"], [0.4223188, 0.4223188, 0.4683105], atol=1e-6)


def test_correctness_forgetfulness_and_never_learned():
    correct = np.array([[1, 0, 1, 1, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1],
                        [0, 0, 0, 0, 1]], bool)
    p = np.full(correct.shape, 0.5, np.float32)
    df = S.compute_scores(table_from_p(p, correct))
    assert df["correctness"].tolist() == [0.6, 0.2, 0.0, 1.0, 0.2]
    assert df["forgetfulness"].tolist() == [2, 1, 0, 0, 0]
    assert df["never_learned"].tolist() == [False, False, True, False, False]
    order = R.order_by(df, "forgetfulness")  # never-learned first, then by count, ties by id
    assert df["id"].to_numpy()[order].tolist() == [2, 0, 1, 3, 4]
    assert df["id"].to_numpy()[R.order_by(df, "forgetfulness", descending=False)].tolist() == \
        [3, 4, 1, 0, 2]


def test_burn_out_keeps_the_first_epochs():
    p = np.array([[0.2, 0.4, 0.9, 0.1]], np.float32)
    correct = np.array([[False, True, True, False]])
    table = table_from_p(p, correct, el2n=np.array([[0.5, 0.3, 0.1, 0.7]]))
    df = S.compute_scores(table, burn_out=2)
    assert df["confidence"][0] == pytest.approx(0.3, abs=1e-7)
    assert df["variability"][0] == pytest.approx(0.1, abs=1e-7)
    assert df["correctness"][0] == 0.5 and df["forgetfulness"][0] == 0
    assert df["el2n"][0] == pytest.approx(0.4, abs=1e-7)
    assert df.attrs["epochs"] == 2 and df.attrs["el2n_epochs"] == 2
    full = S.compute_scores(table, burn_out=10)  # beyond the recorded epochs: everything
    assert full["confidence"][0] == pytest.approx(0.4, abs=1e-7)
    assert full["forgetfulness"][0] == 1 and full.attrs["epochs"] == 4
    one = S.compute_scores(table, burn_out=1, el2n_epochs=3)
    assert one["el2n"][0] == pytest.approx(0.5, abs=1e-7) and one["variability"][0] == 0.0


def test_burn_out_counts_epochs_not_records():
    p = np.array([[0.1, 0.3, 0.5, 0.7, 0.9, 0.2]], np.float32)  # 3 epochs x 2 records
    df = S.compute_scores(table_from_p(p, p > 0.4, records=2), burn_out=2)
    assert df.attrs["records"] == 4
    assert df["confidence"][0] == pytest.approx(0.4, abs=1e-7)


def test_include_ci_by_hand():
    p = np.array([[0.2, 0.4]], np.float32)
    table = table_from_p(p, np.array([[False, False]]))
    plain = S.compute_scores(table)["variability"][0]
    ci = S.compute_scores(table, include_ci=True)["variability"][0]
    assert plain == pytest.approx(0.1, abs=1e-7)
    assert ci == pytest.approx(np.sqrt(0.01 + 0.0001), abs=1e-7)


def test_other_scores_by_hand():
    p = np.array([[0.5, 1.0]], np.float32)
    table = table_from_p(p, np.array([[True, True]]), margin=np.array([[1.0, 3.0]]),
                         loss=np.array([[0.5, 0.25]]), el2n=np.array([[0.6, 0.2]]))
    row = S.compute_scores(table, el2n_epochs=1).iloc[0]
    assert row["aum"] == 2.0 and row["mean_loss"] == 0.375
    assert row["el2n"] == pytest.approx(0.6, abs=1e-7)
    assert row["aleatoric"] == pytest.approx(0.125)
    assert row["threshold_closeness"] == pytest.approx(0.1875)
    assert S.compute_scores(table, el2n_epochs=None).iloc[0]["el2n"] == pytest.approx(0.4)


def test_output_columns_types_and_order():
    df = S.compute_scores(make_table(n=7, epochs=3))
    assert tuple(df.columns) == S.score_columns()
    assert S.score_columns() == ("id", "gold", *R.score_names(), "region")
    assert df["id"].is_monotonic_increasing and df["id"].dtype == np.int64
    for name in ("confidence", "variability", "aum", "el2n", "aleatoric", "mean_loss"):
        assert df[name].dtype == np.float64
    assert df["forgetfulness"].dtype == np.int64 and df["never_learned"].dtype == bool
    assert list(df["region"].cat.categories) == list(S.REGIONS)


def test_path_and_table_give_identical_scores(tmp_path):
    table = make_table(n=300, epochs=4, records=2, seed=5)
    write_dynamics(tmp_path / "d.parquet", table, row_group_ids=32)
    shuffled = table.take(np.random.default_rng(0).permutation(table.num_rows))
    a = S.compute_scores(table, regions={"rule": "quantile"})
    b = S.compute_scores(tmp_path / "d.parquet", chunk_rows=64 * 8,
                         regions={"rule": "quantile"})
    c = S.compute_scores(shuffled, chunk_rows=100, regions={"rule": "quantile"})
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, c)


def test_plain_array_functions_match_compute_scores():
    logits, gold = random_logits(50, 4, 3, seed=2)
    df = S.compute_scores(table_from_logits(logits, gold), el2n_epochs=None)
    v = per_example_values(logits.reshape(-1, 3), np.repeat(gold, 4))
    grid = {k: a.reshape(50, 4) for k, a in v.items()}
    correct = R.correct_matrix(grid["pred"], gold)
    np.testing.assert_allclose(R.confidence(grid["p_gold"]), df["confidence"], atol=1e-12)
    np.testing.assert_allclose(R.variability(grid["p_gold"]), df["variability"], atol=1e-12)
    np.testing.assert_array_equal(R.correctness(correct), df["correctness"])
    np.testing.assert_array_equal(R.forgetfulness(correct), df["forgetfulness"])
    np.testing.assert_array_equal(R.never_learned(correct), df["never_learned"])
    np.testing.assert_allclose(R.aleatoric(grid["p_gold"]), df["aleatoric"], atol=1e-12)
    np.testing.assert_allclose(R.aum(grid["margin"]), df["aum"], atol=1e-12)
    np.testing.assert_allclose(R.el2n(grid["el2n"]), df["el2n"], atol=1e-12)
    np.testing.assert_allclose(R.mean_loss(grid["loss"]), df["mean_loss"], atol=1e-12)
    via_logits = S.scores_from_logits(logits, gold, el2n_epochs=None)
    pd.testing.assert_frame_equal(via_logits.drop(columns="region"), df.drop(columns="region"),
                                  check_dtype=False)
    with pytest.raises(ValueError, match=r"p_gold must be 2-D"):
        R.confidence(np.zeros(3))


# --------------------------------------------------------------------------------------------
# regions


def test_threshold_rule_boundaries():
    scores = {"confidence": np.array([0.5, 0.49, 0.9, 0.1, 0.6]),
              "variability": np.array([0.0, 0.0, 0.2, 0.19, 0.3])}
    assert S.assign_regions(scores, rule="threshold").tolist() == [
        S.EASY, S.HARD, S.AMBIGUOUS, S.HARD, S.AMBIGUOUS]
    assert S.assign_regions(scores, rule="threshold", confidence=0.05,
                            variability=0.25).tolist() == [
        S.EASY, S.EASY, S.EASY, S.EASY, S.AMBIGUOUS]


def test_quantile_rule_breaks_ties_by_id():
    scores = pd.DataFrame({
        "id": [50, 40, 30, 20, 10, 60],
        "confidence": [0.9, 0.2, 0.2, 0.8, 0.2, 0.5],
        "variability": [0.3, 0.3, 0.1, 0.1, 0.1, 0.3],
    })
    regions = S.assign_regions(scores, rule="quantile", ambiguous=2 / 6, hard=2 / 6)
    # ambiguous: two of the three at 0.3, smaller ids first (40, 50); hard: lowest confidence
    # among the rest, 0.2 tied between ids 30 and 10 -> both (k = 2); easy: 20 and 60
    assert dict(zip(scores["id"], regions, strict=True)) == {50: S.AMBIGUOUS, 40: S.AMBIGUOUS,
                                                30: S.HARD, 10: S.HARD, 20: S.EASY, 60: S.EASY}
    one = S.assign_regions(scores, rule="quantile", ambiguous=0.0, hard=1 / 6)
    assert dict(zip(scores["id"], one, strict=True))[10] == S.HARD and (one == S.HARD).sum() == 1


def test_regions_reach_compute_scores_and_are_validated():
    table = make_table(n=30, epochs=3)
    df = S.compute_scores(table, regions={"rule": "quantile", "ambiguous": 0.2, "hard": 0.1})
    assert df["region"].value_counts().to_dict() == {S.EASY: 21, S.AMBIGUOUS: 6, S.HARD: 3}
    default = S.compute_scores(table)
    assert default.attrs["regions"] == S.DEFAULT_REGIONS
    bad = [({"rule": "kmeans"}, "regions.rule"),
           ({"rule": "threshold", "hard": 0.1}, "unknown parameter"),
           ({"rule": "quantile", "ambiguous": 0.7, "hard": 0.5}, "exceeds 1"),
           ({"rule": "threshold", "confidence": 1.5},
            r"regions.confidence must lie in \[0, 1\]"),
           ({"rule": "threshold", "variability": "high"}, "must be a number"),
           # the default rule is quantile: threshold parameters alone are not silently ignored
           ({"confidence": 0.5}, "unknown parameter")]
    for regions, match in bad:
        with pytest.raises(ConfigError, match=match):
            S.compute_scores(table, regions=regions)


def test_a_fast_converging_run_still_has_an_ambiguous_region():
    # every variability below the paper's 0.2: the fixed rule finds no ambiguous example, the
    # default (quantiles of the run) makes the most variable third ambiguous and says where
    rng = np.random.default_rng(0)
    scores = pd.DataFrame({"id": np.arange(900), "confidence": rng.uniform(0.3, 1.0, 900),
                           "variability": rng.uniform(0.0, 0.19, 900)})
    paper = S.assign_regions(scores, rule="threshold")
    assert (paper == S.AMBIGUOUS).sum() == 0
    adaptive = S.assign_regions(scores)
    assert (adaptive == S.AMBIGUOUS).sum() == 297 and (adaptive == S.HARD).sum() == 297
    scores["region"] = adaptive
    scores.attrs["regions"] = dict(S.DEFAULT_REGIONS)
    rule = S.regions_rule(scores)
    cut = rule["cutoffs"]["ambiguous_min_variability"]
    assert cut == round(scores.loc[adaptive == S.AMBIGUOUS, "variability"].min(), 6)
    assert (scores.loc[adaptive != S.AMBIGUOUS, "variability"] <= cut).all()
    hard_cut = rule["cutoffs"]["hard_max_confidence"]
    assert hard_cut == round(scores.loc[adaptive == S.HARD, "confidence"].max(), 6)
    assert rule["statement"].startswith("Quantiles of this run: the 33% of examples")
    assert f"variability >= {cut:.4g}" in rule["statement"]
    assert f"confidence <= {hard_cut:.4g}" in rule["statement"]


def test_the_paper_rule_is_stated_with_its_thresholds():
    scores = pd.DataFrame({"id": [0, 1, 2], "confidence": [0.9, 0.1, 0.5],
                           "variability": [0.0, 0.0, 0.3]})
    scores["region"] = S.assign_regions(scores, rule="threshold")
    scores.attrs["regions"] = {"rule": "threshold", "confidence": 0.5, "variability": 0.2}
    rule = S.regions_rule(scores)
    assert rule["rule"] == "threshold" and rule["params"] == {"confidence": 0.5,
                                                               "variability": 0.2}
    assert "variability >= 0.2" in rule["statement"] and "confidence >= 0.5" in rule["statement"]
    assert rule["cutoffs"] == {"ambiguous_min_variability": 0.3, "hard_max_confidence": 0.1}


def test_option_errors():
    table = make_table()
    for kwargs, match in [({"burn_out": 0}, "burn_out"), ({"burn_out": True}, "burn_out"),
                          ({"el2n_epochs": -1}, "el2n_epochs")]:
        with pytest.raises(ConfigError, match=match):
            S.compute_scores(table, **kwargs)
    with pytest.raises(DataError, match="missing dynamics column"):
        S.compute_scores(table.drop_columns(["el2n"]))


# --------------------------------------------------------------------------------------------
# noise detection


def _flip_scores(n: int = 40):
    rng = np.random.default_rng(0)
    flipped = np.zeros(n, bool)
    flipped[rng.choice(n, 8, replace=False)] = True
    conf = np.where(flipped, rng.uniform(0.0, 0.2, n), rng.uniform(0.6, 1.0, n))
    var = rng.uniform(0.0, 0.1, n)
    correct = np.where(flipped, 0.0, 1.0)
    df = pd.DataFrame({
        "id": np.arange(n), "gold": 0, "confidence": conf, "variability": var,
        "correctness": correct, "forgetfulness": rng.integers(0, 2, n),
        "never_learned": flipped, "threshold_closeness": conf * (1 - conf),
        "aum": np.where(flipped, -2.0, 2.0) + rng.normal(0, 0.1, n),
        "el2n": 1 - conf, "aleatoric": conf * (1 - conf), "mean_loss": -np.log(conf + 1e-3),
    })
    # fixed thresholds: every flipped example (confidence < 0.2) is hard-to-learn by construction
    df["region"] = S.assign_regions(df, rule="threshold")
    return df, flipped


#: The scores with a label-error orientation; every other registered score is excluded.
LABEL_ERROR_SCORES = {"confidence", "correctness", "forgetfulness", "aum", "el2n", "mean_loss"}


def noisy_dynamics(n: int = 400, epochs: int = 8, k: int = 4, seed: int = 0):
    """Logits of a model that learns every example's TRUE class: easy examples steadily,
    ambiguous ones with a true-class logit that swings from epoch to epoch; flipped examples
    are learned like easy ones but recorded under another (given) label, so their p_gold
    stays near 0. -> (dynamics table, is_flipped [n] aligned with ids 0..n-1)."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    kind = rng.choice(3, size=n, p=[0.6, 0.25, 0.15])  # 0 easy, 1 ambiguous, 2 flipped
    t = np.linspace(0.0, 1.0, epochs)
    boost = np.where(kind[:, None] == 1,
                     0.5 + 2.5 * np.sin(2 * np.pi * (2 * t[None, :] + rng.random((n, 1)))),
                     1.0 + 5.0 * t[None, :])
    logits = rng.normal(0.0, 0.5, (n, epochs, k))
    logits[np.arange(n), :, true] += boost
    flipped = kind == 2
    given = np.where(flipped, (true + rng.integers(1, k, n)) % k, true)
    return table_from_logits(logits.astype(np.float32), given), flipped


def test_every_registered_score_states_its_orientation():
    for score in R.all_scores():
        assert score.suspicious in ("high", "low", None), score.name
        assert len(score.why.split()) >= 5, score.name  # a reason, not a placeholder
    oriented = {s.name for s in R.all_scores() if s.suspicious is not None}
    assert oriented == LABEL_ERROR_SCORES
    assert {R.get_score(n).suspicious for n in ("confidence", "correctness", "aum")} == {"low"}
    assert {R.get_score(n).suspicious for n in ("forgetfulness", "el2n", "mean_loss")} == {"high"}


def test_published_aurocs_beat_chance_and_the_excluded_carry_reasons():
    from sklearn.metrics import roc_auc_score

    table, flipped = noisy_dynamics()
    scores = S.compute_scores(table)
    result = S.noise_detection(scores, flipped)
    json.dumps(result, allow_nan=False)
    assert set(result["scores"]) == LABEL_ERROR_SCORES
    for name, entry in result["scores"].items():
        assert entry["auroc"] > 0.5, (name, entry)
        assert entry["average_precision"] > result["flip_rate"], (name, entry)
        assert entry["suspicious_when"] == R.get_score(name).suspicious
    excluded = set(R.score_names()) - LABEL_ERROR_SCORES
    assert set(result["excluded"]) == excluded
    for name in excluded:
        assert result["excluded"][name] == R.get_score(name).why
    # why they are excluded: read as "high = suspicious" they rank the flipped labels BELOW
    # chance here -- they mark the ambiguous examples, not the mislabelled ones
    for name in ("variability", "threshold_closeness", "aleatoric"):
        assert roc_auc_score(flipped, scores[name]) < 0.5, name
    with pytest.raises(ConfigError, match="no label-error orientation"):
        R.suspicion(scores, "variability")


def test_noise_detection_orientation_and_keys():
    df, flipped = _flip_scores()
    result = S.noise_detection(df, flipped)
    json.dumps(result, allow_nan=False)
    assert set(result) == {"n_examples", "n_flipped", "flip_rate", "scores", "excluded",
                           "regions", "hard_to_learn_flipped", "hard_to_learn_share"}
    for name in LABEL_ERROR_SCORES:
        assert result["scores"][name]["auroc"] == 1.0, name
        assert result["scores"][name]["average_precision"] == 1.0, name
    assert result["n_flipped"] == 8 and result["flip_rate"] == 0.2
    assert result["hard_to_learn_flipped"] == 8
    assert result["hard_to_learn_share"] == 1.0
    assert result["regions"]["hard_to_learn"] == {"count": 8, "flipped": 8,
                                                  "share_of_flipped": 1.0, "flip_rate": 1.0}
    assert all(type(v["auroc"]) is float for v in result["scores"].values())
    inverted = S.noise_detection(df, ~flipped)
    assert inverted["scores"]["confidence"]["auroc"] == 0.0


def test_a_score_without_values_is_excluded_not_failed():
    logits, gold = random_logits(60, 3, 3, seed=4)
    v = per_example_values(logits.reshape(-1, 3), np.repeat(gold, 3))
    grid = {k: a.reshape(60, 3) for k, a in v.items()}
    df = S.scores_from_arrays(grid["p_gold"], grid["pred"], gold)  # no margin, loss, el2n
    assert df[["aum", "el2n", "mean_loss"]].isna().all().all()
    result = S.noise_detection(df, np.arange(60) % 5 == 0)
    assert set(result["scores"]) == {"confidence", "correctness", "forgetfulness"}
    assert "no value" in result["excluded"]["aum"]


def test_noise_detection_errors():
    df, flipped = _flip_scores()
    with pytest.raises(DataError, match="both flipped and clean"):
        S.noise_detection(df, np.zeros(len(df), bool))
    with pytest.raises(DataError, match="shape"):
        S.noise_detection(df, flipped[:-1])
    with pytest.raises(DataError, match="booleans"):
        S.noise_detection(df, np.full(len(df), 2))
    assert S.noise_detection(df, flipped.astype(int))["n_flipped"] == 8


def test_scores_table_round_trip(tmp_path):
    df = S.compute_scores(make_table(n=20, epochs=3), burn_out=2)
    table = S.scores_table(df)
    assert table.schema.equals(S.scores_schema())
    write_parquet(tmp_path / "s.parquet", table)
    back = S.read_scores(tmp_path / "s.parquet")
    pd.testing.assert_frame_equal(back, df)
    assert back.attrs["burn_out"] == 2


def test_read_scores_checks_types_by_name(tmp_path):
    import pyarrow as pa

    table = S.scores_table(S.compute_scores(make_table(n=10, epochs=2)))
    position = table.schema.get_field_index("forgetfulness")
    as_float = table.set_column(position, "forgetfulness",
                                table.column("forgetfulness").cast(pa.float64()))
    write_parquet(tmp_path / "s.parquet", as_float)
    with pytest.raises(DataError, match=r"forgetfulness is double, expected int64"):
        S.read_scores(tmp_path / "s.parquet")
