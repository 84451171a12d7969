"""retrain@SPEC: fresh models trained on one selected subset, one per seed of
``selection.retrain_seeds``, all in this process, with the same model config.

Each seed's fit goes to ``data/retrain/SPEC/seed_<seed>/`` (``model.ckpt``, ``metrics.json``,
``logs/``, ``curves.csv``); their per-epoch mean to ``data/curves/retrain/SPEC.csv`` (a DVC plot).
"""

import hydra

from datamap.callbacks.curves import TrainingCurves, write_mean_curves
from datamap.data.options import flag, seed_list
from datamap.layout import seed_dir
from datamap.pipeline.stage import stage
from datamap.selection.specs import selected_spec_names
from datamap.selection.subsets import read_subset_ids
from datamap.training.fit import fit_seeds


@hydra.main(config_path="../conf", config_name="config", version_base=None)
@stage
def main(cfg, inputs, outputs):
    seeds = seed_list(cfg.selection.retrain_seeds, "selection.retrain_seeds")
    media = flag(cfg.selection.get("retrain_media", False), "selection.retrain_media")
    for spec in selected_spec_names(cfg):
        out = outputs.retrain(spec)
        fit_seeds(cfg, seeds, out_dir=out, media=media,
                  callbacks=lambda seed_out: [TrainingCurves(seed_out / "curves.csv")],
                  prepared_dir=inputs.prepared, train_ids=read_subset_ids(inputs.subset(spec)))
        write_mean_curves([out / seed_dir(s) / "curves.csv" for s in seeds],
                          outputs.curves / "retrain" / f"{spec}.csv")


if __name__ == "__main__":
    main()
