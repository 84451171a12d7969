"""cartography: training dynamics -> scores, regions, data map, summary, review queue."""

import logging

import hydra

from datamap.cartography.run import run_cartography
from datamap.data.options import flag, seed_value
from datamap.pipeline.stage import stage
from datamap.scoring.registry import register_configured
from datamap.selection.plan import plan_from_config
from datamap.selection.specs import check_selection
from datamap.tracking.loggers import RUNS_FILE, log_run_summary, summary_values


@hydra.main(config_path="../conf", config_name="config", version_base=None)
@stage
def main(cfg, inputs, outputs):
    register_configured(cfg.get("scores"))
    # before any output is written: the flag (bool("false") would switch the correction on)
    # and the selection the plan below counts, checked as the select stage checks them
    flag(cfg.cartography.get("include_ci", False), "cartography.include_ci")
    check_selection(cfg, root=inputs.root)
    summary = run_cartography(
        inputs.train / "dynamics.parquet",
        inputs.prepared,
        outputs.cartography,
        cfg.cartography,
        seed=seed_value(cfg.seed),
    )
    # region counts and label-error AUROCs as summary values of the training run (W&B, MLflow)
    log_run_summary(inputs.train / "logs" / RUNS_FILE, summary_values(summary))
    # what the select/retrain grid that follows will cost, before it starts
    logging.getLogger("datamap").info("%s", plan_from_config(cfg, summary["examples"]).summary())


if __name__ == "__main__":
    main()
