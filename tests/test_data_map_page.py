"""The data map page without a browser: the builder (validation, determinism, the CSP, the
embedded data), the corrections download's cells, and the page the cartography stage writes."""

from __future__ import annotations

import base64
import gzip
import hashlib
import re

import numpy as np
import pandas as pd
import pytest

from datamap.cartography.page import (
    Features,
    Images,
    Texts,
    build_page,
    builder,
    correctness_colours,
    csv_cell,
    page_meta,
    read_page_csv_cell,
)
from datamap.data.corrections import (
    Decision,
    format_corrections,
    guard_cell,
    parse_corrections,
    unguard_cell,
)
from datamap.errors import ConfigError, DataError
from datamap.scoring.regions import REGIONS

from .helpers import PAGE_CLASSES as CLASSES
from .helpers import PAGE_REGION_RULE as REGION_RULE
from .helpers import synthetic_points, synthetic_texts


def build(points, preview=None, decisions=None, **kw):
    kw = {"title": "t", "region_rule": REGION_RULE, **kw}
    return build_page(points, CLASSES, preview, decisions, **kw)


def blob(html: str, entry: dict) -> np.ndarray:
    """A column of a built page, decoded as the page decodes it."""
    match = re.search(rf'<script type="application/octet-stream" id="dm-blob-{entry["blob"]}" '
                      r'data-encoding="(\w+)">([^<]*)</script>', html)
    raw = base64.b64decode(match.group(2))
    if match.group(1) == "gzip":
        raw = gzip.decompress(raw)
    dtype = {"f32": "<f4", "u8": "<u1", "u16": "<u2", "u32": "<u4", "i64": "<i8"}[entry["type"]]
    return np.frombuffer(raw, dtype=dtype)


def strings(html: str, entry: dict) -> list[str]:
    data, offsets = blob(html, entry["bytes"]).tobytes(), blob(html, entry["offsets"])
    return [data[a:b].decode() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def test_same_inputs_give_the_same_bytes_whatever_the_row_order():
    points = synthetic_points(500)
    texts = synthetic_texts(500)
    first = build(points, Texts(texts))
    assert build(points, Texts(texts)) == first
    shuffled = np.random.default_rng(1).permutation(500)
    again = build(points.iloc[shuffled].reset_index(drop=True),
                  Texts([texts[i] for i in shuffled]))
    assert again == first


def test_csp_allows_exactly_the_inline_script_and_style():
    html = build(synthetic_points(50))
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html)[1]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    styles = re.findall(r"<style>(.*?)</style>", html, flags=re.S)
    assert len(scripts) == 1 and len(styles) == 1

    def digest(text):
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    assert directives["script-src"] == digest(scripts[0])
    assert directives["style-src"] == digest(styles[0])
    assert directives["img-src"] == "data: blob:"
    assert directives["require-trusted-types-for"] == "'script'"
    assert "connect-src" not in directives and "unsafe" not in csp
    # the meta element comes before any script or style
    assert html.index("Content-Security-Policy") < min(html.index("<style>"),
                                                       html.index("<script"))


def test_data_cannot_close_its_element():
    points = synthetic_points(20)
    evil = "</script><script>alert(1)</script>\u2028<!--"
    html = build_page(points, [*CLASSES[:9], evil], Texts([evil] * 20), title=evil,
                      region_rule=evil)
    assert html.count("</script>") == html.count("<script")  # only the page's own elements
    config = re.search(r'<script type="application/json" id="dm-config">(.*?)</script>', html,
                       flags=re.S)[1]
    assert "<!--" not in html and "\u2028" not in config and "<" not in config
    meta = page_meta(html)
    assert meta["classNames"][-1] == evil and meta["title"] == evil
    assert strings(html, meta["preview"]["texts"]) == [evil] * 20
    assert "<title>&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_columns_are_typed_sorted_by_id_and_exact():
    points = synthetic_points(300)
    points.loc[0, "id"] = 2**62 + 1  # beyond JavaScript's exact integers
    points.loc[1, "id"] = -(2**53) - 3
    html = build(points)
    meta = page_meta(html)
    ids = blob(html, meta["columns"]["id"])
    assert ids.tolist() == sorted(points["id"].tolist())
    order = np.argsort(points["id"].to_numpy(), kind="stable")
    assert blob(html, meta["columns"]["confidence"]).tolist() == \
        points["confidence"].to_numpy(np.float32)[order].tolist()
    assert meta["columns"]["gold"]["type"] == "u8"
    assert meta["columns"]["region"]["type"] == "u8"
    regions = np.array(REGIONS)[blob(html, meta["columns"]["region"])]
    assert regions.tolist() == points["region"].to_numpy()[order].tolist()
    assert blob(html, meta["columns"]["flipped"]).tolist() == \
        points["flipped"].to_numpy()[order].astype(int).tolist()


def test_texts_are_cut_to_text_chars():
    points = synthetic_points(3)
    texts = ["short", "x" * 50, "\u00e9" * 11]
    html = build(points, Texts(texts, ["a", "b", "c"]), text_chars=10)
    meta = page_meta(html)
    order = np.argsort(points["id"].to_numpy(), kind="stable")
    expected = ["short", "x" * 9 + "\u2026", "\u00e9" * 9 + "\u2026"]
    assert strings(html, meta["preview"]["texts"]) == [expected[i] for i in order]
    assert strings(html, meta["preview"]["pairs"]) == [["a", "b", "c"][i] for i in order]


def test_images_are_downscaled_and_packed_above_the_budget(monkeypatch):
    points = synthetic_points(6)
    pixels = np.random.default_rng(0).integers(0, 256, size=(6, 3, 32, 24), dtype=np.uint8)
    meta = page_meta(html := build(points, Images(pixels), thumbnail_px=16))
    preview = meta["preview"]
    assert (preview["channels"], preview["height"], preview["width"], preview["bits"]) == \
        (3, 16, 12, 8)
    order = np.argsort(points["id"].to_numpy(), kind="stable")
    means = pixels[order].reshape(6, 3, 16, 2, 12, 2).mean(axis=(3, 5))
    assert np.array_equal(blob(html, preview["pixels"]).reshape(6, 3, 16, 12),
                          np.round(means).astype(np.uint8))
    monkeypatch.setattr(builder, "PIXEL_BUDGET", 100)
    meta = page_meta(html := build(points, Images(pixels), thumbnail_px=16))
    packed = blob(html, meta["preview"]["pixels"])
    levels = np.stack([packed & 15, packed >> 4], axis=1).reshape(-1)
    assert meta["preview"]["bits"] == 4
    assert np.array_equal(levels, np.round(np.round(means).reshape(-1) / 17))


def test_correctness_colours_match_the_static_map():
    colors = pytest.importorskip("matplotlib.colors")
    cmap = colors.LinearSegmentedColormap.from_list("datamap", builder.CORRECTNESS_PALETTE)
    assert correctness_colours() == [colors.to_hex(cmap(b / 10.0)) for b in range(11)]


@pytest.mark.parametrize("value, cell", [
    ("plain", "plain"), ("", ""), ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "-1"),
    ("@x", "'@x"), ("\tx", "'\tx"), ("\rx", "\"'\rx\""), ("'q", "''q"),
    ('a,"b"', '"a,""b"""'), ("two\nlines", '"two\nlines"'), ("=a,b", "\"'=a,b\""),
])
def test_csv_cells_are_spreadsheet_safe_and_reversible(value, cell):
    assert csv_cell(value) == cell
    text = f"id,action,label,note,reviewer\n1,keep,,{cell},\n"
    assert parse_corrections(text, "c.csv").decisions[0].note == value
    # the page's cell is the pipeline's: the corrections file's writer gives the same line
    assert format_corrections([Decision(1, "keep", note=value)]).splitlines(True)[1:] == \
        text.splitlines(True)[1:]


def test_features_keep_the_first_values_and_names():
    points = synthetic_points(4)
    values = np.arange(40, dtype=float).reshape(4, 10)
    meta = page_meta(html := build(points, Features(values, [f"n{j}" for j in range(10)])))
    assert meta["preview"]["names"] == [f"n{j}" for j in range(8)]
    assert meta["preview"]["more"] == 2
    order = np.argsort(points["id"].to_numpy(), kind="stable")
    assert np.array_equal(blob(html, meta["preview"]["values"]).reshape(4, 8),
                          values[order, :8])


def test_decisions_are_split_on_and_off_the_map():
    points = synthetic_points(10)
    ids = np.sort(points["id"].to_numpy())
    decisions = pd.DataFrame({"id": [99_999, ids[4], ids[1]], "action": ["keep", "relabel", "drop"],
                              "label": [None, "class 3", ""], "note": ["n", None, "x"],
                              "reviewer": ["r", "s", np.nan]})
    meta = page_meta(build(points, decisions=decisions))["decisions"]
    assert meta["onMap"] == {"index": [1, 4], "action": [0, 2], "label": [-1, 3],
                             "note": ["x", ""], "reviewer": ["", "s"]}
    assert meta["offMap"] == {"id": ["99999"], "action": [1], "label": [-1], "note": ["n"],
                              "reviewer": ["r"]}


def _points_with(**changes):
    points = synthetic_points(20)
    for column, value in changes.items():
        if value is None:
            points = points.drop(columns=column)
        else:
            points[column] = value(points) if callable(value) else value
    return points


@pytest.mark.parametrize("points, message", [
    (_points_with(confidence=None), "points: missing column(s) confidence"),
    (_points_with(variability=lambda p: p["variability"].where(p.index != 3)),
     "points.variability: 1 NaN or infinite value(s)"),
    (_points_with(confidence=lambda p: p["confidence"] + 1), "points.confidence: 20 value(s) do "
     "not lie in [0, 1]"),
    (_points_with(id=lambda p: p["id"].where(p.index != 2, p["id"][5])),
     "points.id: 1 duplicate id(s)"),
    (_points_with(id=lambda p: p["id"] + 0.5), "points.id must hold integers"),
    (_points_with(region=lambda p: p["region"].where(p.index != 0, "medium")),
     "points.region: unknown region(s) ['medium']"),
    (_points_with(gold=lambda p: p["gold"] + 10), "points.gold: "),
    (_points_with(flipped=1), "points.flipped must be bool"),
    (synthetic_points(0), "points is empty"),
])
def test_invalid_points_are_refused_with_the_field_named(points, message):
    with pytest.raises(DataError) as error:
        build(points)
    assert message in str(error.value)


@pytest.mark.parametrize("preview, decisions, kw, message", [
    (Texts(["a"] * 19), None, {}, "preview.texts: 19 rows for 20 points"),
    (Texts(["a"] * 20, ["b"] * 21), None, {}, "preview.pairs: 21 rows for 20 points"),
    (Images(np.zeros((20, 1, 8, 8))), None, {}, "preview.pixels must be uint8"),
    (Images(np.zeros((20, 8, 8), np.uint8)), None, {}, "preview.pixels must be [N, C, H, W]"),
    (Features(np.zeros((20, 3)), ["a"]), None, {}, "preview.names: 1 names for 3 features"),
    (None, pd.DataFrame({"id": [1]}), {}, "decisions: missing column(s) action, label"),
    (None, "bad-action", {}, "decisions.action: 'delete'"),
    (None, "bad-label", {}, "decisions.label: 'class 99'"),
    (None, "label-on-drop", {}, "only relabel takes a label"),
    (None, "duplicate", {}, "decisions.id: 1 duplicate id(s)"),
    (None, None, {"text_chars": 0}, "text_chars must be a positive integer"),
])
def test_invalid_inputs_are_refused_with_the_field_named(preview, decisions, kw, message):
    points = synthetic_points(20)
    first = int(points["id"][0])
    rows = {
        "bad-action": [(first, "delete", "", "", "")],
        "bad-label": [(first, "relabel", "class 99", "", "")],
        "label-on-drop": [(first, "drop", "class 1", "", "")],
        "duplicate": [(first, "drop", "", "", ""), (first, "keep", "", "", "")],
    }
    if isinstance(decisions, str):
        decisions = pd.DataFrame(rows[decisions], columns=list(builder.CORRECTIONS_COLUMNS))
    with pytest.raises((DataError, ConfigError)) as error:
        build(points, preview, decisions, **kw)
    assert isinstance(error.value, ConfigError) == ("text_chars" in kw)
    assert message in str(error.value)


# --------------------------------------------------------------------------------------------
# the spreadsheet guard: one rule for the page, the corrections writer and its reader

GUARDED = ["=1+1", "-", "'x", "''=", "@a", "+1", "\tx", "\rx", "'", "plain", "", "a'=", "-1",
           "-1-1", "-2.5e3", "+.5", "-1e", "'-1", "-0x1"]


@pytest.mark.parametrize(("value", "written"), [
    ("=1+1", "'=1+1"), ("-1-1", "'-1-1"), ("-1e", "'-1e"), ("-0x1", "'-0x1"), ("@a", "'@a"),
    ("-", "'-"), ("'-1", "''-1"), ("+2", "'+2"), ("-0", "'-0"), ("-01", "'-01"),
    ("-2.5e3", "'-2.5e3"), ("-1.5", "'-1.5"), ("-1234567890123456", "'-1234567890123456"),
    ("-1", "-1"), ("-42", "-42"), ("-123456789012345", "-123456789012345"), ("plain", "plain"),
])
def test_a_negative_integer_is_written_as_it_is_and_a_formula_is_guarded(value, written):
    assert guard_cell(value) == written


@pytest.mark.parametrize("value", GUARDED)
def test_guard_round_trips_every_value(value):
    assert unguard_cell(guard_cell(value)) == value
    assert read_page_csv_cell is unguard_cell
    # a hand-written quote before a letter is data, not the guard
    assert unguard_cell("'x") == "'x" and unguard_cell("'=x") == "=x"


def test_format_corrections_and_parse_corrections_round_trip_guarded_values():
    decisions = [Decision(i + 1, "relabel", label=v or "x", note=v, reviewer=v)
                 for i, v in enumerate(GUARDED)]
    text = format_corrections(decisions)
    assert "\n1,relabel,'=1+1,'=1+1,'=1+1\n" in text and "\r\n" not in text.replace("\r\n'", "")
    back = parse_corrections(text, "c.csv").decisions
    assert [(d.label, d.note, d.reviewer) for d in back] == \
        [(v or "x", v, v) for v in GUARDED]


def test_page_js_writes_the_same_guard():
    """page.js's csvCell tests the same leading characters as guard_cell."""
    from importlib import resources

    from datamap.data.corrections import GUARDED_STARTS

    script = resources.files("datamap.cartography.page").joinpath("page.js").read_text()
    (pattern,) = re.findall(r"/\^\[([^\]]+)\]/\.test\(value\)", script)
    decoded = pattern.replace("\\-", "-").replace("\\t", "\t").replace("\\r", "\r")
    assert sorted(decoded) == sorted(GUARDED_STARTS)
    from datamap.io import PLAIN_NUMBER

    (number,) = re.findall(r"const PLAIN_NUMBER = /\^(.+)\$/;", script)
    assert number == PLAIN_NUMBER.pattern


# --------------------------------------------------------------------------------------------
# package data


@pytest.mark.slow
def test_a_wheel_ships_the_page_code(tmp_path, root):
    import shutil
    import subprocess
    import sys
    import zipfile

    # built from a copy: setuptools writes build/ and egg-info next to the sources
    source = tmp_path / "source"
    shutil.copytree(root / "src", source / "src",
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(root / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q",
                    "--no-build-isolation", "-w", str(tmp_path / "dist")], check=True,
                   timeout=600, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("datamap-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("template.html", "page.js", "page.css", "__init__.py", "builder.py",
                 "inputs.py"):
        assert f"datamap/cartography/page/{name}" in names


# --------------------------------------------------------------------------------------------
# the page the cartography stage writes, and its inputs


def test_stage_page_shows_every_example_with_its_inputs(digits_cartography, digits_prepared):
    import pyarrow.parquet as pq

    from datamap.scoring.regions import describe_rule

    html = (digits_cartography / "data_map.html").read_text(encoding="utf-8")
    meta = page_meta(html)
    train = pq.read_table(digits_prepared / "train.parquet").to_pandas().sort_values("id")
    assert meta["n"] == len(train)  # every example, whatever cartography.max_points says
    assert blob(html, meta["columns"]["id"]).tolist() == train["id"].tolist()
    assert blob(html, meta["columns"]["gold"]).tolist() == train["label"].tolist()
    flipped = (train["label"] != train["clean_label"]).to_numpy()
    assert blob(html, meta["columns"]["flipped"]).tolist() == flipped.astype(int).tolist()
    preview = meta["preview"]
    assert (preview["kind"], preview["channels"], preview["height"], preview["width"]) == \
        ("images", 1, 8, 8)
    assert meta["regionRule"] == describe_rule(None)
    assert meta["decisions"]["onMap"]["index"] == [] and meta["decisions"]["offMap"]["id"] == []


def test_stage_page_is_byte_identical_for_the_same_inputs(tmp_path, digits_cartography,
                                                          digits_prepared):
    from datamap import scoring as S
    from datamap.cartography.page import write_data_map_html
    from datamap.data.splits import read_meta, read_split
    from datamap.scoring.regions import describe_rule

    scores = S.read_scores(digits_cartography / "scores.parquet")
    dynamics = digits_cartography.parent / "dynamics.parquet"
    meta = read_meta(digits_prepared)
    train = read_split(digits_prepared, "train", meta)
    title = "Data map of the training set (5 epochs)"
    info = write_data_map_html(scores.sample(frac=1.0, random_state=1), dynamics, train,
                               tmp_path / "a.html", meta=meta, epochs=5, title=title,
                               region_rule=describe_rule(None))
    page = (tmp_path / "a.html").read_bytes()
    assert info.bytes == len(page) and info.n_examples == len(scores)
    assert page == (digits_cartography / "data_map.html").read_bytes()


def _prepared(tmp_path, name: str, columns: dict, meta: dict):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datamap.data.splits import read_split_file

    folder = tmp_path / name
    folder.mkdir()
    pq.write_table(pa.table(columns), folder / "train.parquet")
    return read_split_file(folder / "train.parquet", meta)


def test_input_preview_of_texts_pairs_images_files_and_tables(tmp_path, digits_prepared):
    import pyarrow as pa

    from datamap.cartography.page import input_preview
    from datamap.cartography.page.inputs import split_rows
    from datamap.data.splits import read_meta, read_split

    meta = read_meta(digits_prepared)
    digits = read_split(digits_prepared, "train", meta)
    chosen = digits.ids[[5, 0, 3]]
    images = input_preview(digits, split_rows(digits, chosen), meta)
    assert isinstance(images, Images) and images.pixels.shape == (3, 1, 8, 8)
    assert images.pixels.dtype == np.uint8 and images.files is None
    with pytest.raises(DataError, match=r"1 scored id\(s\) are not in the prepared train"):
        split_rows(digits, np.array([-7]))

    pairs = _prepared(tmp_path, "pairs", {"id": [3, 1], "label": [0, 1], "text": ["a <b>", "c"],
                                          "text_pair": ["d", "e"]},
                      {"input_kind": "text", "input_shape": [2], "num_classes": 2})
    shown = input_preview(pairs, split_rows(pairs, np.array([1, 3])), {"input_kind": "text"})
    assert list(shown.texts) == ["c", "a <b>"] and list(shown.pairs) == ["e", "d"]

    x = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(20, dtype=np.float32)), 10)
    table_meta = {"input_kind": "tabular", "input_shape": [10], "num_classes": 2,
                  "feature_names": [f"f{j}" for j in range(10)]}
    table = _prepared(tmp_path, "tabular", {"id": [0, 1], "label": [0, 1], "x": x}, table_meta)
    features = input_preview(table, np.array([1]), table_meta)
    assert features.values.tolist() == [list(range(10, 20))]
    assert list(features.names) == [f"f{j}" for j in range(10)]

    pixels = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(8, dtype=np.float32)), 4)
    image_meta = {"input_kind": "image", "input_shape": [1, 2, 2], "num_classes": 2}
    folder = _prepared(tmp_path, "folder", {"id": [0, 1], "label": [0, 1], "x": pixels,
                                            "file": ["a/<x>.png", "b/y.png"]}, image_meta)
    files = input_preview(folder, np.array([1, 0]), image_meta)
    assert list(files.files) == ["b/y.png", "a/<x>.png"]
    assert files.pixels.max() == 255 and files.pixels.min() == 0


def test_prior_decisions_come_from_the_applied_corrections():
    import pandas as pd

    from datamap.cartography.page import decisions_frame

    applied = pd.DataFrame({"id": [4, 9, 12], "split": ["train", "train", "test"],
                            "action": ["relabel", "drop", "keep"],
                            "label_before": ["1", "2", "3"], "label_after": ["-", None, "3"],
                            "note": ["=n", "", ""], "reviewer": ["r", "", "@s"]})
    frame = decisions_frame(applied)
    assert frame.to_dict("list") == {"id": [4, 9, 12], "action": ["relabel", "drop", "keep"],
                                     "label": ["-", "", ""], "note": ["=n", "", ""],
                                     "reviewer": ["r", "", "@s"]}
    assert decisions_frame(applied.iloc[:0]) is None and decisions_frame(None) is None


def test_describe_rule_states_both_rules():
    from datamap.scoring.regions import describe_rule

    assert describe_rule({"rule": "threshold", "confidence": 0.6, "variability": 0.25}) == (
        "threshold rule: ambiguous if variability >= 0.25, else easy-to-learn if confidence "
        ">= 0.6, else hard-to-learn")
    assert describe_rule({"rule": "quantile", "ambiguous": 0.25, "hard": 0.1}).startswith(
        "quantile rule: the 25% of examples of highest variability are ambiguous")
    assert describe_rule({"rule": "adaptive", "statement": "my rule"}) == "my rule"
    with pytest.raises(ConfigError, match="regions.rule must be one of"):
        describe_rule({"rule": "nope"})
