"""cartography: training dynamics -> scores, regions, data map, summary, review queue."""

import hydra

from datamap.cartography import run_cartography
from datamap.stage import stage


@hydra.main(config_path="../conf", config_name="config", version_base=None)
@stage
def main(cfg, inputs, outputs):
    run_cartography(
        inputs.train / "dynamics.parquet",
        inputs.prepared,
        outputs.cartography,
        cfg.cartography,
        seed=cfg.seed,
    )


if __name__ == "__main__":
    main()
