"""The interactive data map: one self-contained HTML page to explore the map and take a
selection back into the pipeline.

``data/cartography/data_map.html`` opens offline in any browser: every script and style is
inlined and the page makes no network request (its Content-Security-Policy forbids any). It is
built with Bokeh rather than Plotly: Bokeh ships box/lasso selection, a data table linked to the
selection, filter widgets, JavaScript callbacks and a WebGL scatter as library models, and its
inline bundles (core, WebGL, widgets, tables: about 2.2 MB) leave room for the data under the
5 MB budget of the demo page, where plotly.js alone is about 4.5 MB and its table, filters and
CSV download would have to be hand-written.

What the page shows (:func:`data_map_page`):

* the scatter of variability (x) against confidence (y) -- a WebGL glyph, 100,000 points stay
  smooth -- coloured by correctness, region or "label flipped" (when noise was injected), with
  marginal histograms of the points that pass the filters and, overlaid, of the selection;
* on hover: id, given label, most-predicted label, confidence, variability, correctness,
  forgetfulness and the input itself (a PNG thumbnail for images, the text for text, a few
  feature values for tables), all embedded;
* filters by given label and region, a search by id;
* box and lasso selection, listed in a table, downloadable as ``id`` CSV ready for a
  ``selection.specs.NAME: {ids_file: data/selections/NAME.csv}`` spec.

Above ``max_points`` examples the page shows the same seeded subsample as the PNG map and says
so. Same inputs give the same bytes: Bokeh's model ids (a process-wide counter) are renumbered
in document order, and no timestamp or random id enters the page.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from datamap.errors import ConfigError, DataError
from datamap.io import write_text

#: The page's file name in the cartography stage's output directory.
PAGE_NAME = "data_map.html"
#: Defaults of ``cartography.html``.
THUMBNAIL_PX = 64
TEXT_CHARS = 300
#: Feature values shown on hover for tabular inputs.
TABULAR_FEATURES = 8
#: Bins of each marginal histogram.
HISTOGRAM_BINS = 40
#: Ids above this magnitude lose precision as JavaScript numbers; the page then keeps them as
#: strings (the CSV still lists them exactly).
_JS_SAFE_INT = 2**53

_REGION_COLOURS = ("#c8453b", "#7b4ea3", "#3f6fb5")  # easy-to-learn, ambiguous, hard-to-learn
_FLIP_COLOURS = ("#b8b8b8", "#e8730c")  # kept, flipped
_SELECTED_COLOUR = "#f0a30a"
# Inline styles: Bokeh draws tooltips in a shadow DOM that the page's stylesheet cannot reach.
_THUMB_STYLE = "image-rendering: pixelated; border: 1px solid #ccc; background: #000;"
_TEXT_STYLE = "max-width: 360px; white-space: normal; overflow-wrap: anywhere; font-size: 12px;"
_PAIR_STYLE = " margin-top: 4px; padding-top: 4px; border-top: 1px dashed #bbb;"
_CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
        "style-src 'unsafe-inline'; img-src data: blob:; font-src data:")


@dataclass(frozen=True)
class PageInfo:
    """What :func:`write_data_map_html` wrote."""

    path: str
    n_examples: int
    n_shown: int
    bytes: int


def html_options(options: Mapping[str, Any] | None) -> dict[str, int]:
    """``cartography.html`` checked: ``thumbnail_px`` and ``text_chars``, positive integers."""
    known = {"thumbnail_px": THUMBNAIL_PX, "text_chars": TEXT_CHARS}
    given = dict(options or {})
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(f"cartography.html.{unknown[0]} is not an option (known: "
                          f"{', '.join(known)})")
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"cartography.html.{key} must be a positive integer, got {value!r}")
    return {**known, **given}


# --------------------------------------------------------------------------------------------
# what the page shows about each example


def most_predicted(dynamics: Any, epochs: int | None = None) -> pd.Series:
    """Each example's most often predicted class over the records of the first ``epochs``
    epochs (None: every epoch), ties to the lowest class; a Series indexed by id (ascending).

    ``dynamics`` is a dynamics table or the path of its Parquet file (read a chunk of ids at a
    time, as :func:`datamap.scoring.scores.compute_scores` does).
    """
    from datamap.dynamics.storage import open_dynamics

    source = open_dynamics(dynamics)
    k = source.meta.num_classes
    ids, modes = [], []
    for chunk in source.chunks(("pred",), epochs=epochs):
        pred = chunk.values["pred"].astype(np.int64)  # [slots, n]
        n = pred.shape[1]
        # one bincount over (example, class) keys counts every example's votes at once
        keys = pred + k * np.arange(n, dtype=np.int64)
        counts = np.bincount(keys.ravel(), minlength=n * k).reshape(n, k)
        ids.append(chunk.ids)
        modes.append(counts.argmax(axis=1))  # argmax takes the first maximum: lowest class
    return pd.Series(np.concatenate(modes), index=np.concatenate(ids), name="most_predicted")


@dataclass(frozen=True)
class InputPreview:
    """What the tooltip shows of each example's input: plain-text ``columns`` for the page's
    data source (one value per example; Bokeh escapes them) and the tooltip ``template`` (HTML
    with ``@column`` fields) that shows them."""

    columns: dict[str, list[str]]
    template: str


def png_base64(image: np.ndarray) -> str:
    """A uint8 image [C, H, W] (C = 1, 3 or 4) as base64 PNG bytes."""
    from PIL import Image

    channels = image.shape[0]
    if channels == 1:
        pil = Image.fromarray(image[0], mode="L")
    else:
        pil = Image.fromarray(np.ascontiguousarray(np.moveaxis(image, 0, -1)),
                              mode="RGB" if channels == 3 else "RGBA")
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")  # Pillow writes no time or software chunk
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image_thumbnails(x: np.ndarray, size: int) -> InputPreview:
    """PNG thumbnails of the images ``x`` [N, C, H, W] (any float range) on one grey scale,
    shown at most ``size`` pixels on the longer side (smaller images are stored at their own
    size and scaled up, pixelated, by the browser)."""
    from PIL import Image

    if x.ndim != 4:
        raise DataError(f"image inputs must be [N, C, H, W], got shape {list(x.shape)}; "
                        "fix input_shape in meta.json by rerunning the prepare stage")
    if x.shape[1] not in (1, 3, 4):
        x = x[:, :1]  # no colour model for other channel counts: show the first channel
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
    scaled = np.clip((x - lo) * (255.0 / max(hi - lo, 1e-12)), 0, 255)
    pixels = np.round(scaled).astype(np.uint8)
    h, w = x.shape[2:]
    scale = size / max(h, w)
    display = (max(1, round(w * scale)), max(1, round(h * scale)))
    stored = display if scale < 1 else (w, h)
    thumbs = []
    for image in pixels:
        if stored != (w, h):
            image = np.stack([np.asarray(Image.fromarray(c).resize(stored, Image.Resampling.BOX))
                              for c in image])
        thumbs.append(png_base64(image))
    template = (f'<img class="dm-thumb" src="data:image/png;base64,@thumb" width="{display[0]}" '
                f'height="{display[1]}" alt="input" style="{_THUMB_STYLE}">')
    return InputPreview({"thumb": thumbs}, template)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "\u2026"


def _text_field(column: str, extra_style: str = "") -> str:
    # styled inline: Bokeh draws tooltips in a shadow DOM the page's stylesheet cannot reach
    return f'<div class="dm-text" style="{_TEXT_STYLE}{extra_style}">@{column}</div>'


def text_previews(texts: Sequence[Any], pairs: Sequence[Any] | None,
                  limit: int) -> InputPreview:
    """The texts (and second texts of pairs), cut to ``limit`` characters."""
    columns = {"text": [_truncate(str(t), limit) for t in texts]}
    template = _text_field("text")
    if pairs is not None:
        columns["text_pair"] = [_truncate(str(t), limit) for t in pairs]
        template += _text_field("text_pair", _PAIR_STYLE)
    return InputPreview(columns, template)


def feature_previews(x: np.ndarray, names: Sequence[str] | None = None,
                     shown: int = TABULAR_FEATURES) -> InputPreview:
    """The first ``shown`` feature values of each row of ``x`` [N, F] as ``name=value``."""
    flat = x.reshape(len(x), -1)
    width = flat.shape[1]
    if names is None or len(names) != width:
        names = [f"x{j}" for j in range(width)]
    head = [str(n) for n in names[:shown]]
    rest = f" \u2026 (+{width - shown} more)" if width > shown else ""
    values = [", ".join(f"{n}={v:.4g}" for n, v in zip(head, row, strict=False)) + rest
              for row in flat[:, :shown]]
    return InputPreview({"features": values}, _text_field("features"))


def input_previews(prepared_dir: str | os.PathLike, ids: np.ndarray, meta: Mapping[str, Any],
                   *, thumbnail_px: int = THUMBNAIL_PX, text_chars: int = TEXT_CHARS,
                   split: str = "train") -> InputPreview:
    """Previews of the inputs of the examples ``ids`` of a prepared split, in that order: the
    text (``text`` [+ ``text_pair``] columns), a PNG thumbnail (``x`` with ``input_kind``
    "image" and ``input_shape`` [C, H, W] in meta.json), or a few feature values (``x``)."""
    path = Path(prepared_dir) / f"{split}.parquet"
    if not path.is_file():
        raise DataError(f"{path}: {split} split not found; run the prepare stage first")
    columns = pq.read_schema(path).names
    if "text" in columns:
        wanted = ["id", "text"] + (["text_pair"] if "text_pair" in columns else [])
    elif "x" in columns:
        wanted = ["id", "x"]
    else:
        raise DataError(f"{path}: no input column (x or text) to show on the data map; rerun "
                        "the prepare stage")
    table = pq.read_table(path, columns=wanted)
    rows = pd.Index(table.column("id").to_numpy()).get_indexer(ids)
    if (rows < 0).any():
        missing = np.asarray(ids)[rows < 0]
        raise DataError(f"{path}: {len(missing)} scored id(s) are not in the {split} split "
                        f"(e.g. {missing[:5].tolist()}); rerun the train and cartography stages")
    if "text" in wanted:
        texts = table.column("text").take(rows).to_pylist()
        pairs = table.column("text_pair").take(rows).to_pylist() if "text_pair" in wanted \
            else None
        return text_previews(texts, pairs, text_chars)
    x_col = table.column("x").combine_chunks().take(rows)
    x = x_col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    shape = [int(d) for d in meta.get("input_shape", [])]
    if meta.get("input_kind") == "image" and len(shape) == 3:
        if int(np.prod(shape)) * len(rows) != x.size:
            raise DataError(f"{path}: column 'x' does not hold images of input_shape {shape} "
                            "(meta.json); rerun the prepare stage")
        return image_thumbnails(x.reshape(len(rows), *shape), thumbnail_px)
    return feature_previews(x.reshape(len(rows), -1), meta.get("feature_names"))


# --------------------------------------------------------------------------------------------
# the page


def _correctness_colours() -> list[str]:
    """The static map's correctness colours, for the 11 bins 0.0, 0.1, ..., 1.0."""
    from matplotlib.colors import LinearSegmentedColormap, to_hex

    from datamap.cartography.figures import CORRECTNESS_PALETTE

    cmap = LinearSegmentedColormap.from_list("datamap", CORRECTNESS_PALETTE)
    return [to_hex(cmap(b / 10.0)) for b in range(11)]


def _renumber_ids(item: Any) -> Any:
    """Bokeh model ids replaced by ``p1000``, ``p1001``, ... in document order: the same
    figure gets the same ids whatever models the process created before."""
    mapping: dict[str, str] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key in ("id", "root_id") and isinstance(value, str):
                    out[key] = mapping.setdefault(value, f"p{1000 + len(mapping)}")
                else:
                    out[key] = walk(value)
            return out
        if isinstance(node, (list, tuple)):  # tuples are JSON arrays too
            return [walk(v) for v in node]
        return node

    return walk(item)


def _histogram(values: np.ndarray, edges: np.ndarray) -> dict[str, np.ndarray]:
    counts, _ = np.histogram(values, bins=edges)
    return {"lo": edges[:-1], "hi": edges[1:], "count": counts.astype(np.float64)}


def _point_columns(points: pd.DataFrame, names: Sequence[str],
                   preview: InputPreview) -> dict[str, Any]:
    """The page's data source: one column per field the map, tooltip and table show."""
    n = len(points)
    labels = np.asarray(names, dtype=object)
    ids = points["id"].to_numpy(dtype=np.int64)
    largest = int(np.abs(ids).max())
    # JavaScript numbers hold integers exactly up to 2**53 (Bokeh sends int64 as int32 when
    # they fit, else as lossy floats): beyond that the page keeps ids as text
    page_ids = ids if largest < 2**31 else ids.astype(np.float64) if largest < _JS_SAFE_INT \
        else ids.astype(str).astype(object)
    correctness = points["correctness"].to_numpy(dtype=np.float64)
    data: dict[str, Any] = {
        "id": page_ids,
        # float32 is exact enough to place and read a point and halves these columns
        "variability": points["variability"].to_numpy(dtype=np.float32),
        "confidence": points["confidence"].to_numpy(dtype=np.float32),
        "correctness": correctness.astype(np.float32),
        "correctness_bin": np.char.mod("%.1f", np.round(correctness * 10) / 10).astype(object),
        "forgetfulness": np.where(points["never_learned"].to_numpy(), "never learned",
                                  points["forgetfulness"].astype(str).to_numpy()).astype(object),
        "given": labels[points["gold"].to_numpy()],
        "predicted": labels[points["most_predicted"].to_numpy()],
        "region": np.asarray(points["region"], dtype=object),
    }
    for name, values in preview.columns.items():
        if len(values) != n:
            raise ValueError(f"input preview column {name!r} has {len(values)} values for {n} "
                             "points")
        data[name] = np.asarray(values, dtype=object)
    if "flipped" in points.columns:
        data["flipped"] = np.where(points["flipped"].to_numpy(), "flipped", "kept").astype(object)
    return data


def _marginal_histogram(values: np.ndarray, edges: np.ndarray, shared_range: Any, *,
                        above: bool, length: int, colour: str, name: str) -> tuple[Any, Any]:
    """A histogram of ``values`` sharing the map's x range (``above`` it: bars grow up) or y
    range (beside it: bars grow right), with a ``selected`` overlay the page's callbacks fill.
    Returns (figure, data source)."""
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    source = ColumnDataSource({**_histogram(values, edges),
                               "selected": np.zeros(len(edges) - 1)}, name=f"{name}_hist")
    if above:
        fig = figure(width=length, height=130, x_range=shared_range, y_axis_label="examples")
        bars, grow = {"left": "lo", "right": "hi", "bottom": 0}, "top"
    else:
        fig = figure(width=150, height=length, y_range=shared_range, x_axis_label="examples")
        bars, grow = {"bottom": "lo", "top": "hi", "left": 0}, "right"
    fig.name, fig.toolbar_location = f"{name}_histogram", None
    fig.quad(**bars, **{grow: "count"}, source=source, color=colour, alpha=0.55)
    fig.quad(**bars, **{grow: "selected"}, source=source, fill_color=_SELECTED_COLOUR,
             line_color=None)
    (fig.xaxis if above else fig.yaxis).visible = False  # the map's axis serves both
    (fig.y_range if above else fig.x_range).start = 0
    return fig, source


_FILTER_JS = """
const data = source.data;
const n = data.id.length;
const classes = new Set(class_filter.value);
const regions = new Set(region_filter.active.map((i) => region_filter.labels[i]));
const keep = new Array(n);
let shown = 0;
for (let i = 0; i < n; i++) {
  keep[i] = (classes.size == 0 || classes.has(data.given[i])) && regions.has(data.region[i]);
  if (keep[i]) shown++;
}
view.filter.booleans = keep;
source.selected.indices = source.selected.indices.filter((i) => keep[i]);
filter_status.text = `${shown.toLocaleString("en")} of ${n.toLocaleString("en")} points pass`
  + " the filters";
source.selected.change.emit();
"""

# Histograms of the points passing the filters and of the selection, and the selection table.
_SELECTION_JS = """
const data = source.data;
const keep = view.filter.booleans;
const selected = source.selected.indices.slice();
const key = (v) => BigInt(v);
selected.sort((a, b) => { const x = key(data.id[a]), y = key(data.id[b]);
                          return x < y ? -1 : x > y ? 1 : 0; });
function counts(hist, column, rows) {
  const lo = hist.data.lo, hi = hist.data.hi, nb = lo.length;
  const start = lo[0], width = hi[nb - 1] - lo[0];
  const out = new Array(nb).fill(0);
  for (const i of rows) {
    const v = data[column][i];
    let b = Math.floor((v - start) / width * nb);
    if (b < 0 || b > nb) continue;
    out[Math.min(b, nb - 1)] += 1;
  }
  return out;
}
const all_rows = [];
for (let i = 0; i < data.id.length; i++) if (keep == null || keep[i]) all_rows.push(i);
for (const [hist, column] of [[x_hist, "variability"], [y_hist, "confidence"]]) {
  hist.data = {...hist.data, count: counts(hist, column, all_rows),
               selected: counts(hist, column, selected)};
}
const table = {};
for (const column of table_columns) table[column] = selected.map((i) => data[column][i]);
table_source.data = table;
selection_status.text = selected.length == 0
  ? "Nothing selected: drag a box or a lasso over the map (shift-drag adds to the selection)."
  : `${selected.length.toLocaleString("en")} selected`;
download.disabled = selected.length == 0;
"""

_DOWNLOAD_JS = """
const data = source.data;
const ids = source.selected.indices.map((i) => BigInt(data.id[i]));
ids.sort((a, b) => a < b ? -1 : a > b ? 1 : 0);
const csv = "id\\n" + ids.map(String).join("\\n") + (ids.length ? "\\n" : "");
const url = URL.createObjectURL(new Blob([csv], {type: "text/csv"}));
const link = document.createElement("a");
link.href = url;
link.download = filename;
document.body.appendChild(link);
link.click();
link.remove();
setTimeout(() => URL.revokeObjectURL(url), 1000);
"""

_SEARCH_JS = """
const data = source.data;
const wanted = cb_obj.value.split(/[\\s,;]+/).filter((t) => t.length > 0);
if (wanted.length == 0) { search_status.text = ""; return; }
const positions = new Map();
for (let i = 0; i < data.id.length; i++) positions.set(String(data.id[i]), i);
const found = [], missing = [], hidden = [];
for (const token of wanted) {
  const i = positions.get(token);
  if (i === undefined) missing.push(token);
  else if (view.filter.booleans != null && !view.filter.booleans[i]) hidden.push(token);
  else found.push(i);
}
source.selected.indices = found;
let text = `${found.length} of ${wanted.length} found and selected`;
if (hidden.length) text += `; hidden by the filters: ${hidden.slice(0, 10).join(", ")}`;
if (missing.length) text += `; not on the page: ${missing.slice(0, 10).join(", ")}` + note;
search_status.text = text;
"""

_COLOUR_JS = """
const [column, mapper] = colourings[cb_obj.active];
for (const glyph of glyphs) {
  glyph.fill_color = {field: column, transform: mapper};
  glyph.line_color = {field: column, transform: mapper};
}
for (let i = 0; i < legends.length; i++) legends[i].visible = i == cb_obj.active;
"""

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 16px;
       color: #222; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
{bokeh}
</head>
<body>
<div id="datamap"></div>
<script type="application/json" id="datamap-item">{item}</script>
<script>
Bokeh.embed.embed_item(JSON.parse(document.getElementById("datamap-item").textContent),
                       "datamap");
</script>
</body>
</html>
"""


def _script_safe_json(obj: Any) -> str:
    """JSON that cannot close its ``<script>`` element (``<``, ``>``, ``&`` as escapes)."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def data_map_page(points: pd.DataFrame, class_names: Sequence[str], preview: InputPreview, *,
                  n_examples: int, title: str, seed: int = 0,
                  max_points: int | None = None) -> str:
    """The HTML page of the data map of ``points``.

    ``points`` has one row per shown example (ascending id): ``id``, ``gold``,
    ``most_predicted`` (class indices into ``class_names``), ``confidence``, ``variability``,
    ``correctness``, ``forgetfulness``, ``never_learned``, ``region`` and, when label noise
    was injected, ``flipped`` (bool); ``preview`` shows their inputs (:func:`input_previews`).
    ``n_examples`` is the number of scored examples (more than ``len(points)`` when the page
    shows a subsample of ``max_points`` drawn with ``seed``).
    """
    from bokeh.embed import json_item
    from bokeh.embed.bundle import bundle_for_objs_and_resources
    from bokeh.layouts import column, gridplot, row
    from bokeh.models import (
        BooleanFilter,
        BoxSelectTool,
        Button,
        CategoricalColorMapper,
        CDSView,
        CheckboxButtonGroup,
        ColumnDataSource,
        CustomJS,
        DataTable,
        Div,
        HoverTool,
        LassoSelectTool,
        Legend,
        LegendItem,
        MultiChoice,
        NumberFormatter,
        RadioButtonGroup,
        Range1d,
        TableColumn,
        TextInput,
    )
    from bokeh.plotting import figure
    from bokeh.resources import Resources

    from datamap.scoring.regions import REGIONS

    n = len(points)
    if n == 0:
        raise DataError("scores: no examples to show on the data map")
    names = [str(c) for c in class_names]
    data = _point_columns(points, names, preview)
    has_noise = "flipped" in data
    source = ColumnDataSource(data, name="points")
    view = CDSView(filter=BooleanFilter())  # no booleans: every point; the filters set them

    bins = [f"{b / 10:.1f}" for b in range(11)]
    colourings = [("correctness_bin", CategoricalColorMapper(
        factors=bins, palette=_correctness_colours()))]
    colourings.append(("region", CategoricalColorMapper(factors=list(REGIONS),
                                                         palette=list(_REGION_COLOURS))))
    if has_noise:
        colourings.append(("flipped", CategoricalColorMapper(factors=["kept", "flipped"],
                                                              palette=list(_FLIP_COLOURS))))

    x_end = max(0.05, float(data["variability"].max()) * 1.05)
    x_range, y_range = Range1d(0.0, x_end), Range1d(-0.02, 1.02)
    small = n <= 20_000
    main = figure(
        name="data_map", width=720, height=560, x_range=x_range, y_range=y_range,
        output_backend="webgl", tools="pan,wheel_zoom,reset,save",
        x_axis_label="variability", y_axis_label="confidence", toolbar_location="above",
    )
    first_column, first_mapper = colourings[0]
    spec = {"field": first_column, "transform": first_mapper}
    points_renderer = main.scatter(
        "variability", "confidence", source=source, view=view, size=7 if small else 4,
        fill_color=spec, line_color=spec, fill_alpha=0.7, line_alpha=0.9,
        selection_fill_color=_SELECTED_COLOUR, selection_line_color="black",
        nonselection_fill_alpha=0.15, nonselection_line_alpha=0.15, name="scatter",
    )
    box = BoxSelectTool(renderers=[points_renderer], name="box_select")
    lasso = LassoSelectTool(renderers=[points_renderer], name="lasso_select")
    # the nearest few points only: a dense corner would otherwise list hundreds
    tooltip = (
        f'<div class="dm-tip"><div>{preview.template}</div>'
        "<div><b>id @id</b> &middot; @region</div>"
        "<div>given <b>@given</b> &middot; most predicted <b>@predicted</b></div>"
        "<div>confidence @confidence{0.000} &middot; variability @variability{0.000}</div>"
        "<div>correctness @correctness{0.00} &middot; forgetfulness @forgetfulness</div>"
        + ("<div>label @flipped</div>" if has_noise else "") + "</div>"
    )
    hover = HoverTool(renderers=[points_renderer], name="hover", limit=3, tooltips=tooltip)
    main.add_tools(box, lasso, hover)
    main.toolbar.active_drag = box

    legends = []
    for i, (column_name, _) in enumerate(colourings):
        legend = Legend(items=[LegendItem(label={"field": column_name},
                                          renderers=[points_renderer])],
                        title=column_name.replace("_bin", "").replace("flipped", "label"),
                        visible=i == 0, location="top_right", name=f"legend_{column_name}",
                        background_fill_alpha=0.8)
        # inside the frame, top right: no example has both high variability and confidence
        main.add_layout(legend)
        legends.append(legend)

    top, x_hist = _marginal_histogram(
        data["variability"], np.linspace(0.0, x_end, HISTOGRAM_BINS + 1), x_range, above=True,
        length=main.width, colour="teal", name="variability")
    side, y_hist = _marginal_histogram(
        data["confidence"], np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1), y_range, above=False,
        length=main.height, colour="#622a87", name="confidence")
    main.toolbar.logo = None
    grid = gridplot([[top, None], [main, side]], merge_tools=False, toolbar_location=None)

    shown = f"{n:,} examples"
    if n < n_examples:
        shown = (f"a random subsample of {n:,} of {n_examples:,} examples (seed {seed}; "
                 f"<code>cartography.max_points</code> = {max_points:,}); histograms count the "
                 "shown points")
    header = Div(name="header", width=1100, text=(
        f"<h2 style='margin:0'>{html.escape(title)}</h2>"
        f"<p style='margin:4px 0' id='dm-shown'>Showing {shown}. Hover a point to see the "
        "example; drag a box or a lasso to select (shift adds), then download the ids as a CSV "
        "for a <code>selection.specs.NAME: {ids_file: data/selections/NAME.csv}</code> spec.</p>"
    ))

    colour_choice = RadioButtonGroup(
        labels=["correctness", "region", "label flipped"][: len(colourings)], active=0,
        name="colour_by")
    colour_choice.js_on_change("active", CustomJS(
        args={"colourings": colourings, "glyphs": [points_renderer.glyph],
              "legends": legends}, code=_COLOUR_JS))
    class_filter = MultiChoice(title="Given label (none chosen: all)", options=names,
                               value=[], name="class_filter", width=240)
    region_filter = CheckboxButtonGroup(labels=list(REGIONS), active=list(range(len(REGIONS))),
                                        name="region_filter", orientation="vertical", width=240)
    filter_status = Div(text=f"{n:,} of {n:,} points pass the filters", name="filter_status",
                        width=240)
    search = TextInput(title="Find ids (comma-separated, Enter)", name="search", width=240)
    search_status = Div(text="", name="search_status", width=240)

    table_columns = ["id", "given", "predicted", "region", "confidence", "variability",
                     "correctness", "forgetfulness"]
    table_source = ColumnDataSource({c: [] for c in table_columns}, name="selection")
    number = NumberFormatter(format="0.000")
    table = DataTable(
        source=table_source, name="selection_table", width=1100, height=260,
        index_position=None, reorderable=False, columns=[
            TableColumn(field=c, title=c.replace("predicted", "most predicted"),
                        **({"formatter": number} if c in ("confidence", "variability",
                                                          "correctness") else {}))
            for c in table_columns
        ])
    selection_status = Div(name="selection_status", width=560, text=(
        "Nothing selected: drag a box or a lasso over the map (shift-drag adds to the "
        "selection)."))
    download = Button(label="Download selected ids (CSV)", button_type="primary",
                      disabled=True, name="download", width=240)
    clear = Button(label="Clear selection", name="clear", width=140)

    common = {"source": source, "view": view}
    update_selection = CustomJS(args={
        **common, "x_hist": x_hist, "y_hist": y_hist, "table_source": table_source,
        "table_columns": table_columns, "selection_status": selection_status,
        "download": download}, code=_SELECTION_JS)
    source.selected.js_on_change("indices", update_selection)
    apply_filters = CustomJS(args={**common, "class_filter": class_filter,
                                   "region_filter": region_filter,
                                   "filter_status": filter_status}, code=_FILTER_JS)
    class_filter.js_on_change("value", apply_filters)
    region_filter.js_on_change("active", apply_filters)
    note = " (not in the subsample)" if n < n_examples else ""
    search.js_on_change("value", CustomJS(args={**common, "search_status": search_status,
                                                "note": note}, code=_SEARCH_JS))
    download.js_on_event("button_click", CustomJS(
        args={"source": source, "filename": "data_map_selection.csv"}, code=_DOWNLOAD_JS))
    clear.js_on_event("button_click", CustomJS(args={"source": source},
                                               code="source.selected.indices = [];"))

    controls = column(
        Div(text="<b>Colour by</b>"), colour_choice, class_filter,
        Div(text="<b>Region</b>"), region_filter, filter_status, search, search_status,
        width=260, name="controls",
    )
    layout = column(header, row(controls, grid), row(selection_status, download, clear), table,
                    name="page")

    item = _renumber_ids(json_item(layout, target="datamap"))
    bundle = bundle_for_objs_and_resources([layout], Resources(mode="inline"))
    styles = "".join(f"<style>{css}</style>" for css in bundle.css_raw)
    return _PAGE.format(csp=_CSP, title=html.escape(title), style=_STYLE,
                        bokeh=styles + bundle.scripts(), item=_script_safe_json(item))


def write_data_map_html(
    scores: pd.DataFrame,
    dynamics: Any,
    prepared_dir: str | os.PathLike,
    path: str | os.PathLike,
    *,
    meta: Mapping[str, Any],
    max_points: int = 50_000,
    seed: int = 0,
    epochs: int | None = None,
    thumbnail_px: int = THUMBNAIL_PX,
    text_chars: int = TEXT_CHARS,
    title: str = "Data map of the training set",
) -> PageInfo:
    """Write the interactive data map of ``scores`` (from
    :func:`datamap.scoring.scores.compute_scores`) to ``path`` (atomically).

    ``meta`` is the prepared data's meta.json (class names, input kind and shape).
    ``dynamics`` (table or path) gives each example's most-predicted class over its first
    ``epochs`` epochs; ``prepared_dir`` holds the prepared train split whose inputs the page
    shows (and ``clean_label``, when label noise was injected, for the "label flipped"
    colouring). Above ``max_points`` examples the page shows the seeded subsample of
    :func:`datamap.cartography.figures.plot_points_frame`, the same points as the PNG map.
    """
    from datamap.cartography.figures import plot_points_frame

    shown = plot_points_frame(scores, max_points=max_points, seed=seed)
    ids = shown["id"].to_numpy()
    predicted = most_predicted(dynamics, epochs).reindex(ids)
    if predicted.isna().any():
        raise DataError(f"{dynamics}: the dynamics lack some scored examples; rerun the train "
                        "stage")
    by_id = scores.set_index("id")
    points = shown.assign(
        gold=by_id["gold"].reindex(ids).to_numpy(),
        forgetfulness=by_id["forgetfulness"].reindex(ids).to_numpy(),
        never_learned=by_id["never_learned"].reindex(ids).to_numpy(),
        most_predicted=predicted.to_numpy().astype(np.int64),
    )
    preview = input_previews(prepared_dir, ids, meta, thumbnail_px=thumbnail_px,
                             text_chars=text_chars)
    train_columns = pq.read_schema(Path(prepared_dir) / "train.parquet").names
    if "clean_label" in train_columns:
        table = pq.read_table(Path(prepared_dir) / "train.parquet",
                              columns=["id", "label", "clean_label"]).to_pandas()
        table = table.set_index("id").reindex(ids)
        points["flipped"] = (table["label"] != table["clean_label"]).to_numpy()
    page = data_map_page(points, meta["class_names"], preview, n_examples=len(scores), title=title,
                         seed=seed, max_points=max_points)
    write_text(path, page)
    return PageInfo(path=str(path), n_examples=len(scores), n_shown=len(points),
                    bytes=len(page.encode("utf-8")))
