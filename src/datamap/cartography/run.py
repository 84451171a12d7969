"""The cartography stage: dynamics -> scores, regions, data map, summary and a review queue
(:mod:`datamap.cartography.review`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datamap.data.corrections import read_applied_corrections, summary_counts
from datamap.data.options import flag
from datamap.data.splits import read_meta, read_split
from datamap.errors import DataError
from datamap.io import atomic_path, staged_outputs, write_csv, write_json

log = logging.getLogger(__name__)


def check_alignment(scores: pd.DataFrame, ids: np.ndarray, labels: np.ndarray,
                    source: str) -> None:
    """Refuse dynamics recorded on other examples or labels than the prepared train split's."""
    expected = pd.Series(labels, index=ids).sort_index()
    if not np.array_equal(scores["id"].to_numpy(), expected.index.to_numpy()):
        missing = np.setdiff1d(expected.index.to_numpy(), scores["id"].to_numpy())
        unknown = np.setdiff1d(scores["id"].to_numpy(), expected.index.to_numpy())
        raise DataError(
            f"{source}: recorded ids do not match the prepared train split ({len(missing)} "
            f"missing, e.g. {missing[:5].tolist()}; {len(unknown)} unknown, e.g. "
            f"{unknown[:5].tolist()}); the dynamics are stale: rerun the train stage"
        )
    mismatch = scores["gold"].to_numpy() != expected.to_numpy()
    if mismatch.any():
        raise DataError(
            f"{source}: {int(mismatch.sum())} example(s) were recorded with a label other than "
            f"the prepared train split's (e.g. id {int(expected.index[mismatch.argmax()])}); the "
            "dynamics are stale: rerun the train stage"
        )


def run_cartography(
    dynamics_path: str | os.PathLike,
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: Mapping[str, Any],
    seed: int = 0,
) -> dict[str, Any]:
    """Compute scores and write scores.parquet, data_map.png, data_map.html, map_points.csv,
    summary.json and review/ into ``out_dir`` (all of them or, on any error, none); return the
    summary. Examples decided in the prepared data's corrections leave the review queue
    (:func:`datamap.cartography.review.review_queue`)."""
    from datamap.cartography.figures import plot_data_map, plot_points_frame, plot_review_grid
    from datamap.cartography.page import (
        PAGE_NAME,
        decisions_frame,
        html_options,
        write_data_map_html,
    )
    from datamap.cartography.review import last_predictions, review_queue, with_inputs
    from datamap.scoring.noise import noise_detection
    from datamap.scoring.regions import REGIONS, describe_rule, regions_rule
    from datamap.scoring.scores import compute_scores, write_scores

    out_dir = Path(out_dir)
    page_options = html_options(cfg.get("html"))
    meta = read_meta(prepared_dir)
    train = read_split(prepared_dir, "train", meta)

    # From the path: validated and reduced a chunk of ids at a time, never held whole.
    regions = cfg.get("regions")
    scores = compute_scores(
        dynamics_path,
        burn_out=cfg.get("burn_out"),
        include_ci=flag(cfg.get("include_ci", False), "cartography.include_ci"),
        el2n_epochs=cfg.get("el2n_epochs"),
        regions=dict(regions) if regions is not None else None,
    )
    check_alignment(scores, train.ids, train.labels, str(dynamics_path))
    epochs = int(scores.attrs["epochs"])
    counts = scores["region"].value_counts()
    summary: dict[str, Any] = {
        "examples": int(len(scores)),
        "epochs_used": epochs,
        "records_per_epoch": int(scores.attrs["records_per_epoch"]),
        "regions": {r: int(counts.get(r, 0)) for r in REGIONS},
        # the rule, its parameters, the cut-offs it drew and the sentence the map shows
        "regions_rule": regions_rule(scores),
        "region_means": {
            r: {c: round(float(scores.loc[scores["region"] == r, c].mean()), 6)
                for c in ("confidence", "variability", "correctness")}
            for r in REGIONS if counts.get(r, 0) > 0
        },
        # reviewers' decisions applied by the prepare stage (data.corrections)
        "corrections": summary_counts(meta),
    }
    if train.clean_labels is not None:
        flipped = (train.labels != train.clean_labels)
        is_flipped = pd.Series(flipped, index=train.ids).reindex(scores["id"]).to_numpy()
        summary["noise"] = noise_detection(scores, is_flipped)

    # every output into one staging directory, moved into place only when all are written: a
    # failure anywhere leaves the previous outputs (or none), never some of each
    with staged_outputs(out_dir) as staging:
        write_scores(staging / "scores.parquet", scores)
        title = f"Data map of the training set ({epochs} epochs)"
        max_points = int(cfg.get("max_points", 50_000))
        plot_data_map(scores, staging / "data_map.png", title=title, max_points=max_points,
                      seed=seed, rule=summary["regions_rule"])
        points = plot_points_frame(scores, max_points=max_points, seed=seed)
        with atomic_path(staging / "map_points.csv") as tmp:
            points.to_csv(tmp, index=False, float_format="%.6g")

        predictions = last_predictions(dynamics_path, epochs - 1)
        applied = read_applied_corrections(prepared_dir)
        queue = review_queue(scores, predictions, meta["class_names"],
                             int(cfg.get("review_top_k", 100)), applied)
        queue = with_inputs(queue, train)
        with atomic_path(staging / "review") as tmp:
            tmp.mkdir()
            # annotators open it in a spreadsheet: a label or text "=..." is shown, not run
            write_csv(tmp / "hard_to_learn.csv", queue)
            if meta.get("input_kind") == "image" and len(queue):
                images = dict(zip(train.ids.tolist(), train.x, strict=True))
                plot_review_grid(queue, images, tmp / "hard_to_learn.png")
        # every example is on the page (max_points subsamples the PNG only), with the
        # decisions already applied, so that the page's corrections download keeps them
        write_data_map_html(scores, dynamics_path, train, staging / PAGE_NAME, meta=meta,
                            region_rule=describe_rule(scores.attrs.get("regions")),
                            decisions=decisions_frame(applied), epochs=epochs, title=title,
                            **page_options)
        write_json(staging / "summary.json", summary)
    log.info("cartography: %s", summary["regions"])
    log.info("regions: %s", summary["regions_rule"]["statement"])
    if "noise" in summary:
        noise = summary["noise"]
        log.info("noise detection: %d of %d flipped labels are hard-to-learn; AUROC of "
                 "1 - confidence %.4f", noise["hard_to_learn_flipped"], noise["n_flipped"],
                 noise["scores"]["confidence"]["auroc"])
    return summary
