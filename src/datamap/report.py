"""The report stage: one comparison of every selection spec on the test and control sets."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datamap.io import DataError, atomic_path, read_json, write_json, write_text
from datamap.layout import Layout

log = logging.getLogger(__name__)

METRICS = ("accuracy", "macro_f1", "loss")


def collect(layout: Layout, specs: Sequence[str], splits: Sequence[str] = ("test", "control")
            ) -> dict[str, Any]:
    """Per spec: subset size, share of flipped labels, and each split's metrics.

    Keys are stable (spec -> split -> metric) so ``dvc metrics diff`` lines up across commits.
    """
    report: dict[str, Any] = {}
    for spec in specs:
        subset = read_json(layout.subset(spec) / "summary.json", what=f"subset summary of {spec}")
        metrics = read_json(layout.eval(spec) / "metrics.json", what=f"metrics of {spec}")
        entry: dict[str, Any] = {
            "n_train": subset["n_selected"],
            "fraction": subset["fraction"],
        }
        if "flipped_share" in subset:
            entry["flipped_share"] = subset["flipped_share"]
        for split in splits:
            if split not in metrics:
                raise DataError(f"{layout.eval(spec)}/metrics.json has no {split!r} metrics; "
                                "rerun the evaluate stage")
            entry[split] = {m: metrics[split][m] for m in METRICS}
        report[spec] = entry
    return report


def markdown_table(report: dict[str, Any], splits: Sequence[str] = ("test", "control")) -> str:
    header = ["spec", "n_train", "fraction", "flipped"]
    for split in splits:
        header += [f"{split} acc", f"{split} macro-F1", f"{split} loss"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for spec, entry in report.items():
        flipped = entry.get("flipped_share")
        row = [f"`{spec}`", str(entry["n_train"]), f"{entry['fraction']:.3f}",
               "n/a" if flipped is None else f"{flipped:.1%}"]
        for split in splits:
            m = entry[split]
            row += [f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}", f"{m['loss']:.4f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot_comparison(report: dict[str, Any], path: str | os.PathLike,
                    splits: Sequence[str] = ("test", "control")) -> None:
    """Grouped bars: accuracy of each spec's model on each split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    specs = list(report)
    x = np.arange(len(specs))
    width = 0.8 / len(splits)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(specs)), 4), dpi=100)
    for i, split in enumerate(splits):
        values = [report[s][split]["accuracy"] for s in specs]
        bars = ax.bar(x + (i - (len(splits) - 1) / 2) * width, values, width, label=split)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks(x, [f"{s}\n(n={report[s]['n_train']})" for s in specs], fontsize=8)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.08)
    ax.set_title("Models retrained on each selected subset")
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        # No Software/date metadata: identical inputs give identical bytes.
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def write_report(layout_in: Layout, out_dir: str | os.PathLike, specs: Sequence[str]) -> dict:
    out_dir = Path(out_dir)
    report = collect(layout_in, specs)
    table = markdown_table(report)
    intro = (
        "# Subset comparison\n\nEach row is a model trained from scratch on one selected subset "
        "of the training set (`selection.specs`), evaluated on the in-distribution test set and "
        "on the shifted control set. `flipped` is the share of the subset whose training label "
        "was corrupted by injected noise.\n\n"
    )
    write_text(out_dir / "summary.md", intro + table)
    plot_comparison(report, out_dir / "comparison.png")
    write_json(out_dir / "metrics.json", report)
    log.info("report:\n%s", table)
    return report
