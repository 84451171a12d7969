"""One selection spec end to end -- select, retrain (every seed), evaluate -- as one Hydra job,
and one comparison table over the jobs of a multirun.

``python -m stages.subset -m +spec=ambiguous_33 selection.specs.ambiguous_33.ambiguous=0.1,0.25``
runs one job per fraction from the cached cartography scores (``data/cartography``) and the
prepared data of the repository, each writing ``data/subsets``, ``data/retrain`` and
``data/eval`` under its own job directory (never into the DVC-tracked ``data/``) plus
``job.json`` (its spec and overrides). When the multirun ends, :class:`SubsetComparison` (a
Hydra callback, set in ``conf/subset.yaml``) writes ``comparison.md`` and ``comparison.json``
into the sweep directory: one row per job, the report stage's columns.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from datamap.errors import ConfigError, DataError
from datamap.io import read_json, write_json, write_text
from datamap.layout import Layout

log = logging.getLogger(__name__)

#: What each job writes into its directory besides the pipeline's layout.
JOB_FILE = "job.json"


def job_dir() -> Path:
    """This Hydra job's own output directory (a single run's too: the subset app never writes
    into the repository's ``data/``)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def job_description() -> dict[str, Any]:
    """This job's command-line overrides and the launcher that ran it."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    return {"overrides": list(hydra_cfg.overrides.task),
            "launcher": str(hydra_cfg.launcher.get("_target_", ""))}


def run_subset(cfg: DictConfig, inputs: Layout, outputs: Layout,
               job: dict[str, Any] | None = None) -> dict[str, Any]:
    """select -> retrain -> evaluate for the spec ``cfg.spec``, reading ``inputs`` (the
    cartography scores, the prepared data) and writing ``outputs`` (and ``job``, the job's
    :func:`job_description`, to its ``job.json``); returns the evaluation."""
    from datamap.data.options import flag
    from datamap.evaluation.evaluate import evaluate_subsets
    from datamap.models.factories import targets_of
    from datamap.scoring.registry import register_configured
    from datamap.selection.specs import (
        check_selection,
        selected_spec_names,
        write_configured_subset,
    )
    from datamap.selection.subsets import read_subset_ids
    from datamap.training.fit import fit_seeds

    if cfg.get("spec") is None:
        raise ConfigError("stages.subset runs one selection spec per job: add +spec=NAME "
                          "(e.g. +spec=ambiguous_33)")
    (spec,) = selected_spec_names(cfg)
    register_configured(cfg.get("scores"))
    check_selection(cfg, root=inputs.root)
    write_configured_subset(cfg, spec, inputs.cartography, inputs.prepared, outputs.subset(spec),
                            root=inputs.root)
    fit_seeds(cfg, cfg.selection.retrain_seeds, out_dir=outputs.retrain(spec),
              media=flag(cfg.selection.get("retrain_media", False), "selection.retrain_media"),
              prepared_dir=inputs.prepared, train_ids=read_subset_ids(outputs.subset(spec)))
    metrics = evaluate_subsets({spec: outputs.retrained_models(spec)}, inputs.prepared,
                               outputs.eval, batch_size=int(cfg.data.datamodule.eval_batch_size),
                               trusted=sorted(targets_of(cfg.model)))
    metrics = metrics[spec]
    write_json(outputs.root / JOB_FILE, {"spec": spec, "overrides": [], **(job or {})})
    return metrics


def job_label(job: dict[str, Any], common: frozenset[str] = frozenset()) -> str:
    """A row's name: the job's overrides other than ``+spec`` and those in ``common`` (shared
    by every job of the multirun), or the spec when none is left."""
    varied = [o for o in job["overrides"]
              if o not in common and not o.lstrip("+~").startswith("spec=")]
    return " ".join(varied) or job["spec"]


def write_comparison(sweep_dir: str | Path) -> dict[str, Any]:
    """``comparison.md`` and ``comparison.json`` in ``sweep_dir`` over the jobs under it (the
    numbered job directories holding a ``job.json``), in job order."""
    from datamap.report.comparison import collect, comparison_table

    sweep_dir = Path(sweep_dir)
    jobs = sorted((p.parent for p in sweep_dir.glob(f"*/{JOB_FILE}")),
                  key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0,
                                 p.name))
    if not jobs:
        raise DataError(f"{sweep_dir}: no finished job ({JOB_FILE}) to compare; did every job "
                        "fail? See its log")
    described = [read_json(path / JOB_FILE, what="job description") for path in jobs]
    common = (frozenset.intersection(*(frozenset(job["overrides"]) for job in described))
              if len(described) > 1 else frozenset())
    comparison: dict[str, Any] = {}
    missing: dict[str, list[str]] = {}
    for path, job in zip(jobs, described, strict=True):
        layout = Layout(path)
        label = job_label(job, common)
        comparison[label] = {"job": path.name, **collect(layout, [job["spec"]])[job["spec"]]}
        summary = read_json(layout.subset(job["spec"]) / "summary.json")
        missing[label] = summary.get("missing_classes", [])
    table = comparison_table(comparison, None, missing)
    write_text(sweep_dir / "comparison.md", table)
    write_json(sweep_dir / "comparison.json", comparison)
    log.info("comparison of %d jobs (%s):\n%s", len(jobs), sweep_dir / "comparison.md", table)
    return comparison


class SubsetComparison(Callback):
    """At the end of a multirun of ``stages.subset``: :func:`write_comparison` in the sweep
    directory."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_comparison(config.hydra.sweep.dir)
