"""The report's figures: the subsets compared (bars with error bars) and accuracy against the
selected fraction.

Headless and deterministic, as the cartography figures: a bare Agg
:class:`matplotlib.figure.Figure`, saved by :func:`datamap.io.save_png`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from datamap.io import save_png

_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def plot_comparison(report: Mapping[str, Any], sets: Sequence[str], path: str | os.PathLike,
                    baseline: str | None = None) -> None:
    """Grouped bars: each spec's mean accuracy over seeds on the test set and each control set
    (``sets``: their labels, ``test`` first), with the standard deviation as error bars; the
    ``baseline`` spec's means as dashed lines. ``report``:
    :func:`datamap.report.comparison.collect`'s."""
    from matplotlib.figure import Figure

    specs = list(report)
    x = np.arange(len(specs))
    width = 0.8 / max(len(sets), 1)
    fig = Figure(figsize=(max(7.0, 0.75 * len(specs) * max(len(sets), 1) / 2 + 2), 4.5))
    ax = fig.add_subplot()
    for i, label in enumerate(sets):
        values = [_set_metrics(report[s], label)["accuracy"] for s in specs]
        ax.bar(x + (i - (len(sets) - 1) / 2) * width, [v["mean"] for v in values], width,
                      yerr=[v["std"] for v in values], capsize=2, label=label,
                      color=f"C{i}", error_kw={"elinewidth": 0.8})
        if baseline in report:
            ax.axhline(_set_metrics(report[baseline], label)["accuracy"]["mean"], color=f"C{i}",
                       linestyle="--", linewidth=0.8)
    seeds = sorted({report[s]["seeds"] for s in specs})
    ax.set_xticks(x, [f"{s}\n(n={report[s]['n_train']})" for s in specs], fontsize=7,
                  rotation=90 if len(specs) > 8 else 0)
    ax.set_ylabel("accuracy (mean ± std over seeds)")
    ax.set_ylim(0, 1.05)
    dashed = f"; dashed: {baseline}" if baseline in report else ""
    ax.set_title(f"Models retrained on each subset ({'/'.join(map(str, seeds))} seeds{dashed})",
                 fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, axis="y", linewidth=0.3, alpha=0.5)
    fig.tight_layout()
    save_png(fig, path)


def _set_metrics(entry: Mapping[str, Any], label: str) -> Mapping[str, Any]:
    return entry["test"] if label == "test" else entry["control"][label]


def plot_fraction_curves(rows: Sequence[Mapping[str, Any]], sets: Sequence[str],
                         path: str | os.PathLike, baseline: Mapping[str, Any] | None = None,
                         baseline_name: str | None = None) -> None:
    """Accuracy against the fraction of the training set, one line per criterion, one panel
    per evaluation set (test, then each control set), error bars = standard deviation over
    seeds; the baseline's mean +/- std as a grey band. ``rows``:
    :func:`datamap.report.comparison.fraction_curves`'s. Without rows the panels say there is
    no sweep."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * max(len(sets), 1) + 1.5, 4.0))
    axes = fig.subplots(1, max(len(sets), 1), squeeze=False)[0]
    frame = pd.DataFrame(list(rows), columns=["criterion", "fraction", "set", "accuracy",
                                              "accuracy_std"])
    criteria = list(dict.fromkeys(frame["criterion"]))
    for ax, label in zip(axes, sets, strict=False):
        if baseline is not None:
            base = _set_metrics(baseline, label)["accuracy"]
            ax.axhspan(base["mean"] - base["std"], base["mean"] + base["std"], color="0.85",
                       zorder=0)
            ax.axhline(base["mean"], color="0.4", linewidth=1, linestyle="--",
                       label=f"{baseline_name} (mean ± std)")
        for i, criterion in enumerate(criteria):
            line = frame[(frame["criterion"] == criterion) & (frame["set"] == label)]
            ax.errorbar(line["fraction"], line["accuracy"], yerr=line["accuracy_std"],
                        marker=_MARKERS[i % len(_MARKERS)], color=f"C{i}", capsize=3,
                        linewidth=1.2, markersize=4, label=criterion)
        if not criteria:
            ax.text(0.5, 0.5, "no fraction sweep\n(selection.sweep)", ha="center",
                    va="center", transform=ax.transAxes, color="0.4")
        ax.set_title(label if label == "test" else f"control: {label}", fontsize=10)
        ax.set_xlabel("fraction of the training set")
        ax.set_xlim(0, 1.02)
        ax.grid(True, linewidth=0.3, alpha=0.5)
    axes[0].set_ylabel("accuracy (mean ± std over seeds)")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1 - 1.4 / fig.get_figwidth(), 1))
    save_png(fig, path)
