"""cartography: training dynamics -> scores, regions, data map, summary, review queue."""

import logging

import hydra

from datamap.cartography.run import run_cartography
from datamap.pipeline.stage import stage
from datamap.scoring.registry import register_configured
from datamap.selection.plan import plan_from_config
from datamap.tracking.loggers import RUNS_FILE, log_run_summary, summary_values


@hydra.main(config_path="../conf", config_name="config", version_base=None)
@stage
def main(cfg, inputs, outputs):
    register_configured(cfg.get("scores"))
    summary = run_cartography(
        inputs.train / "dynamics.parquet",
        inputs.prepared,
        outputs.cartography,
        cfg.cartography,
        seed=cfg.seed,
    )
    # region counts and label-error AUROCs as summary values of the training run (W&B, MLflow)
    log_run_summary(inputs.train / "logs" / RUNS_FILE, summary_values(summary))
    # what the select/retrain grid that follows will cost, before it starts
    logging.getLogger("datamap").info("%s", plan_from_config(cfg, summary["examples"]).summary())


if __name__ == "__main__":
    main()
