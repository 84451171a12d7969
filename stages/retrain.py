"""retrain@SPEC: a fresh model trained on one selected subset, with the same model config."""

import hydra

from datamap.stage import selected_specs, stage
from datamap.subsets import read_subset_ids
from datamap.training import fit_classifier


@hydra.main(config_path="../conf", config_name="config", version_base=None)
@stage
def main(cfg, inputs, outputs):
    for spec in selected_specs(cfg):
        fit_classifier(
            cfg,
            prepared_dir=inputs.prepared,
            out_dir=outputs.retrain(spec),
            train_ids=read_subset_ids(inputs.subset(spec)),
        )


if __name__ == "__main__":
    main()
