"""The cartography stage's figures: the data map (Swayamdipta et al. 2020, Fig. 1), the points
behind it and the review grid of hard-to-learn images.

Headless and deterministic: figures are drawn on a bare :class:`matplotlib.figure.Figure` with
the Agg canvas (no pyplot state, no display) and saved by :func:`datamap.io.save_png` --
atomically, with no
software/time stamps -- so the same inputs give the same bytes. Matplotlib is imported inside
the functions so that importing this module stays cheap.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from datamap.errors import DataError
from datamap.io import save_png
from datamap.scoring.regions import AMBIGUOUS, EASY, HARD

if TYPE_CHECKING:
    pass

#: Columns of :func:`plot_points_frame`.
POINT_COLUMNS = ("id", "confidence", "variability", "correctness", "region")
_NEEDED = ("id", "confidence", "variability", "correctness")
# The paper's colours: low correctness blue, high red, through a dark centre.
CORRECTNESS_PALETTE = ("#3f6fb5", "#2b2b2b", "#c8453b")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


@dataclass(frozen=True)
class DataMapInfo:
    """What :func:`plot_data_map` drew."""

    path: str
    n_examples: int
    n_shown: int
    title: str


def _check(scores: pd.DataFrame) -> None:
    missing = [c for c in _NEEDED if c not in scores.columns]
    if missing:
        raise DataError(f"scores: missing column(s) {', '.join(missing)} for the data map")
    if len(scores) == 0:
        raise DataError("scores: no examples to plot")


def subsample_positions(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted row positions of a seeded uniform subsample of ``max_points`` out of ``n`` (all
    rows when ``n <= max_points``)."""
    if max_points < 1:
        raise ValueError("max_points must be positive")
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_points, replace=False))


def plot_points_frame(scores: pd.DataFrame, max_points: int = 50_000,
                      seed: int = 0) -> pd.DataFrame:
    """The points of the data map -- the same seeded subsample :func:`plot_data_map` draws --
    as a DataFrame with :data:`POINT_COLUMNS`, sorted by id (for a DVC scatter plot)."""
    _check(scores)
    rows = scores.sort_values("id", kind="stable") if not scores["id"].is_monotonic_increasing \
        else scores
    rows = rows.iloc[subsample_positions(len(rows), max_points, seed)]
    frame = pd.DataFrame({c: rows[c].to_numpy() for c in _NEEDED})
    frame["region"] = (np.asarray(rows["region"], dtype=object) if "region" in rows.columns
                       else np.full(len(rows), "", dtype=object))
    return frame


def _correctness_bins(correctness: np.ndarray) -> np.ndarray:
    """The paper's hue: correctness rounded to one decimal (0.0, 0.1, ..., 1.0)."""
    return np.round(np.asarray(correctness, dtype=np.float64) * 10.0).astype(np.int64)


def plot_data_map(
    scores: pd.DataFrame,
    path: str | os.PathLike,
    *,
    title: str | None = None,
    max_points: int = 50_000,
    seed: int = 0,
    dpi: int = 100,
    point_size: float = 8.0,
    rule: Mapping[str, Any] | None = None,
) -> DataMapInfo:
    """Draw the data map of ``scores`` (output of
    :func:`datamap.scoring.scores.compute_scores`) to a PNG at ``path`` (written atomically).

    Layout as in the paper: a scatter of variability (x) against confidence (y), coloured (and,
    with few bins, shaped) by correctness rounded to 0.0, 0.1, ..., 1.0 with an ordered legend,
    the region labels "easy-to-learn", "ambiguous" and "hard-to-learn" as annotations, and below
    it histograms of confidence, variability and correctness. Above ``max_points`` examples a
    uniform subsample drawn with ``seed`` is plotted, and the title says so (the histograms use
    every example). ``rule``: the region rule as the cartography summary states it
    (:func:`datamap.scoring.regions.regions_rule`): its sentence goes under the title, its
    cut-offs are drawn as dashed lines, and each region's label counts its examples.
    """
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.figure import Figure

    _check(scores)
    points = plot_points_frame(scores, max_points, seed)
    n, shown = len(scores), len(points)
    head = title or "Data map"
    if shown < n:
        full_title = (f"{head} — {shown:,} of {n:,} examples shown "
                      f"(random subsample, seed {seed})")
    else:
        full_title = f"{head} — {n:,} examples"

    fig = Figure(figsize=(14, 9), dpi=dpi)
    grid = fig.add_gridspec(2, 3, height_ratios=[4, 1.3])
    ax = fig.add_subplot(grid[0, :])

    bins = _correctness_bins(points["correctness"].to_numpy())
    present = np.unique(bins)
    cmap = LinearSegmentedColormap.from_list("datamap", CORRECTNESS_PALETTE)
    use_markers = len(present) <= len(_MARKERS)
    x = points["variability"].to_numpy()
    y = points["confidence"].to_numpy()
    for i, b in enumerate(present):
        sel = bins == b
        ax.scatter(x[sel], y[sel], s=point_size, color=cmap(b / 10.0), alpha=0.75,
                   marker=_MARKERS[i] if use_markers else "o", linewidths=0,
                   label=f"{b / 10:.1f}", rasterized=True)
    ax.legend(title="correctness", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=True,
              markerscale=2.0)
    ax.set_xlabel("variability")
    ax.set_ylabel("confidence")
    # room under the title for the region rule's sentence
    ax.set_title(full_title, fontsize=14, pad=22 if rule is not None else 6)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=min(0.0, float(x.min()) - 0.01))
    ax.grid(True, linewidth=0.3, alpha=0.5)

    def box(colour: str) -> dict:
        return {"boxstyle": "round,pad=0.3", "ec": colour, "lw": 2, "fc": "white"}

    counts = scores["region"].value_counts() if "region" in scores.columns else {}

    def label(region: str) -> str:
        return f"{region} ({int(counts[region]):,})" if region in counts else region

    ax.annotate(label(AMBIGUOUS), xy=(0.9, 0.5), xycoords="axes fraction", fontsize=14,
                va="center", ha="center", rotation=350, bbox=box("black"))
    ax.annotate(label(EASY), xy=(0.27, 0.85), xycoords="axes fraction", fontsize=14,
                va="center", ha="center", bbox=box("r"))
    ax.annotate(label(HARD), xy=(0.35, 0.25), xycoords="axes fraction", fontsize=14,
                va="center", ha="center", bbox=box("b"))
    if rule is not None:
        _draw_rule(ax, rule)

    conf_all = scores["confidence"].to_numpy(dtype=np.float64)
    var_all = scores["variability"].to_numpy(dtype=np.float64)
    bins_all = _correctness_bins(scores["correctness"].to_numpy())
    ax1 = fig.add_subplot(grid[1, 0])
    ax1.hist(conf_all, bins=50, color="#622a87")
    ax1.set_xlabel("confidence")
    ax1.set_ylabel("examples")
    ax1.set_title(f"all {n:,} examples", fontsize=9, loc="left")
    ax2 = fig.add_subplot(grid[1, 1])
    ax2.hist(var_all, bins=50, color="teal")
    ax2.set_xlabel("variability")
    ax3 = fig.add_subplot(grid[1, 2])
    labels, counts = np.unique(bins_all, return_counts=True)
    # numeric positions + tick labels (string x values trigger matplotlib's categorical warning)
    ax3.bar(labels, counts, color="#86bf91")
    ax3.set_xticks(labels, [f"{b / 10:.1f}" for b in labels])
    ax3.set_xlabel("correctness")
    ax3.xaxis.grid(True)
    fig.tight_layout()

    save_png(fig, path, dpi)
    return DataMapInfo(path=str(path), n_examples=n, n_shown=shown, title=full_title)


def _draw_rule(ax: Any, rule: Mapping[str, Any]) -> None:
    """The region rule's cut-offs as dashed lines and its sentence under the title."""
    params, cutoffs = rule.get("params", {}), rule.get("cutoffs", {})
    if rule.get("rule") == "threshold":
        var_cut, conf_cut = params.get("variability"), params.get("confidence")
    else:
        var_cut = cutoffs.get("ambiguous_min_variability")
        conf_cut = cutoffs.get("hard_max_confidence")
    if var_cut is not None:
        ax.axvline(var_cut, color="0.3", linestyle="--", linewidth=1)
    if conf_cut is not None:
        # hard-to-learn lies below the confidence cut-off, left of the ambiguous band
        right = 1.0 if var_cut is None else _axes_x(ax, var_cut)
        ax.axhline(conf_cut, xmax=right, color="0.3", linestyle="--", linewidth=1)
    if rule.get("statement"):
        ax.text(0.0, 1.01, textwrap.fill(str(rule["statement"]), 150), transform=ax.transAxes,
                fontsize=8, va="bottom", ha="left", color="0.25")


def _axes_x(ax: Any, x: float) -> float:
    """A data x as a fraction of the axes' width (clipped to [0, 1])."""
    left, right = ax.get_xlim()
    return float(min(1.0, max(0.0, (x - left) / (right - left)))) if right > left else 1.0


def plot_review_grid(queue: pd.DataFrame, images: dict[int, np.ndarray],
                     path: str | os.PathLike, max_images: int = 48) -> None:
    """A grid of the first ``max_images`` rows of a review queue (``id``, ``given_label``,
    ``model_label`` columns), each image [C, H, W] from ``images`` (id -> array) captioned
    "#id: given->model"."""
    from matplotlib.figure import Figure

    rows = queue.head(max_images)
    n = max(len(rows), 1)
    cols = min(8, n)
    nrows = int(np.ceil(n / cols))
    fig = Figure(figsize=(1.4 * cols, 1.6 * nrows), dpi=100)
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, row in zip(axes.ravel(), rows.itertuples(), strict=False):
        image = images[row.id]
        ax.imshow(image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1),
                  cmap="gray_r", interpolation="nearest")
        # class names are data (a folder "under $5"): shown as written, never as TeX math
        ax.set_title(f"#{row.id}: {row.given_label}->{row.model_label}", fontsize=7,
                     parse_math=False)
    fig.suptitle("Hard-to-learn examples (given label -> model's label)", fontsize=9)
    fig.tight_layout()
    save_png(fig, path)
