"""The interactive data map page (without a browser: tests/test_data_map_browser.py opens it)."""

from __future__ import annotations

import base64
import io
import json
import re
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datamap import scoring as S
from datamap.cartography.page import (
    PAGE_NAME,
    InputPreview,
    data_map_page,
    html_options,
    image_thumbnails,
    input_previews,
    most_predicted,
    text_previews,
    write_data_map_html,
)
from datamap.data.splits import read_meta
from datamap.dynamics.schema import DynamicsMeta, build_dynamics
from datamap.dynamics.values import per_example_values
from datamap.errors import ConfigError, DataError

from .helpers import assert_one_line_error, fake_map_points, make_table, run_stage


def page_item(page: str) -> dict:
    """The Bokeh document embedded in a page."""
    found = re.search(r'<script type="application/json" id="datamap-item">(.*?)</script>', page,
                      re.S)
    assert found, "no embedded document"
    return json.loads(found.group(1))


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


def decode_png(payload: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(payload)))


def test_image_thumbnails_are_pngs_on_one_grey_scale():
    x = np.zeros((2, 1, 8, 8), dtype=np.float32)
    x[0, 0, 2:6, 3] = 1.0  # a bright stroke
    x[1, 0] = 0.5
    preview = image_thumbnails(x, 64)
    assert preview == image_thumbnails(x.copy(), 64)  # deterministic
    first, second = (decode_png(p) for p in preview.columns["thumb"])
    assert first.size == (8, 8) and first.mode == "L"
    assert np.asarray(first)[3, 3] == 255 and np.asarray(first)[0, 0] == 0
    assert np.asarray(second).max() == 128  # 0.5 on the shared 0..1 scale, not stretched
    # small images are scaled up by the browser
    assert 'src="data:image/png;base64,@thumb" width="64" height="64"' in preview.template


def test_large_colour_images_are_downscaled_to_the_thumbnail_size():
    x = np.random.default_rng(0).uniform(size=(1, 3, 100, 50)).astype(np.float32)
    preview = image_thumbnails(x, 40)
    image = decode_png(preview.columns["thumb"][0])
    assert image.size == (20, 40) and image.mode == "RGB"
    assert 'width="20" height="40"' in preview.template


def test_text_is_cut_and_left_to_the_tooltip_to_escape():
    evil = "</script><script>alert(1)</script>"
    preview = text_previews([evil, "a" * 50], ["second & last", "b"], limit=20)
    assert preview.columns["text"] == [evil[:19] + "\u2026", "a" * 19 + "\u2026"]
    assert preview.columns["text_pair"] == ["second & last", "b"]
    # plain @fields: Bokeh escapes their values ({safe} would not)
    assert "@text<" in preview.template and "@text_pair<" in preview.template
    assert "{safe}" not in preview.template


def test_input_previews_of_images_text_and_tables(tmp_path, digits_prepared):
    meta = read_meta(digits_prepared)
    ids = pq.read_table(digits_prepared / "train.parquet", columns=["id"]).column("id")
    chosen = ids.to_numpy()[[5, 0, 3]]
    thumbs = input_previews(digits_prepared, chosen, meta).columns["thumb"]
    assert [decode_png(t).size for t in thumbs] == [(8, 8)] * 3 and len(set(thumbs)) == 3
    assert input_previews(digits_prepared, chosen[::-1], meta).columns["thumb"] == thumbs[::-1]
    with pytest.raises(DataError, match=r"train\.parquet: 1 scored id\(s\) are not in"):
        input_previews(digits_prepared, np.array([-7]), meta)

    texts = tmp_path / "text"
    texts.mkdir()
    pq.write_table(pa.table({"id": [3, 1], "label": [0, 1], "text": ["a <b>", "c"],
                             "text_pair": ["d", "e"]}), texts / "train.parquet")
    shown = input_previews(texts, np.array([1, 3]), {"input_kind": "text"}).columns
    assert shown == {"text": ["c", "a <b>"], "text_pair": ["e", "d"]}

    table = tmp_path / "tabular"
    table.mkdir()
    x = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(20, dtype=np.float32)), 10)
    pq.write_table(pa.table({"id": [0, 1], "label": [0, 1], "x": x}), table / "train.parquet")
    preview = input_previews(table, np.array([1]), {"input_kind": "tabular",
                                                    "input_shape": [10]})
    (row,) = preview.columns["features"]
    assert row.startswith("x0=10, x1=11") and "x7=17" in row and row.endswith("(+2 more)")

    bare = tmp_path / "bare"
    bare.mkdir()
    pq.write_table(pa.table({"id": [0], "label": [0]}), bare / "train.parquet")
    with pytest.raises(DataError, match=r"bare/train\.parquet: no input column"):
        input_previews(bare, np.array([0]), {})


def text_preview(n: int) -> InputPreview:
    return text_previews([f"text <{i}>" for i in range(n)], None, 100)


def test_page_is_self_contained_and_byte_identical_for_the_same_points():
    from bokeh.plotting import figure

    points = fake_map_points(50)
    first = data_map_page(points, ["a", "b", "c"], text_preview(50), n_examples=50,
                          title="Map <x>")
    figure()  # models made in between move Bokeh's id counter; the page must not change
    assert first == data_map_page(points, ["a", "b", "c"], text_preview(50), n_examples=50,
                                  title="Map <x>")
    assert first.startswith("<!DOCTYPE html>")
    # every script inline, no stylesheet or script fetched, a policy that forbids fetching
    assert not re.search(r"<script[^>]*\ssrc=", first)
    markup = re.sub(r"<script[^>]*>.*?</script>", "", first, flags=re.S)
    assert "<link" not in markup and not re.search(r"\b(?:src|href)=", markup)
    assert "default-src 'none'" in first
    assert "<title>Map &lt;x&gt;</title>" in first
    columns = source_columns(first)
    assert list(columns["flipped"]).count("flipped") == int(points["flipped"].sum())
    assert list(columns["predicted"]) == [["a", "b", "c"][k] for k in points["most_predicted"]]
    # the colour control offers "label flipped" only when noise was injected
    assert list(columns["text"]) == [f"text <{i}>" for i in range(50)]
    without = data_map_page(points.drop(columns="flipped"), ["a", "b", "c"], text_preview(50),
                            n_examples=50, title="t")
    assert "flipped" not in source_columns(without)
    (buttons,) = _models(page_item(without), "RadioButtonGroup", "colour_by")
    assert buttons["attributes"]["labels"] == ["correctness", "region"]


@pytest.mark.parametrize("ids, sent", [
    ([7, 3, 5], [7, 3, 5]),
    ([2**40 + 1, 3, 5], [2**40 + 1, 3, 5]),  # exact as JavaScript numbers
    ([2**60 + 1, 2**60 + 3, 5], [str(2**60 + 1), str(2**60 + 3), "5"]),  # kept as text
])
def test_ids_reach_the_page_exactly(ids, sent):
    points = fake_map_points(3)
    points["id"] = ids
    page = data_map_page(points, ["a", "b", "c"], text_preview(3), n_examples=3, title="t")
    got = source_columns(page)["id"]
    assert list(got) == sent


def _models(node, kind: str, name: str):
    """Every full definition of a Bokeh model of type ``kind`` named ``name`` in a document."""
    if isinstance(node, dict):
        if node.get("name") == kind and node.get("attributes", {}).get("name") == name:
            yield node
        for value in node.values():
            yield from _models(value, kind, name)
    elif isinstance(node, list):
        for value in node:
            yield from _models(value, kind, name)


def test_stage_writes_the_page_with_every_example_under_the_size_budget(digits_cartography,
                                                                        digits_prepared):
    path = digits_cartography / PAGE_NAME
    page = path.read_text(encoding="utf-8")
    assert path.stat().st_size < 5_000_000  # the demo's budget
    columns = source_columns(page)
    train = pq.read_table(digits_prepared / "train.parquet").to_pandas()
    assert len(columns["thumb"]) == len(train)
    assert all(decode_png(t).size == (8, 8) for t in columns["thumb"][:20])
    flipped = (train["label"] != train["clean_label"]).to_numpy()
    assert list(columns["flipped"]) == np.where(flipped, "flipped", "kept").tolist()


def test_page_says_when_it_shows_a_subsample(tmp_path, digits_cartography, digits_prepared):
    from datamap.cartography.figures import plot_points_frame

    scores = S.read_scores(digits_cartography / "scores.parquet")
    dynamics = digits_cartography.parent / "dynamics.parquet"
    meta = read_meta(digits_prepared)
    info = write_data_map_html(scores, dynamics, digits_prepared, tmp_path / "a.html", meta=meta,
                               max_points=100, seed=7)
    assert (info.n_examples, info.n_shown) == (len(scores), 100)
    page = (tmp_path / "a.html").read_text(encoding="utf-8")
    assert info.bytes == len(page.encode("utf-8"))
    assert f"a random subsample of 100 of {len(scores):,} examples (seed 7" in page
    shown = source_columns(page)["id"]
    # the PNG map's seeded subsample
    np.testing.assert_array_equal(shown, plot_points_frame(scores, 100, seed=7)["id"])
    write_data_map_html(scores.sample(frac=1.0, random_state=1), dynamics, digits_prepared,
                        tmp_path / "b.html", meta=meta, max_points=100, seed=7)
    assert (tmp_path / "a.html").read_bytes() == (tmp_path / "b.html").read_bytes()


def source_columns(page: str) -> dict[str, np.ndarray]:
    """The columns of the page's ``points`` data source, decoded from Bokeh's serialisation (a
    list, an object array, or typed bytes in base64, gzip-compressed by recent versions)."""
    import gzip

    (source,) = _models(page_item(page), "ColumnDataSource", "points")
    columns = {}
    for name, column in source["attributes"]["data"]["entries"]:
        if isinstance(column, dict) and isinstance(column["array"], dict):
            raw = base64.b64decode(column["array"]["data"])
            raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
            columns[name] = np.frombuffer(raw, dtype=column["dtype"])
        else:
            columns[name] = np.asarray(column["array"] if isinstance(column, dict) else column,
                                       dtype=object)
    return columns


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
    train = pq.read_table(digits_prepared / "train.parquet", columns=["id", "label"])
    ids, labels = train.column("id").to_numpy(), train.column("label").to_numpy()
    scores = pd.DataFrame({"id": ids, "gold": labels, "confidence": 0.5, "variability": 0.1,
                           "correctness": 0.5, "forgetfulness": 0, "never_learned": False})
    scores["region"] = S.assign_regions(scores)
    short = dynamics_from_predictions(np.zeros((2, 3), dtype=np.int64), k=10)
    with pytest.raises(DataError, match="the dynamics lack some scored examples"):
        write_data_map_html(scores, short, digits_prepared, tmp_path / "p.html",
                            meta=read_meta(digits_prepared))
    assert not (tmp_path / "p.html").exists()
