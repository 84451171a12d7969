"""The report stage: which part of the data, and how much of it, gives the best model.

One row per selection spec: its size and share of the training set, the regions its examples
come from, its share of injected label errors, the classes it lacks, and each evaluation set's
accuracy and macro-F1 as mean +/- standard deviation over the retraining seeds, with the
difference from the baseline spec (``selection.baseline``, the full set) marked ``*`` where it
exceeds two standard errors. ``fraction_curves.csv`` / ``.png`` put the single-criterion specs
on one curve per criterion (accuracy against fraction).

``metrics.json`` keys are stable across experiments, for ``dvc metrics diff``:
``<spec>.test.accuracy.mean`` / ``.std`` / ``.diff`` / ``.diff_se`` (the last two against the
baseline), ``<spec>.control.<name>.macro_f1.mean``, ``<spec>.n_train``, ``<spec>.regions.<r>``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datamap.errors import ConfigError, DataError
from datamap.io import read_json, write_json, write_text
from datamap.layout import Layout
from datamap.markdown import Markup, escape, markdown_table

log = logging.getLogger(__name__)

#: The metrics of each evaluation set, in metrics.json.
METRICS = ("accuracy", "macro_f1", "loss")
#: The metrics summary.md and the figures show.
SHOWN = ("accuracy", "macro_f1")
#: Region keys of the region make-up, in the data map's order.
REGION_KEYS = ("easy_to_learn", "ambiguous", "hard_to_learn")
#: Columns of fraction_curves.csv (a DVC plot).
CURVE_COLUMNS = ("criterion", "fraction", "set", "spec", "seeds", "accuracy", "accuracy_std",
                 "macro_f1", "macro_f1_std")
#: A difference from the baseline larger than this many standard errors is marked.
MARK_SE = 2.0


def _metric(summary: Mapping[str, Any], where: Path) -> dict[str, float]:
    if not isinstance(summary, Mapping) or "mean" not in summary or "std" not in summary:
        raise DataError(f"{where} holds {summary!r} where a mean and std over seeds belong; "
                        "rerun the evaluate stage")
    return {"mean": summary["mean"], "std": summary["std"]}


def _eval_set(metrics: Mapping[str, Any], where: Path) -> dict[str, Any]:
    return {m: _metric(metrics.get(m), where) for m in METRICS}


def collect(layout: Layout, specs: Sequence[str]) -> dict[str, Any]:
    """Per spec: subset size and make-up, and each evaluation set's metrics over seeds."""
    report: dict[str, Any] = {}
    controls = None
    where = layout.eval_metrics
    evaluated = read_json(where, what="metrics of the evaluate stage")
    for spec in specs:
        subset = read_json(layout.subset(spec) / "summary.json", what=f"subset summary of {spec}")
        if spec not in evaluated:
            raise DataError(f"{where} has no metrics of spec {spec!r}; the evaluation is stale: "
                            "rerun the evaluate stage (dvc repro)")
        metrics = evaluated[spec]
        if "test" not in metrics or not isinstance(metrics.get("control"), dict):
            raise DataError(f"{where} lacks test or control metrics; rerun the evaluate stage")
        names = list(metrics["control"])
        if controls is not None and names != controls:
            raise DataError(f"{where} has control sets {names}, other specs {controls}; some "
                            "evaluations are stale: rerun evaluate")
        controls = names
        n_selected = subset["n_selected"]
        regions = subset.get("regions", {})
        entry: dict[str, Any] = {
            "n_train": n_selected,
            "fraction": subset["fraction"],
            "seeds": int(metrics.get("seeds", 1)),
            "missing_classes": len(subset.get("missing_classes", [])),
            "regions": {key: round(regions.get(key.replace("_", "-"), 0) / max(n_selected, 1), 6)
                        for key in REGION_KEYS},
            "test": _eval_set(metrics["test"], where),
            "control": {name: _eval_set(metrics["control"][name], where) for name in names},
        }
        if "flipped_share" in subset:
            entry["flipped_share"] = subset["flipped_share"]
        report[spec] = entry
    return report


def eval_sets(report: Mapping[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    """(label, key path) of each evaluation set: test, then each control set."""
    first = next(iter(report.values()), {})
    return [("test", ("test",)), *((name, ("control", name)) for name in first.get("control", {}))]


def metrics_at(entry: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for key in path:
        entry = entry[key]
    return entry


def add_differences(report: dict[str, Any], baseline: str | None) -> None:
    """Add ``diff`` (mean minus the baseline's) and ``diff_se`` (its standard error, from both
    specs' standard deviations and seed counts) to every metric of every other spec."""
    if baseline is None:
        return
    if baseline not in report:
        raise ConfigError(f"selection.baseline={baseline!r} is not a selection spec "
                          f"({', '.join(report)}); name one, e.g. full, or set it to null")
    base = report[baseline]
    for spec, entry in report.items():
        if spec == baseline:
            continue
        for _, path in eval_sets(report):
            for metric in METRICS:
                this, other = metrics_at(entry, path)[metric], metrics_at(base, path)[metric]
                this["diff"] = round(this["mean"] - other["mean"], 6)
                this["diff_se"] = round(math.sqrt(this["std"] ** 2 / entry["seeds"]
                                                  + other["std"] ** 2 / base["seeds"]), 6)


def marked(value: Mapping[str, Any], seeds: int, base_seeds: int) -> bool:
    """Whether a difference from the baseline exceeds :data:`MARK_SE` standard errors (only
    with at least two seeds on both sides: one seed has no spread to compare against)."""
    if "diff" not in value or min(seeds, base_seeds) < 2:
        return False
    return abs(value["diff"]) > MARK_SE * value["diff_se"]


def spec_order(specs: Sequence[str], definitions: Mapping[str, Any],
               baseline: str | None) -> list[str]:
    """The report's row order: the baseline, then the single-criterion specs grouped by
    criterion (first appearance) by ascending fraction, then the rest as given."""
    singles: dict[str, list[tuple[float, str]]] = {}
    rest = []
    for spec in specs:
        if spec == baseline:
            continue
        criterion = single_criterion(definitions.get(spec))
        if criterion is None:
            rest.append(spec)
        else:
            singles.setdefault(criterion[0], []).append((criterion[1], spec))
    grouped = [spec for group in singles.values() for _, spec in sorted(group)]
    return [*([baseline] if baseline in specs else []), *grouped, *rest]


def single_criterion(spec: Any) -> tuple[str, float] | None:
    """(criterion, fraction) of a spec with one criterion, None otherwise (mixtures, files)."""
    if not isinstance(spec, Mapping) or len(spec) != 1:
        return None
    ((criterion, fraction),) = spec.items()
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        return None
    return str(criterion), float(fraction)


def _cell(value: Mapping[str, Any], seeds: int, base_seeds: int) -> Markup:
    text = f"{value['mean']:.3f} ± {value['std']:.3f}"
    if "diff" in value:
        text += f" ({value['diff']:+.3f}{'*' if marked(value, seeds, base_seeds) else ''})"
    return Markup(text)  # the significance mark is a literal '*' (one: never emphasis)


def _make_up(entry: Mapping[str, Any]) -> str:
    return " / ".join(f"{entry['regions'][key]:.0%}" for key in REGION_KEYS)


def comparison_table(report: Mapping[str, Any], baseline: str | None = None,
                     missing: Mapping[str, list[str]] | None = None) -> str:
    """summary.md's table: one row per spec (``missing``: spec -> the classes it lacks)."""
    sets = eval_sets(report)
    header = ["spec", "examples", "share", "easy / ambiguous / hard", "flipped", "lacks"]
    for label, _ in sets:
        header += [f"{label} acc", f"{label} macro-F1"]
    rows = []
    base_seeds = report[baseline]["seeds"] if baseline in report else 0
    for spec, entry in report.items():
        flipped = entry.get("flipped_share")
        lacks = (missing or {}).get(spec) or []
        row = [Markup(f"`{spec}`"), str(entry["n_train"]), f"{entry['fraction']:.0%}",
               _make_up(entry),
               "n/a" if flipped is None else f"{flipped:.1%}",
               ", ".join(lacks) if lacks else "-"]
        for _, path in sets:
            values = metrics_at(entry, path)
            row += [_cell(values[m], entry["seeds"], base_seeds) for m in SHOWN]
        rows.append(row)
    return markdown_table(header, rows) + "\n"


def fraction_curves(report: Mapping[str, Any],
                    definitions: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``fraction_curves.csv``: every single-criterion spec of a criterion that has at
    least two fractions, on each evaluation set, by criterion then fraction."""
    points: dict[str, list[tuple[float, str]]] = {}
    for spec in report:
        criterion = single_criterion(definitions.get(spec))
        if criterion is not None:
            points.setdefault(criterion[0], []).append((criterion[1], spec))
    rows = []
    for criterion, specs in points.items():
        if len({fraction for fraction, _ in specs}) < 2:
            continue
        for fraction, spec in sorted(specs):
            entry = report[spec]
            for label, path in eval_sets(report):
                values = metrics_at(entry, path)
                rows.append({"criterion": criterion, "fraction": fraction, "set": label,
                             "spec": spec, "seeds": entry["seeds"],
                             **{m: values[m]["mean"] for m in SHOWN},
                             **{f"{m}_std": values[m]["std"] for m in SHOWN}})
    return rows


def curves_csv(rows: list[dict[str, Any]]) -> str:
    lines = [",".join(CURVE_COLUMNS)]
    lines += [",".join(f"{row[c]:g}" if isinstance(row[c], float) else str(row[c])
                       for c in CURVE_COLUMNS) for row in rows]
    return "\n".join(lines) + "\n"


def controls_note(layout: Layout, report: Mapping[str, Any]) -> str:
    """What each control set is (from the prepared data), or that there is none."""
    if not eval_sets(report)[1:]:
        return ("No control set: the data has none (`data.source.control` / `data.controls`), "
                "so the models are compared on the test set only.\n\n")
    index = layout.prepared / "controls" / "index.json"
    described = read_json(index, what="control-set index") if index.is_file() else {}
    lines = [f"* `{label}`: "
             f"{escape(described.get(label, {}).get('description', '(no description)'))}"
             for label, _ in eval_sets(report)[1:]]
    return "Control sets (out-of-distribution evaluation):\n\n" + "\n".join(lines) + "\n\n"


def regions_note(layout: Layout) -> str:
    """The region rule behind the `easy / ambiguous / hard` columns, as the cartography stage
    stated it (its summary's ``regions_rule``); empty when that summary is absent."""
    where = layout.cartography / "summary.json"
    if not where.is_file():
        return ""
    rule = read_json(where, what="cartography summary").get("regions_rule")
    if not isinstance(rule, Mapping) or "statement" not in rule:
        raise DataError(f"{where} states no region rule (regions_rule); rerun the cartography "
                        "stage (dvc repro)")
    return f"Regions: {rule['statement']}\n\n"


def _intro(report: Mapping[str, Any], baseline: str | None) -> str:
    seeds = sorted({entry["seeds"] for entry in report.values()})
    text = (
        "# Subset comparison\n\nEach row is a model trained from scratch on one selected subset "
        "of the training set (`selection.specs` and `selection.sweep`), once per seed "
        f"({', '.join(map(str, seeds))} seed(s)), evaluated on the in-distribution test set "
        "and on each control set: mean ± standard deviation over the seeds. `share` is the "
        "subset's share of the training set; `easy / ambiguous / hard` the regions its examples "
        "come from; `flipped` its share of injected label errors; `lacks` the classes it has no "
        "example of.\n\n"
    )
    if baseline in report:
        text += (f"In parentheses: the difference from `{baseline}`; `*` where it exceeds "
                 f"{MARK_SE:g} standard errors (from both rows' standard deviations over their "
                 "seeds; never with a single seed).\n\n")
    return text


def write_report(layout_in: Layout, out_dir: str | os.PathLike, specs: Sequence[str],
                 definitions: Mapping[str, Any] | None = None,
                 baseline: str | None = None) -> dict:
    """``summary.md``, ``metrics.json``, ``comparison.png``, ``fraction_curves.csv`` and
    ``fraction_curves.png`` for ``specs`` (``definitions``: name -> spec, for the row order and
    the curves; ``baseline``: the spec the others are compared with)."""
    from datamap.report.figures import plot_comparison, plot_fraction_curves

    out_dir = Path(out_dir)
    definitions = definitions or {}
    report = collect(layout_in, spec_order(specs, definitions, baseline))
    add_differences(report, baseline)
    missing = {spec: read_json(layout_in.subset(spec) / "summary.json").get("missing_classes", [])
               for spec in report}
    table = comparison_table(report, baseline, missing)
    write_text(out_dir / "summary.md",
               _intro(report, baseline) + regions_note(layout_in) + controls_note(layout_in, report)
               + table)
    sets = [label for label, _ in eval_sets(report)]
    plot_comparison(report, sets, out_dir / "comparison.png", baseline)
    rows = fraction_curves(report, definitions)
    write_text(out_dir / "fraction_curves.csv", curves_csv(rows))
    plot_fraction_curves(rows, sets, out_dir / "fraction_curves.png",
                         report.get(baseline) if baseline else None, baseline)
    write_json(out_dir / "metrics.json", report)
    log.info("report:\n%s", table)
    return report
