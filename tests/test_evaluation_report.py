"""Evaluation metrics and the report's comparison table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datamap.evaluation import classification_metrics
from datamap.io import DataError, write_json
from datamap.layout import Layout
from datamap.report import collect, markdown_table, write_report


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


def _fake_results(root, specs):
    layout = Layout(root)
    for i, spec in enumerate(specs):
        write_json(layout.subset(spec) / "summary.json",
                   {"n_selected": 10 * (i + 1), "fraction": 0.1 * (i + 1), "flipped_share": 0.05})
        split = {"accuracy": 0.9 - i / 10, "macro_f1": 0.8, "loss": 0.3, "n": 100}
        write_json(layout.eval(spec) / "metrics.json", {"test": split, "control": split})
    return layout


def test_report_has_stable_keys_and_all_outputs(tmp_path):
    layout = _fake_results(tmp_path, ["full", "hard_33"])
    report = write_report(layout, tmp_path / "report", ["full", "hard_33"])
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert saved == report
    assert set(saved["full"]) == {"n_train", "fraction", "flipped_share", "test", "control"}
    assert set(saved["full"]["control"]) == {"accuracy", "macro_f1", "loss"}
    assert saved["hard_33"]["test"]["accuracy"] == pytest.approx(0.8)
    table = (tmp_path / "report" / "summary.md").read_text()
    assert "`hard_33`" in table and "0.8000" in table
    png = (tmp_path / "report" / "comparison.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # deterministic figure bytes
    write_report(layout, tmp_path / "again", ["full", "hard_33"])
    assert (tmp_path / "again" / "comparison.png").read_bytes() == png


def test_report_refuses_missing_spec(tmp_path):
    layout = _fake_results(tmp_path, ["full"])
    with pytest.raises(DataError, match="not found"):
        collect(layout, ["full", "missing"])


def test_markdown_table_one_row_per_spec():
    entry = {"n_train": 5, "fraction": 0.5, "test": {"accuracy": 1, "macro_f1": 1, "loss": 0},
             "control": {"accuracy": 1, "macro_f1": 1, "loss": 0}}
    table = markdown_table({"a": entry, "b": entry})
    assert table.count("\n") == 4 and "n/a" in table
