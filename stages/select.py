"""select@SPEC: scores -> the ids of one selected subset (+spec=NAME; all specs without it)."""

import hydra

from datamap.pipeline.stage import stage
from datamap.scoring.registry import register_configured
from datamap.selection.specs import check_selection, selected_spec_names, write_configured_subset


@hydra.main(config_path="../conf", config_name="config", version_base=None)
@stage
def main(cfg, inputs, outputs):
    register_configured(cfg.get("scores"))
    # every key (and ids file), before any subset is written and any grid retrained
    check_selection(cfg, root=inputs.root)
    for spec in selected_spec_names(cfg):
        # ids_file specs name files under data/selections/ of the repository (inputs.root)
        write_configured_subset(cfg, spec, inputs.cartography, inputs.prepared,
                                outputs.subset(spec), root=inputs.root)


if __name__ == "__main__":
    main()
