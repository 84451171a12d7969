"""select@SPEC: scores -> the ids of one selected subset (+spec=NAME; all specs without it)."""

import hydra

from datamap.selection import write_subset
from datamap.stage import selected_specs, stage


@hydra.main(config_path="../conf", config_name="config", version_base=None)
@stage
def main(cfg, inputs, outputs):
    for spec in selected_specs(cfg):
        write_subset(
            inputs.cartography / "scores.parquet",
            inputs.prepared,
            outputs.subset(spec),
            spec,
            cfg.selection.specs[spec],
            seed=cfg.seed,
            root=inputs.root,  # ids_file specs name files under data/selections/ of the repo
        )


if __name__ == "__main__":
    main()
