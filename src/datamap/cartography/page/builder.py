"""The page builder: one self-contained, offline HTML page that shows every example.

:func:`build_page` turns the per-example scores (and the inputs to preview, and any prior review
decisions) into the HTML text of ``data/cartography/data_map.html``. The page's own code lives
next to this module as package data: ``template.html`` (the skeleton), ``page.js`` and
``page.css``; the builder fills in the data, hashes the exact inline script and style for the
Content-Security-Policy and returns the page.

Renderer: the page's own CPU rasteriser, not a WebGL library
-------------------------------------------------------------
The page must show 1,000,000 points, pan in under 200 ms and render first in under 5 s in
headless Chromium without a GPU, where WebGL is SwiftShader on two shared cores. Measured there
(720 x 560 frame, one pan step = view change until drawn; the prototype's
``renderer-eval/renderer_eval.py``, see ``docs/data-map-page.md``):

================================  =========  ==================  =================  ==========
renderer                          bundle     100,000: first/pan  1,000,000: first   strict CSP
================================  =========  ==================  =================  ==========
regl-scatterplot 1.16 (regl)      220 KB     0.99 s / 165 ms     no frame in 120 s  no: eval
deck.gl 9.4 ScatterplotLayer      774 KB     5.8 s / 2,351 ms    46.9 s / 24.2 s    yes
raw WebGL ``gl.POINTS`` (floor)   --         0.43 s / 118 ms     1.3 s / 917 ms     yes
CPU raster into ``ImageData``     --         -- / 33 ms          -- / 33 ms         yes
================================  =========  ==================  =================  ==========

(bundles: esbuild ``--minify`` of the npm packages; embedding-atlas was not tried: it needs the
Mosaic/DuckDB-WASM stack as peers, megabytes before any data.) SwiftShader spends about a
microsecond per rasterised point whatever the library does on top, so *no* WebGL renderer can
pan 1,000,000 points in 200 ms there: the bare ``gl.POINTS`` floor already takes ~1 s a frame,
regl-scatterplot never drew its first frame at 1,000,000 and deck.gl's instanced quads are 25
times slower still. regl also compiles its draw commands with ``new Function``, which a CSP
without ``'unsafe-eval'`` refuses (measured: ``EvalError`` at load). A plain JavaScript loop that
writes each point's pixels into an ``ImageData`` buffer and one ``putImageData`` draws 1,000,000
points in about 20 ms on the same machine (a frame including the browser's compositing: 33 ms),
with or without a GPU, with no library, no bundle and no eval. So the page rasterises the points
itself (``page.js``, "the map"), and with that gains:

* a *pick buffer*: the raster stores which point owns each pixel, so hover and click find the
  point the user sees (top-most, never a filtered-out one) with a lookup of a few pixels;
* exact selections computed on the data (box: two comparisons a point; lasso: even-odd rule
  against only the polygon edges of the point's horizontal band), a few ms at 1,000,000;
* no vendored bundle to keep up to date, and the tightest CSP below.

The cost: points are opaque squares or discs, drawn in id order (selected ones on top), with no
alpha blending -- enough for a map whose dense regions are saturated anyway.

Data format
-----------
Every per-example column is a little-endian typed array (``Float32`` scores, ``Uint8``/``Uint16``
labels and regions, ``BigInt64`` ids, so any int64 id is exact), gzip-compressed (``mtime=0``)
when that saves at least 10 %, base64-encoded in a ``<script type="application/octet-stream">``
element, which the browser never runs. The page decodes them with the native
``DecompressionStream``. Texts (and text pairs, file names) are one UTF-8 blob plus ``Uint32``
offsets, decoded only for the example shown; images are raw ``uint8`` pixels ``[C, h, w]`` per
example (at most ``thumbnail_px`` on the longer side), drawn into a small canvas and scaled up
pixelated (at 4 bits a value above :data:`PIXEL_BUDGET` bytes, which the page says);
tables keep their first :data:`TABULAR_FEATURES` values as ``Float32``. Everything
else (class names, the region rule, prior decisions) is JSON with ``<``, ``>``, ``&``, U+2028
and U+2029 escaped, in a ``<script type="application/json">`` element.

Security
--------
Labels, texts, file names, feature names, notes, reviewer names and the title come from the
user's data and are treated as hostile: ``page.js`` builds its DOM with ``createElement`` and
``textContent`` only, and no embedded value can close its element (base64, or escaped JSON). The
Content-Security-Policy (a ``<meta>`` element, the first thing in ``<head>``)::

    default-src 'none'; script-src 'sha256-...'; style-src 'sha256-...';
    img-src data: blob:; base-uri 'none'; form-action 'none';
    require-trusted-types-for 'script'; trusted-types 'none'

runs only the page's own script and style (by the sha256 of their exact text), allows no
request of any kind (no ``connect-src``: ``default-src 'none'`` forbids ``fetch``), and with
Trusted Types makes any assignment of a string to ``innerHTML`` and kin throw, so a slip in
future code fails loudly instead of running data. The downloads are spreadsheet-safe: see
:func:`csv_cell` (the rule is :func:`datamap.data.corrections.guard_cell`).

Same inputs give the same bytes: points are sorted by id, JSON keys are sorted, gzip's mtime is
0, and nothing time- or random-dependent enters the page.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from datamap.cartography.figures import CORRECTNESS_PALETTE
from datamap.data import corrections
from datamap.errors import ConfigError, DataError
from datamap.scoring.regions import REGIONS

__all__ = ["ACTIONS", "Features", "Images", "Texts", "build_page", "csv_cell", "page_meta",
           "to_uint8"]

#: Review decisions a reviewer can record, in the order of their codes on the page (``clear``
#: on the page removes one).
ACTIONS = tuple(sorted(corrections.ACTIONS))
#: Defaults of ``cartography.html``.
TEXT_CHARS = 300
THUMBNAIL_PX = 64
#: Feature values shown for each example of a table.
TABULAR_FEATURES = 8
#: Bins of each marginal histogram.
HISTOGRAM_BINS = 40
#: Colours of the other colourings, in code order.
REGION_COLOURS = ("#c8453b", "#7b4ea3", "#3f6fb5")  # easy-to-learn, ambiguous, hard-to-learn
FLIP_COLOURS = ("#b8b8b8", "#e8730c")  # kept, flipped
DECISION_COLOURS = ("#c9c9c9", "#d62728", "#2ca02c", "#1f77b4")  # none, drop, keep, relabel
SELECTED_COLOUR = "#f0a30a"
#: The page's download file names.
SELECTION_CSV = "data_map_selection.csv"
CORRECTIONS_CSV = "corrections.csv"
CORRECTIONS_COLUMNS = corrections.COLUMNS

_SCORES = ("confidence", "variability", "correctness")
_REQUIRED = ("id", "gold", "most_predicted", *_SCORES, "forgetfulness", "region")
_GZIP_MIN_SAVING = 0.10
#: Above this many bytes of 8-bit thumbnails, they are stored at 4 bits a value (16 levels),
#: two to a byte, so that a million 8x8 images still fit a page under 60 MB.
PIXEL_BUDGET = 32 * 2**20


# --------------------------------------------------------------------------------------------
# inputs to preview


@dataclass(frozen=True)
class Images:
    """Image inputs: ``pixels`` uint8 ``[N, C, H, W]`` (C = 1 grey, 3 RGB or 4 RGBA; other
    channel counts show their first channel), one per row of ``points``, and optionally each
    image's source ``files`` (shown as text). Use :func:`to_uint8` for float images."""

    pixels: np.ndarray
    files: Sequence[str] | None = None


@dataclass(frozen=True)
class Texts:
    """Text inputs, one per row of ``points``: ``texts`` and, for sentence pairs, ``pairs``."""

    texts: Sequence[str]
    pairs: Sequence[str] | None = None


@dataclass(frozen=True)
class Features:
    """Tabular inputs: ``values`` ``[N, F]`` (numbers), one row per row of ``points``, and the
    feature ``names`` (``F`` strings; default ``x0``, ``x1``, ...). The page shows the first
    :data:`TABULAR_FEATURES` as ``name=value``."""

    values: np.ndarray
    names: Sequence[str] | None = None


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Images of any numeric range as uint8 on one grey scale (min -> 0, max -> 255)."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
    return np.round(np.clip((x - lo) * (255.0 / max(hi - lo, 1e-12)), 0, 255)).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# CSV cells (the page writes the downloads; this is the same rule, for readers and tests)


def csv_cell(value: str) -> str:
    """One ``label``, ``note`` or ``reviewer`` field as the page writes it into
    ``corrections.csv`` (``page.js``'s ``csvCell`` mirrors it; a test compares them).

    Parameters
    ----------
    value : str
        The value.

    Returns
    -------
    str
        The spreadsheet guard of :func:`datamap.data.corrections.guard_cell` first (a leading
        ``=``, ``+``, ``-``, ``@``, tab, CR or ``'`` gets one more leading ``'``, which
        :func:`datamap.data.corrections.unguard_cell` removes), then RFC 4180 quoting as
        Python's ``csv`` module writes it: a field with a comma, quote, CR or LF is quoted,
        quotes doubled.
    """
    value = corrections.guard_cell(value)
    if any(c in value for c in ',"\r\n'):
        value = '"' + value.replace('"', '""') + '"'
    return value


# --------------------------------------------------------------------------------------------
# the page


def build_page(points: pd.DataFrame, class_names: Sequence[str],
               preview: Images | Texts | Features | None = None,
               decisions: pd.DataFrame | None = None, *, title: str, region_rule: str,
               text_chars: int = TEXT_CHARS, thumbnail_px: int = THUMBNAIL_PX) -> str:
    """The HTML of the interactive data map of ``points`` (every one of them).

    Parameters
    ----------
    points
        One row per example, any order (the page lists them by ascending id): ``id`` (integers,
        unique), ``gold`` and ``most_predicted`` (class indices into ``class_names``),
        ``confidence`` and ``correctness`` (in [0, 1]), ``variability`` (>= 0),
        ``forgetfulness`` (integer >= 0), ``region`` (one of :data:`REGIONS`) and, optionally,
        ``flipped`` (bool: the label was flipped by injected noise; adds the "label flipped"
        colouring) and ``never_learned`` (bool: shown as "never learned" instead of the
        forgetfulness count).
    class_names
        The name of each class, by index.
    preview
        The inputs shown for each example, rows in the order of ``points``: :class:`Images`,
        :class:`Texts` or :class:`Features`; None shows none.
    decisions
        Prior review decisions, one row per id: ``id``, ``action`` (one of :data:`ACTIONS`),
        ``label`` (a class name when ``action`` is ``relabel``, else empty), ``note`` and
        ``reviewer`` (strings, may be empty; :func:`datamap.cartography.page.decisions_frame`
        makes them from the prepared data's decisions). Decisions about ids that are not among
        ``points`` are kept and written back into the page's ``corrections.csv``. None: no
        decisions.
    title
        The page's heading and ``<title>``.
    region_rule
        The region rule in force, as a short sentence shown on the page (e.g. ``"threshold
        rule: ambiguous if variability >= 0.2, else easy-to-learn if confidence >= 0.5, else
        hard-to-learn"``).
    text_chars
        Texts (and pairs, file names) are cut to this many characters.
    thumbnail_px
        Images are stored and shown at most this many pixels on the longer side (smaller ones
        are stored at their own size and scaled up, pixelated, to about this size).

    Returns
    -------
    str
        The page, deterministic in its inputs.

    Raises
    ------
    ConfigError
        ``text_chars`` or ``thumbnail_px`` is not a positive integer.
    DataError
        An input is missing a column, has NaN or out-of-range scores, unknown regions or class
        indices, duplicate ids, or a preview whose length disagrees with ``points``.
    """
    for name, value in (("text_chars", text_chars), ("thumbnail_px", thumbnail_px)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"cartography.html.{name} must be a positive integer, got "
                              f"{value!r}")
    names = _class_names(class_names)
    columns, order = _point_columns(points, len(names))
    ids = columns["id"]
    blobs = _Blobs()
    config: dict[str, Any] = {
        "title": str(title),
        "regionRule": str(region_rule),
        "classNames": names,
        "regions": list(REGIONS),
        "actions": list(ACTIONS),
        "n": int(len(ids)),
        "columns": {key: blobs.add(value) for key, value in columns.items()},
        "preview": _preview(preview, order, blobs, text_chars=text_chars,
                            thumbnail_px=thumbnail_px),
        "decisions": _decisions(decisions, ids, names),
        "histogram": {"bins": HISTOGRAM_BINS,
                      "xMax": max(0.05, float(columns["variability"].max()) * 1.05)},
        "colours": {
            "correctness": correctness_colours(),
            "region": list(REGION_COLOURS),
            "flipped": list(FLIP_COLOURS),
            "decision": list(DECISION_COLOURS),
            "selected": SELECTED_COLOUR,
        },
        "files": {"selection": SELECTION_CSV, "corrections": CORRECTIONS_CSV},
    }
    return _assemble(str(title), config, blobs)


def correctness_colours() -> list[str]:
    """The static map's colours of the 11 correctness bins 0.0, 0.1, ..., 1.0: matplotlib's
    ``LinearSegmentedColormap.from_list`` of :data:`CORRECTNESS_PALETTE` (a 256-entry table,
    linear in RGB), computed without matplotlib."""
    stops = np.array([[int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)]
                      for c in CORRECTNESS_PALETTE])
    where = np.linspace(0.0, 1.0, len(stops))
    out = []
    for b in range(11):
        x = min(int(b / 10 * 256), 255) / 255  # the table entry matplotlib looks up
        rgb = [np.interp(x, where, stops[:, k]) for k in range(3)]
        out.append("#" + "".join(f"{round(v * 255):02x}" for v in rgb))
    return out


def _class_names(class_names: Sequence[str]) -> list[str]:
    names = [str(c) for c in class_names]
    if not names:
        raise DataError("class_names is empty: pass the name of each class, by index")
    if len(set(names)) != len(names):
        raise DataError("class_names has duplicates: every class needs its own name")
    if len(names) > 65_535:
        raise DataError(f"class_names: {len(names)} classes; the page holds at most 65,535")
    return names


def _point_columns(points: pd.DataFrame, n_classes: int) -> tuple[dict[str, np.ndarray],
                                                                  np.ndarray]:
    """The page's typed columns, sorted by id, and the sorting order of ``points``' rows."""
    if not isinstance(points, pd.DataFrame):
        raise DataError(f"points must be a pandas DataFrame, got {type(points).__name__}")
    missing = [c for c in _REQUIRED if c not in points.columns]
    if missing:
        raise DataError(f"points: missing column(s) {', '.join(missing)}; the page needs "
                         f"{', '.join(_REQUIRED)}")
    if len(points) == 0:
        raise DataError("points is empty: there is no example to show on the data map")
    ids = _integers(points["id"], "points.id")
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    duplicated = ids[1:][ids[1:] == ids[:-1]]
    if len(duplicated):
        raise DataError(f"points.id: {len(duplicated)} duplicate id(s) (e.g. "
                         f"{np.unique(duplicated)[:5].tolist()}); every example needs its own id")
    columns: dict[str, np.ndarray] = {"id": ids.astype("<i8")}
    label_type = "<u1" if n_classes <= 256 else "<u2"
    for column in ("gold", "most_predicted"):
        values = _integers(points[column], f"points.{column}")[order]
        bad = (values < 0) | (values >= n_classes)
        if bad.any():
            raise DataError(f"points.{column}: {int(bad.sum())} value(s) are not class indices "
                             f"0..{n_classes - 1} (e.g. {values[bad][:5].tolist()}); pass one "
                             "class name per class")
        columns[column] = values.astype(label_type)
    for column in _SCORES:
        values = pd.to_numeric(points[column], errors="coerce").to_numpy(np.float64)[order]
        bad = ~np.isfinite(values)
        if bad.any():
            raise DataError(f"points.{column}: {int(bad.sum())} NaN or infinite value(s) (e.g. "
                             f"id {ids[bad][:5].tolist()}); score every example before "
                             "building the page")
        high = np.inf if column == "variability" else 1.0
        bad = (values < 0) | (values > high)
        if bad.any():
            span = "be >= 0" if column == "variability" else "lie in [0, 1]"
            raise DataError(f"points.{column}: {int(bad.sum())} value(s) do not {span} (e.g. "
                             f"{values[bad][:5].tolist()})")
        columns[column] = values.astype("<f4")
    forgetfulness = _integers(points["forgetfulness"], "points.forgetfulness")[order]
    if (forgetfulness < 0).any() or (forgetfulness > 65_535).any():
        raise DataError("points.forgetfulness: values must be counts in 0..65535")
    columns["forgetfulness"] = forgetfulness.astype("<u2")
    region = points["region"].astype(str).to_numpy()[order]
    codes = pd.Index(REGIONS).get_indexer(region)
    if (codes < 0).any():
        unknown = sorted(set(region[codes < 0]))[:5]
        raise DataError(f"points.region: unknown region(s) {unknown}; regions are "
                         f"{', '.join(REGIONS)}")
    columns["region"] = codes.astype("<u1")
    for column in ("flipped", "never_learned"):
        if column in points.columns:
            values = points[column].to_numpy()[order]
            if values.dtype != bool:
                raise DataError(f"points.{column} must be bool, got dtype {values.dtype}")
            columns[column] = values.astype("<u1")
    return columns, order


def _in_order(values: Sequence[Any], order: np.ndarray) -> list[Any]:
    """The ``order``-th of ``values`` by position (a pandas Series too: never by its index
    labels, which would pair a point with another row's text)."""
    positional = list(values)
    return [positional[i] for i in order]


def _integers(series: pd.Series, name: str) -> np.ndarray:
    values = series.to_numpy()
    if values.dtype == np.uint64 and len(values) and values.max() > np.iinfo(np.int64).max:
        raise DataError(f"{name} holds {int(values.max())}, beyond the 64-bit signed integers "
                        "every id is; renumber the ids")
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    numeric = pd.to_numeric(series, errors="coerce").to_numpy(np.float64)
    whole = np.isfinite(numeric) & (numeric == np.round(numeric))
    if not whole.all():
        raise DataError(f"{name} must hold integers; {int((~whole).sum())} value(s) "
                         f"are not (e.g. {series[~whole].head(5).tolist()})")
    try:
        return series.to_numpy().astype(np.int64)
    except OverflowError as exc:
        raise DataError(f"{name} holds a value beyond the 64-bit signed integers every id is; "
                        "renumber the ids") from exc


class _Blobs:
    """The page's binary blobs, in order of addition: each little-endian array, gzipped when
    that saves at least :data:`_GZIP_MIN_SAVING`."""

    def __init__(self) -> None:
        self.items: list[tuple[bool, bytes]] = []

    def add(self, array: np.ndarray) -> dict[str, Any]:
        """Add ``array``; returns its entry in the page's config."""
        dtype = {"<f4": "f32", "<u1": "u8", "<u2": "u16", "<u4": "u32", "<i8": "i64"}[
            array.dtype.str if array.dtype.itemsize > 1 else "<" + array.dtype.str[1:]]
        raw = np.ascontiguousarray(array).tobytes()
        packed = gzip.compress(raw, compresslevel=6, mtime=0)
        use_gzip = len(packed) <= (1 - _GZIP_MIN_SAVING) * len(raw)
        self.items.append((use_gzip, packed if use_gzip else raw))
        return {"blob": len(self.items) - 1, "type": dtype, "length": int(array.size)}

    def add_strings(self, values: Sequence[Any], limit: int) -> dict[str, Any]:
        """Strings cut to ``limit`` characters as one UTF-8 blob plus ``Uint32`` offsets."""
        encoded = [_truncate(_text(v), limit).encode("utf-8") for v in values]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        if offsets[-1] >= 2**32:
            raise DataError("texts: more than 4 GiB of UTF-8 after cutting to text_chars; "
                             "lower text_chars")
        return {"bytes": self.add(np.frombuffer(b"".join(encoded), dtype=np.uint8)),
                "offsets": self.add(offsets.astype("<u4"))}


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "\u2026"


def _preview(preview: Images | Texts | Features | None, order: np.ndarray, blobs: _Blobs, *,
             text_chars: int, thumbnail_px: int) -> dict[str, Any] | None:
    """The preview's entry in the config (its blobs added), rows in the page's order."""
    n = len(order)

    def check_length(name: str, length: int) -> None:
        if length != n:
            raise DataError(f"preview.{name}: {length} rows for {n} points; pass one per row "
                             "of points, in the same order")

    if preview is None:
        return None
    if isinstance(preview, Texts):
        check_length("texts", len(preview.texts))
        texts = _in_order(preview.texts, order)
        out = {"kind": "texts", "texts": blobs.add_strings(texts, text_chars)}
        if preview.pairs is not None:
            check_length("pairs", len(preview.pairs))
            out["pairs"] = blobs.add_strings(_in_order(preview.pairs, order), text_chars)
        return out
    if isinstance(preview, Images):
        pixels = np.asarray(preview.pixels)
        if pixels.ndim != 4:
            raise DataError(f"preview.pixels must be [N, C, H, W], got shape {list(pixels.shape)}")
        if pixels.dtype != np.uint8:
            raise DataError(f"preview.pixels must be uint8, got {pixels.dtype}; scale them "
                             "with to_uint8 first")
        check_length("pixels", len(pixels))
        if pixels.shape[1] not in (1, 3, 4):
            pixels = pixels[:, :1]  # no colour model for other channel counts
        stored = _downscale(pixels[order], thumbnail_px)
        channels, h, w = stored.shape[1:]
        scale = max(1, thumbnail_px // max(h, w))
        flat = stored.reshape(-1)
        bits = 8 if flat.size <= PIXEL_BUDGET else 4
        if bits == 4:  # 16 levels (0, 17, ..., 255), the even value in the low nibble
            levels = np.round(flat / 17).astype(np.uint8)
            levels = np.append(levels, np.uint8(0)) if levels.size % 2 else levels
            flat = levels[0::2] | (levels[1::2] << 4)
        out = {"kind": "images", "pixels": blobs.add(flat), "bits": bits, "channels": channels,
               "height": h, "width": w, "displayHeight": h * scale, "displayWidth": w * scale}
        if preview.files is not None:
            check_length("files", len(preview.files))
            out["files"] = blobs.add_strings(_in_order(preview.files, order), text_chars)
        return out
    if isinstance(preview, Features):
        values = np.asarray(preview.values)
        if values.ndim != 2:
            raise DataError(f"preview.values must be [N, F], got shape {list(values.shape)}")
        check_length("values", len(values))
        width = values.shape[1]
        feature_names = [f"x{j}" for j in range(width)] if preview.names is None \
            else [str(v) for v in preview.names]
        if len(feature_names) != width:
            raise DataError(f"preview.names: {len(feature_names)} names for {width} features")
        shown = min(width, TABULAR_FEATURES)
        head = values[order, :shown].astype("<f4")
        return {"kind": "features", "values": blobs.add(head.reshape(-1)),
                "names": feature_names[:shown], "more": width - shown}
    raise DataError(f"preview must be Images, Texts, Features or None, got "
                     f"{type(preview).__name__}")


def _downscale(pixels: np.ndarray, size: int) -> np.ndarray:
    """Images ``[N, C, H, W]`` at most ``size`` pixels on the longer side: means of
    ``f x f`` blocks, ``f`` the smallest integer factor that fits (edges padded by repetition)."""
    h, w = pixels.shape[2:]
    f = math.ceil(max(h, w) / size)
    if f <= 1:
        return np.ascontiguousarray(pixels)
    ph, pw = -h % f, -w % f
    padded = np.pad(pixels, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge")
    n, c, hh, ww = padded.shape
    blocks = padded.reshape(n, c, hh // f, f, ww // f, f).mean(axis=(3, 5))
    return np.round(blocks).astype(np.uint8)


def _decisions(decisions: pd.DataFrame | None, ids: np.ndarray,
               names: list[str]) -> dict[str, list]:
    """Prior decisions as columns: ``index`` (row on the page) or, for ids not on the page,
    ``id`` (decimal strings, ascending, kept for the download), with ``action`` and ``label``
    codes (-1: none) and ``note`` and ``reviewer`` strings."""
    out: dict[str, list] = {k: [] for k in ("index", "action", "label", "note", "reviewer")}
    off = {k: [] for k in ("id", "action", "label", "note", "reviewer")}
    if decisions is None or len(decisions) == 0:
        return {"onMap": out, "offMap": off}
    missing = [c for c in CORRECTIONS_COLUMNS if c not in decisions.columns]
    if missing:
        raise DataError(f"decisions: missing column(s) {', '.join(missing)}; decisions need "
                         f"{', '.join(CORRECTIONS_COLUMNS)}")
    did = _integers(decisions["id"], "decisions.id")
    order = np.argsort(did, kind="stable")
    did = did[order]
    dup = did[1:][did[1:] == did[:-1]]
    if len(dup):
        raise DataError(f"decisions.id: {len(dup)} duplicate id(s) (e.g. "
                         f"{np.unique(dup)[:5].tolist()}); keep one decision per id")
    strings = {c: [_text(v) for v in decisions[c].to_numpy()[order]]
               for c in ("action", "label", "note", "reviewer")}
    codes = {name: i for i, name in enumerate(names)}
    rows = np.searchsorted(ids, did)
    on_map = (rows < len(ids)) & (ids[np.minimum(rows, len(ids) - 1)] == did)
    for k, decision_id in enumerate(did):
        action, label = strings["action"][k], strings["label"][k]
        if action not in ACTIONS:
            raise DataError(f"decisions.action: {action!r} (id {decision_id}) is not one of "
                             f"{', '.join(ACTIONS)}")
        if action == "relabel" and label not in codes:
            raise DataError(f"decisions.label: {label!r} (id {decision_id}, relabel) is not a "
                             "class name; relabel to one of class_names")
        if action != "relabel" and label:
            raise DataError(f"decisions.label: id {decision_id} has label {label!r} but "
                             f"action {action!r}; only relabel takes a label")
        target = out if on_map[k] else off
        if on_map[k]:
            target["index"].append(int(rows[k]))
        else:
            target["id"].append(str(int(decision_id)))
        target["action"].append(ACTIONS.index(action))
        target["label"].append(codes[label] if action == "relabel" else -1)
        target["note"].append(strings["note"][k])
        target["reviewer"].append(strings["reviewer"][k])
    return {"onMap": out, "offMap": off}


@cache
def _resource(name: str) -> str:
    """``template.html``, ``page.js`` or ``page.css``: package data next to this module (shipped
    in the wheel by ``pyproject.toml``'s ``tool.setuptools.package-data``)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def script_safe_json(obj: Any) -> str:
    """JSON that cannot end its ``<script>`` element or be misread around it: ``<``, ``>``,
    ``&``, U+2028 and U+2029 written as ``\\u`` escapes; keys sorted, no NaN."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False,
                      sort_keys=True)
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode(
        "ascii") + "'"


def _assemble(title: str, config: dict[str, Any], blobs: _Blobs) -> str:
    script, style = _resource("page.js"), _resource("page.css")
    csp = (f"default-src 'none'; script-src {_sha256(script)}; style-src {_sha256(style)}; "
           "img-src data: blob:; base-uri 'none'; form-action 'none'; "
           "require-trusted-types-for 'script'; trusted-types 'none'")
    data = "\n".join(
        f'<script type="application/octet-stream" id="dm-blob-{i}" '
        f'data-encoding="{"gzip" if packed else "raw"}">'
        f'{base64.b64encode(payload).decode("ascii")}</script>'
        for i, (packed, payload) in enumerate(blobs.items))
    fields = {
        "csp": csp,
        "title": _html_text(title),
        "style": style,
        "config": script_safe_json(config),
        "blobs": data,
        "script": script,
    }
    # one pass, so nothing substituted is itself searched for placeholders
    return re.sub(r"\{\{(\w+)\}\}", lambda m: fields[m.group(1)], _resource("template.html"))


def _html_text(text: str) -> str:
    """``text`` safe as the content of ``<title>`` (an RCDATA element)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def page_meta(page: str) -> Mapping[str, Any]:
    """The config a page embeds (for tests and tools that inspect a built page)."""
    match = re.search(r'<script type="application/json" id="dm-config">(.*?)</script>', page,
                      flags=re.S)
    if match is None:
        raise DataError("not a data map page: no dm-config element")
    return json.loads(match.group(1))
