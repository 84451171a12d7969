"""The interactive page's stage-side behaviour: the most-predicted label, the page options, and
the refusals before anything is written (the page itself: test_data_map_page.py and, in
Chromium, test_data_map_browser.py)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from datamap import scoring as S
from datamap.cartography.page import html_options, most_predicted, write_data_map_html
from datamap.data.splits import read_meta, read_split
from datamap.dynamics.schema import DynamicsMeta, build_dynamics
from datamap.dynamics.values import per_example_values
from datamap.errors import ConfigError, DataError

from .helpers import assert_one_line_error, make_table, run_stage


def dynamics_from_predictions(pred: np.ndarray, k: int) -> pa.Table:
    """A dynamics table whose argmax is ``pred`` [epochs, n] (gold 0 for every example)."""
    epochs, n = pred.shape
    logits = np.zeros((epochs * n, k), dtype=np.float32)
    logits[np.arange(epochs * n), pred.ravel()] = 5.0
    gold = np.zeros(epochs * n, dtype=np.int64)
    cols = {"id": np.tile(np.arange(100, 100 + n), epochs),
            "epoch": np.repeat(np.arange(epochs), n), "record": np.zeros(epochs * n, int),
            "gold": gold, **per_example_values(logits, gold)}
    return build_dynamics(cols, DynamicsMeta(num_classes=k))


def test_most_predicted_matches_a_loop_over_examples():
    table = make_table(n=40, epochs=7, records=2, k=4, seed=5)
    got = most_predicted(table)
    frame = table.select(["id", "pred"]).to_pandas()
    for example_id, preds in frame.groupby("id")["pred"]:
        counts = Counter(preds.tolist())
        best = max(counts.values())
        assert got[example_id] == min(c for c, v in counts.items() if v == best)
    assert got.index.is_monotonic_increasing and len(got) == 40


def test_most_predicted_ties_go_to_the_lowest_class_and_epochs_are_cut():
    pred = np.array([[2, 3, 1],
                     [1, 3, 1],
                     [2, 0, 0],
                     [1, 0, 0]])
    table = dynamics_from_predictions(pred, k=4)
    assert most_predicted(table).tolist() == [1, 0, 0]  # 2:2 tie -> 1; 3:2 vs 0:2 tie -> 0
    assert most_predicted(table, epochs=2).tolist() == [1, 3, 1]


def test_html_options_are_checked():
    assert html_options(None) == {"thumbnail_px": 64, "text_chars": 300}
    assert html_options({"text_chars": 80})["text_chars"] == 80
    with pytest.raises(ConfigError, match=r"cartography\.html\.thumb is not an option"):
        html_options({"thumb": 3})
    with pytest.raises(ConfigError, match=r"cartography\.html\.text_chars must be a positive"):
        html_options({"text_chars": 0})


def test_a_bad_page_option_stops_the_stage_before_it_writes_anything(tmp_path):
    result = run_stage("cartography", "+cartography.html.thumb=3", cwd=tmp_path)
    assert_one_line_error(result, "cartography.html.thumb is not an option")
    assert not (tmp_path / "data").exists()


def test_missing_dynamics_rows_are_refused(tmp_path, digits_prepared):
    import pyarrow.parquet as pq

    train = pq.read_table(digits_prepared / "train.parquet", columns=["id", "label"])
    ids, labels = train.column("id").to_numpy(), train.column("label").to_numpy()
    scores = pd.DataFrame({"id": ids, "gold": labels, "confidence": 0.5, "variability": 0.1,
                           "correctness": 0.5, "forgetfulness": 0, "never_learned": False})
    scores["region"] = S.assign_regions(scores)
    short = dynamics_from_predictions(np.zeros((2, 3), dtype=np.int64), k=10)
    meta = read_meta(digits_prepared)
    with pytest.raises(DataError, match="the dynamics lack some scored examples"):
        write_data_map_html(scores, short, read_split(digits_prepared, "train", meta),
                            tmp_path / "p.html", meta=meta, region_rule="r")
    assert not (tmp_path / "p.html").exists()
