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


def collect(layout: Layout, specs: Sequence[str]) -> dict[str, Any]:
    """Per spec: subset size, share of flipped labels, the test metrics and each control set's.

    Keys are stable (``spec.test.accuracy``, ``spec.control.<name>.accuracy``) so
    ``dvc metrics diff`` lines up across commits.
    """
    report: dict[str, Any] = {}
    controls = None
    for spec in specs:
        subset = read_json(layout.subset(spec) / "summary.json", what=f"subset summary of {spec}")
        metrics = read_json(layout.eval(spec) / "metrics.json", what=f"metrics of {spec}")
        entry: dict[str, Any] = {
            "n_train": subset["n_selected"],
            "fraction": subset["fraction"],
        }
        if "flipped_share" in subset:
            entry["flipped_share"] = subset["flipped_share"]
        if "test" not in metrics or not isinstance(metrics.get("control"), dict):
            raise DataError(f"{layout.eval(spec)}/metrics.json lacks test or control metrics; "
                            "rerun the evaluate stage")
        names = list(metrics["control"])
        if controls is not None and names != controls:
            raise DataError(f"{layout.eval(spec)}/metrics.json has control sets {names}, other "
                            f"specs {controls}; some evaluations are stale: rerun evaluate")
        controls = names
        entry["test"] = {m: metrics["test"][m] for m in METRICS}
        entry["control"] = {name: {m: metrics["control"][name][m] for m in METRICS}
                            for name in names}
        report[spec] = entry
    return report


def eval_columns(report: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    """(column label, key path) of each evaluation set: test, then each control set."""
    first = next(iter(report.values()), {})
    return [("test", ("test",)), *((name, ("control", name)) for name in first.get("control", {}))]


def _metrics_at(entry: dict[str, Any], path: tuple[str, ...]) -> dict[str, float]:
    for key in path:
        entry = entry[key]
    return entry


def markdown_table(report: dict[str, Any]) -> str:
    columns = eval_columns(report)
    header = ["spec", "n_train", "fraction", "flipped"]
    for label, _ in columns:
        header += [f"{label} acc", f"{label} macro-F1", f"{label} loss"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for spec, entry in report.items():
        flipped = entry.get("flipped_share")
        row = [f"`{spec}`", str(entry["n_train"]), f"{entry['fraction']:.3f}",
               "n/a" if flipped is None else f"{flipped:.1%}"]
        for _, path in columns:
            m = _metrics_at(entry, path)
            row += [f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}", f"{m['loss']:.4f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot_comparison(report: dict[str, Any], path: str | os.PathLike) -> None:
    """Grouped bars: accuracy of each spec's model on the test set and each control set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    specs = list(report)
    columns = eval_columns(report)
    x = np.arange(len(specs))
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(specs)), 4), dpi=100)
    for i, (label, key) in enumerate(columns):
        values = [_metrics_at(report[s], key)["accuracy"] for s in specs]
        bars = ax.bar(x + (i - (len(columns) - 1) / 2) * width, values, width, label=label)
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


def controls_note(layout: Layout, report: dict[str, Any]) -> str:
    """What each control set is (from the prepared data), or that there is none."""
    if not eval_columns(report)[1:]:
        return ("No control set: the data has none (`data.source.control` / `data.controls`), "
                "so the models are compared on the test set only.\n\n")
    index = layout.prepared / "controls" / "index.json"
    described = read_json(index, what="control-set index") if index.is_file() else {}
    lines = [f"* `{label}`: {described.get(label, {}).get('description', '(no description)')}"
             for label, _ in eval_columns(report)[1:]]
    return "Control sets (out-of-distribution evaluation):\n\n" + "\n".join(lines) + "\n\n"


def write_report(layout_in: Layout, out_dir: str | os.PathLike, specs: Sequence[str]) -> dict:
    out_dir = Path(out_dir)
    report = collect(layout_in, specs)
    table = markdown_table(report)
    intro = (
        "# Subset comparison\n\nEach row is a model trained from scratch on one selected subset "
        "of the training set (`selection.specs`), evaluated on the in-distribution test set and "
        "on each control set. `flipped` is the share of the subset whose training label "
        "was corrupted by injected noise.\n\n"
    ) + controls_note(layout_in, report)
    write_text(out_dir / "summary.md", intro + table)
    plot_comparison(report, out_dir / "comparison.png")
    write_json(out_dir / "metrics.json", report)
    log.info("report:\n%s", table)
    return report
