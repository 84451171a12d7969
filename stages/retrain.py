"""retrain@SPEC: a fresh model trained on one selected subset, with the same model config.

The per-epoch training curves go to ``data/curves/retrain/SPEC.csv`` (a DVC plot).
"""

import hydra

from datamap.callbacks.curves import TrainingCurves
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
            callbacks=[TrainingCurves(outputs.curves / "retrain" / f"{spec}.csv")],
        )


if __name__ == "__main__":
    main()
