"""The data map page in a real browser: headless Chromium (Debian's) driven by Playwright.

Pages are built from small seeded synthetic points (``tests/helpers.py``) and, at the end, by
the real cartography stage on the digits; what the page shows, selects and downloads is
compared with the same computation in numpy, and the corrections download is read back by the
pipeline (``read_corrections`` and the prepare stage). Without Chromium the tests fail, saying
how to install it (`make test` does).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datamap.cartography.page import PAGE_NAME, Features, Images, Texts, build_page
from datamap.data.corrections import COLUMNS, parse_corrections

from .helpers import PAGE_CLASSES as CLASSES
from .helpers import PAGE_REGION_RULE as REGION_RULE
from .helpers import (
    chromium,
    chromium_path,
    synthetic_images,
    synthetic_points,
    synthetic_texts,
)

# Run before the page's own script: traps for anything an injected payload could do, and a
# record of every Content-Security-Policy violation.
TRAPS = """
window.__fired = [];
for (const name of ["alert", "confirm", "prompt"]) {
  window[name] = (...args) => { window.__fired.push(name + ":" + args.join(",")); };
}
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI + " " + e.sample);
});
window.addEventListener("error", (e) => { window.__fired.push("error:" + e.message); }, true);
"""




def read_download(data: bytes) -> pd.DataFrame:
    """A downloaded corrections.csv read by the pipeline's reader (the guard undone)."""
    decisions = parse_corrections(data.decode("utf-8"), "download").decisions
    return pd.DataFrame([(d.id, d.action, d.label, d.note, d.reviewer) for d in decisions],
                        columns=list(COLUMNS))


@pytest.fixture(scope="module")
def browser():
    if chromium_path() is None:
        pytest.fail("no Chromium: run `make browser` (apt-get install chromium); `make test` "
                    "installs it")
    with chromium() as browser:
        yield browser


class Opened:
    """A loaded page and what it did: ``requests`` (URLs), ``errors`` (page errors and console
    errors)."""

    def __init__(self, page, path: Path):
        self.page, self.path = page, path
        self.requests: list[str] = []
        self.errors: list[str] = []

    def fired(self) -> list[str]:
        return self.page.evaluate("() => window.__fired")

    def violations(self) -> list[str]:
        return self.page.evaluate("() => window.__violations")


@pytest.fixture
def open_page(browser, tmp_path):
    """``open_page(html, name="page.html")``: the page written to a file and loaded in a fresh
    context until its first frame; checks afterwards that it raised no error."""
    contexts, opened = [], []

    def open_(html: str, name: str = "page.html", timeout: float = 120_000) -> Opened:
        path = tmp_path / name
        path.write_text(html, encoding="utf-8")
        context = browser.new_context(viewport={"width": 1400, "height": 1100},
                                      accept_downloads=True)
        contexts.append(context)
        page = context.new_page()
        page.add_init_script(TRAPS)
        result = Opened(page, path)
        page.on("request", lambda request: result.requests.append(request.url))
        page.on("pageerror", lambda error: result.errors.append(str(error)))
        page.on("console", lambda m: m.type == "error" and result.errors.append(m.text))
        page.goto(path.as_uri())
        page.wait_for_function("() => document.body.dataset.state", timeout=timeout)
        assert page.evaluate("() => document.body.dataset.state") == "ready", \
            page.text_content("#dm-shown")
        opened.append(result)
        return result

    yield open_
    for result in opened:
        assert result.errors == []
    for context in contexts:
        context.close()


N = 400


def build(points: pd.DataFrame, preview=None, decisions=None, classes=CLASSES, **kw) -> str:
    kw = {"title": "Synthetic data map", "region_rule": REGION_RULE, **kw}
    return build_page(points, classes, preview, decisions, **kw)


@pytest.fixture(scope="module")
def points() -> pd.DataFrame:
    return synthetic_points(N, seed=3)


@pytest.fixture(scope="module")
def image_page_html(points) -> str:
    return build(points, Images(synthetic_images(points, seed=3)))


def sorted_points(points: pd.DataFrame) -> pd.DataFrame:
    """The points in the page's order (ascending id), scores as the page holds them (float32)."""
    out = points.sort_values("id").reset_index(drop=True)
    for column in ("confidence", "variability", "correctness"):
        out[column] = out[column].astype(np.float32).astype(np.float64)
    return out


def screen(page, x: float, y: float) -> tuple[float, float]:
    return tuple(page.evaluate("([x, y]) => dataMap.toScreen(x, y)", [x, y]))


def screen_xy(page, points: pd.DataFrame) -> np.ndarray:
    """Screen positions [n, 2] of the points."""
    return np.array(page.evaluate(
        "(xy) => xy.map(([x, y]) => dataMap.toScreen(x, y))",
        points[["variability", "confidence"]].to_numpy().tolist()))


def coloured_pixels(page) -> int:
    """Pixels of the map's frame in a saturated colour or dark (points; not white or pale)."""
    shot = Image.open(io.BytesIO(page.screenshot(clip=page.evaluate("dataMap.frame()"))))
    pixels = np.asarray(shot.convert("RGB")).astype(np.int16)
    return int(((pixels.max(axis=2) - pixels.min(axis=2) > 40) | (pixels.max(axis=2) < 120)).sum())


def isolated(page, points: pd.DataFrame, k: int = 1) -> list[int]:
    """Rows of ``points`` (page order) farthest on screen from any other point, inside the
    frame, so hovering or clicking them is unambiguous."""
    xy = screen_xy(page, points)
    gaps = np.sort(np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1)), axis=1)[:, 1]
    frame = page.evaluate("dataMap.frame()")
    inside = ((xy[:, 0] > frame["x"] + 10) & (xy[:, 0] < frame["x"] + frame["width"] - 10)
              & (xy[:, 1] > frame["y"] + 10) & (xy[:, 1] < frame["y"] + frame["height"] - 10))
    gaps[~inside] = -1
    return [int(i) for i in np.argsort(-gaps)[:k]]


def hover(page, x: float, y: float) -> str:
    """Move onto the screen position and return the tooltip's text."""
    page.mouse.move(x + 25, y + 25)
    page.mouse.move(x, y, steps=3)
    page.locator("#dm-tooltip").wait_for(state="visible", timeout=10_000)
    return page.text_content("#dm-tooltip")


def drag(page, path: list[tuple[float, float]], shift: bool = False) -> None:
    """Press at the first position, move through the rest, release (shift held if asked);
    then wait for the frame that shows the result."""
    frames = page.evaluate("dataMap.frames")
    if shift:
        page.keyboard.down("Shift")
    page.mouse.move(*path[0])
    page.mouse.down()
    for xy in path[1:]:
        page.mouse.move(*xy, steps=2)
    page.mouse.up()
    if shift:
        page.keyboard.up("Shift")
    page.wait_for_function(f"() => dataMap.frames > {frames}")


def box_select(page, pts: pd.DataFrame, x0: float, x1: float, y0: float, y1: float,
               shift: bool = False, shown: np.ndarray | None = None) -> np.ndarray:
    """Drag a box from (x0, y1) to (x1, y0) (data units); returns the ids numpy finds inside
    the box the page used (the mouse positions in data units, checked to be within a pixel of
    the asked corners), among the ``shown`` rows."""
    start, end = screen(page, x0, y1), screen(page, x1, y0)
    drag(page, [start, end], shift=shift)
    bx0, by0, bx1, by1 = page.evaluate("dataMap.lastBox()")
    assert np.allclose([screen(page, bx0, by0), screen(page, bx1, by1)], [start, end], atol=1)
    inside = (pts["variability"].between(min(bx0, bx1), max(bx0, bx1))
              & pts["confidence"].between(min(by0, by1), max(by0, by1))).to_numpy()
    if shown is not None:
        inside = inside & shown
    return pts["id"][inside].to_numpy()


def table_ids(page) -> list[int]:
    return [int(t) for t in page.locator("#dm-table-body tr td:first-child").all_text_contents()]


def download(page, button: str):
    with page.expect_download() as info:
        page.click(button)
    value = info.value
    return value.suggested_filename, open(value.path(), "rb").read()


def in_polygon(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule, the crossing test of PNPOLY (vectorised over points)."""
    inside = np.zeros(len(x), dtype=bool)
    for k in range(len(poly)):
        (xa, ya), (xb, yb) = poly[k], poly[(k + 1) % len(poly)]
        crosses = (ya > y) != (yb > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = (xb - xa) * (y - ya) / (yb - ya) + xa
        inside ^= crosses & (x < at)
    return inside


# --------------------------------------------------------------------------------------------


def test_page_loads_offline_and_draws_every_point(open_page, image_page_html, points):
    opened = open_page(image_page_html)
    page = opened.page
    assert opened.requests == [opened.path.as_uri()]  # nothing but the file itself
    assert opened.violations() == [] and opened.fired() == []
    assert page.text_content("#dm-shown") == f"Showing all {N:,} examples."
    assert page.text_content("#dm-title") == "Synthetic data map"
    assert page.text_content("#dm-region-rule") == REGION_RULE
    counts = points["region"].value_counts()
    shown = page.locator("#dm-region-counts li").all_text_contents()
    assert [s.split(":")[0] for s in shown] == ["easy-to-learn", "ambiguous", "hard-to-learn"]
    for text in shown:
        name, rest = text.split(": ")
        assert rest.startswith(f"{counts[name]:,} (")
    drawn = coloured_pixels(page)
    assert drawn > 3000, drawn
    for k in range(3):  # filtering every region out empties the frame
        page.uncheck(f"#dm-region-filter input[value='{k}']")
    assert page.text_content("#dm-filter-status") == f"0 of {N:,} points pass the filters"
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => r()))")
    assert coloured_pixels(page) < drawn / 50


def test_hover_shows_the_example_and_its_thumbnail(open_page, image_page_html, points):
    page = open_page(image_page_html).page
    pts = sorted_points(points)
    images = synthetic_images(points, seed=3)[np.argsort(points["id"].to_numpy(), kind="stable")]
    for row in isolated(page, pts, k=3):
        p = pts.iloc[row]
        text = hover(page, *screen(page, p["variability"], p["confidence"]))
        assert f"id {p['id']} \u00b7 {p['region']}" in text
        # class names isolated (U+2068 ... U+2069): an RTL override cannot reorder the line
        assert (f"given {iso(CLASSES[p['gold']])} \u00b7 most predicted "
                f"{iso(CLASSES[p['most_predicted']])}") in text
        assert f"confidence {p['confidence']:.3f} \u00b7 variability {p['variability']:.3f}" in text
        assert (f"correctness {p['correctness']:.2f} \u00b7 forgetfulness "
                f"{p['forgetfulness']}") in text
        assert ("label flipped" if p["flipped"] else "label kept") in text
        thumb = page.locator("#dm-tooltip canvas.dm-thumb")
        # 8x8 pixels shown 64x64 (inside a 1-pixel border)
        assert thumb.evaluate("(c) => [c.width, c.height, c.clientWidth, c.clientHeight]") == \
            [8, 8, 64, 64]
        shown = np.array(thumb.evaluate(
            "(c) => [...c.getContext('2d').getImageData(0, 0, c.width, c.height).data]"))
        assert np.array_equal(shown.reshape(8, 8, 4)[..., 0], images[row, 0])  # the very pixels


def test_text_pairs_and_features_are_shown(open_page, points):
    texts = [f"premise number {i}" for i in range(N)]
    pairs = [f"hypothesis {i} & more" for i in range(N)]
    page = open_page(build(points, Texts(texts, pairs)), "texts.html").page
    pts = sorted_points(points)
    order = np.argsort(points["id"].to_numpy(), kind="stable")
    row = isolated(page, pts)[0]
    text = hover(page, *screen(page, pts["variability"][row], pts["confidence"][row]))
    assert f"premise number {order[row]}" in text and f"hypothesis {order[row]} & more" in text

    values = np.arange(N * 10, dtype=np.float64).reshape(N, 10) / 7
    names = [f"f{j}" for j in range(10)]
    page = open_page(build(points, Features(values, names)), "features.html").page
    text = hover(page, *screen(page, pts["variability"][row], pts["confidence"][row]))
    expected = ", ".join(f"f{j}={float(f'{values[order[row], j]:.4g}'):g}" for j in range(8))
    assert f"{expected} \u2026 (+2 more)" in text


def test_filters_change_what_is_drawn_and_the_histograms(open_page, image_page_html, points):
    page = open_page(image_page_html).page
    pts = sorted_points(points)
    x_max = page.evaluate("dataMap.view().x1")
    bins = 40

    def check(keep: np.ndarray) -> None:
        assert page.text_content("#dm-filter-status") == \
            f"{keep.sum():,} of {N:,} points pass the filters"
        hist = page.evaluate("dataMap.histograms()")
        x = np.minimum(np.floor(pts["variability"][keep] / x_max * bins), bins - 1)
        y = np.minimum(np.floor(pts["confidence"][keep] * bins), bins - 1)
        assert hist["x"] == np.bincount(x.astype(int), minlength=bins).tolist()
        assert hist["y"] == np.bincount(y.astype(int), minlength=bins).tolist()

    check(np.ones(N, bool))
    before = coloured_pixels(page)
    page.select_option("#dm-label-filter", ["1", "3"])
    labels = pts["gold"].isin([1, 3]).to_numpy()
    check(labels)
    page.uncheck("#dm-region-filter input[value='0']")  # easy-to-learn
    regions = labels & (pts["region"] != "easy-to-learn").to_numpy()
    check(regions)
    page.fill("[aria-label='confidence min']", "0.3")
    page.fill("[aria-label='confidence max']", "0.8")
    page.press("[aria-label='confidence max']", "Enter")
    scores = regions & pts["confidence"].between(0.3, 0.8).to_numpy()
    check(scores)
    page.fill("[aria-label='variability min']", "0.25")
    page.fill("[aria-label='correctness max']", "0.6")
    page.press("[aria-label='correctness max']", "Enter")
    scores &= (pts["variability"] >= 0.25).to_numpy() & (pts["correctness"] <= 0.6).to_numpy()
    check(scores)
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => r()))")
    assert coloured_pixels(page) < before * scores.sum() / N * 2 + 50
    page.click("#dm-label-all")
    page.check("#dm-region-filter input[value='0']")
    for name in ("confidence min", "confidence max", "variability min", "correctness max"):
        page.fill(f"[aria-label='{name}']", "")
        page.press(f"[aria-label='{name}']", "Enter")
    check(np.ones(N, bool))


def test_box_selection_lists_and_downloads_the_ids(open_page, image_page_html, points):
    opened = open_page(image_page_html)
    page = opened.page
    pts = sorted_points(points)
    expected = box_select(page, pts, 0.1, 0.35, 0.3, 0.8)
    assert len(expected) >= 10
    assert page.text_content("#dm-selection-status") == f"{len(expected)} selected"
    assert table_ids(page) == sorted(expected.tolist())[:100]
    hist = page.evaluate("dataMap.histograms()")
    assert sum(hist["selX"]) == sum(hist["selY"]) == len(expected)
    name, data = download(page, "#dm-download-ids")
    assert name == "data_map_selection.csv"
    assert data == ("id\n" + "".join(f"{i}\n" for i in sorted(expected))).encode()
    assert all(url.startswith(("file:", "blob:")) for url in opened.requests)


def test_lasso_and_shift_add(open_page, image_page_html, points):
    page = open_page(image_page_html).page
    pts = sorted_points(points)
    page.uncheck("#dm-region-filter input[value='2']")  # hidden points are never selected
    shown = (pts["region"] != "hard-to-learn").to_numpy()
    page.check("input[name='dm-tool'][value='lasso']")
    corners = [(0.02, 0.95), (0.3, 0.8), (0.35, 0.35), (0.1, 0.2), (0.2, 0.6)]
    path = [screen(page, x, y) for x, y in corners]
    drag(page, path + [path[0]])
    poly = np.array(page.evaluate("dataMap.lastLasso()"))
    # the polygon the page used is the mouse path in data units: each corner is a vertex
    vertices = screen_xy(page, pd.DataFrame(poly, columns=["variability", "confidence"]))
    for corner in path:
        assert np.hypot(*(vertices - corner).T).min() < 1
    inside = in_polygon(pts["variability"].to_numpy(), pts["confidence"].to_numpy(), poly)
    assert (inside & ~shown).sum() >= 3  # the lasso covers hidden points too
    lasso = set(pts["id"][inside & shown])
    assert len(lasso) >= 10
    assert page.text_content("#dm-selection-status") == f"{len(lasso)} selected"
    _, data = download(page, "#dm-download-ids")
    assert data == ("id\n" + "".join(f"{i}\n" for i in sorted(lasso))).encode()

    page.check("input[name='dm-tool'][value='box']")
    boxed = set(box_select(page, pts, 0.3, 0.45, 0.05, 0.5, shift=True, shown=shown).tolist())
    union = sorted(lasso | boxed)
    assert len(union) > len(lasso)
    _, data = download(page, "#dm-download-ids")
    assert data == ("id\n" + "".join(f"{i}\n" for i in union)).encode()


def test_click_select_row_click_and_find(open_page, image_page_html, points):
    page = open_page(image_page_html).page
    pts = sorted_points(points)
    a, b = isolated(page, pts, k=2)
    page.mouse.click(*screen(page, pts["variability"][a], pts["confidence"][a]))
    assert table_ids(page) == [pts["id"][a]]
    assert page.text_content("#dm-inspected").startswith(f"id {pts['id'][a]} ")
    page.keyboard.down("Shift")
    page.mouse.click(*screen(page, pts["variability"][b], pts["confidence"][b]))
    page.keyboard.up("Shift")
    assert table_ids(page) == sorted([pts["id"][a], pts["id"][b]])
    page.locator("#dm-table-body tr").nth(1).click()  # a row: that example in the inspector
    second = sorted([pts["id"][a], pts["id"][b]])[1]
    assert page.text_content("#dm-inspected").startswith(f"id {second} ")
    assert page.locator("#dm-table-body tr.dm-current td").first.text_content() == str(second)

    page.uncheck("#dm-region-filter input[value='2']")  # hard-to-learn hidden
    visible = pts["id"][pts["region"] != "hard-to-learn"].tolist()
    hidden = pts["id"][pts["region"] == "hard-to-learn"].tolist()
    page.fill("#dm-find", f"{visible[5]}, {visible[1]} {hidden[0]};999999, x1")
    page.press("#dm-find", "Enter")
    assert table_ids(page) == sorted([visible[1], visible[5]])
    assert page.text_content("#dm-find-status") == (
        f"2 of 5 found and selected; hidden by the filters: {hidden[0]}; "
        "not on the page: 999999, x1")


def _expected_corrections(rows: list[tuple]) -> bytes:
    """corrections.csv as Python's csv module writes it, with the spreadsheet guard."""
    from datamap.io import guard_cell as guard

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "action", "label", "note", "reviewer"])
    for i, action, label, note, reviewer in sorted(rows):
        writer.writerow([i, action, guard(label), guard(note), guard(reviewer)])
    return out.getvalue().encode()


def test_review_decisions_merge_into_corrections_csv(open_page, points):
    pts = sorted_points(points)
    ids = pts["id"].tolist()
    classes = [*CLASSES[:9], "-1"]  # a class name a spreadsheet would read as a number
    prior = pd.DataFrame({
        "id": [ids[10], ids[3], 10**15 + 1, ids[20]],
        "action": ["drop", "relabel", "keep", "keep"],
        "label": ["", "class 2", "", ""],
        "note": ['typo, "see" doc', "=SUM(A1)", "multi\nline", ""],
        "reviewer": ["ann", "+bob", "@eve", "'quoted"],
    })
    opened = open_page(build(points, decisions=prior, classes=classes), "review.html")
    page = opened.page
    assert page.text_content("#dm-review-status") == ("Prior decisions loaded: 4 decisions in "
                                                       "all (1 of them about examples not on "
                                                       "this map, kept).")

    # new: relabel two examples (one had a prior drop), clear a prior one
    page.fill("#dm-find", f"{ids[10]}, {ids[11]}")
    page.press("#dm-find", "Enter")
    page.select_option("#dm-action", "relabel")
    page.select_option("#dm-relabel", str(classes.index("-1")))
    page.fill("#dm-note", "-looks like a 7")
    page.fill("#dm-reviewer", "\tcarol")
    page.click("#dm-apply")
    page.fill("#dm-find", str(ids[20]))
    page.press("#dm-find", "Enter")
    page.select_option("#dm-action", "clear")
    page.click("#dm-apply")
    page.fill("#dm-find", f"{ids[0]}")
    page.press("#dm-find", "Enter")
    page.select_option("#dm-action", "drop")
    page.fill("#dm-note", "")
    page.fill("#dm-reviewer", "")
    page.click("#dm-apply")
    assert page.text_content("#dm-table-body tr td:last-child") == "drop"

    rows = [
        (ids[0], "drop", "", "", ""),
        (ids[3], "relabel", "class 2", "=SUM(A1)", "+bob"),
        (ids[10], "relabel", "-1", "-looks like a 7", "\tcarol"),
        (ids[11], "relabel", "-1", "-looks like a 7", "\tcarol"),
        (10**15 + 1, "keep", "", "multi\nline", "@eve"),
    ]
    name, data = download(page, "#dm-download-corrections")
    assert name == "corrections.csv"
    assert data == _expected_corrections(rows)
    back = read_download(data)  # the guard undone: the exact values
    assert back.values.tolist() == [list(r) for r in rows]

    # the decisions on the map: colour by decision, the legend counts them
    page.check("input[name='dm-colour'][value='decision']")
    legend = page.text_content("#dm-legend")
    assert f"none ({N - 4})" in legend and "drop (1)" in legend and "relabel (3)" in legend


def iso(value: str) -> str:
    """A data value as the page writes it inside a line of its own words (bidi-isolated)."""
    return f"\u2068{value}\u2069"


PAYLOADS = {
    "class": "<img src=x onerror=alert(2)>",
    "text": "</script><script>alert(1)</script><b id=pwn1>bold</b>",
    "pair": "<svg onload=alert(5)><iframe src=javascript:alert(6)>",
    "file": "\"><img src=x onerror=alert(7)>.png",
    "feature": "\"><svg onload=alert(3)>",
    "note": "<script>alert(8)</script>\u2028</script>",
    "reviewer": "<img src=x onerror=window.__fired.push('xss')>",
    "title": "</title><script>alert(4)</script>",
    "rule": "<style>*{display:none}</style>&amp; rule",
}


@pytest.mark.parametrize("kind", ["texts", "images", "features"])
def test_payloads_in_the_data_run_nothing_and_show_as_text(open_page, points, kind):
    classes = [*CLASSES[:9], PAYLOADS["class"]]
    pts = sorted_points(points)
    if kind == "texts":
        preview = Texts([PAYLOADS["text"]] * N, [PAYLOADS["pair"]] * N)
    elif kind == "images":
        preview = Images(synthetic_images(points), files=[PAYLOADS["file"]] * N)
    else:
        preview = Features(np.ones((N, 3)), ["a", PAYLOADS["feature"], "c"])
    # one decided example has the payload class as its given label
    decided = [pts["id"][pts["gold"] == 9].iloc[0], *pts["id"][pts["gold"] != 9][:2]]
    decisions = pd.DataFrame({"id": decided, "action": ["relabel", "drop", "keep"],
                              "label": [PAYLOADS["class"], "", ""],
                              "note": [PAYLOADS["note"]] * 3,
                              "reviewer": [PAYLOADS["reviewer"]] * 3})
    html = build(points, preview, decisions, classes=classes, title=PAYLOADS["title"],
                 region_rule=PAYLOADS["rule"])
    assert "</script><script>alert(1)" not in html  # the text cannot close its element
    opened = open_page(html, f"xss-{kind}.html")
    page = opened.page

    # everything that shows data: tooltip, inspector, table, dropdowns, legend
    row = isolated(page, pts)[0]
    text = hover(page, *screen(page, pts["variability"][row], pts["confidence"][row]))
    page.fill("#dm-find", ", ".join(str(i) for i in decided))
    page.press("#dm-find", "Enter")
    page.locator("#dm-table-body tr").first.click()
    page.select_option("#dm-label-filter", ["9"])
    page.click("#dm-label-all")
    page.check("input[name='dm-colour'][value='decision']")
    page.wait_for_timeout(200)

    assert opened.fired() == [] and opened.violations() == []
    injected = "img, svg, iframe, object, embed, style:not(head > style), b, #pwn1"
    assert page.evaluate(f"() => document.querySelectorAll({injected!r}).length") == 0
    # the config and the page's script; the data blobs were removed once decoded
    assert page.evaluate("() => document.querySelectorAll('script').length") == 2
    assert page.title() == PAYLOADS["title"]
    assert page.text_content("#dm-title") == PAYLOADS["title"]
    assert page.text_content("#dm-region-rule") == PAYLOADS["rule"]
    options = page.locator("#dm-label-filter option").all_text_contents()
    assert options[-1] == PAYLOADS["class"]
    assert page.locator("#dm-relabel option").all_text_contents()[-1] == PAYLOADS["class"]
    if kind == "texts":
        assert PAYLOADS["text"] in text and PAYLOADS["pair"] in text
    elif kind == "images":
        assert PAYLOADS["file"] in text
    else:
        assert f"{PAYLOADS['feature']}=1" in text
    cells = page.locator("#dm-table-body td").all_text_contents()
    assert (f"relabel to {iso(PAYLOADS['class'])}: {iso(PAYLOADS['note'])} "
            f"({iso(PAYLOADS['reviewer'])})") in cells
    assert PAYLOADS["class"] in cells  # the given label of the first decided example
    _, data = download(page, "#dm-download-corrections")
    assert read_download(data)["note"].tolist() == [PAYLOADS["note"]] * 3


def test_two_hundred_thousand_points(open_page):
    n = 200_000
    points = synthetic_points(n, seed=11)
    opened = open_page(build(points, Texts(synthetic_texts(n, seed=11))), "big.html")
    page = opened.page
    pts = sorted_points(points)
    assert page.text_content("#dm-shown") == f"Showing all {n:,} examples."

    # hover: the tooltip names a point drawn under the pointer
    x, y = screen(page, 0.01, 0.9)
    text = hover(page, x, y)
    shown_id = int(text.split("id ")[1].split(" ")[0])
    p = pts[pts["id"] == shown_id].iloc[0]
    assert np.hypot(*(np.array(screen(page, p["variability"], p["confidence"])) - (x, y))) < 8

    page.uncheck("#dm-region-filter input[value='1']")  # ambiguous
    page.select_option("#dm-label-filter", ["0", "1", "2", "3", "4"])
    keep = ((pts["region"] != "ambiguous") & (pts["gold"] < 5)).to_numpy()
    assert page.text_content("#dm-filter-status") == \
        f"{keep.sum():,} of {n:,} points pass the filters"

    # a box in the dense easy corner: exactly the shown points inside it
    expected = box_select(page, pts, 0.005, 0.02, 0.85, 0.95, shown=keep)
    assert len(expected) > 1000
    assert page.text_content("#dm-selection-status") == f"{len(expected):,} selected"
    assert page.text_content("#dm-page-status") == f"rows 1\u2013100 of {len(expected):,}"
    _, ids_csv = download(page, "#dm-download-ids")
    assert ids_csv == ("id\n" + "".join(f"{i}\n" for i in np.sort(expected))).encode()
    assert all(url.startswith(("file:", "blob:")) for url in opened.requests)


def test_pan_zoom_and_colour_by(open_page, image_page_html, points):
    page = open_page(image_page_html).page
    before = page.evaluate("dataMap.view()")
    # the wheel zooms around the pointer: the data point under it stays under it
    x, y = np.round(screen(page, 0.1, 0.6))  # whole pixels: what a wheel event reports
    anchor = page.evaluate(f"dataMap.toData({x}, {y})")
    page.mouse.move(x, y)
    frames = page.evaluate("dataMap.frames")
    page.mouse.wheel(0, -300)
    page.wait_for_function(f"() => dataMap.frames > {frames}")
    zoomed = page.evaluate("dataMap.view()")
    assert zoomed["x1"] - zoomed["x0"] < 0.8 * (before["x1"] - before["x0"])
    assert np.allclose(page.evaluate(f"dataMap.toData({x}, {y})"), anchor, atol=1e-9)
    # a pan drag moves the map with the pointer: right and up by the distance dragged
    page.check("input[name='dm-tool'][value='pan']")
    drag(page, [(x, y), (x + 100, y - 50)])
    panned = page.evaluate("dataMap.view()")
    width, height = zoomed["x1"] - zoomed["x0"], zoomed["y1"] - zoomed["y0"]
    assert np.isclose(zoomed["x0"] - panned["x0"], 100 / 720 * width, rtol=0.02)
    assert np.isclose(zoomed["y0"] - panned["y0"], 50 / 560 * height, rtol=0.02)
    page.click("#dm-reset")
    assert page.evaluate("dataMap.view()") == before

    pts = sorted_points(points)
    legend = page.locator("#dm-legend li").all_text_contents()
    bins = np.round(pts["correctness"] * 10).astype(int).value_counts()
    assert legend[0] == "correctness:" and legend[1:] == [
        f"{b / 10:.1f} ({bins.get(b, 0):,})" for b in range(11)]
    page.check("input[name='dm-colour'][value='flipped']")
    flips = int(pts["flipped"].sum())
    assert page.locator("#dm-legend li").all_text_contents() == [
        "label flipped:", f"kept ({N - flips})", f"flipped ({flips})"]
    page.check("input[name='dm-colour'][value='region']")
    counts = pts["region"].value_counts()
    assert page.locator("#dm-legend li").all_text_contents()[1:] == [
        f"{r} ({counts[r]})" for r in ("easy-to-learn", "ambiguous", "hard-to-learn")]


# --------------------------------------------------------------------------------------------
# the guard's edge cases through the page's download


def test_guarded_values_round_trip_through_the_download(open_page, points):
    # a negative integer (-1) is no formula: written as it is; "-1-1" is one, and a
    # spreadsheet would save "+2.5" as "2.5": both guarded
    values = ["=1+1", "-", "'x", "''=", "@a", "-1", "+2.5", "-1-1"]
    classes = [*CLASSES[:5], *values]  # classes literally named so: relabel targets
    pts = sorted_points(points)
    ids = pts["id"].tolist()
    n = len(values)
    prior = pd.DataFrame({"id": ids[:n], "action": ["relabel"] * n, "label": values,
                          "note": values, "reviewer": values[::-1]})
    page = open_page(build(points, decisions=prior, classes=classes), "guard.html").page
    _, data = download(page, "#dm-download-corrections")
    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\n")
    writer.writerow(COLUMNS)
    guarded = {"=1+1": "'=1+1", "-": "'-", "'x": "''x", "''=": "'''=", "@a": "'@a",
               "-1": "-1", "+2.5": "'+2.5", "-1-1": "'-1-1"}
    for i, v, r in zip(ids[:n], values, values[::-1], strict=True):
        writer.writerow([i, "relabel", guarded[v], guarded[v], guarded[r]])
    assert data == expected.getvalue().encode()
    back = read_download(data)
    assert back["label"].tolist() == values and back["note"].tolist() == values
    assert back["reviewer"].tolist() == values[::-1]


# --------------------------------------------------------------------------------------------
# the page the real cartography stage wrote, and its download back through prepare


def test_stage_page_loads_offline_and_its_download_loads_back_through_prepare(
        open_page, digits_cartography, digits_prepared, tmp_path):
    import pyarrow.parquet as pq

    from datamap.data import read_applied_corrections
    from datamap.data.corrections import read_corrections
    from datamap.data.prepare import prepare_from_config

    from .helpers import compose_cfg

    html = (digits_cartography / PAGE_NAME).read_text(encoding="utf-8")
    opened = open_page(html, "stage.html")
    page = opened.page
    train = pq.read_table(digits_prepared / "train.parquet").to_pandas().sort_values("id")
    assert page.text_content("#dm-shown") == f"Showing all {len(train):,} examples."
    assert all(url.startswith(("file:", "blob:", "data:")) for url in opened.requests)
    assert opened.fired() == [] and opened.violations() == []

    first, second = (int(i) for i in train["id"][:2])
    page.fill("#dm-find", str(first))
    page.press("#dm-find", "Enter")
    page.select_option("#dm-action", "relabel")
    new_class = (int(train["label"].iloc[0]) + 1) % 10
    page.select_option("#dm-relabel", str(new_class))
    page.fill("#dm-note", "=looks like another digit")
    page.fill("#dm-reviewer", "-ana")
    page.click("#dm-apply")
    page.fill("#dm-find", str(second))
    page.press("#dm-find", "Enter")
    page.select_option("#dm-action", "drop")
    page.fill("#dm-note", "smudged, \"not\" a digit")
    page.fill("#dm-reviewer", "")
    page.click("#dm-apply")
    name, data = download(page, "#dm-download-corrections")
    assert name == "corrections.csv"
    path = tmp_path / "corrections.csv"
    path.write_bytes(data)

    decisions = read_corrections(path).decisions
    assert [(d.id, d.action, d.note, d.reviewer) for d in decisions] == [
        (first, "relabel", "=looks like another digit", "-ana"),
        (second, "drop", 'smudged, "not" a digit', "")]

    cfg = compose_cfg(f"data.corrections={path}")
    out = tmp_path / "prepared"
    prepare_from_config(cfg.data, out, seed=cfg.seed)
    applied = read_applied_corrections(out)
    assert applied[["id", "action"]].values.tolist() == [[first, "relabel"], [second, "drop"]]
    assert applied["note"].tolist()[0] == "=looks like another digit"
    relabelled = pq.read_table(out / "train.parquet").to_pandas().set_index("id")
    assert second not in relabelled.index
    assert int(relabelled.loc[first, "label"]) == new_class
