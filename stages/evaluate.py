"""evaluate@SPEC: one subset's retrained models (one per seed) on the test set and every
control set; metrics.json gives each metric's mean and standard deviation over the seeds."""

import hydra

from datamap.evaluation import evaluate_seeds
from datamap.io import DataError
from datamap.stage import selected_specs, stage


@hydra.main(config_path="../conf", config_name="config", version_base=None)
@stage
def main(cfg, inputs, outputs):
    for spec in selected_specs(cfg):
        checkpoints = inputs.retrained_models(spec)
        if not checkpoints:
            raise DataError(f"{inputs.retrain(spec)}: no seed_<s>/model.ckpt; run the retrain "
                            "stage first")
        evaluate_seeds(checkpoints, inputs.prepared, outputs.eval(spec),
                       batch_size=int(cfg.data.datamodule.eval_batch_size))


if __name__ == "__main__":
    main()
