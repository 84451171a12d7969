"""select@SPEC: scores -> the ids of one selected subset (+spec=NAME; all specs without it)."""

import hydra

from datamap.pipeline.stage import stage
from datamap.scoring.registry import register_configured
from datamap.selection.ranking import spec_key, write_subset
from datamap.selection.specs import selected_spec_names, spec_definition


@hydra.main(config_path="../conf", config_name="config", version_base=None)
@stage
def main(cfg, inputs, outputs):
    register_configured(cfg.get("scores"))
    for spec in selected_spec_names(cfg):
        write_subset(
            inputs.cartography / "scores.parquet",
            inputs.prepared,
            outputs.subset(spec),
            spec,
            spec_definition(cfg, spec),
            seed=cfg.seed,
            root=inputs.root,  # ids_file specs name files under data/selections/ of the repo
            stratify=bool(cfg.selection.get("stratify", False)),
            key=spec_key(spec, sweep=spec not in (cfg.selection.get("specs") or {})),
        )


if __name__ == "__main__":
    main()
