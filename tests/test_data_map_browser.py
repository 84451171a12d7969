"""data_map.html in a real browser: headless Chromium (Debian's package) driven by Playwright.

The page comes from the cartography stage's own code on the prepared digits
(``digits_cartography``). Needs ``chromium`` (`make test` and `make browser` install it).
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datamap.cartography.page import PAGE_NAME

from .helpers import chromium, chromium_path, fake_map_points

# Screen position of data coordinates (variability, confidence) on the map.
_SCREEN_XY = """([x, y]) => {
  const doc = Bokeh.documents[0];
  const fig = doc.get_model_by_name("data_map");
  const view = [...Bokeh.index.roots][0].owner.get_one(fig);
  const canvas = view.canvas_view.el.getBoundingClientRect();
  return [canvas.left + view.frame.x_scale.compute(x), canvas.top + view.frame.y_scale.compute(y)];
}"""
# The frame (plot area) of the map on the screen: x, y, width, height.
_FRAME = """() => {
  const fig = Bokeh.documents[0].get_model_by_name("data_map");
  const view = [...Bokeh.index.roots][0].owner.get_one(fig);
  const canvas = view.canvas_view.el.getBoundingClientRect();
  const bbox = view.frame.bbox;
  return {x: canvas.left + bbox.left, y: canvas.top + bbox.top, width: bbox.width,
          height: bbox.height};
}"""
_MODEL = "(name) => Bokeh.documents[0].get_model_by_name(name)"


@pytest.fixture(scope="module")
def browser():
    if chromium_path() is None:
        pytest.fail("no Chromium: run `make browser` (apt-get install chromium); `make test` "
                    "installs it")
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser, digits_cartography):
    """The page, loaded and idle; ``page.requests`` lists every URL it asked for."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    page = context.new_page()
    page.requests = []
    page.on("request", lambda request: page.requests.append(request.url))
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto((digits_cartography / PAGE_NAME).as_uri())
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && "
                           "Bokeh.documents[0].is_idle", timeout=60_000)
    yield page
    context.close()
    assert errors == []


@pytest.fixture(scope="module")
def points(digits_cartography) -> pd.DataFrame:
    """The shown points (every example: the demo is under max_points)."""
    return pd.read_csv(digits_cartography / "map_points.csv")


def coloured_pixels(page) -> int:
    """Pixels of the map's frame drawn in a saturated colour (points; not the white background,
    grey grid or black axes)."""
    frame = page.evaluate(_FRAME)
    shot = Image.open(io.BytesIO(page.screenshot(clip=frame))).convert("RGB")
    pixels = np.asarray(shot).astype(np.int16)
    return int(((pixels.max(axis=2) - pixels.min(axis=2)) > 40).sum())


def screen(page, x: float, y: float) -> tuple[float, float]:
    return tuple(page.evaluate(_SCREEN_XY, [x, y]))


def test_page_makes_no_network_request_and_draws_every_point(page, digits_cartography, points):
    assert page.requests == [(digits_cartography / PAGE_NAME).as_uri()]
    assert page.evaluate(f"({_MODEL})('points').data.id.length") == len(points)
    drawn = coloured_pixels(page)
    assert drawn > 2000, drawn
    # filtering every region out leaves an empty frame: what was counted were the points
    for region in ("easy-to-learn", "ambiguous", "hard-to-learn"):
        page.get_by_role("button", name=region, exact=True).click()
    page.wait_for_timeout(300)
    assert page.evaluate(f"({_MODEL})('filter_status').text").startswith("0 of ")
    assert coloured_pixels(page) < drawn / 50


def test_hover_shows_the_example(page, points, digits_cartography, digits_prepared):
    from datamap.cartography.page import input_previews
    from datamap.data.splits import read_meta

    # the point farthest from its neighbours on screen, so the tooltip shows it alone
    xy = np.array([screen(page, x, y) for x, y in
                   points[["variability", "confidence"]].to_numpy()[:400]])
    gaps = np.sort(np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1)), axis=1)[:, 1]
    target = int(np.argmax(gaps))
    example = int(points["id"].iloc[target])
    page.mouse.move(*(xy[target] + 20))
    page.mouse.move(*xy[target], steps=4)
    tooltip = page.locator(".bk-tooltip-content").filter(has_text=f"id {example}")
    tooltip.wait_for(state="visible", timeout=10_000)
    text = tooltip.inner_text()
    for field in ("given", "most predicted", "confidence", "variability", "correctness",
                  "forgetfulness", "label"):
        assert field in text
    src = tooltip.locator("img.dm-thumb").get_attribute("src")
    # the very thumbnail of that example's input
    thumbs = input_previews(digits_prepared, points["id"].to_numpy(),
                            read_meta(digits_prepared)).columns["thumb"]
    assert src == "data:image/png;base64," + thumbs[target]
    image = Image.open(io.BytesIO(base64.b64decode(thumbs[target])))
    assert image.size == (8, 8)
    box = tooltip.locator("img.dm-thumb").bounding_box()
    assert (box["width"], box["height"]) == (64, 64)  # the 8x8 image, scaled up


def _box_around(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """Edges near the ``low`` and ``high`` quantiles of ``values`` placed in the widest gap
    between neighbouring values, so no point sits on an edge."""
    ordered = np.unique(values)
    edges = []
    for q in (low, high):
        i = int(q * (len(ordered) - 1))
        window = np.arange(max(i - 10, 0), min(i + 10, len(ordered) - 1))
        best = window[np.argmax(ordered[window + 1] - ordered[window])]
        edges.append((ordered[best] + ordered[best + 1]) / 2)
    return edges[0], edges[1]


def test_box_selection_lists_and_downloads_the_ids(page, points):
    x0, x1 = _box_around(points["variability"].to_numpy(), 0.3, 0.6)
    y0, y1 = _box_around(points["confidence"].to_numpy(), 0.2, 0.7)
    inside = points[points["variability"].between(x0, x1)
                    & points["confidence"].between(y0, y1)]
    expected = sorted(inside["id"].tolist())
    assert len(expected) >= 5
    page.mouse.move(*screen(page, x0, y1))
    page.mouse.down()
    page.mouse.move(*screen(page, x1, y0), steps=8)
    page.mouse.up()
    page.wait_for_function(f"({_MODEL})('points').selected.indices.length > 0")

    assert page.evaluate(f"({_MODEL})('selection_status').text") == f"{len(expected)} selected"
    assert page.evaluate(f"({_MODEL})('selection').data.id") == expected  # the table
    assert page.locator(".slick-row").first.inner_text().split()[0] == str(expected[0])
    with page.expect_download() as download:
        page.get_by_role("button", name="Download selected ids (CSV)").click()
    assert download.value.suggested_filename == "data_map_selection.csv"
    csv = open(download.value.path(), encoding="utf-8").read()
    assert csv == "id\n" + "".join(f"{i}\n" for i in expected)
    # exactly what a selection spec reads
    assert pd.read_csv(download.value.path())["id"].tolist() == expected
    assert not [url for url in page.requests if not url.startswith(("file:", "blob:"))]


def test_filters_and_search(page, points, digits_cartography):
    from datamap.scoring.scores import read_scores

    status = f"({_MODEL})('filter_status').text"
    page.evaluate(f"({_MODEL})('class_filter').value = ['3', '7']")
    # digits' class names are the digits
    gold = read_scores(digits_cartography / "scores.parquet").set_index("id")["gold"]
    given = gold.reindex(points["id"]).astype(str).reset_index(drop=True)
    assert page.evaluate(status).startswith(f"{given.isin(['3', '7']).sum():,} of ")
    page.get_by_role("button", name="hard-to-learn", exact=True).click()
    keep = given.isin(["3", "7"]).to_numpy() & (points["region"] != "hard-to-learn").to_numpy()
    assert page.evaluate(status).startswith(f"{keep.sum():,} of ")

    visible = points["id"][keep].tolist()
    hidden = points["id"][~keep].tolist()
    search = page.get_by_label("Find ids (comma-separated, Enter)")
    search.fill(f"{visible[0]}, {visible[1]} {hidden[0]}, 999999")
    search.press("Enter")
    ids = page.evaluate(f"({_MODEL})('selection').data.id")
    assert ids == sorted(visible[:2])
    message = page.evaluate(f"({_MODEL})('search_status').text")
    assert message.startswith("2 of 4 found and selected")
    assert f"hidden by the filters: {hidden[0]}" in message and "not on the page: 999999" in message


def test_colour_control_switches_the_colouring(page):
    before = coloured_pixels(page)
    page.get_by_role("button", name="label flipped", exact=True).click()
    glyph = f"({_MODEL})('scatter').glyph.fill_color.field"
    assert page.evaluate(glyph) == "flipped"
    assert page.evaluate(f"({_MODEL})('legend_flipped').visible")
    assert not page.evaluate(f"({_MODEL})('legend_correctness_bin').visible")
    # kept labels are grey now: far fewer coloured pixels than under the correctness colours
    assert coloured_pixels(page) < before
    page.get_by_role("button", name="region", exact=True).click()
    assert page.evaluate(glyph) == "region"


def test_text_inputs_are_shown_as_text_never_as_markup(browser, tmp_path):
    from datamap.cartography.page import data_map_page, text_previews

    points = fake_map_points(3)
    points[["variability", "confidence"]] = [[0.05, 0.9], [0.2, 0.5], [0.35, 0.1]]
    evil = '<img src=x onerror="window.injected=1"></script><b>bold</b>'
    preview = text_previews([evil, "premise", "x"], ["", "hypothesis & more", "y"], 300)
    path = tmp_path / "text.html"
    path.write_text(data_map_page(points, ["a", "b", "c"], preview, n_examples=3, title="t"),
                    encoding="utf-8")
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(path.as_uri())
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && "
                           "Bokeh.documents[0].is_idle", timeout=60_000)
    for i, shown in ((0, evil), (1, "hypothesis & more")):
        page.mouse.move(*(np.array(screen(page, *points.iloc[i][["variability",
                                                                 "confidence"]])) + 20))
        page.mouse.move(*screen(page, *points.iloc[i][["variability", "confidence"]]), steps=4)
        tooltip = page.locator(".bk-tooltip-content").filter(has_text=f"id {points['id'][i]}")
        tooltip.wait_for(state="visible", timeout=10_000)
        assert shown in tooltip.inner_text()
    assert page.evaluate("window.injected") is None
    assert page.locator(".bk-tooltip-content b:text('bold')").count() == 0
    page.close()
