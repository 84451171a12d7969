"""Evaluation (metrics, any prepared file, refusals) and the report's comparison table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from datamap.data import read_meta, read_split
from datamap.errors import ConfigError, DataError
from datamap.evaluation.evaluate import evaluate_model, evaluate_subsets, mean_std, over_seeds
from datamap.io import write_json
from datamap.layout import Layout
from datamap.report.comparison import (
    CURVE_COLUMNS,
    collect,
    comparison_table,
    spec_order,
    write_report,
)
from datamap.training.metrics import classification_metrics, evaluate_split, macro_f1

from .helpers import compose_cfg, sentiment_frame


def test_classification_metrics_hand_computed():
    labels = np.array([0, 1, 2, 2])
    logits = np.array([[2.0, 0, 0], [0, 2.0, 0], [0, 2.0, 0], [0, 0, 2.0]], dtype=np.float32)
    m = classification_metrics(labels, logits, num_classes=3)
    assert m["accuracy"] == 0.75 and m["n"] == 4
    # per-class F1: class0 1.0, class1 2/3, class2 2/3
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3, abs=1e-6)
    p_right = np.exp(2) / (np.exp(2) + 2)
    p_wrong = 1 / (np.exp(2) + 2)
    expected = -(3 * np.log(p_right) + np.log(p_wrong)) / 4
    assert m["loss"] == pytest.approx(expected, abs=1e-6)


def test_absent_class_counts_zero_in_macro_f1():
    labels = np.array([0, 0])
    logits = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=np.float32)
    assert classification_metrics(labels, logits, 3)["macro_f1"] == pytest.approx(1 / 3)


def _split(accuracy, macro_f1=0.8, loss=0.3, n=100):
    return {"accuracy": accuracy, "macro_f1": macro_f1, "loss": loss, "n": n}


def _fake_results(root, specs, controls=("mnist",), seeds=(0, 1, 2), spread=0.01,
                  missing=()):
    """Subset summaries and evaluate-stage metrics (through the real over_seeds) of ``specs``:
    spec i has test accuracy 0.9 - i/10 (+/- ``spread`` over the seeds)."""
    layout = Layout(root)
    evaluated = {}
    for i, spec in enumerate(specs):
        write_json(layout.subset(spec) / "summary.json",
                   {"n_selected": 10 * (i + 1), "fraction": 0.1 * (i + 1), "flipped_share": 0.05,
                    "regions": {"ambiguous": 5 * (i + 1), "easy-to-learn": 5 * (i + 1)},
                    "missing_classes": list(missing) if i else []})
        per_seed = {}
        for j, seed in enumerate(seeds):
            shift = (j - (len(seeds) - 1) / 2) * spread
            per_seed[f"seed_{seed}"] = {
                "test": _split(0.9 - i / 10 + shift),
                "control": {name: _split(0.5 + k / 10 + shift) for k, name in enumerate(controls)},
            }
        evaluated[spec] = over_seeds(per_seed)
    write_json(layout.eval_metrics, evaluated)
    write_json(layout.prepared / "controls" / "index.json",
               {name: {"description": f"the {name} set", "examples": 100} for name in controls})
    return layout


def test_mean_and_sample_std_over_seeds():
    assert mean_std([0.8, 0.9, 1.0]) == {"mean": 0.9, "std": 0.1}
    assert mean_std([0.7]) == {"mean": 0.7, "std": 0.0}
    summary = over_seeds({"seed_0": {"test": _split(0.8, n=7), "control": {"m": _split(0.4)}},
                          "seed_1": {"test": _split(0.6, n=7), "control": {"m": _split(0.2)}}})
    assert summary["seeds"] == 2 and summary["test"]["n"] == 7
    assert summary["test"]["accuracy"] == {"mean": 0.7, "std": pytest.approx(0.141421, abs=1e-6)}
    assert summary["control"]["m"]["accuracy"]["mean"] == pytest.approx(0.3)
    assert summary["per_seed"]["seed_1"]["test"]["accuracy"] == 0.6


def test_report_has_stable_keys_and_all_outputs(tmp_path):
    layout = _fake_results(tmp_path, ["full", "hard_33"])
    report = write_report(layout, tmp_path / "report", ["full", "hard_33"], baseline="full")
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert saved == report
    assert set(saved["full"]) == {"n_train", "fraction", "flipped_share", "seeds",
                                  "missing_classes", "regions", "test", "control"}
    assert set(saved["full"]["control"]["mnist"]) == {"accuracy", "macro_f1", "loss"}
    assert set(saved["full"]["test"]["accuracy"]) == {"mean", "std"}
    hard = saved["hard_33"]["test"]["accuracy"]
    assert hard["mean"] == pytest.approx(0.8) and hard["std"] == pytest.approx(0.01)
    # the difference from the baseline and its standard error sqrt(s1^2/3 + s2^2/3)
    assert hard["diff"] == pytest.approx(-0.1)
    assert hard["diff_se"] == pytest.approx(np.sqrt(2 * 0.01**2 / 3), abs=1e-6)
    assert saved["hard_33"]["regions"] == {"ambiguous": 0.5, "easy_to_learn": 0.5,
                                           "hard_to_learn": 0.0}
    table = (tmp_path / "report" / "summary.md").read_text()
    assert "| `hard_33` | 20 | 20% | 50% / 50% / 0% | 5.0% | - |" in table
    assert "0.800 ± 0.010 (-0.100*)" in table  # 0.1 is far beyond 2 standard errors
    assert "| mnist acc |" in table and "`mnist`: the mnist set" in table
    for name in ("comparison.png", "fraction_curves.png"):
        png = (tmp_path / "report" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        # deterministic figure bytes
        write_report(layout, tmp_path / "again", ["full", "hard_33"], baseline="full")
        assert (tmp_path / "again" / name).read_bytes() == png


def test_difference_within_two_standard_errors_is_not_marked(tmp_path):
    layout = _fake_results(tmp_path, ["full", "a", "b"], spread=0.3)
    write_report(layout, tmp_path / "report", ["full", "a", "b"], baseline="full")
    table = (tmp_path / "report" / "summary.md").read_text()
    assert "(-0.100)" in table and "(-0.200)" in table and "*" not in table.split("|---|")[1]


def test_a_single_seed_is_never_marked(tmp_path):
    layout = _fake_results(tmp_path, ["full", "a"], seeds=(7,))
    report = write_report(layout, tmp_path / "report", ["full", "a"], baseline="full")
    assert report["a"]["seeds"] == 1 and report["a"]["test"]["accuracy"]["std"] == 0
    table = (tmp_path / "report" / "summary.md").read_text()
    assert "0.800 ± 0.000 (-0.100)" in table


def test_report_refuses_an_unknown_baseline(tmp_path):
    layout = _fake_results(tmp_path, ["full"])
    with pytest.raises(ConfigError, match="selection.baseline='everything' is not a selection"):
        write_report(layout, tmp_path / "report", ["full"], baseline="everything")


def test_rows_are_grouped_by_criterion_and_fraction():
    definitions = {"mixed": {"ambiguous": 0.2, "easy_to_learn": 0.1}, "hard_50": {"hard": 0.5},
                   "ambiguous_25": {"ambiguous": 0.25}, "full": {"random": 1.0},
                   "hard_10": {"hard": 0.1}, "ambiguous_10": {"ambiguous": 0.1}}
    assert spec_order(list(definitions), definitions, "full") == [
        "full", "hard_10", "hard_50", "ambiguous_10", "ambiguous_25", "mixed"]
    assert spec_order(["b", "a"], {}, None) == ["b", "a"]


def test_fraction_curves_keep_criteria_with_two_fractions(tmp_path):
    specs = ["full", "ambiguous_10", "ambiguous_25", "hard_10", "mixed"]
    definitions = {"full": {"random": 1.0}, "ambiguous_10": {"ambiguous": 0.1},
                   "ambiguous_25": {"ambiguous": 0.25}, "hard_10": {"hard_to_learn": 0.1},
                   "mixed": {"ambiguous": 0.2, "random": 0.1}}
    layout = _fake_results(tmp_path, specs)
    write_report(layout, tmp_path / "report", specs, definitions, baseline="full")
    curves = pd.read_csv(tmp_path / "report" / "fraction_curves.csv")
    assert list(curves.columns) == list(CURVE_COLUMNS)
    # hard_to_learn has one fraction, random one (full): no curve; mixed is not one criterion
    assert set(curves["criterion"]) == {"ambiguous"}
    assert curves[curves["set"] == "test"]["fraction"].tolist() == [0.1, 0.25]
    row = curves[(curves["spec"] == "ambiguous_25") & (curves["set"] == "mnist")].iloc[0]
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert row["accuracy"] == pytest.approx(saved["ambiguous_25"]["control"]["mnist"]
                                            ["accuracy"]["mean"])
    assert row["seeds"] == 3


def test_report_names_the_classes_a_subset_lacks(tmp_path):
    layout = _fake_results(tmp_path, ["full", "tiny"], missing=("0", "6"))
    report = write_report(layout, tmp_path / "report", ["full", "tiny"], baseline="full")
    assert report["tiny"]["missing_classes"] == 2 and report["full"]["missing_classes"] == 0
    assert "| 0, 6 |" in (tmp_path / "report" / "summary.md").read_text()


def test_report_refuses_missing_spec(tmp_path):
    layout = _fake_results(tmp_path, ["full"])
    with pytest.raises(DataError, match="not found"):
        collect(layout, ["full", "missing"])


def test_report_refuses_single_run_metrics(tmp_path):
    layout = _fake_results(tmp_path, ["full"])
    write_json(layout.eval_metrics,
               {"full": {"test": _split(0.9), "control": {"mnist": _split(0.5)}}})
    with pytest.raises(DataError, match="mean and std over seeds"):
        collect(layout, ["full"])


def test_comparison_table_one_row_per_spec():
    perfect = {m: {"mean": 1.0, "std": 0.0} for m in ("accuracy", "macro_f1", "loss")}
    entry = {"n_train": 5, "fraction": 0.5, "seeds": 2, "test": perfect,
             "regions": dict.fromkeys(("easy_to_learn", "ambiguous", "hard_to_learn"), 0.0),
             "control": {"mnist": perfect}}
    table = comparison_table({"a": entry, "b": entry})
    assert table.count("\n") == 4 and "n/a" in table


def test_report_with_several_control_sets_and_without(tmp_path):
    layout = _fake_results(tmp_path / "two", ["full"], controls=("mnist", "rotated"))
    report = write_report(layout, tmp_path / "two" / "report", ["full"], baseline="full")
    assert report["full"]["control"]["rotated"]["accuracy"]["mean"] == pytest.approx(0.6)
    header = (tmp_path / "two" / "report" / "summary.md").read_text()
    assert "| test acc |" in header and "| mnist acc |" in header and "| rotated acc |" in header
    layout = _fake_results(tmp_path / "none", ["full"], controls=())
    report = write_report(layout, tmp_path / "none" / "report", ["full"])
    assert report["full"]["control"] == {}
    summary = (tmp_path / "none" / "report" / "summary.md").read_text()
    assert "No control set" in summary and "mnist" not in summary


def test_report_refuses_specs_evaluated_on_different_control_sets(tmp_path):
    layout = _fake_results(tmp_path, ["full", "hard_33"])
    metrics = json.loads(layout.eval_metrics.read_text())
    metrics["hard_33"]["control"] = {"rotated": metrics["hard_33"]["control"]["mnist"]}
    write_json(layout.eval_metrics, metrics)
    with pytest.raises(DataError, match="stale: rerun evaluate"):
        collect(layout, ["full", "hard_33"])


# ------------------------------------------------------------------ evaluating a real model


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """A text_bow model trained for two epochs on generated sentences, with a control file."""
    from datamap.data import TableSource
    from datamap.data.prepare import prepare
    from datamap.models.checkpoint import load_model
    from datamap.training.fit import fit_classifier

    root = tmp_path_factory.mktemp("text")
    frame = sentiment_frame(160)
    frame[:120].to_csv(root / "train.csv", index=False)
    frame[120:].assign(sentence=lambda f: f["sentence"].str.upper()).to_csv(
        root / "upper.csv", index=False)
    source = TableSource(train=str(root / "train.csv"), control=str(root / "upper.csv"),
                         text_columns=["sentence"])
    prepare(source.load(), root / "prepared", val=0.2, test=0.2, label_noise=0.0, seed=0)
    cfg = compose_cfg("data=table", "data.source.train=unused", "model=text_bow",
                      "trainer.max_epochs=2", "logger=none", "callbacks=none")
    fit_classifier(cfg, prepared_dir=root / "prepared", out_dir=root / "train")
    return load_model(root / "train" / "model.ckpt"), root / "prepared"


def test_evaluate_model_on_test_and_control_sets(text_model):
    model, prepared = text_model
    metrics, predictions = evaluate_model(model, prepared, read_meta(prepared), batch_size=7)
    assert set(metrics) == {"test", "control"} and set(metrics["control"]) == {"control"}
    assert metrics["control"]["control"]["n"] == 40
    assert sorted(set(predictions["split"])) == ["control/control", "test"]
    # the same predictions as the model's own forward pass on the raw texts
    test = read_split(prepared, "test")
    import torch

    with torch.inference_mode():
        logits = model({"text": test.text.tolist()}).numpy()
    rows = predictions[predictions["split"] == "test"]
    assert np.array_equal(rows["pred"].to_numpy(), logits.argmax(axis=1))
    assert metrics["test"] == classification_metrics(test.labels, logits, 2)


def test_evaluate_subsets_gives_mean_std_and_pools_predictions(text_model, tmp_path):
    model, prepared = text_model
    checkpoint = prepared.parent / "train" / "model.ckpt"
    single, frame = evaluate_model(model, prepared, read_meta(prepared))
    metrics = evaluate_subsets({"twice": {3: checkpoint, 5: checkpoint}, "once": {0: checkpoint}},
                               prepared, tmp_path / "eval", batch_size=16)
    assert list(metrics) == ["twice", "once"]
    twice = metrics["twice"]
    assert twice["seeds"] == 2 and set(twice["per_seed"]) == {"seed_3", "seed_5"}
    assert twice["per_seed"]["seed_5"] == single
    assert twice["test"]["accuracy"] == {"mean": single["test"]["accuracy"], "std": 0.0}
    assert twice["control"]["control"]["n"] == 40
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved == metrics
    predictions = pd.read_parquet(tmp_path / "eval" / "predictions" / "twice.parquet")
    assert sorted(set(predictions["seed"])) == [3, 5] and len(predictions) == 2 * len(frame)
    confusion = pd.read_csv(tmp_path / "eval" / "confusion" / "twice" / "control_control.csv")
    assert list(confusion.columns) == ["actual", "predicted"]
    assert len(confusion) == 80  # both seeds' predictions, pooled
    assert len(pd.read_csv(tmp_path / "eval" / "confusion" / "once" / "test.csv")) == \
        metrics["once"]["test"]["n"]


def test_macro_f1_equals_scikit_learn_on_random_labels():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for k in (2, 3, 7):
        labels, preds = rng.integers(0, k, 200), rng.integers(0, k - 1, 200)  # a class unseen
        expected = f1_score(labels, preds, average="macro", labels=list(range(k)),
                            zero_division=0)
        assert macro_f1(labels, preds, k) == pytest.approx(expected, abs=1e-15)


def test_evaluate_split_on_any_prepared_file(text_model):
    model, prepared = text_model
    result = evaluate_split(model, prepared / "controls" / "control.parquet")
    assert result.metrics["n"] == 40 and len(result.predictions) == 40
    assert ((result.predictions["p_pred"] >= result.predictions["p_label"]) | (
        result.predictions["pred"] == result.predictions["label"])).all()


def test_checkpoint_with_other_classes_is_refused(text_model, tmp_path):
    from datamap.data import TableSource
    from datamap.data.prepare import prepare

    model, _ = text_model
    frame = sentiment_frame(90).assign(label=["a", "b", "c"] * 30)
    frame.to_csv(tmp_path / "three.csv", index=False)
    source = TableSource(train=str(tmp_path / "three.csv"), text_columns=["sentence"])
    prepare(source.load(), tmp_path / "prepared", val=0.2, test=0.2, label_noise=0.0, seed=0)
    with pytest.raises(DataError, match="the model has 2 classes but the prepared data has 3"):
        evaluate_model(model, tmp_path / "prepared", read_meta(tmp_path / "prepared"),
                       model_name="model.ckpt")


# ------------------------------------------------------------------ `datamap evaluate`


def test_datamap_evaluate_prints_what_the_evaluate_stage_writes(text_model, tmp_path, capsys):
    from datamap.cli import main

    model, prepared = text_model
    checkpoint = prepared.parent / "train" / "model.ckpt"
    stage, _ = evaluate_model(model, prepared, read_meta(prepared))
    code = main(["evaluate", str(checkpoint), "--prepared", str(prepared),
                 "--json", str(tmp_path / "metrics.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    # the same code path: the same numbers, nested as the stage's metrics.json
    assert json.loads((tmp_path / "metrics.json").read_text()) == stage
    for label, metrics in (("test", stage["test"]), ("control/control",
                                                      stage["control"]["control"])):
        line = next(row for row in out.splitlines() if row.startswith(label + " "))
        assert f"{metrics['accuracy']:.4f}" in line and f"{metrics['loss']:.4f}" in line


def test_datamap_evaluate_on_a_split_file_and_one_control(text_model, capsys):
    from datamap.cli import main

    _, prepared = text_model
    checkpoint = prepared.parent / "train" / "model.ckpt"
    code = main(["evaluate", str(checkpoint), "--prepared", str(prepared), "--data",
                 "control/control", str(prepared / "val.parquet")])
    out = capsys.readouterr().out
    assert code == 0 and "control/control" in out and str(prepared / "val.parquet") in out


def test_datamap_evaluate_refuses_in_one_line(text_model, tmp_path, capsys):
    from datamap.cli import main
    from datamap.data import TableSource
    from datamap.data.prepare import prepare

    _, prepared = text_model
    checkpoint = prepared.parent / "train" / "model.ckpt"
    # same number of classes, other names: the checkpoint knows its class names
    frame = sentiment_frame(90).assign(label=["yes", "no"] * 45)
    frame.to_csv(tmp_path / "other.csv", index=False)
    source = TableSource(train=str(tmp_path / "other.csv"), text_columns=["sentence"])
    prepare(source.load(), tmp_path / "prepared", val=0.2, test=0.2, label_noise=0.0, seed=0)
    cases = [
        (["--prepared", str(tmp_path / "prepared"), "--data", "test"],
         "the model's classes (negative, positive) are not the prepared data's"),
        (["--prepared", str(prepared), "--data", "control/nope"],
         "has no such control set (it has control/control)"),
        (["--prepared", str(prepared), "--data", "nowhere.parquet"],
         "not a split name"),
    ]
    for extra, fragment in cases:
        code = main(["evaluate", str(checkpoint), *extra])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and fragment in lines[0], err


def test_report_states_the_region_rule_of_the_map(tmp_path):
    layout = _fake_results(tmp_path, ["full", "hard_33"])
    layout.cartography.mkdir(parents=True, exist_ok=True)
    statement = "Quantiles of this run: the 33% of examples with the highest variability ..."
    (layout.cartography / "summary.json").write_text(
        json.dumps({"regions_rule": {"rule": "quantile", "statement": statement}}))
    write_report(layout, tmp_path / "report", ["full", "hard_33"], baseline="full")
    assert f"Regions: {statement}\n" in (tmp_path / "report" / "summary.md").read_text()
    # a summary from before the rule was stated is stale, not silently unexplained
    (layout.cartography / "summary.json").write_text(json.dumps({"regions": {}}))
    with pytest.raises(DataError, match="rerun the cartography stage"):
        write_report(layout, tmp_path / "again", ["full", "hard_33"], baseline="full")
